"""The hot-swap protocol (docs/design.md, "Hot-swap"): publish, load beside the old version, verify, commit or roll back.

One code path for ``pitcrew deploy``/``rollback``, the Airflow Triton hook and the benchmark:

1. publish the artifact as ``<model>/<version>`` atomically (optional: the folder may already exist);
2. load with a config override whose version policy is ``specific [old, new]``: the old version keeps
   serving untouched while the new one loads, and the load call returns when the new one is READY;
3. verify the new version, pinned: golden-set answers and p95 latency from Triton's statistics;
4. commit by loading ``specific [new]`` (Triton drops the old version only after that load finishes),
   write the same policy to ``config.pbtxt`` so a restart serves the same version, record the state;
   on a failed load or verification, load ``specific [old]`` instead and keep every file.

Never unload-then-load (an outage of the whole load time). Every step runs under the model's lock, so
there is exactly one load call per model at a time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from pitcrew.serving.artifact import read_artifact, read_golden
from pitcrew.serving.client import TritonControl
from pitcrew.serving.errors import (
    ModelLoadError,
    NothingToRollBackError,
    PublishError,
    ServingError,
    VerificationError,
)
from pitcrew.serving.lock import model_lock
from pitcrew.serving.model_config import from_pbtxt, set_version_policy, to_load_json
from pitcrew.serving.publish import DEFAULT_MODEL_PY, publish_version, write_model_config
from pitcrew.serving.state import ModelState, load_state, save_state
from pitcrew.serving.verify import VerificationReport, verify_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwapResult:
    model: str
    action: str  # "deploy" or "rollback"
    version: int
    previous: int | None
    load_seconds: float
    total_seconds: float
    verification: VerificationReport | None

    def as_dict(self) -> dict:
        return asdict(self)


class HotSwapper:
    """Swap versions of models in one Triton model repository through one Triton server.

    :param latency_budget_ms: verification fails if the new version's p95 exceeds it.
    :param lock_timeout_s: how long a second swap of the same model waits before failing.
    :param verify: skip verification only in benchmarks that measure the bare protocol.
    """

    def __init__(
        self,
        client: TritonControl,
        repository: Path,
        *,
        latency_budget_ms: float = 250.0,
        lock_timeout_s: float = 0.0,
        verify: bool = True,
        verify_rounds: int = 3,
        model_py: Path = DEFAULT_MODEL_PY,
    ) -> None:
        self.client = client
        self.repository = Path(repository)
        self.latency_budget_ms = latency_budget_ms
        self.lock_timeout_s = lock_timeout_s
        self.verify = verify
        self.verify_rounds = verify_rounds
        self.model_py = model_py

    # Public operations ------------------------------------------------------------------------
    def deploy(
        self, model: str, version: int, artifact: Path | None = None, config: mc.ModelConfig | None = None
    ) -> SwapResult:
        """Serve ``version`` of ``model``, publishing ``artifact`` as that version first if given.

        :param config: the model's base config; written as ``config.pbtxt`` if given, else read from there.
        """
        with model_lock(self.repository, model, self.lock_timeout_s):
            if config is not None:
                write_model_config(self.repository, config)
            base = self._base_config(model)
            if artifact is not None:
                read_artifact(artifact)
                publish_version(self.repository, model, version, artifact, self.model_py)
            elif not self._version_dir(model, version).is_dir():
                raise PublishError(
                    f"{model}: version {version} is not in {self.repository / model}; pass --artifact to publish it"
                )
            return self._swap(model, version, base, "deploy")

    def rollback(self, model: str, version: int | None = None) -> SwapResult:
        """Serve the previous version again (or ``version``); its files were never removed."""
        with model_lock(self.repository, model, self.lock_timeout_s):
            base = self._base_config(model)
            current = self.serving_version(model)
            target = version if version is not None else self._rollback_target(model, current)
            if target is None:
                raise NothingToRollBackError(
                    f"{model}: no earlier version to roll back to (serving {current}, "
                    f"versions on disk {self.versions_on_disk(model)})"
                )
            if not self._version_dir(model, target).is_dir():
                raise PublishError(f"{model}: version {target} is not in {self.repository / model}")
            return self._swap(model, target, base, "rollback")

    def serving_version(self, model: str) -> int | None:
        """The version unversioned requests reach: the recorded one if READY, else Triton's highest READY."""
        ready = self.client.ready_versions(model)
        state = load_state(self.repository, model)
        if state.serving in ready:
            return state.serving
        return ready[-1] if ready else None

    def versions_on_disk(self, model: str) -> list[int]:
        folder = self.repository / model
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())

    # Protocol ---------------------------------------------------------------------------------
    def _swap(self, model: str, new: int, base: mc.ModelConfig, action: str) -> SwapResult:
        started = time.monotonic()
        state = load_state(self.repository, model)
        old = self.serving_version(model)
        golden = read_golden(self._version_dir(model, new)) if self.verify else None
        both = [new] if old in (None, new) else [old, new]
        log.info("%s %s: loading version %s beside %s", action, model, new, old)
        try:
            self.client.load(model, to_load_json(set_version_policy(base, both)))
        except ModelLoadError as exc:
            self._restore(model, base, old)
            raise ModelLoadError(
                f"{model}: version {new} failed to load; {self._kept(old)}. Triton said: {exc}"
            ) from exc
        load_seconds = time.monotonic() - started
        report = None
        if golden is not None:
            try:
                report = verify_version(
                    self.client,
                    model,
                    new,
                    golden,
                    latency_budget_ms=self.latency_budget_ms,
                    rounds=self.verify_rounds,
                )
            except (VerificationError, ServingError) as exc:
                self._restore(model, base, old)
                raise VerificationError(f"{exc}; {self._kept(old)}") from exc
        self._commit(model, base, new, old, state, action)
        result = SwapResult(model, action, new, old, load_seconds, time.monotonic() - started, report)
        log.info("%s %s: version %s serving (was %s) in %.2fs", action, model, new, old, result.total_seconds)
        return result

    def _commit(
        self, model: str, base: mc.ModelConfig, new: int, old: int | None, state: ModelState, action: str
    ) -> None:
        pinned = set_version_policy(base, [new])
        if old not in (None, new):
            self.client.load(model, to_load_json(pinned))
        write_model_config(self.repository, pinned)
        save_state(self.repository, model, state.committed(new, action))

    def _restore(self, model: str, base: mc.ModelConfig, old: int | None) -> None:
        """Back to exactly the old version; with nothing served before, unload the failed one."""
        try:
            if old is None:
                self.client.unload(model)
            else:
                self.client.load(model, to_load_json(set_version_policy(base, [old])))
        except ServingError as exc:
            raise ServingError(f"{model}: restoring version {old} failed too: {exc}") from exc

    @staticmethod
    def _kept(old: int | None) -> str:
        return (
            "nothing was serving before, so the model is unloaded"
            if old is None
            else f"version {old} keeps serving"
        )

    def _rollback_target(self, model: str, current: int | None) -> int | None:
        state = load_state(self.repository, model)
        on_disk = self.versions_on_disk(model)
        if state.previous is not None and state.previous != current and state.previous in on_disk:
            return state.previous
        lower = [v for v in on_disk if current is not None and v < current]
        return lower[-1] if lower else None

    def _version_dir(self, model: str, version: int) -> Path:
        return self.repository / model / str(version)

    def _base_config(self, model: str) -> mc.ModelConfig:
        path = self.repository / model / "config.pbtxt"
        if not path.exists():
            raise PublishError(f"{model}: no config.pbtxt at {path}; deploy with --artifact to generate one")
        try:
            return from_pbtxt(path.read_text())
        except ValueError as exc:
            raise PublishError(f"{model}: {path}: {exc}") from exc
