"""The fine-tune loop's batches (training/batching.py): length-grouped, seeded, resumable, padded per batch."""

from __future__ import annotations

import random
from itertools import islice

import pytest
import torch

from training.batching import (
    EmbeddingGradBuffer,
    GroupedBatchSampler,
    PadCollator,
    epoch_batches,
    train_batches,
)


def _lengths(n: int = 1000, seed: int = 7) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(5, 60) for _ in range(n)]


def _padded_tokens(batches: list[list[int]], lengths: list[int]) -> int:
    return sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)


@pytest.mark.parametrize(("n", "batch_size", "mult"), [(1000, 8, 50), (1003, 8, 50), (17, 4, 2), (5, 8, 50),
                                                        (1003, 8, 0)])
def test_every_row_exactly_once_per_epoch(n: int, batch_size: int, mult: int) -> None:
    lengths = _lengths(n)
    for epoch in range(3):
        batches = epoch_batches(lengths, batch_size, seed=1, epoch=epoch, mega_batch_mult=mult)
        assert sorted(i for batch in batches for i in batch) == list(range(n))
        assert len(batches) == -(-n // batch_size)  # as many steps as an ungrouped epoch
        assert sum(len(batch) < batch_size for batch in batches) == (1 if n % batch_size else 0)


def test_length_grouping_removes_most_padding() -> None:
    lengths = _lengths()
    real = sum(lengths)
    grouped = _padded_tokens(epoch_batches(lengths, 8, seed=0, epoch=0), lengths)
    wide = _padded_tokens(epoch_batches(lengths, 8, seed=0, epoch=0, mega_batch_mult=50), lengths)
    plain = _padded_tokens(epoch_batches(lengths, 8, seed=0, epoch=0, mega_batch_mult=0), lengths)
    assert plain > 1.4 * real  # random batches of 8 lengths in 5..60 pad heavily
    assert grouped < 1.15 * real and grouped < 0.8 * plain
    assert wide < 1.05 * real  # sorting more rows at once pads even less


def test_batches_are_shuffled_not_sorted_by_length() -> None:
    lengths = _lengths()
    batches = epoch_batches(lengths, 8, seed=0, epoch=0)
    longest = [max(lengths[i] for i in batch) for batch in batches]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)
    assert sorted(i for i in batches[0]) != sorted(range(8))  # and rows are shuffled before grouping


def test_same_seed_and_epoch_same_batches_else_different() -> None:
    lengths = _lengths()
    first = epoch_batches(lengths, 8, seed=3, epoch=2)
    assert first == epoch_batches(lengths, 8, seed=3, epoch=2)
    assert first != epoch_batches(lengths, 8, seed=3, epoch=3)
    assert first != epoch_batches(lengths, 8, seed=4, epoch=2)
    # the order does not come from torch's global RNG (that one drives dropout)
    torch.manual_seed(123)
    assert first == epoch_batches(lengths, 8, seed=3, epoch=2)


@pytest.mark.parametrize("start_step", [0, 1, 12, 13, 14, 30])
def test_sampler_started_at_a_step_continues_the_full_stream(start_step: int) -> None:
    lengths = _lengths(50)  # 13 batches of 4 an epoch, the last one short
    full = list(islice(GroupedBatchSampler(lengths, 4, seed=5, mega_batch_mult=2), 45))
    resumed = list(islice(GroupedBatchSampler(lengths, 4, seed=5, start_step=start_step, mega_batch_mult=2),
                          45 - start_step))
    assert resumed == full[start_step:]
    assert full[:13] == epoch_batches(lengths, 4, seed=5, epoch=0, mega_batch_mult=2)
    assert full[13:26] == epoch_batches(lengths, 4, seed=5, epoch=1, mega_batch_mult=2)


def test_collator_pads_to_the_longest_row_of_the_batch() -> None:
    rows = [{"input_ids": [101, 7, 102], "token_type_ids": [0, 0, 0], "attention_mask": [1, 1, 1], "labels": 2},
            {"input_ids": [101, 102], "token_type_ids": [0, 0], "attention_mask": [1, 1], "labels": 0}]
    batch = PadCollator(pad_token_id=9, pad_token_type_id=1)(rows)
    assert batch["input_ids"].tolist() == [[101, 7, 102], [101, 102, 9]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0], [0, 0, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [2, 0] and batch["labels"].dtype == torch.long
    left = PadCollator(pad_token_id=9, padding_side="left")(rows)
    assert left["input_ids"].tolist() == [[101, 7, 102], [9, 101, 102]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]


def test_train_batches_match_the_tokenizer_and_leave_the_global_rng_alone() -> None:
    from transformers import AutoTokenizer

    from pretrained import minilm_dir

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    texts = ["short", "a somewhat longer message about an invoice", "mid length text here", "x y",
             "another quite long message about a parcel that never arrived", "hello"]
    labels = [0, 1, 2, 3, 0, 1]
    unpadded = [tokenizer(text, truncation=True, max_length=8)["input_ids"] for text in texts]
    torch.manual_seed(0)
    rng_before = torch.get_rng_state()
    batches = list(islice(train_batches(tokenizer, texts, labels, max_length=8, batch_size=4, seed=0), 4))
    # a DataLoader iterator draws a seed for its workers: from the global RNG it would shift dropout
    assert torch.equal(torch.get_rng_state(), rng_before)
    for epoch in (batches[:2], batches[2:]):
        rows = []
        for batch in epoch:
            found = [unpadded.index([t for t, keep in zip(ids, mask, strict=True) if keep])
                     for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(), strict=True)]
            expected = tokenizer([texts[i] for i in found], truncation=True, max_length=8, padding=True,
                                 return_tensors="pt")
            for key in ("input_ids", "attention_mask", "token_type_ids"):
                assert torch.equal(batch[key], expected[key])  # padded to this batch's longest row only
            assert batch["labels"].tolist() == [labels[i] for i in found]
            rows += found
        assert sorted(rows) == list(range(len(texts)))


def test_worker_processes_yield_the_same_batches() -> None:
    from transformers import AutoTokenizer

    from pretrained import minilm_dir

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    texts = [f"message number {i} " + "word " * (i % 7) for i in range(20)]
    labels = [i % 4 for i in range(20)]
    common = dict(max_length=16, batch_size=4, seed=1)
    main_thread = list(islice(train_batches(tokenizer, texts, labels, **common), 7))
    workers = list(islice(train_batches(tokenizer, texts, labels, workers=1, **common), 7))
    for a, b in zip(main_thread, workers, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key])


class _Toy(torch.nn.Module):
    """An embedding (with a padding row, like BERT's) and a head: enough to compare gradients."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(50, 6, padding_idx=0)
        self.head = torch.nn.Linear(6, 3)

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.embed

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(ids).mean(dim=1))


def _train_toy(buffered: bool, steps: int = 4) -> tuple[_Toy, list[torch.Tensor]]:
    model = _Toy()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.01, fused=True)
    grads = EmbeddingGradBuffer(model, enabled=buffered)
    batches = torch.Generator().manual_seed(1)
    seen = []
    for _ in range(steps):
        ids = torch.randint(0, 50, (4, 7), generator=batches)
        ids[:, -2:] = 0  # padding
        optimizer.zero_grad(set_to_none=True)
        grads.zero()
        torch.nn.functional.cross_entropy(model(ids), torch.tensor([0, 1, 2, 1])).backward()
        seen.append(model.embed.weight.grad.clone())
        assert not model.embed.weight.grad.is_sparse  # clipping and fused AdamW need a dense gradient
        optimizer.step()
    grads.release()
    return model, seen


def test_embedding_grad_buffer_gives_the_dense_gradients_exactly() -> None:
    dense_model, dense = _train_toy(False)
    kept_model, kept = _train_toy(True)
    for a, b in zip(dense, kept, strict=True):
        assert torch.equal(a, b)
    for (name, a), b in zip(dense_model.state_dict().items(), kept_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not kept_model.embed.sparse and kept_model.embed.weight.grad is None  # released


def test_embedding_grad_buffer_is_reused_not_reallocated() -> None:
    model = _Toy()
    grads = EmbeddingGradBuffer(model, enabled=True)
    pointers = set()
    for _ in range(3):
        model.zero_grad(set_to_none=True)
        grads.zero()
        model(torch.tensor([[1, 2, 3]])).sum().backward()
        pointers.add(model.embed.weight.grad.data_ptr())
    assert len(pointers) == 1
    assert model.embed.weight.grad.abs().sum() > 0


def test_embedding_grad_buffer_leaves_cuda_and_frozen_embeddings_alone() -> None:
    model = _Toy()
    EmbeddingGradBuffer(model, enabled=False).zero()  # enabled=False: what finetune passes on CUDA
    assert not model.embed.sparse and model.embed.weight.grad is None
    model.embed.weight.requires_grad_(False)
    EmbeddingGradBuffer(model, enabled=True).zero()
    assert not model.embed.sparse and model.embed.weight.grad is None
