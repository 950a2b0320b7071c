"""`pitcrew stack --profile` and `pitcrew airflow-init` on the command line (nothing is started)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitcrew.cli import main
from pitcrew.settings import get_settings
from pitcrew.stack import airflow_init as airflow_init_module
from pitcrew.stack.base import StackError
from pitcrew.stack.processes import ProcessRegistry


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith("PITCREW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PITCREW_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        yield tmp_path / "home"
    finally:
        get_settings.cache_clear()


def test_unknown_profile_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["stack", "status", "--profile", "bogus"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --profile: invalid choice: 'bogus'" in err
    assert "'embedded'" in err and "'distributed'" in err


def test_status_refuses_the_other_profile_while_one_runs(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home.mkdir(parents=True)
    (home / "profile").write_text("distributed")
    registry = ProcessRegistry(home)
    registry.start("redis", [sys.executable, "-c", "import time; time.sleep(30)"], {}, home)
    try:
        assert main(["stack", "status", "--profile", "embedded"]) == 2
    finally:
        registry.stop("redis", timeout_s=5)
    err = capsys.readouterr().err
    assert err.startswith("pitcrew stack: error: ")
    assert "up with the distributed profile; run `pitcrew stack down`" in err


def test_airflow_init_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["airflow-init", "--help"])
    assert exited.value.code == 0
    assert "usage: pitcrew airflow-init" in capsys.readouterr().out


def test_airflow_init_prints_each_step(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = []

    def fake(settings):
        seen.append(settings.home_dir)
        return ["database migrated", "pools: p=1"]

    monkeypatch.setattr(airflow_init_module, "airflow_init", fake)
    assert main(["airflow-init"]) == 0
    assert seen == [home]
    assert capsys.readouterr().out.splitlines() == [
        "airflow-init: database migrated",
        "airflow-init: pools: p=1",
    ]


def test_airflow_init_failure_is_exit_2_with_the_reason(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake(settings):  # noqa: ARG001
        raise StackError("these paths are not on the shared storage: textclf.feedback /x")

    monkeypatch.setattr(airflow_init_module, "airflow_init", fake)
    assert main(["airflow-init"]) == 2
    assert capsys.readouterr().err.strip() == (
        "pitcrew airflow-init: error: these paths are not on the shared storage: textclf.feedback /x"
    )


def test_shared_dirs_from_the_environment_reach_the_command(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compose and the stack hand the shared storage to `pitcrew airflow-init` as JSON in the environment."""
    monkeypatch.setenv("PITCREW_SHARED_DIRS", json.dumps([str(tmp_path / "nfs")]))
    seen = []
    monkeypatch.setattr(airflow_init_module, "airflow_init", lambda s: seen.append(s.shared_roots) or [])
    assert main(["airflow-init"]) == 0
    assert seen == [[tmp_path / "nfs"]]
