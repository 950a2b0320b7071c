"""Shared fixtures for the training tests: demo data and a tiny BERT built locally (no hub, seconds to train).

tests/unit/conftest.py registers the fixtures for every unit test: request them by name, do not import
them. Torch and transformers are imported when a fixture first runs, not when the unit suite starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_CACHE: dict[str, object] = {}

#: Settings under which the tiny model learns domain A well above chance in a few seconds on 2 cores.
TINY_TRAINING = dict(epochs=8, batch_size=16, learning_rate=1e-2, progress=False, early_stopping_patience=8)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if "demo_data" not in _CACHE:
        from training.demo_data import write_demo_splits

        _CACHE["demo_data"] = write_demo_splits(tmp_path_factory.mktemp("demo"), n_train=320, n_eval=120,
                                                n_golden=16, seed=3)
    return _CACHE["demo_data"]


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "tiny_base" not in _CACHE:
        from training.demo_data import LABELS
        from training.tiny import build_tiny_model

        _CACHE["tiny_base"] = build_tiny_model(tmp_path_factory.mktemp("tiny") / "base", list(LABELS))
    return _CACHE["tiny_base"]


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory: pytest.TempPathFactory, demo_data: dict[str, Path], tiny_base: Path) -> Path:
    if "tiny_trained" not in _CACHE:
        from training.finetune import FinetuneConfig, finetune

        _CACHE["tiny_trained"] = finetune(FinetuneConfig(
            output_dir=tmp_path_factory.mktemp("trained") / "model", train_data=demo_data["a_train"],
            eval_data=demo_data["a_eval"], base_model=str(tiny_base), **TINY_TRAINING))
    return _CACHE["tiny_trained"]
