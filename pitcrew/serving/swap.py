"""The hot-swap protocol (docs/design.md, "Hot-swap"): publish, stage, verify unseen, commit, or restore.

One code path for ``pitcrew deploy``/``rollback``, the Airflow Triton hook and the benchmark, for both
layouts: one Python-backend model, or a pair (a Python front ``<name>`` calling ``<name>_core`` version N
from its own version N).

1. publish the version (core first, then front) atomically; its configs are kept beside the repository;
2. pair only: load core N beside the serving core (front versions pin their core version, so no client
   request can reach core N yet);
3. load front N under a staging model name that no client calls, verify it there (golden answers and
   p95 latency from Triton's statistics), unload the staging model. Unversioned requests go to the highest
   READY version of a model, so verifying N inside the live model would let it answer live traffic first;
4. commit: load ``specific [N]`` into the live model (Triton keeps the old version serving until N is
   READY, then drops it), pair only: once the old front is gone, drop the old core; write the configs
   and the recorded state so a restart serves the same pair.

Any failure restores exactly what served before and removes what this deploy published. A load is never
sent twice (:meth:`TritonControl.load`). Every step runs under the model's lock.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from pitcrew.serving.artifact import read_artifact, read_golden
from pitcrew.serving.client import TritonControl
from pitcrew.serving.errors import NothingToRollBackError, PublishError, ServingError
from pitcrew.serving.lock import model_lock
from pitcrew.serving.model_config import (
    core_of,
    from_pbtxt,
    set_version_policy,
    staging_config,
    staging_model_name,
    to_load_json,
)
from pitcrew.serving.publish import (
    DEFAULT_MODEL_PY,
    STANDIN_MODEL_PY,
    link_version,
    load_version_configs,
    publish_core,
    publish_version,
    save_version_configs,
    version_configs_path,
    write_model_config,
)
from pitcrew.serving.state import load_state, save_state
from pitcrew.serving.verify import VerificationReport, verify_version

log = logging.getLogger(__name__)
Configs = tuple[mc.ModelConfig, mc.ModelConfig | None]  # (front, core or None)


@dataclass(frozen=True)
class SwapResult:
    model: str
    action: str  # "deploy" or "rollback"
    version: int
    previous: int | None
    load_seconds: float  # until the new version was READY (core and staged front) for verification
    total_seconds: float
    verification: VerificationReport | None
    core_model: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class HotSwapper:
    """Swap versions of models in one Triton model repository through one Triton server.

    :param latency_budget_ms: verification fails if the new version's p95 exceeds it.
    :param lock_timeout_s: how long a second swap of the same model waits before failing.
    :param verify: skip verification only in benchmarks that measure the bare protocol.
    :param unload_wait_s: how long the commit waits for the old front to drain before dropping its core.
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
        core_model_py: Path = STANDIN_MODEL_PY,
        unload_wait_s: float = 60.0,
    ) -> None:
        self.client = client
        self.repository = Path(repository)
        self.latency_budget_ms = latency_budget_ms
        self.lock_timeout_s = lock_timeout_s
        self.verify = verify
        self.verify_rounds = verify_rounds
        self.model_py = model_py
        self.core_model_py = core_model_py
        self.unload_wait_s = unload_wait_s

    # Public operations ------------------------------------------------------------------------
    def deploy(
        self,
        model: str,
        version: int,
        artifact: Path | None = None,
        config: mc.ModelConfig | None = None,
        core_config: mc.ModelConfig | None = None,
    ) -> SwapResult:
        """Serve ``version`` of ``model``, publishing ``artifact`` as that version first if given.

        :param config: the front config the artifact is served with (from the artifact; see the factory).
        :param core_config: the ``<name>_core`` config for a pair runtime, else None.
        """
        with model_lock(self.repository, model, self.lock_timeout_s):
            published: list[Path] = []
            if artifact is not None:
                front = config if config is not None else self._config_on_disk(model)
                published = self.publish(model, version, Path(artifact), front, core_config)
            elif not self._version_dir(model, version).is_dir():
                raise PublishError(
                    f"{model}: version {version} is not in {self.repository / model}; pass --artifact to publish it"
                )
            try:
                return self._swap(model, version, self._configs(model, version), "deploy")
            except ServingError:
                self._unpublish(model, version, published)
                raise

    def rollback(self, model: str, version: int | None = None) -> SwapResult:
        """Serve the previous version again (or ``version``); its files were never removed."""
        with model_lock(self.repository, model, self.lock_timeout_s):
            current = self.serving_version(model)
            target = version if version is not None else self._rollback_target(model, current)
            if target is None:
                raise NothingToRollBackError(
                    f"{model}: no earlier version to roll back to (serving {current}, "
                    f"versions on disk {self.versions_on_disk(model)})"
                )
            if not self._version_dir(model, target).is_dir():
                raise PublishError(f"{model}: version {target} is not in {self.repository / model}")
            return self._swap(model, target, self._configs(model, target), "rollback")

    def serving_version(self, model: str) -> int | None:
        """The version unversioned requests reach now: Triton routes them to the highest READY version."""
        ready = self.client.ready_versions(model)
        return ready[-1] if ready else None

    def versions_on_disk(self, model: str) -> list[int]:
        folder = self.repository / model
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())

    # Protocol ---------------------------------------------------------------------------------
    def _swap(self, model: str, new: int, configs: Configs, action: str) -> SwapResult:
        started = time.monotonic()
        front, core = configs
        old = self.serving_version(model)
        old_core = self._core_name(model, old)
        core_before = self.client.ready_versions(core.name) if core is not None else []
        golden = read_golden(self._version_dir(model, new)) if self.verify else None
        if (self.repository / staging_model_name(model)).exists():  # left by a swap that died
            self._unstage(staging_model_name(model))
        phase = "core"
        log.info("%s %s: staging version %s (serving %s)", action, model, new, old)
        try:
            if core is not None:
                self._load(core, sorted({*[v for v in core_before if v == old], new}))
            phase = "verify"
            report = None
            if golden is not None:
                staged = self._stage(model, new, front)
                try:
                    load_seconds = time.monotonic() - started
                    report = verify_version(
                        self.client, staged, new, golden,
                        latency_budget_ms=self.latency_budget_ms, rounds=self.verify_rounds,
                    )  # fmt: skip
                finally:
                    self._unstage(staged)
            else:
                load_seconds = time.monotonic() - started
            phase = "commit"
            self._load(front, [new])
            if old not in (None, new):
                self._drop_old_core(model, old, old_core, core, new)
        except ServingError as exc:
            self._restore(model, new, old, front, core, core_before, committing=phase == "commit")
            raise type(exc)(f"{exc}; {self._kept(old)}") from exc
        self._record(model, new, front, core, action)
        result = SwapResult(
            model, action, new, old, load_seconds, time.monotonic() - started, report,
            core.name if core is not None else None,
        )  # fmt: skip
        log.info("%s %s: version %s serving (was %s) in %.2fs", action, model, new, old, result.total_seconds)
        return result

    def _stage(self, model: str, new: int, front: mc.ModelConfig) -> str:
        """Load version ``new`` as the staging model (hard-linked files); return the staging model's name."""
        staged = staging_config(front, new)
        link_version(self._version_dir(model, new), self.repository / staged.name / str(new))
        # If this process dies mid-swap, a Triton that restarts with --load-model=* still finds a valid model
        # here (one nobody calls); the next swap of the model removes it.
        write_model_config(self.repository, staged)
        try:
            self._load(staged, [new])
        except ServingError:
            self._unstage(staged.name)
            raise
        return staged.name

    def _unstage(self, name: str) -> None:
        self._unload_quietly(name)
        shutil.rmtree(self.repository / name, ignore_errors=True)

    def _drop_old_core(
        self, model: str, old: int, old_core: str | None, core: mc.ModelConfig | None, new: int
    ) -> None:
        """After the commit: drop the old pair's core once no old front request can still call it."""
        if old_core is None:
            return
        if not self._await_gone(model, old):
            log.warning("%s: version %s still draining; its core stays loaded until the next swap", model, old)
            return
        if core is not None and core.name == old_core:
            self._load(core, [new])
        else:  # the new version is a one-model runtime: nothing calls the core any more
            self._unload_quietly(old_core)

    def _restore(
        self,
        model: str,
        new: int,
        old: int | None,
        front: mc.ModelConfig,
        core: mc.ModelConfig | None,
        core_before: list[int],
        *,
        committing: bool,
    ) -> None:
        """Back to exactly what served before; with nothing served before, unload what was loaded."""
        try:
            if committing:  # the live model may hold the new version: old first, while its core is loaded
                if old is None:
                    self.client.unload(model)
                else:
                    self._load(self._configs(model, old)[0], [old])
                    self._await_gone(model, new)
            if core is not None:
                if core_before:
                    self._load(core, core_before)
                else:
                    self._unload_quietly(core.name)
        except ServingError as exc:
            raise ServingError(f"{model}: restoring version {old} failed too: {exc}") from exc

    def _await_gone(self, model: str, version: int) -> bool:
        """Wait until ``version`` no longer serves nor drains requests (Triton unloads in the background)."""
        deadline = time.monotonic() + self.unload_wait_s
        while time.monotonic() < deadline:
            if self.client.version_states(model).get(version) not in ("READY", "UNLOADING"):
                return True
            time.sleep(0.1)
        return False

    def _load(self, config: mc.ModelConfig, versions: list[int]) -> None:
        self.client.load(config.name, to_load_json(set_version_policy(config, versions)), versions)

    def _unload_quietly(self, name: str) -> None:
        try:
            self.client.unload(name)
        except ServingError as exc:  # best effort: the model serves nobody
            log.warning("unloading %s failed: %s", name, exc)

    def _record(self, model: str, new: int, front: mc.ModelConfig, core: mc.ModelConfig | None, action: str) -> None:
        """What a restart of Triton must serve: the pinned configs, then the recorded state."""
        if core is not None:
            write_model_config(self.repository, set_version_policy(core, [new]))
        write_model_config(self.repository, set_version_policy(front, [new]))
        save_state(self.repository, model, load_state(self.repository, model).committed(new, action))

    @staticmethod
    def _kept(old: int | None) -> str:
        return (
            "nothing was serving before, so nothing is loaded"
            if old is None
            else f"version {old} keeps serving"
        )

    # Files ------------------------------------------------------------------------------------
    def publish(
        self, model: str, version: int, artifact: Path, front: mc.ModelConfig, core: mc.ModelConfig | None
    ) -> list[Path]:
        """Publish core then front version folders and keep their configs; return the folders.

        ``deploy`` removes them again if the swap fails; published alone, a version waits on disk.
        """
        meta = read_artifact(artifact)
        published: list[Path] = []
        try:
            if core is not None:
                standin = core.backend == "python"
                published.append(
                    publish_core(
                        self.repository, core.name, version, artifact / meta.model_file,
                        self.core_model_py if standin else None,
                    )  # fmt: skip
                )
                exclude = ("model.onnx", "model.plan")  # the core holds the network; the front tokenizes
            else:
                exclude = ("model.plan",)
            published.append(publish_version(self.repository, model, version, artifact, self.model_py, exclude=exclude))
            save_version_configs(self.repository, model, version, front, core)
        except ServingError:
            self._unpublish(model, version, published)
            raise
        return published

    def _unpublish(self, model: str, version: int, published: list[Path]) -> None:
        for folder in published:
            shutil.rmtree(folder, ignore_errors=True)
        if published:
            version_configs_path(self.repository, model, version).unlink(missing_ok=True)
            log.info("%s: removed the half-published version %s (%s)", model, version, published)

    def _configs(self, model: str, version: int) -> Configs:
        kept = load_version_configs(self.repository, model, version)
        return kept if kept is not None else (self._config_on_disk(model), None)

    def _core_name(self, model: str, version: int | None) -> str | None:
        if version is None or not self._version_dir(model, version).is_dir():
            return None
        return core_of(self._configs(model, version)[0])

    def _rollback_target(self, model: str, current: int | None) -> int | None:
        state = load_state(self.repository, model)
        on_disk = self.versions_on_disk(model)
        if state.previous is not None and state.previous != current and state.previous in on_disk:
            return state.previous
        lower = [v for v in on_disk if current is not None and v < current]
        return lower[-1] if lower else None

    def _version_dir(self, model: str, version: int) -> Path:
        return self.repository / model / str(version)

    def _config_on_disk(self, model: str) -> mc.ModelConfig:
        path = self.repository / model / "config.pbtxt"
        if not path.exists():
            raise PublishError(f"{model}: no config.pbtxt at {path}; deploy with --artifact to generate one")
        try:
            return from_pbtxt(path.read_text())
        except ValueError as exc:
            raise PublishError(f"{model}: {path}: {exc}") from exc

