"""`pitcrew secrets`: the secret files compose mounts, 0600 in a 0700 folder, never overwritten."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from pitcrew.cli import main
from pitcrew.stack.secret_files import (
    ALL_SECRET_FILES,
    COMPOSE_SECRET_NAMES,
    check_secret_files,
    write_secret_files,
)
from pitcrew.stack.topology import SECRET_NAMES


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_writes_every_file_0600_in_a_0700_folder(tmp_path: Path, loose_umask: None) -> None:
    folder = tmp_path / "deploy" / "secrets"
    written = write_secret_files(folder)
    assert sorted(p.name for p in written) == sorted(ALL_SECRET_FILES)
    assert set(SECRET_NAMES) <= set(COMPOSE_SECRET_NAMES)
    assert _mode(folder) == 0o700
    assert all(_mode(p) == 0o600 for p in written)
    assert check_secret_files(folder) == []


def test_grafana_has_a_token_of_its_own(tmp_path: Path) -> None:
    # Grafana's contact point must not hold Alertmanager's token (pitcrew.alerts.auth): a separate file.
    assert "grafana_token" in SECRET_NAMES  # the Airflow services read it too (the webhook plugin)
    written = {p.name for p in write_secret_files(tmp_path)}
    assert {"webhook_token", "grafana_token"} <= written
    assert (tmp_path / "grafana_token").read_text() != (tmp_path / "webhook_token").read_text()
    assert len((tmp_path / "grafana_token").read_text()) >= 32


def test_an_existing_open_folder_is_closed(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o755)
    write_secret_files(folder)
    assert _mode(folder) == 0o700


def test_never_overwrites_and_fills_in_what_is_missing(tmp_path: Path) -> None:
    write_secret_files(tmp_path)
    before = {n: (tmp_path / n).read_text() for n in ALL_SECRET_FILES}
    assert write_secret_files(tmp_path) == []
    (tmp_path / "webhook_token").unlink()
    (tmp_path / "pgpass").unlink()
    assert sorted(p.name for p in write_secret_files(tmp_path)) == ["pgpass", "webhook_token"]
    after = {n: (tmp_path / n).read_text() for n in ALL_SECRET_FILES}
    assert after["webhook_token"] != before["webhook_token"]
    assert {n: v for n, v in after.items() if n != "webhook_token"} == {
        n: v for n, v in before.items() if n != "webhook_token"
    }  # pgpass is derived again from the password that was kept


def test_values(tmp_path: Path) -> None:
    write_secret_files(tmp_path)
    key = (tmp_path / "airflow_fernet_key").read_text()
    assert Fernet(key.encode()).decrypt(Fernet(key.encode()).encrypt(b"x")) == b"x"
    # No trailing newline: Airflow's *_CMD options take the command's output verbatim.
    assert all(not (tmp_path / n).read_text().endswith("\n") for n in COMPOSE_SECRET_NAMES)
    assert len((tmp_path / "redis_password").read_text()) >= 32
    password = (tmp_path / "postgres_password").read_text()
    assert (tmp_path / "pgpass").read_text() == f"*:*:*:airflow:{password}\n"
    minio = (tmp_path / "minio_root_password").read_text()
    assert f"aws_secret_access_key = {minio}\n" in (tmp_path / "aws_credentials").read_text()


def test_check_names_missing_and_open_files(tmp_path: Path) -> None:
    assert check_secret_files(tmp_path / "nowhere")[0].startswith(f"{tmp_path / 'nowhere'} is not a folder")
    write_secret_files(tmp_path)
    (tmp_path / "redis_password").unlink()
    (tmp_path / "pgpass").chmod(0o640)
    assert check_secret_files(tmp_path) == [
        f"missing secret file {tmp_path / 'redis_password'}",
        f"{tmp_path / 'pgpass'} is readable by group or others (chmod 600 it)",
    ]


def test_cli_refuses_a_file_as_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_folder = tmp_path / "secrets"
    not_a_folder.write_text("x")
    assert main(["secrets", "--dir", str(not_a_folder)]) == 2
    assert f"--dir {not_a_folder} is a file" in capsys.readouterr().err
    assert not_a_folder.read_text() == "x"


def test_cli_writes_then_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "secrets"
    assert main(["secrets", "--dir", str(folder), "--check"]) == 1
    assert main(["secrets", "--dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"{len(ALL_SECRET_FILES)} written, 0 already present" in out
    assert main(["secrets", "--dir", str(folder)]) == 0
    assert f"0 written, {len(ALL_SECRET_FILES)} already present" in capsys.readouterr().out
    assert main(["secrets", "--dir", str(folder), "--check"]) == 0
    (folder / "airflow_jwt_secret").unlink()
    assert main(["secrets", "--dir", str(folder), "--check"]) == 1
    assert "missing secret file" in capsys.readouterr().err
