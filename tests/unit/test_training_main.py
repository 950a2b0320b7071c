"""The ``python -m training`` CLI: flags come from the config dataclasses, sub-commands wire to the API,
bad input exits 2 with one line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

import training.__main__ as cli
from training.__main__ import NOT_FLAGS, build_parser, main
from training.compile import CompileConfig
from training.evaluate import EvaluateConfig
from training.finetune import FinetuneConfig
from training.tensorrt_build import OptimizationProfile

#: The least each config sub-command needs on its command line.
REQUIRED = {
    "finetune": (FinetuneConfig, ["--output-dir", "out", "--train-data", "train.csv"]),
    "evaluate": (EvaluateConfig, ["--challenger", "c", "--eval-data", "eval.csv"]),
    "compile": (CompileConfig, ["--model-dir", "m", "--output-dir", "out"]),
}


def _subparsers() -> dict:
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices


def test_every_flag_has_help() -> None:
    subparsers = _subparsers()
    assert set(subparsers) == {"finetune", "evaluate", "compile", "demo-data"}
    for sub in subparsers.values():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"{sub.prog} {action.dest} has no help"


@pytest.mark.parametrize("command", ["finetune", "evaluate", "compile", "demo-data"])
def test_help_exits_0(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m training " + command in capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_one_flag_per_config_field_with_the_field_default(command: str) -> None:
    config_type, required = REQUIRED[command]
    sub = _subparsers()[command]
    flags: dict[str, list] = {}
    for action in sub._actions:  # a bool that defaults to True has a second action, its --no-... flag
        flags.setdefault(action.dest, []).append(action)
    args = build_parser().parse_args([command, *required])
    for field in dataclasses.fields(config_type):
        if field.name in NOT_FLAGS.get(config_type, {}):
            assert field.name not in flags
            continue
        flag = f"--{field.name.replace('_', '-')}"
        assert flag in flags[field.name][0].option_strings
        assert flags[field.name][0].help == field.metadata["help"]
        if field.default is not dataclasses.MISSING and flag not in required:
            assert getattr(args, field.name) == field.default, field.name


def test_defaults_come_from_finetune_config() -> None:
    args = build_parser().parse_args(["finetune", *REQUIRED["finetune"][1]])
    defaults = {f.name: f.default for f in dataclasses.fields(FinetuneConfig)}
    assert args.batch_size == defaults["batch_size"]
    assert args.learning_rate == defaults["learning_rate"]
    assert args.early_stopping_patience == defaults["early_stopping_patience"]
    assert args.progress is True and args.resume is False and args.labels is None
    assert args.output_dir == Path("out") and args.train_data == Path("train.csv")


def test_flags_build_the_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = []

    def fake_finetune(config: FinetuneConfig) -> Path:
        seen.append(config)
        (tmp_path / "training_summary.json").write_text(
            json.dumps({"steps": 1, "stop_reason": "x", "eval": None})
        )
        return tmp_path

    monkeypatch.setattr(cli, "finetune", fake_finetune)
    assert (
        main(
            [
                "finetune",
                "--output-dir",
                "o",
                "--train-data",
                "t.csv",
                "--batch-size",
                "7",
                "--labels",
                "b,a",
                "c",
                "--no-progress",
                "--resume",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    expected = FinetuneConfig(
        output_dir=Path("o"),
        train_data=Path("t.csv"),
        batch_size=7,
        labels=["b", "a", "c"],
        progress=False,
        resume=True,
        device="cpu",
    )
    assert seen == [expected]

    def fake_compile(config: CompileConfig) -> Path:
        seen.append(config)
        (tmp_path / "compile_report.json").write_text(json.dumps({"onnx_parity": {}, "tensorrt": {}}))
        return tmp_path

    monkeypatch.setattr(cli, "compile_model", fake_compile)
    assert (
        main(
            [
                "compile",
                "--model-dir",
                "m",
                "--output-dir",
                "o",
                "--tensorrt",
                "off",
                "--trt-batch",
                "1",
                "4",
                "16",
            ]
        )
        == 0
    )
    assert seen[-1] == CompileConfig(
        model_dir=Path("m"),
        output_dir=Path("o"),
        tensorrt="off",
        profile=OptimizationProfile(min_batch=1, opt_batch=4, max_batch=16),
    )
    assert seen[-1].profile.max_sequence == OptimizationProfile().max_sequence


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["finetune", "--batch-size", "many"], "--batch-size"),
        (["finetune", "--device", "gpu"], "--device"),
        (["compile", "--tensorrt", "maybe"], "--tensorrt"),
        (["evaluate", "--alpha", "low"], "--alpha"),
    ],
)
def test_bad_flag_value_exits_2_naming_the_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command, *bad = argv
    with pytest.raises(SystemExit) as exit_info:
        main([command, *REQUIRED[command][1], *bad])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: argument" in error and flag in error


def test_a_config_check_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["finetune", *REQUIRED["finetune"][1], "--batch-size", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: batch_size must be >= 1, got 0"


def test_demo_data_then_finetune_and_evaluate(
    tmp_path: Path, tiny_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "demo-data",
                "--output",
                str(tmp_path / "d"),
                "--n-train",
                "64",
                "--n-eval",
                "32",
                "--n-golden",
                "8",
            ]
        )
        == 0
    )
    paths = json.loads(capsys.readouterr().out)
    assert pd.read_parquet(paths["b_train"]).shape == (64, 3)
    assert (
        main(
            [
                "finetune",
                "--output-dir",
                str(tmp_path / "m"),
                "--train-data",
                paths["a_train"],
                "--eval-data",
                paths["a_eval"],
                "--base-model",
                str(tiny_base),
                "--max-steps",
                "3",
                "--no-progress",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 3
    assert (
        main(
            [
                "evaluate",
                "--challenger",
                str(tmp_path / "m"),
                "--eval-data",
                paths["a_eval"],
                "--min-accuracy",
                "1.01",
                "--output",
                str(tmp_path / "v.json"),
                "--fail-on-reject",
            ]
        )
        == 1
    )
    assert json.loads((tmp_path / "v.json").read_text())["decision"] == "reject"


def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["finetune", "--output-dir", str(tmp_path / "m"), "--train-data", str(tmp_path / "none.csv")])
        == 2
    )
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'none.csv'}: no such file or folder"
    pd.DataFrame({"text": ["a"], "label": ["billing"]}).to_csv(tmp_path / "one.csv", index=False)
    assert (
        main(
            [
                "finetune",
                "--output-dir",
                str(tmp_path / "m"),
                "--train-data",
                str(tmp_path / "one.csv"),
                "--base-model",
                str(tmp_path / "missing-model"),
            ]
        )
        == 2
    )
    assert "only one class" in capsys.readouterr().err
    pd.DataFrame({"text": ["a", "b"], "label": ["billing", "account"]}).to_csv(
        tmp_path / "two.csv", index=False
    )
    assert (
        main(
            [
                "finetune",
                "--output-dir",
                str(tmp_path / "m"),
                "--train-data",
                str(tmp_path / "two.csv"),
                "--base-model",
                str(tmp_path / "missing-model"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
