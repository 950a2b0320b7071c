"""`pitcrew airflow-init`'s pure steps: the shared-storage check and the users' password file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pitcrew.settings import REPO_ROOT, Settings
from pitcrew.stack.airflow_init import check_shared_storage, ensure_passwords


def models_file(folder: Path, **paths: str) -> Path:
    """A valid one-model file whose path fields are ``paths`` (train_data, inference_log, feedback, ...)."""
    fields = {"train_data": "data/train.parquet", "inference_log": "log", "feedback": "fb", **paths}
    lines = ["models:", "  - name: textclf", "    labels: [a, b]"]
    lines += [f"    {name}: {value}" for name, value in fields.items()]
    path = folder / "models.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


class TestCheckSharedStorage:
    def test_nothing_to_check_with_the_local_executor(self, tmp_path: Path) -> None:
        path = models_file(tmp_path, train_data="/elsewhere/train.parquet")
        settings = Settings(
            home=tmp_path / "home", models_file=path, model_repository=Path("/elsewhere/repo")
        )
        assert check_shared_storage(settings, "LocalExecutor") == []

    def test_paths_outside_the_shared_roots_are_listed(self, tmp_path: Path) -> None:
        home = tmp_path / "home"
        path = models_file(
            tmp_path,
            train_data=str(home / "data" / "train.parquet"),
            inference_log=str(tmp_path / "local" / "log"),
            feedback=str(home / "feedback"),
            golden_data=str(tmp_path / "golden.parquet"),
        )
        settings = Settings(home=home, models_file=path)
        assert check_shared_storage(settings, "CeleryExecutor") == [
            f"textclf.golden_data {tmp_path / 'golden.parquet'}",
            f"textclf.inference_log {tmp_path / 'local' / 'log'}",
        ]

    def test_relative_paths_resolve_against_the_models_file(self, tmp_path: Path) -> None:
        # The file lies in the home: its relative paths are on the shared storage.
        home = tmp_path / "home"
        home.mkdir()
        settings = Settings(home=home, models_file=models_file(home))
        assert check_shared_storage(settings, "CeleryExecutor") == []
        # Beside the home: the same relative paths are not.
        settings = Settings(home=home, models_file=models_file(tmp_path))
        assert check_shared_storage(settings, "CeleryExecutor") == [
            f"textclf.train_data {tmp_path / 'data' / 'train.parquet'}",
            f"textclf.inference_log {tmp_path / 'log'}",
            f"textclf.feedback {tmp_path / 'fb'}",
        ]

    def test_everything_inside_passes(self, tmp_path: Path) -> None:
        home = tmp_path / "home"
        path = models_file(
            tmp_path,
            train_data=str(home / "data" / "train.parquet"),
            inference_log=str(home / "log"),
            feedback=str(home / "fb"),
            golden_data=str(home / "golden.parquet"),
        )
        assert check_shared_storage(Settings(home=home, models_file=path), "CeleryExecutor") == []

    def test_uris_are_accepted(self, tmp_path: Path) -> None:
        path = models_file(
            tmp_path,
            train_data="s3://bucket/train.parquet",
            inference_log="s3://bucket/log",
            feedback="gs://bucket/fb",
        )
        assert (
            check_shared_storage(Settings(home=tmp_path / "home", models_file=path), "CeleryExecutor") == []
        )

    def test_declared_shared_dirs_replace_the_default_roots(self, tmp_path: Path) -> None:
        nfs = tmp_path / "nfs"
        path = models_file(
            tmp_path,
            train_data=str(nfs / "train.parquet"),
            inference_log=str(nfs / "log"),
            feedback=str(nfs / "fb"),
        )
        settings = Settings(
            home=tmp_path / "home", models_file=path, model_repository=nfs / "repo", shared_dirs=[nfs]
        )
        assert check_shared_storage(settings, "CeleryExecutor") == []
        # The home is no longer shared once the roots are declared.
        settings = Settings(
            home=tmp_path / "home", models_file=path, model_repository=tmp_path / "home" / "repo",
            shared_dirs=[nfs],
        )  # fmt: skip
        assert check_shared_storage(settings, "CeleryExecutor") == [
            f"model repository {tmp_path / 'home' / 'repo'}"
        ]

    def test_model_repository_outside_is_reported(self, tmp_path: Path) -> None:
        home = tmp_path / "home"
        path = models_file(
            tmp_path, train_data=str(home / "t.csv"), inference_log=str(home / "l"), feedback=str(home / "f")
        )
        settings = Settings(
            home=home, models_file=path, model_repository=tmp_path / "repo", shared_dirs=[home]
        )
        assert check_shared_storage(settings, "CeleryExecutor") == [f"model repository {tmp_path / 'repo'}"]

    def test_escaping_the_root_is_outside(self, tmp_path: Path) -> None:
        home = tmp_path / "home"
        (home / "data").mkdir(parents=True)
        (tmp_path / "private").mkdir()
        (home / "data" / "link").symlink_to(tmp_path / "private")
        path = models_file(
            tmp_path,
            train_data=str(home / ".." / "train.parquet"),
            inference_log=str(home / "data" / "link" / "log"),
            feedback=str(home / "fb"),
        )
        assert check_shared_storage(Settings(home=home, models_file=path), "CeleryExecutor") == [
            f"textclf.train_data {home / '..' / 'train.parquet'}",
            f"textclf.inference_log {home / 'data' / 'link' / 'log'}",
        ]

    def test_the_shipped_models_file_is_on_the_default_shared_storage(self) -> None:
        settings = Settings(home=REPO_ROOT / ".pitcrew", models_file=REPO_ROOT / "models.yaml")
        assert check_shared_storage(settings, "CeleryExecutor") == []


class TestEnsurePasswords:
    def test_creates_a_private_file_with_one_password_per_user(self, tmp_path: Path) -> None:
        path = tmp_path / "airflow" / "passwords.json"
        assert ensure_passwords(path, "admin:admin,approver:op") == ["admin", "approver"]
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        passwords = json.loads(path.read_text())
        assert set(passwords) == {"admin", "approver"}
        assert all(len(p) >= 12 for p in passwords.values())
        assert passwords["admin"] != passwords["approver"]

    def test_idempotent(self, tmp_path: Path) -> None:
        path = tmp_path / "passwords.json"
        ensure_passwords(path, "admin:admin,approver:op")
        before = json.loads(path.read_text())
        assert ensure_passwords(path, "admin:admin,approver:op") == []
        assert json.loads(path.read_text()) == before

    def test_adds_a_new_user_and_keeps_the_others(self, tmp_path: Path) -> None:
        path = tmp_path / "passwords.json"
        ensure_passwords(path, "admin:admin,approver:op")
        before = json.loads(path.read_text())
        assert ensure_passwords(path, "admin:admin, approver:op ,viewer:viewer,") == ["viewer"]
        after = json.loads(path.read_text())
        assert set(after) == {"admin", "approver", "viewer"}
        assert {k: after[k] for k in before} == before

    def test_a_readable_file_is_made_private(self, tmp_path: Path) -> None:
        path = tmp_path / "passwords.json"
        path.write_text(json.dumps({"admin": "kept"}))
        path.chmod(0o644)
        assert ensure_passwords(path, "admin:admin") == []
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        assert json.loads(path.read_text()) == {"admin": "kept"}

    @pytest.mark.parametrize("users", ["", " , "])
    def test_no_users_writes_an_empty_file(self, tmp_path: Path, users: str) -> None:
        path = tmp_path / "passwords.json"
        assert ensure_passwords(path, users) == []
        assert json.loads(path.read_text()) == {}
