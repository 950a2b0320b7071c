"""The closed-loop demo's moving parts, shared by ``pitcrew demo`` and the end-to-end test.

Traffic goes only to the local Triton on 127.0.0.1, in bounded batches.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from pitcrew.models_file import ModelEntry
from pitcrew.settings import REPO_ROOT

log = logging.getLogger(__name__)


def write_demo_data(
    entry: ModelEntry, *, n_train: int = 600, n_golden: int = 64, shift: float = 1.0, seed: int = 0
) -> dict:
    """Domain-A training data and the mixed golden set at the entry's paths; domain-B traffic to send later."""
    from training.demo_data import generate

    if set(entry.labels) != {"billing", "technical", "account", "shipping"}:
        raise ValueError(f"{entry.name}: the demo data has labels billing, technical, account, shipping")
    train = generate(n_train, domain="A", seed=seed)
    golden = pd.concat(
        [
            generate(n_golden // 2, domain="A", seed=seed + 2),
            generate(n_golden - n_golden // 2, domain="B", shift=shift, seed=seed + 2),
        ],
        ignore_index=True,
    )
    for path, frame in ((entry.train_data, train), (entry.golden_data, golden)):
        if path is None:
            raise ValueError(f"{entry.name}: the demo needs train_data and golden_data in the models file")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
    return {
        "traffic_a": generate(3 * n_train, domain="A", seed=seed + 10),
        "traffic_b": generate(n_train, domain="B", shift=shift, seed=seed + 10),
        "eval_b": generate(200, domain="B", shift=shift, seed=seed + 20),
        "eval_a": generate(200, domain="A", seed=seed + 20),
    }


@dataclass
class TrafficResult:
    sent: int = 0
    failed: int = 0
    request_ids: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)


def send(
    client, model: str, frame: pd.DataFrame, *, batch_size: int = 16, feedback_root: str | None = None
) -> TrafficResult:
    """Classify ``frame.text`` through Triton; with ``feedback_root``, store the true labels as feedback."""
    from monitoring.inference_log import write_feedback

    result = TrafficResult()
    feedback: dict[str, str] = {}
    for start in range(0, len(frame), batch_size):
        chunk = frame.iloc[start : start + batch_size]
        request_id = uuid.uuid4().hex
        try:
            predictions = client.classify(model, chunk["text"].tolist(), request_id=request_id)
        except Exception as exc:  # noqa: BLE001 - counted: a demo keeps going through a swap
            log.warning("request failed: %s", exc)
            result.failed += len(chunk)
            continue
        result.sent += len(chunk)
        for prediction, label in zip(predictions, chunk["label"], strict=True):
            result.request_ids.append(prediction.request_id)
            result.versions.add(prediction.version)
            feedback[prediction.request_id] = label
    if feedback_root is not None:
        write_feedback(feedback_root, feedback)
    return result


def accuracy(client, model: str, frame: pd.DataFrame, batch_size: int = 32) -> tuple[float, set[str]]:
    """Accuracy of what Triton serves now on labelled rows, and the versions that answered."""
    correct, versions = 0, set()
    for start in range(0, len(frame), batch_size):
        chunk = frame.iloc[start : start + batch_size]
        predictions = client.classify(model, chunk["text"].tolist())
        correct += sum(p.label == label for p, label in zip(predictions, chunk["label"], strict=True))
        versions.update(p.version for p in predictions)
    return correct / len(frame), versions


class BackgroundTraffic:
    """Steady, bounded traffic while a run swaps and watches the canary (the canary needs requests).

    It makes its own Triton client in its thread: tritonclient's HTTP client is gevent-based and must
    not be shared between threads. A failure of the thread itself is re-raised on exit.
    """

    def __init__(
        self,
        triton_url: str,
        model: str,
        frame: pd.DataFrame,
        *,
        interval_s: float = 0.5,
        max_seconds: float = 900,
    ) -> None:
        self.triton_url, self.model, self.frame = triton_url, model, frame
        self.interval_s, self.max_seconds = interval_s, max_seconds
        self.result = TrafficResult()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._guarded_run, name="demo-traffic", daemon=True)

    def _guarded_run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller in __exit__
            self.error = exc

    def __enter__(self) -> BackgroundTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.error is not None:
            raise RuntimeError(f"background traffic failed: {self.error!r}") from self.error

    def _run(self) -> None:
        from pitcrew.serving.client import TritonControl

        client = TritonControl(self.triton_url, retries=1)
        deadline = time.monotonic() + self.max_seconds
        position = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            chunk = self.frame.iloc[position : position + 8]
            position = (position + 8) % max(len(self.frame) - 8, 1)
            partial = send(client, self.model, chunk)
            self.result.sent += partial.sent
            self.result.failed += partial.failed
            self.result.versions |= partial.versions
            self._stop.wait(self.interval_s)
        client.close()


#: The demo compresses time: production rule windows and `for:` durations, scaled to seconds and minutes.
#: 30 s is six scrapes at the stack's 5 s interval. The unknown-token spike compares the short window with
#: the long one, so it can fire only once the demo's normal (domain-A) traffic has left the short window.
DEMO_WINDOWS = {"[5m]": "[30s]", "[15m]": "[30s]", "[6h]": "[20m]"}

#: The demo's canary: three measurements 5 s apart, the first 15 s after the swap, when the new version's
#: series have been scraped at least twice (the default waits 30 s, then four measurements 15 s apart).
#: The bounds are the models file's own.
DEMO_CANARY = {"canary_initial_delay_s": 15.0, "canary_interval_s": 5.0, "canary_count": 3}


def demo_settings(settings):
    """The settings with copies of ``deploy/`` and of the models file that work on a demo's time scale.

    Production rules look at 5-15 minute windows against a 6-hour baseline and fire after ``for: 10m``;
    the demo must finish in minutes, so its Prometheus and Alertmanager get the same rules with the
    windows of :data:`DEMO_WINDOWS`, ``for: 20s`` and short grouping waits, and its models file the
    canary timing of :data:`DEMO_CANARY`. Thresholds are unchanged.
    """
    demo_dir = settings.home_dir / "demo"
    target = write_fast_deploy(
        demo_dir / "deploy", source=settings.deploy_dir, rule_for_s=20, interval_s=5,
        repeat_s=4 * 3600, group_wait_s=2, group_interval_s=10, windows=DEMO_WINDOWS,
    )  # fmt: skip
    models = write_demo_models_file(settings.models_file, demo_dir / "models.yaml")
    return settings.model_copy(update={"deploy_dir": target, "models_file": models})


def write_demo_models_file(source: Path, target: Path, canary: dict | None = None) -> Path:
    """Copy the models file to ``target`` with the demo's canary timing; its paths stay where they were.

    The copy is written from the validated file, whose relative paths are already resolved against the
    source's folder, so nothing moves with the copy.
    """
    from pitcrew.models_file import load_models_file

    parsed = load_models_file(source)
    for entry in parsed.models:
        entry.thresholds = entry.thresholds.model_copy(update=canary or DEMO_CANARY)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(parsed.model_dump(mode="json", exclude_none=True), sort_keys=False))
    load_models_file(target)  # the copy must be as valid as its source
    return target


def write_fast_deploy(
    target: Path,
    *,
    rule_for_s: int = 1,
    interval_s: int = 1,
    repeat_s: int = 2,
    group_wait_s: int = 1,
    group_interval_s: int = 1,
    windows: dict[str, str] | None = None,
    source: Path | None = None,
) -> Path:
    """Copy ``deploy/`` (or ``source``) to ``target`` with rule ``for:`` and group timings in seconds.

    :param windows: range selectors to replace in every rule expression, e.g. ``{"[6h]": "[20m]"}``, for
        a demo that runs on compressed time; thresholds are never changed.
    """
    shutil.copytree(source or REPO_ROOT / "deploy", target, dirs_exist_ok=True)
    for rules_path in (target / "prometheus" / "rules").glob("*.yml"):
        rules = yaml.safe_load(rules_path.read_text())
        for group in rules["groups"]:
            group["interval"] = f"{interval_s}s"
            for rule in group["rules"]:
                for long, short in (windows or {}).items():
                    rule["expr"] = str(rule["expr"]).replace(long, short)
                if "alert" in rule:
                    rule["for"] = f"{rule_for_s}s"
        rules_path.write_text(yaml.safe_dump(rules, sort_keys=False))
    am_path = target / "alertmanager" / "alertmanager.yml"
    am = yaml.safe_load(am_path.read_text())
    am["route"].update(
        {
            "group_wait": f"{group_wait_s}s",
            "group_interval": f"{group_interval_s}s",
            "repeat_interval": f"{repeat_s}s",
        }
    )
    am_path.write_text(yaml.safe_dump(am, sort_keys=False))
    return target
