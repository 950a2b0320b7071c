"""The MLflow registry contract (docs/design.md, "Registry"), on top of an ``MlflowClient`` the caller provides.

One registered model per served model. Aliases: ``champion`` (serving), ``challenger`` (candidate),
``previous`` (the last champion). The MLflow version number is also the Triton version number, so what
is registered and what is served can always be matched. Each version carries lineage tags.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"

#: Artifact paths inside the registering run.
SERVING_PATH = "serving"
CHECKPOINT_PATH = "checkpoint"
REPORTS_PATH = "reports"
#: The rows a version was trained on: the next drift check's reference and the next fine-tune's replay.
TRAINING_DATA_PATH = "data"
TRAINING_DATA_FILE = "train.parquet"


class RegistryError(RuntimeError):
    """The registry is unreachable or does not hold what the pipeline expects."""


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: int
    run_id: str
    tags: dict[str, str]


def _tag_value(value: Any) -> str:
    # MLflow tags are strings (max 8000 chars in most stores): JSON for structures, truncated with a marker.
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 7900 else text[:7900] + "...(truncated)"


def experiment_id(client: MlflowClient, model: str) -> str:
    name = f"pitcrew/{model}"
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def ensure_registered_model(client: MlflowClient, model: str) -> None:
    try:
        client.get_registered_model(model)
    except MlflowException:
        client.create_registered_model(
            model, description=f"Served by Triton as '{model}'; maintained by pitcrew."
        )


def register_version(
    client: MlflowClient,
    model: str,
    *,
    serving_dir: Path,
    checkpoint_dir: Path | None = None,
    reports_dir: Path | None = None,
    training_data: Path | None = None,
    tags: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    alias: str = CHALLENGER,
    run_name: str | None = None,
) -> RegisteredVersion:
    """Log the artifacts in a run of experiment ``pitcrew/<model>`` and register them as a new version.

    :param serving_dir: the compiled artifact (docs/model-artifact.md); the version's source.
    :param checkpoint_dir: the torch checkpoint the next fine-tune starts from.
    :param tags: lineage (docs/design.md, "Registry"); structured values are stored as JSON.
    """
    if not (serving_dir / "model.onnx").exists() and not (serving_dir / "model.plan").exists():
        raise RegistryError(
            f"{serving_dir} holds no model.onnx or model.plan: nothing deployable to register"
        )
    str_tags = {k: _tag_value(v) for k, v in (tags or {}).items()}
    remove_half_published(client, model, str_tags.get("airflow_dag_run_id", ""))
    # A name that says which run made the version, so the experiment's list tells runs apart.
    run_name = run_name or "-".join(
        part for part in (model, str_tags.get("trigger", ""), str_tags.get("airflow_dag_run_id", "")) if part
    )
    run = client.create_run(experiment_id(client, model), run_name=run_name[:250], tags=str_tags)
    run_id = run.info.run_id
    try:
        client.log_artifacts(run_id, str(serving_dir), SERVING_PATH)
        if checkpoint_dir is not None:
            client.log_artifacts(run_id, str(checkpoint_dir), CHECKPOINT_PATH)
        if reports_dir is not None and reports_dir.exists():
            client.log_artifacts(run_id, str(reports_dir), REPORTS_PATH)
        if training_data is not None:
            _log_training_data(client, run_id, Path(training_data))
        for key, value in (metrics or {}).items():
            client.log_metric(run_id, key, float(value))
        ensure_registered_model(client, model)
        version = client.create_model_version(
            model, source=f"runs:/{run_id}/{SERVING_PATH}", run_id=run_id, tags=str_tags
        )
        client.set_registered_model_alias(model, alias, version.version)
    except BaseException:
        try:
            client.set_terminated(run_id, status="FAILED")
        except Exception as exc:  # noqa: BLE001 - MLflow may be the failure: the next try cleans up
            log.warning("could not mark run %s of %s FAILED: %s", run_id, model, exc)
        raise
    try:
        client.set_terminated(run_id, status="FINISHED")
    except Exception as exc:  # noqa: BLE001 - the version is published; the next register closes the run
        log.warning("%s version %s is registered, but closing its run %s failed: %s", model, version.version, run_id, exc)
    log.info("registered %s version %s (run %s) as %s", model, version.version, run_id, alias)
    return RegisteredVersion(model, int(version.version), run_id, str_tags)


def remove_half_published(client: MlflowClient, model: str, dag_run_id: str) -> list[int]:
    """Undo what an interrupted try of the same Airflow run left half done; return the versions deleted.

    A try that dies after MLflow created its version but before the alias was set (MLflow stopped, the
    worker killed) leaves a version no alias names, whose run never finished: it is deleted here, so a
    retry leaves one version of the run, not an orphan beside it. A run left RUNNING is closed: FAILED,
    or FINISHED when an alias names its version (only closing it had failed). A version an alias names,
    or whose run finished, is never touched.
    """
    experiment = client.get_experiment_by_name(f"pitcrew/{model}")
    if not dag_run_id or "'" in dag_run_id or experiment is None:
        return []
    unfinished = {
        run.info.run_id: run.info.status
        for run in client.search_runs(
            [experiment.experiment_id], f"tags.airflow_dag_run_id = '{dag_run_id}' and attributes.status != 'FINISHED'"
        )
    }
    if not unfinished:
        return []
    try:
        named = {int(v) for v in client.get_registered_model(model).aliases.values()}
    except MlflowException:  # no registered model yet: no version either
        named = set()
    deleted, published = [], set()
    for mv in client.search_model_versions(f"name='{model}'"):
        if mv.run_id not in unfinished:
            continue
        if int(mv.version) in named:
            published.add(mv.run_id)
        else:
            client.delete_model_version(model, mv.version)
            deleted.append(int(mv.version))
    closed = [run_id for run_id, status in unfinished.items() if status == "RUNNING"]
    for run_id in closed:
        client.set_terminated(run_id, status="FINISHED" if run_id in published else "FAILED")
    if deleted or closed:
        log.warning("%s: an earlier try of %s left runs %s unfinished; deleted their unpublished versions %s",
                    model, dag_run_id, sorted(closed), deleted)  # fmt: skip
    return deleted


def _log_training_data(client: MlflowClient, run_id: str, path: Path) -> None:
    import tempfile

    import pandas as pd

    suffix = path.suffix.lower()
    frame = (
        pd.read_csv(path)
        if suffix == ".csv"
        else pd.read_json(path, lines=True)
        if suffix in (".json", ".jsonl")
        else pd.read_parquet(path)
    )
    with tempfile.TemporaryDirectory() as tmp:
        frame[["text", "label"]].to_parquet(Path(tmp) / TRAINING_DATA_FILE, index=False)
        client.log_artifacts(run_id, tmp, TRAINING_DATA_PATH)


def training_snapshot(client: MlflowClient, model: str, version: int, dest: Path) -> Path | None:
    """The rows ``version`` was trained on, downloaded to ``dest``; None for versions registered without them."""
    run_id = client.get_model_version(model, str(version)).run_id
    if not any(
        a.path.endswith(TRAINING_DATA_FILE) for a in client.list_artifacts(run_id, TRAINING_DATA_PATH)
    ):
        return None
    dest.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, f"{TRAINING_DATA_PATH}/{TRAINING_DATA_FILE}", str(dest)))


def champion_training_snapshot(client: MlflowClient, model: str, dest: Path) -> Path | None:
    """The rows the current champion learned from (the drift reference and the fine-tune's replay rows).

    None when there is no champion yet, or it was registered without a snapshot; callers then use the
    models file's ``train_data``.
    """
    version = alias_version(client, model, CHAMPION)
    return None if version is None else training_snapshot(client, model, version, dest)


def alias_version(client: MlflowClient, model: str, alias: str) -> int | None:
    """The version an alias points to, or None when the alias (or the model) does not exist."""
    try:
        return int(client.get_model_version_by_alias(model, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def get_version(client: MlflowClient, model: str, version: int) -> RegisteredVersion:
    mv = client.get_model_version(model, str(version))
    return RegisteredVersion(model, int(mv.version), mv.run_id, dict(mv.tags))


def recent_history(client: MlflowClient, model: str, *, before: int, limit: int = 3) -> list[str]:
    """One line per recent version below ``before`` that did not simply serve: rejected, rolled back,
    restored or promoted, with who and why, newest first (what an approver should know)."""
    versions = sorted(
        (int(mv.version), dict(mv.tags)) for mv in client.search_model_versions(f"name='{model}'")
    )
    lines = []
    for version, tags in reversed([v for v in versions if v[0] < before]):
        if tags.get("rejected_by"):
            lines.append(f"v{version} rejected ({tags.get('rejection_reason') or tags['rejected_by']}, "
                         f"{tags.get('rejected_at') or 'time unknown'})")  # fmt: skip
        elif tags.get("rolled_back"):
            lines.append(f"v{version} rolled back after its swap: {tags['rolled_back']}")
        elif tags.get("rolled_back_by"):
            lines.append(f"v{version} rolled back by {tags['rolled_back_by']} at {tags.get('rolled_back_at', '')}")
        elif tags.get("promoted_at"):
            lines.append(f"v{version} promoted at {tags['promoted_at']}, approved by {tags.get('approver') or 'n/a'}")
        if len(lines) >= limit:
            break
    return lines


def set_version_tags(client: MlflowClient, model: str, version: int, tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(model, str(version), key, _tag_value(value))


def download(client: MlflowClient, model: str, version: int, path: str, dest: Path) -> Path:
    """Download one artifact folder (``serving`` or ``checkpoint``) of a version into ``dest``."""
    run_id = client.get_model_version(model, str(version)).run_id
    dest.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(dest)))


def promote(client: MlflowClient, model: str, version: int, *, approver: str | None) -> dict[str, int | None]:
    """Make ``version`` the champion; the old champion becomes ``previous``; record who approved.

    Only called after the new version serves in Triton and passed its canary, so the registry never
    names a champion that Triton does not serve.
    """
    old = alias_version(client, model, CHAMPION)
    if old is not None and old != version:
        client.set_registered_model_alias(model, PREVIOUS, str(old))
    client.set_registered_model_alias(model, CHAMPION, str(version))
    if alias_version(client, model, CHALLENGER) == version:
        client.delete_registered_model_alias(model, CHALLENGER)
    set_version_tags(
        client,
        model,
        version,
        {"approver": approver or "", "promoted_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
    )
    return {CHAMPION: version, PREVIOUS: old if old != version else alias_version(client, model, PREVIOUS)}


def restore_previous(client: MlflowClient, model: str, *, approver: str | None) -> dict[str, int]:
    """Rollback in the registry: ``previous`` becomes ``champion`` again, the demoted one becomes ``previous``."""
    previous = alias_version(client, model, PREVIOUS)
    champion = alias_version(client, model, CHAMPION)
    if previous is None:
        raise RegistryError(f"{model} has no '{PREVIOUS}' alias: there is nothing to roll back to")
    client.set_registered_model_alias(model, CHAMPION, str(previous))
    if champion is not None:
        client.set_registered_model_alias(model, PREVIOUS, str(champion))
        set_version_tags(
            client, model, champion, {"rolled_back_by": approver or "", "rolled_back_at": _now()}
        )
    set_version_tags(client, model, previous, {"restored_by": approver or "", "restored_at": _now()})
    return {CHAMPION: previous, PREVIOUS: champion if champion is not None else previous}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
