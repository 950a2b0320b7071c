"""The serving half of a weighted rollout (docs/design.md, "Progressive delivery").

The champion keeps serving the model clients call. The challenger is published, its core loaded beside the
champion's core (pair layouts), verified on the staging model like any swap, and then loaded as
``<name>__canary``, which only the champion's front reaches, by BLS, for the share of requests the routing
table gives it (pitcrew/rollout/routing.py). Weights change by rewriting that table: no model reloads.
Promotion is the hot-swap's commit (the live model loads the challenger's version; Triton answers with it
once READY and drains the champion); an abort sets the weight to 0, unloads the challenger and removes
what the rollout published. Every step runs under the model's swap lock.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace

from pitcrew.rollout.routing import RoutingTable, clear_routing, read_routing, write_routing
from pitcrew.serving.artifact import read_golden
from pitcrew.serving.errors import PublishError, ServingError
from pitcrew.serving.lock import model_lock
from pitcrew.serving.model_config import canary_config, canary_model_name
from pitcrew.serving.publish import link_version, write_model_config
from pitcrew.serving.swap import HotSwapper, SwapResult
from pitcrew.serving.verify import VerificationReport, verify_version

log = logging.getLogger(__name__)


class RolloutStateError(ServingError):
    """The rollout asked for does not match what is under way (none, or another version's)."""


@dataclass(frozen=True)
class RolloutStart:
    model: str
    champion: int
    challenger: int
    canary_model: str
    load_seconds: float
    verification: VerificationReport | None

    def as_dict(self) -> dict:
        return asdict(self)


class WeightedRollout:
    """Start, weigh, promote or abort a challenger beside the champion, through one :class:`HotSwapper`.

    :param drain_s: after the weight drops to 0 and before the challenger is unloaded: the fronts re-read
        the table within a quarter second, and Triton drains what is in flight on unload anyway.
    """

    def __init__(self, swapper: HotSwapper, *, drain_s: float = 1.0) -> None:
        self.swapper = swapper
        self.drain_s = drain_s

    def start(self, model: str, version: int, artifact=None, config=None, core_config=None) -> RolloutStart:
        """Load ``version`` as the challenger at weight 0, publishing ``artifact`` as that version first."""
        s = self.swapper
        with model_lock(s.repository, model, s.lock_timeout_s):
            champion = s.serving_version(model)
            if champion is None:
                raise RolloutStateError(f"{model}: nothing serves; the first version is deployed, not rolled out")
            if champion == version:
                raise RolloutStateError(f"{model}: version {version} already serves")
            under_way = read_routing(s.repository, model)
            if under_way is not None and under_way.challenger != version:
                raise RolloutStateError(f"{model}: the rollout of version {under_way.challenger} is under way; "
                                        "promote or abort it first")  # fmt: skip
            published = []
            if artifact is not None:
                front = config if config is not None else s._config_on_disk(model)
                published = s.publish(model, version, artifact, front, core_config)
            elif not s._version_dir(model, version).is_dir():
                raise PublishError(f"{model}: version {version} is not in {s.repository / model}")
            front, core = s._configs(model, version)
            core_before = s.client.ready_versions(core.name) if core is not None else []
            started = time.monotonic()
            try:
                if core is not None:
                    s._load(core, sorted({*core_before, version}))
                report = None
                if s.verify:
                    golden = read_golden(s._version_dir(model, version))
                    staged = s._stage(model, version, front)
                    try:
                        report = verify_version(s.client, staged, version, golden,
                                                latency_budget_ms=s.latency_budget_ms, rounds=s.verify_rounds)  # fmt: skip
                    finally:
                        s._unstage(staged)
                canary = canary_config(front, version)
                link_version(s._version_dir(model, version), s.repository / canary.name / str(version))
                write_model_config(s.repository, canary)
                s._load(canary, [version])
                write_routing(s.repository, RoutingTable(model, champion=champion, challenger=version, weight=0.0))
            except ServingError as exc:
                self._unload_challenger(model, version, core, core_before or [champion])
                s._unpublish(model, version, published)
                raise type(exc)(f"{exc}; version {champion} keeps serving alone") from exc
            log.info("%s: version %s loaded as %s beside version %s, weight 0", model, version, canary.name, champion)
            return RolloutStart(model, champion, version, canary.name, time.monotonic() - started, report)

    def set_weight(self, model: str, weight: float, *, step: int, mode: str = "split") -> RoutingTable:
        """Give the challenger ``weight`` percent of requests (shadow: a copy of every request, weight 0)."""
        s = self.swapper
        with model_lock(s.repository, model, s.lock_timeout_s):
            table = self._table(model)
            # Weight 0 is always allowed: it is how a failed step takes every request back.
            if (weight > 0 or mode == "shadow") and s.client.ready_versions(table.canary_model) != [table.challenger]:
                raise ServingError(f"{model}: the challenger {table.canary_model} v{table.challenger} is not "
                                   "loaded; abort the rollout")  # fmt: skip
            written = write_routing(s.repository, replace(table, weight=float(weight), step=step, mode=mode))
            log.info("%s: version %s at weight %g (%s, step %s)", model, table.challenger, weight, mode, step)
            return written

    def promote(self, model: str) -> SwapResult:
        """Serve the challenger as the model itself (the hot-swap's commit), then drop the champion."""
        s = self.swapper
        with model_lock(s.repository, model, s.lock_timeout_s):
            table = self._table(model)
            new, old = table.challenger, table.champion
            started = time.monotonic()
            front, core = s._configs(model, new)
            old_core = s._core_name(model, old)
            write_routing(s.repository, replace(table, weight=100.0, step=table.step))
            try:
                s._load(front, [new])
            except ServingError as exc:  # the live model keeps the champion; the rollout stays as it was
                try:
                    s._load(s._configs(model, old)[0], [old])
                    s._await_gone(model, new)
                finally:
                    write_routing(s.repository, table)
                raise type(exc)(f"{exc}; version {old} keeps serving, the rollout is unchanged") from exc
            # The champion drains what it holds, still routing by the table: only then does the table go.
            if not s._await_gone(model, old):
                log.warning("%s: version %s still draining after %ss", model, old, s.unload_wait_s)
            s._drop_old_core(model, old, old_core, core, new)
            s._record(model, new, front, core, "deploy")
            clear_routing(s.repository, model)
            s._unstage(table.canary_model)
            log.info("%s: version %s promoted from its rollout (was %s)", model, new, old)
            return SwapResult(model, "deploy", new, old, 0.0, time.monotonic() - started, None,
                              core.name if core is not None else None)  # fmt: skip

    def abort(self, model: str) -> int | None:
        """Weight 0, the challenger unloaded and its published files removed; the champion serves alone.
        Returns the challenger's version, None when no rollout was under way (an abort is safe to retry)."""
        s = self.swapper
        with model_lock(s.repository, model, s.lock_timeout_s):
            table = read_routing(s.repository, model)
            if table is None:
                s._unstage(canary_model_name(model))  # left by a start that died before its table
                return None
            write_routing(s.repository, replace(table, weight=0.0, mode="split"))
            time.sleep(self.drain_s)
            clear_routing(s.repository, model)
            _, core = s._configs(model, table.challenger)
            self._unload_challenger(model, table.challenger, core, [table.champion])
            if s.serving_version(model) != table.challenger:
                folders = [s._version_dir(model, table.challenger)]
                if core is not None:
                    folders.insert(0, s.repository / core.name / str(table.challenger))
                s._unpublish(model, table.challenger, [f for f in folders if f.exists()])
            log.info("%s: rollout of version %s aborted; version %s serves alone", model, table.challenger,
                     table.champion)  # fmt: skip
            return table.challenger

    def _unload_challenger(self, model: str, version: int, core, core_keep: list[int]) -> None:
        s = self.swapper
        clear_routing(s.repository, model)
        s._unstage(canary_model_name(model))
        if core is not None:
            keep = [v for v in core_keep if v != version]
            if keep:
                s._load(core, keep)
            else:
                s._unload_quietly(core.name)

    def _table(self, model: str) -> RoutingTable:
        table = read_routing(self.swapper.repository, model)
        if table is None:
            raise RolloutStateError(f"{model}: no rollout under way")
        return table

