"""Loading classifiers offline and computing logits in batches; shared by fine-tune, evaluate and compile."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pretrained import MINILM, minilm_dir
from training.errors import BaseModelError


def resolve_model_source(base_model: str | Path) -> str:
    """Turn ``minilm``, a folder or a hub id into something ``from_pretrained`` loads without a network.

    A value that looks like a path must exist; anything else is treated as a hub id and must already be in
    the local Hugging Face cache (we pass ``local_files_only=True`` everywhere, so nothing is downloaded).
    """
    if str(base_model) == MINILM:
        return str(minilm_dir())
    text = str(base_model)
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise BaseModelError(f"base model folder {path} has no config.json")
        return str(path)
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text
    if looks_like_path:
        raise BaseModelError(f"base model path {path} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(text, local_files_only=True)
    except Exception as error:  # the hub raises several types for "not cached"; all mean the same here
        raise BaseModelError(
            f"base model {text!r} is neither a folder nor cached locally; pitcrew never downloads "
            f"at run time (cache it first, or pass a folder): {type(error).__name__}"
        ) from error


def load_classifier(source: str | Path, *, labels: Sequence[str] | None = None, device: str = "cpu") -> tuple[Any, Any]:
    """Load a sequence classifier and its tokenizer; with ``labels``, the head is sized and named for them.

    A base model whose head has another size (the MiniLM encoder has none) gets a fresh head.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = resolve_model_source(source)
    kwargs: dict[str, Any] = {"local_files_only": True}
    if labels is not None:
        kwargs.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                      label2id={label: i for i, label in enumerate(labels)}, ignore_mismatched_sizes=True)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(source, **kwargs).to(device)
    return model, tokenizer


def model_labels(model_dir: str | Path, model: Any | None = None) -> list[str]:
    """Label names in logit order: ``labels.json`` when present, else the config's ``id2label``."""
    labels_file = Path(model_dir) / "labels.json"
    if labels_file.exists():
        return list(json.loads(labels_file.read_text()))
    if model is None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(resolve_model_source(model_dir), local_files_only=True)
    else:
        config = model.config
    return [config.id2label[i] for i in range(config.num_labels)]


def encode(tokenizer: Any, texts: Sequence[str], *, max_length: int, pad_to_max: bool = False) -> dict[str, Any]:
    """Tokenize to int64 torch tensors, padded to the longest row (or to ``max_length``)."""
    return tokenizer(list(texts), truncation=True, max_length=max_length,
                     padding="max_length" if pad_to_max else True, return_tensors="pt")


def batched_logits(model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 64,
                   max_length: int = 128, device: str = "cpu") -> np.ndarray:
    """fp32 logits for ``texts`` as a ``[len(texts), num_labels]`` array, with the model in eval mode."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = encode(tokenizer, texts[start:start + batch_size], max_length=max_length)
            batch = {k: v.to(device) for k, v in batch.items()}
            out.append(model(**batch).logits.float().cpu().numpy())
    if not out:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    return np.concatenate(out)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
