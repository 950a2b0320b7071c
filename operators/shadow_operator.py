"""Shadow mode before the approval: the challenger answers a copy of live traffic, clients see the champion.

With the model's ``rollout.mode: shadow``, :class:`ShadowTrafficOperator` loads the registered challenger
beside the champion (:mod:`pitcrew.serving.weighted`, weight 0, mode ``shadow``), waits
``rollout.shadow.duration`` in the triggerer, reads from Prometheus how often the challenger predicted the
same class as the champion and how its confidence differed (the front's ``pitcrew_shadow_*`` counters),
and unloads the challenger again. The approval shows the figures as a live replay. Any other mode, or a
dry run, returns at once.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from operators.base import PitcrewOperator, as_bool
from operators.errors import retry_only_transient
from operators.prometheus_hook import PrometheusHook
from operators.triton_hook import TritonHook
from operators.triton_operators import SWAP_POOL

if TYPE_CHECKING:
    from airflow.sdk import Context


class ShadowTrafficOperator(PitcrewOperator):
    """Shadow the champion with ``version`` for the model's ``rollout.shadow.duration``; return what was seen.

    Returns ``mode`` and, in shadow mode, ``compared`` (texts both versions answered), ``agreement`` (share
    with the same predicted class), ``mean_confidence_shift`` (challenger minus champion) and ``enough``
    (at least ``rollout.shadow.min_requests`` compared).

    :param model: the model in the models file (templated).
    :param version: the registered challenger (templated).
    :param artifact: its compiled serving folder (templated).
    :param dry_run: a dry run shadows nothing (templated).
    """

    template_fields: Sequence[str] = (*PitcrewOperator.template_fields, "version", "artifact", "dry_run")

    def __init__(
        self,
        *,
        version: int | str,
        artifact: str | None = None,
        dry_run: bool | str = False,
        triton_conn_id: str = TritonHook.default_conn_name,
        prometheus_conn_id: str = PrometheusHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("pool", SWAP_POOL)
        super().__init__(**kwargs)
        self.version, self.artifact, self.dry_run = version, artifact, dry_run
        self.triton_conn_id, self.prometheus_conn_id = triton_conn_id, prometheus_conn_id

    @retry_only_transient
    def execute(self, context: Context) -> dict[str, Any] | None:
        from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger

        plan = self.entry.rollout
        if plan.mode != "shadow" or as_bool(self.dry_run, "dry_run"):
            return {"mode": plan.mode, "shadowed": False}
        hook = TritonHook(self.triton_conn_id)
        hook.abort_rollout(self.model)  # one run per model: whatever a died try left is this run's
        hook.start_rollout(self.model, int(self.version), Path(self.artifact) if self.artifact else None)
        hook.set_weight(self.model, 0.0, step=0, mode="shadow")
        started = dt.datetime.now(dt.UTC)
        self.log.info("%s v%s shadows the champion for %.0f s", self.model, self.version, plan.shadow.duration)
        self.defer(
            trigger=TimeDeltaTrigger(dt.timedelta(seconds=plan.shadow.duration)),
            method_name="measure",
            kwargs={"started_at": started.isoformat()},
        )
        return None  # not reached: defer raises

    def measure(self, context: Context, event: Any, started_at: str) -> dict[str, Any]:
        plan = self.entry.rollout
        seconds = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(started_at)).total_seconds()
        try:
            figures = self._figures(max(seconds, 1.0))
        finally:  # the challenger never outlives its shadow: the swap after the approval loads it anew
            TritonHook(self.triton_conn_id).abort_rollout(self.model)
        # increase() extrapolates each series to the window's edges on its own: round the count, and keep
        # the share within [0, 1] (measured: 1.0001 when every text agreed).
        compared = round(figures["compared"])
        result = {
            "mode": "shadow", "shadowed": True, "seconds": round(seconds, 1), "compared": compared,
            "agreement": min(1.0, figures["agreed"] / figures["compared"]) if compared else None,
            "mean_confidence_shift": figures["shift"] / figures["compared"] if compared else None,
            "enough": compared >= plan.shadow.min_requests, "min_requests": plan.shadow.min_requests,
        }  # fmt: skip
        self.log.info("shadow of %s v%s: %s", self.model, self.version, result)
        return result

    def _figures(self, window_s: float) -> dict[str, float]:
        hook = PrometheusHook(self.prometheus_conn_id)
        selector = f'model="{self.model}",challenger="{int(self.version)}"'
        window = math.ceil(window_s / 10) * 10  # the shadow's time, up to the next 10 s
        figures = {}
        for key, metric in (("compared", "compared_total"), ("agreed", "agreed_total"),
                            ("shift", "confidence_shift_sum")):  # fmt: skip
            values = hook.values(f"sum(increase(pitcrew_shadow_{metric}{{{selector}}}[{window}s]))")
            figures[key] = float(values[0]) if values and values[0] == values[0] else 0.0
        return figures
