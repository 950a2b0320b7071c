"""Embedding drift: maximum mean discrepancy (MMD) with a permutation test.

Derived text features miss shifts in *meaning* at constant length; embeddings catch them. The
RBF-kernel MMD² with the median-heuristic bandwidth is a standard two-sample test on such vectors,
and the permutation test gives a p-value without distributional assumptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class MMDResult:
    mmd2: float
    pvalue: float
    bandwidth: float
    n_permutations: int


def _squared_distances(z: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", z, z)
    d = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    return np.maximum(d, 0.0)


def _mmd2_from_kernel(kernel: np.ndarray, is_x: np.ndarray) -> float:
    """Unbiased MMD² for the split ``is_x`` of the pooled sample."""
    is_y = ~is_x
    m, n = int(is_x.sum()), int(is_y.sum())
    kxx = kernel[np.ix_(is_x, is_x)]
    kyy = kernel[np.ix_(is_y, is_y)]
    kxy = kernel[np.ix_(is_x, is_y)]
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2.0 * kxy.mean()
    )


def mmd_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_permutations: int = 200,
    max_samples: int = 500,
    seed: int = 0,
) -> MMDResult:
    """Permutation test of ``x`` and ``y`` (rows are embeddings) having the same distribution.

    Each side is subsampled to ``max_samples`` rows (seeded) so the kernel matrix stays small;
    the p-value is ``(1 + #{perm ≥ observed}) / (1 + n_permutations)``, never exactly zero.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"embeddings must be 2-D with equal width, got {x.shape} and {y.shape}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("MMD needs at least two embeddings on each side")
    rng = np.random.default_rng(seed)
    if len(x) > max_samples:
        x = x[rng.choice(len(x), max_samples, replace=False)]
    if len(y) > max_samples:
        y = y[rng.choice(len(y), max_samples, replace=False)]
    pooled = np.vstack([x, y])
    d2 = _squared_distances(pooled)
    off_diagonal = d2[np.triu_indices_from(d2, k=1)]
    bandwidth = float(np.sqrt(np.median(off_diagonal) / 2.0)) or 1.0
    kernel = np.exp(-d2 / (2.0 * bandwidth**2))
    is_x = np.zeros(len(pooled), dtype=bool)
    is_x[: len(x)] = True
    observed = _mmd2_from_kernel(kernel, is_x)
    exceed = 0
    for _ in range(n_permutations):
        exceed += _mmd2_from_kernel(kernel, rng.permutation(is_x)) >= observed
    return MMDResult(observed, (1 + exceed) / (1 + n_permutations), bandwidth, n_permutations)


def embed_texts(texts: list[str], model_dir: str | Path | None = None, *, batch_size: int = 32) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings from the packaged MiniLM (offline).

    torch and transformers are imported here, not at module import, so the statistics stay light.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    if model_dir is None:
        from training.tiny import minilm_dir

        model_dir = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size], padding=True, truncation=True, return_tensors="pt"
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            chunks.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
    return np.vstack(chunks) if chunks else np.zeros((0, model.config.hidden_size))
