"""The models file: one entry per served model, validated on load.

DAGs are generated per entry, so each model gets its own runs and never blocks another. Paths in the
file are relative to the file's own folder unless absolute; URIs (``s3://...``) are kept as given.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pitcrew.rollout.plan import Rollout

Runtime = Literal["python-onnxruntime", "onnxruntime", "tensorrt"]
#: Whether compile builds a TensorRT engine: ``auto`` where TensorRT and a GPU exist, ``require`` or ``off``.
TensorRTMode = Literal["auto", "off", "require"]
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
#: An Airflow connection id (what ``AIRFLOW_CONN_<ID>`` and the UI accept).
_CONN_ID = r"^[A-Za-z0-9_.-]{1,250}$"
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")


class ModelsFileError(ValueError):
    """The models file is missing, unreadable or invalid; the message names the field."""


class Thresholds(BaseModel):
    """Decision thresholds of one model; defaults are conservative so automation acts rarely."""

    model_config = ConfigDict(extra="forbid")

    drift_alpha: float = Field(0.01, gt=0, lt=1, description="Family-wise significance level of drift tests.")
    drift_min_effect: float = Field(
        0.1, ge=0, description="Minimum effect size for a column to count as drifted."
    )
    min_window_rows: int = Field(
        200, ge=1, description="Fewer current rows than this is 'insufficient data'."
    )
    min_accuracy_gain: float = Field(0.0, description="Challenger must beat the champion by at least this.")
    max_golden_drop: float = Field(0.02, ge=0, description="Golden-set accuracy may fall at most this much.")
    latency_p95_budget_ms: float = Field(250.0, gt=0, description="Hot-swap verification latency budget.")
    canary_failure_ratio: float = Field(0.01, ge=0, le=1, description="Max failed-request ratio in canary.")
    canary_p99_latency_s: float = Field(1.0, gt=0, description="Max p99 latency in canary.")
    canary_min_confidence: float = Field(
        0.5, ge=0, le=1, description="Min mean top-class confidence in canary."
    )
    canary_initial_delay_s: float = Field(30.0, ge=0, description="Wait before the first canary measurement.")
    canary_interval_s: float = Field(15.0, ge=0, description="Seconds between canary measurements.")
    canary_count: int = Field(4, ge=1, description="Canary measurements per metric.")
    canary_failure_limit: int = Field(0, ge=0, description="Failed measurements tolerated before rollback.")
    approval_timeout_h: float = Field(
        24.0, gt=0, description="An unanswered approval is a rejection after this."
    )
    window_hours: float = Field(24.0, gt=0, description="How much recent traffic a run looks at.")
    min_live_accuracy: float | None = Field(
        None, ge=0, le=1, description="ModelAccuracyLow fires below this measured (feedback) accuracy; null: never."
    )
    accuracy_min_rows: int = Field(
        100, ge=1, description="Labelled requests a version needs in the window before its accuracy alerts."
    )
    accuracy_window_hours: float = Field(
        24.0, gt=0, description="Measured accuracy covers requests served in this many past hours."
    )
    approval_reminder_after_h: float | None = Field(
        None, gt=0, description="Remind the notify channels of a request still unanswered after this; "
        "default: half of approval_timeout_h.",
    )

    @model_validator(mode="after")
    def _reminder_before_timeout(self) -> Thresholds:
        if self.approval_reminder_after_h is not None and self.approval_reminder_after_h >= self.approval_timeout_h:
            raise ValueError(
                f"approval_reminder_after_h ({self.approval_reminder_after_h}) must be less than "
                f"approval_timeout_h ({self.approval_timeout_h}): a reminder after the timeout reaches nobody"
            )
        return self

    @property
    def reminder_after_h(self) -> float:
        """When a still unanswered approval is reminded, in hours after it was asked."""
        if self.approval_reminder_after_h is not None:
            return self.approval_reminder_after_h
        return self.approval_timeout_h / 2


class WebhookChannel(BaseModel):
    """A generic HTTP webhook: pitcrew POSTs a JSON body (``HttpHook``; auth and headers in the connection)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["webhook"]
    conn_id: str = Field(pattern=_CONN_ID, description="Airflow connection of type http: the receiver's URL.")
    endpoint: str | None = Field(None, description="Path appended to the connection's URL.")


class SlackChannel(BaseModel):
    """A Slack incoming webhook (``SlackWebhookHook``); the webhook token is the connection's password."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["slack"]
    conn_id: str = Field(pattern=_CONN_ID, description="Airflow connection of type slackwebhook.")


class EmailChannel(BaseModel):
    """Email through an SMTP server (``SmtpHook``); server, login and password in the connection."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["email"]
    conn_id: str = Field("smtp_default", pattern=_CONN_ID, description="Airflow connection of type smtp.")
    to: list[str] = Field(min_length=1, description="Recipients.")
    from_email: str | None = Field(None, description="Sender; default: the connection's extra from_email.")

    @field_validator("to", mode="before")
    @classmethod
    def _one_address(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not _EMAIL.match(v)]
        if bad:
            raise ValueError(f"not an email address: {', '.join(bad)}")
        return value

    @field_validator("from_email")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError(f"not an email address: {value}")
        return value


#: Where a model's approvals are announced (``notify`` in the models file); secrets stay in the connections.
NotifyChannel = Annotated[WebhookChannel | SlackChannel | EmailChannel, Field(discriminator="type")]


class Training(BaseModel):
    """Fine-tuning settings of one model (bootstrap, maintenance and nightly runs)."""

    model_config = ConfigDict(extra="forbid")

    epochs: float = Field(3.0, gt=0, description="Passes over the training rows.")
    learning_rate: float = Field(
        5e-5, gt=0, description="AdamW learning rate; the usual BERT fine-tuning rate."
    )
    batch_size: int = Field(32, ge=1, description="Rows per optimisation step.")
    time_budget_s: float | None = Field(None, gt=0, description="Stop cleanly after this many seconds.")


class ModelEntry(BaseModel):
    """One served model."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Triton model name and MLflow registered model name.")
    runtime: Runtime = Field(
        "python-onnxruntime",
        description="python-onnxruntime: one Python-backend model; onnxruntime / tensorrt: a Python front "
        "model calling a <name>_core model of Triton's ORT / TensorRT backend.",
    )
    tensorrt: TensorRTMode | None = Field(
        None,
        description="Engine build: auto (runtime tensorrt degrades to the ONNX core, reason recorded, when "
        "TensorRT is absent or fails parity), require (fail the run), off. Default: require for runtime "
        "tensorrt, auto otherwise.",
    )
    base_model: str = Field(
        "minilm", description="Base model dir, hub id, or 'minilm' (the packaged MiniLM)."
    )
    train_data: str = Field(description="Reference/training data (Parquet, CSV or JSONL; path or URI).")
    inference_log: str = Field(description="Inference log dataset root (path or URI).")
    feedback: str = Field(description="Feedback labels dataset root (path or URI).")
    feedback_max_age_days: int = Field(
        30, ge=1, le=366, description="Labels for requests served longer ago than this are rejected."
    )
    golden_data: str | None = Field(
        None, description="Fixed golden set (text, label) every candidate is judged on."
    )
    labels: list[str] = Field(min_length=2, description="Class names, in output order.")
    approvers: list[str] = Field(
        default_factory=list, description="Users who may approve; empty = any admin."
    )
    schedule: str | None = Field("0 2 * * *", description="Nightly retrain cron, or null for none.")
    max_auto_runs_per_day: int = Field(3, ge=0, description="Cap on alert-triggered runs per day.")
    alert_cooldown_s: int = Field(
        3600, ge=0, description="Same alert fingerprint within this starts nothing."
    )
    one_run_per_incident: bool = Field(
        True,
        description="An alert about the model while an alert-started run is in flight, or within "
        "alert_cooldown_s of one, attaches to that run (decision 'attached') instead of starting another.",
    )
    thresholds: Thresholds = Field(default_factory=Thresholds)
    training: Training = Field(default_factory=Training)
    rollout: Rollout = Field(
        default_factory=Rollout, description="How an approved challenger reaches traffic (pitcrew/rollout/plan.py)."
    )
    notify: list[NotifyChannel] = Field(
        default_factory=list,
        description="Channels told when an approval waits, before its timeout and when it times out; "
        "empty: nobody is told.",
    )

    @property
    def tensorrt_mode(self) -> TensorRTMode:
        """The effective engine build mode (``tensorrt`` or its runtime's default)."""
        if self.tensorrt is not None:
            return self.tensorrt
        return "require" if self.runtime == "tensorrt" else "auto"

    @field_validator("tensorrt", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted `off` as false.
        return "off" if value is False else value

    @model_validator(mode="after")
    def _tensorrt_consistent(self) -> ModelEntry:
        if self.runtime == "tensorrt" and self.tensorrt == "off":
            raise ValueError("runtime tensorrt needs an engine build: set tensorrt to auto or require, not off")
        return self

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be lowercase letters, digits and '_', starting with a letter (max 63)")
        return value

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("labels must be unique")
        return value

    @field_validator("notify")
    @classmethod
    def _distinct_channels(cls, value: list[NotifyChannel]) -> list[NotifyChannel]:
        seen = [channel.model_dump_json() for channel in value]
        repeated = sorted({f"{c.type} {c.conn_id}" for c, s in zip(value, seen, strict=True) if seen.count(s) > 1})
        if repeated:
            raise ValueError(f"the same channel is listed twice (each would send every message): {', '.join(repeated)}")
        return value


class ModelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> ModelsFile:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dupes)}")
        # Triton also holds <name>_core (pair runtimes), <name>__staging (hot-swap verification) and
        # <name>__canary (the challenger of a weighted rollout).
        taken = {f"{n}{suffix}": n for n in names for suffix in ("_core", "__staging", "__canary")}
        clashes = sorted(f"{n} (used by {taken[n]})" for n in names if n in taken)
        if clashes:
            raise ValueError(f"model names clash with the Triton models pitcrew derives: {', '.join(clashes)}")
        return self

    def get(self, name: str) -> ModelEntry:
        for entry in self.models:
            if entry.name == name:
                return entry
        known = ", ".join(m.name for m in self.models)
        raise KeyError(f"unknown model {name!r}; the models file declares: {known}")


def _resolve(value: str, base: Path) -> str:
    if "://" in value or Path(value).is_absolute():
        return value
    return str((base / value).resolve())


def load_models_file(path: Path) -> ModelsFile:
    """Read and validate the models file; raise :class:`ModelsFileError` naming the bad field."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ModelsFileError(f"models file not found: {path} (set PITCREW_MODELS_FILE)") from exc
    except yaml.YAMLError as exc:
        raise ModelsFileError(f"models file {path} is not valid YAML: {exc}") from exc
    try:
        parsed = ModelsFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ModelsFileError(f"models file {path} is invalid: {problems}") from exc
    base = Path(path).resolve().parent
    for entry in parsed.models:
        entry.train_data = _resolve(entry.train_data, base)
        entry.inference_log = _resolve(entry.inference_log, base)
        entry.feedback = _resolve(entry.feedback, base)
        if entry.golden_data is not None:
            entry.golden_data = _resolve(entry.golden_data, base)
        if "/" in entry.base_model or entry.base_model.startswith("."):
            entry.base_model = _resolve(entry.base_model, base)
    return parsed
