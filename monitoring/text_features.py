"""Numeric features derived from raw text, so text drift can be tested like any numeric column.

Length and token count move when the domain or the client changes; the unknown-token rate moves
when the vocabulary does (new product names, another language) — the signal a WordPiece model is
most sensitive to. The tokenizer is optional and loaded lazily (no transformers import).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pretrained import minilm_dir

#: Names of the derived features, suffixed to the text column name (``text.length`` ...).
FEATURES = ("length", "tokens", "unk_rate")


@lru_cache(maxsize=4)
def load_tokenizer(path: str | None = None) -> Any:
    """A fast ``tokenizers.Tokenizer`` from ``tokenizer.json``; default: the packaged MiniLM."""
    from tokenizers import Tokenizer

    if path is None:
        path = str(minilm_dir())
    file = Path(path)
    if file.is_dir():
        file = file / "tokenizer.json"
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer.json at {file}")
    tokenizer = Tokenizer.from_file(str(file))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def text_features(texts: pd.Series, tokenizer: Any | None = None) -> pd.DataFrame:
    """Per text: character length, token count and unknown-token rate.

    Without a tokenizer, tokens are whitespace-separated words and ``unk_rate`` is left out (it has
    no meaning without a vocabulary). Missing texts give NaN features (counted as missing later).
    """
    present = texts.notna().to_numpy()
    values = texts.where(texts.notna(), "").astype(str)
    length = values.str.len().to_numpy(dtype=float)
    out = {"length": length}
    if tokenizer is None:
        out["tokens"] = values.str.split().str.len().to_numpy(dtype=float)
    else:
        unk_id = tokenizer.token_to_id("[UNK]")
        encodings = tokenizer.encode_batch(values.tolist(), add_special_tokens=False)
        tokens = np.fromiter((len(e.ids) for e in encodings), dtype=float, count=len(encodings))
        unknown = np.fromiter((e.ids.count(unk_id) for e in encodings), dtype=float, count=len(encodings))
        out["tokens"] = tokens
        with np.errstate(invalid="ignore", divide="ignore"):
            out["unk_rate"] = np.where(tokens > 0, unknown / np.maximum(tokens, 1), 0.0)
    frame = pd.DataFrame(out, index=texts.index)
    frame.loc[~present, :] = np.nan
    return frame
