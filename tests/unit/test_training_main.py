# ruff: noqa: F811  (pytest fixtures imported from training_fixtures are re-bound as test arguments)
"""The ``python -m training`` CLI: sub-commands wire to the API, bad input exits 2 with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.unit.training_fixtures import demo_data, tiny_base, tiny_trained  # noqa: F401
from training.__main__ import build_parser, main


def test_every_flag_has_help() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert set(subparsers) == {"finetune", "evaluate", "compile", "demo-data"}
    for sub in subparsers.values():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{sub.prog} {action.dest} has no help"


def test_demo_data_then_finetune_and_evaluate(tmp_path: Path, tiny_base: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo-data", "--output", str(tmp_path / "d"), "--n-train", "64", "--n-eval", "32",
                 "--n-golden", "8"]) == 0
    paths = json.loads(capsys.readouterr().out)
    assert pd.read_parquet(paths["b_train"]).shape == (64, 3)
    assert main(["finetune", "--output", str(tmp_path / "m"), "--train", paths["a_train"], "--eval", paths["a_eval"],
                 "--base-model", str(tiny_base), "--max-steps", "3", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 3
    assert main(["evaluate", "--challenger", str(tmp_path / "m"), "--eval", paths["a_eval"],
                 "--min-accuracy", "1.01", "--output", str(tmp_path / "v.json"), "--fail-on-reject"]) == 1
    assert json.loads((tmp_path / "v.json").read_text())["decision"] == "reject"


def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["finetune", "--output", str(tmp_path / "m"), "--train", str(tmp_path / "none.csv")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'none.csv'}: no such file or folder"
    pd.DataFrame({"text": ["a"], "label": ["billing"]}).to_csv(tmp_path / "one.csv", index=False)
    assert main(["finetune", "--output", str(tmp_path / "m"), "--train", str(tmp_path / "one.csv"),
                 "--base-model", str(tmp_path / "missing-model")]) == 2
    assert "only one class" in capsys.readouterr().err
    pd.DataFrame({"text": ["a", "b"], "label": ["billing", "account"]}).to_csv(tmp_path / "two.csv", index=False)
    assert main(["finetune", "--output", str(tmp_path / "m"), "--train", str(tmp_path / "two.csv"),
                 "--base-model", str(tmp_path / "missing-model")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
