"""Batches for the fine-tune loop: length-grouped, seeded, resumable at any step, padded per batch; and on
CPU the kept buffer for the gradient of the embedding rows a batch touches (:class:`EmbeddingGradBuffer`).

Rows are tokenized once without padding; each batch is padded to its own longest row. Grouping rows of
similar length into the same batch (as Hugging Face's ``group_by_length`` does) then removes most of the
padding, which on a CPU is most of the waste: a step's cost grows with the padded token count, and
support messages vary in length. Batches are shuffled after grouping so the model does not see a
long-to-short curriculum within each group.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

#: Rows sorted together = this many batches. Larger groups pad less but make batches less random (rows of
#: one length share templates and cue words). On the demo data 16 leaves 2 % padding (random batches: 28 %;
#: HF's ``LengthGroupedSampler`` sorts 50: 1 %); accuracy after 40 steps over 6 seeds: 0.93, as with 50,
#: random batches 0.96 and Trainer 0.92, all within the seed-to-seed spread (0.8 to 1.0).
MEGA_BATCH_MULT = 16


def epoch_batches(lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int,
                  mega_batch_mult: int = MEGA_BATCH_MULT) -> list[list[int]]:
    """One epoch's batches of row indices: every row exactly once, ``ceil(len(lengths) / batch_size)`` batches.

    Shuffle the rows, cut them into mega-batches of ``batch_size * mega_batch_mult`` rows, sort each by
    length (longest first) and cut it into batches, then shuffle the batches. Only the last mega-batch can
    leave a short batch, so the batch count matches an ungrouped epoch's. ``mega_batch_mult=0`` skips the
    sort: plain random batches. Same ``seed`` and ``epoch``, same batches: what a resumed run relies on.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)  # distinct streams per (seed, epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    mega = batch_size * mega_batch_mult if mega_batch_mult > 0 else max(1, len(order))
    batches = []
    for start in range(0, len(order), mega):
        group = order[start:start + mega]
        if mega_batch_mult > 0:
            group.sort(key=lambda i: -lengths[i])  # stable: equal lengths keep their shuffled order
        batches.extend(group[i:i + batch_size] for i in range(0, len(group), batch_size))
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


class GroupedBatchSampler:
    """A ``DataLoader`` ``batch_sampler`` that yields :func:`epoch_batches` epoch after epoch, endlessly,
    starting at optimizer step ``start_step`` (epoch ``start_step // batches_per_epoch``, and that many
    batches into it), so a resumed run sees exactly the batches the interrupted one would have."""

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int, start_step: int = 0,
                 mega_batch_mult: int = MEGA_BATCH_MULT) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.mega_batch_mult = mega_batch_mult
        self.batches_per_epoch = -(-len(self.lengths) // batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, position = divmod(self.start_step, self.batches_per_epoch)
        while True:
            yield from epoch_batches(self.lengths, self.batch_size, seed=self.seed, epoch=epoch,
                                     mega_batch_mult=self.mega_batch_mult)[position:]
            epoch, position = epoch + 1, 0


class PadCollator:
    """Pads pre-tokenized rows to the batch's longest row: ``input_ids`` with the tokenizer's pad id,
    ``token_type_ids`` with its pad type id, ``attention_mask`` with 0; ``labels`` becomes a tensor.

    A plain class (not a closure) so ``DataLoader`` workers can pickle it.
    """

    def __init__(self, pad_token_id: int, pad_token_type_id: int = 0, padding_side: str = "right") -> None:
        self.pad_values = {"input_ids": pad_token_id, "token_type_ids": pad_token_type_id, "attention_mask": 0}
        self.left = padding_side == "left"

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(row["input_ids"]) for row in rows)
        batch = {}
        for key in rows[0]:
            if key == "labels":
                batch[key] = torch.tensor([row[key] for row in rows], dtype=torch.long)
                continue
            pad = self.pad_values.get(key, 0)
            padded = [([pad] * (width - len(row[key])) + list(row[key])) if self.left
                      else (list(row[key]) + [pad] * (width - len(row[key]))) for row in rows]
            batch[key] = torch.tensor(padded, dtype=torch.long)
        return batch


def tokenized_rows(tokenizer: Any, texts: Sequence[str], label_ids: Sequence[int], *,
                   max_length: int) -> list[dict[str, Any]]:
    """Tokenize every text once, truncated but unpadded, as the rows :class:`PadCollator` batches."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoded]
    return [{**{k: encoded[k][i] for k in keys}, "labels": label_ids[i]} for i in range(len(texts))]


def train_batches(tokenizer: Any, texts: Sequence[str], label_ids: Sequence[int], *, max_length: int,
                  batch_size: int, seed: int, start_step: int = 0, group_by_length: bool = True, workers: int = 0,
                  pin_memory: bool = False) -> Iterable[dict[str, Any]]:
    """Endless padded training batches (``input_ids``, ..., ``labels`` tensors) from ``start_step`` on.

    A ``DataLoader`` over rows tokenized once: ``workers`` processes assemble batches ahead of the loop when
    that pays (a GPU step waiting on Python padding), ``pin_memory`` lets host-to-GPU copies run async.
    """
    import torch

    rows = tokenized_rows(tokenizer, texts, label_ids, max_length=max_length)
    sampler = GroupedBatchSampler([len(row["input_ids"]) for row in rows], batch_size, seed=seed,
                                  start_step=start_step, mega_batch_mult=MEGA_BATCH_MULT if group_by_length else 0)
    collate = PadCollator(tokenizer.pad_token_id, getattr(tokenizer, "pad_token_type_id", 0),
                          getattr(tokenizer, "padding_side", "right"))
    # Its own generator: a DataLoader draws its workers' base seed when iterated, and from torch's global RNG
    # that draw would shift every dropout mask after it (and differently in a resumed run).
    return torch.utils.data.DataLoader(rows, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                                       pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed))


class EmbeddingGradBuffer:
    """On CPU, the input embedding's gradient as one kept buffer that a sparse backward adds the batch's rows into.

    A dense embedding gradient (30522 x 384 for MiniLM: half the weights, though a batch touches ~100 rows) is
    allocated fresh each step, and on CPU the page faults of that allocation cost ~8 % of a step. With
    ``sparse=True`` the embedding's backward yields only the touched rows, which autograd adds into the
    existing ``.grad``: this buffer, zeroed each step. Clipping and AdamW still see a dense gradient, and the
    weights come out bit-identical (tests/unit/test_training_finetune.py). CUDA's caching allocator has no
    such cost: there (``enabled=False``), or for a frozen or non-``nn.Embedding`` input layer, it does nothing.
    """

    enabled_by_default = True  # tests turn it off to compare with the default backward

    def __init__(self, model: Any, *, enabled: bool) -> None:
        import torch

        embedding = model.get_input_embeddings()
        self.embedding = embedding if (enabled and self.enabled_by_default and type(embedding) is torch.nn.Embedding
                                       and embedding.weight.requires_grad and not embedding.sparse) else None
        if self.embedding is not None:
            self.buffer = torch.zeros_like(self.embedding.weight)
            self.embedding.sparse = True

    def zero(self) -> None:
        """After ``optimizer.zero_grad(set_to_none=True)``: the embedding's gradient is the zeroed buffer again."""
        if self.embedding is not None:
            self.embedding.weight.grad = self.buffer.zero_()

    def release(self) -> None:
        """Back to the default dense backward; the buffer is freed."""
        if self.embedding is not None:
            self.embedding.sparse = False
            self.embedding.weight.grad = None
            self.embedding = self.buffer = None
