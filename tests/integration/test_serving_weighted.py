"""A weighted rollout on the real bundled Triton, both layouts: the challenger beside the champion as
``<name>__canary``, its share of requests set by the routing table while clients keep calling the model's
one name, then promoted or aborted; not one request fails on the way.

Clients send their own request ids (as pitcrew's feedback does), so each id's version can be checked
against the hash the front routes by.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections import Counter

import pytest
import yaml

from pitcrew.commands.status import model_status
from pitcrew.models_file import load_models_file
from pitcrew.serving.client import TritonControl
from pitcrew.serving.factory import make_swapper, serving_configs, target_from_settings
from pitcrew.serving.weighted import RolloutStateError, WeightedRollout
from tests.integration.serving_artifacts import build_artifact
from tests.integration.serving_traffic import IdTraffic, wait_for_answers
from tests.stack_fixtures import make_settings, stack_with_env

pytestmark = pytest.mark.integration
LABELS = ["billing", "technical", "account", "shipping"]
MODELS = {"split_single": "python-onnxruntime", "split_pair": "onnxruntime", "split_mix": "python-onnxruntime"}
#: The fronts re-read the routing table at most every quarter second (model.py: ROUTING_RECHECK_S).
SETTLE_S = 0.6
#: Four texts sent in turn, so each version's predicted-class mix has more than one class.
TEXTS = ["my invoice was charged twice", "the app crashes on start", "reset my password", "where is my parcel"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("weighted")
    artifacts = {
        (name, v): build_artifact(root / f"{name}-v{v}", LABELS, seed=v, runtime=runtime)
        for name, runtime in MODELS.items() for v in (1, 2, 3)
    }  # fmt: skip
    entries = [
        {"name": name, "runtime": runtime, "train_data": str(root / "train.parquet"),
         "inference_log": str(root / "log" / name), "feedback": str(root / "fb" / name), "labels": LABELS,
         "thresholds": {"latency_p95_budget_ms": 2000}}
        for name, runtime in MODELS.items()
    ]  # fmt: skip
    models_file = root / "models.yaml"
    models_file.write_text(yaml.safe_dump({"models": entries}))
    settings = make_settings(root / "home", models_file=models_file)
    prometheus = json.dumps({"conn_type": "prometheus", "host": settings.prometheus_url})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_PROMETHEUS_DEFAULT", prometheus)  # what RolloutStepTrigger resolves
        with stack_with_env(settings, only=("triton", "prometheus")):
            yield {"settings": settings, "artifacts": artifacts, "models": load_models_file(models_file),
                   "root": root}  # fmt: skip


def _route_bucket(rid: str) -> float:
    import hashlib

    return (int.from_bytes(hashlib.blake2b(rid.encode(), digest_size=8).digest(), "big") % 10_000) / 100.0


@pytest.mark.parametrize("model", ["split_single", "split_pair"])
def test_weights_move_traffic_by_request_id_then_promote_and_abort_lose_nothing(world, model: str) -> None:
    settings, artifacts = world["settings"], world["artifacts"]
    entry = world["models"].get(model)
    swapper = make_swapper(entry, settings.triton_http_url, settings.repository_dir, lock_timeout_s=60)
    rollout = WeightedRollout(swapper, drain_s=0.5)
    target = target_from_settings()
    client = TritonControl(settings.triton_http_url)
    front, core = serving_configs(entry, artifacts[(model, 1)], target)
    swapper.deploy(model, 1, artifacts[(model, 1)], front, core)

    with IdTraffic(settings.triton_http_url, model) as traffic:
        front, core = serving_configs(entry, artifacts[(model, 2)], target)
        start = rollout.start(model, 2, artifacts[(model, 2)], front, core)
        assert (start.champion, start.challenger, start.canary_model) == (1, 2, f"{model}__canary")
        assert client.ready_versions(model) == [1] and client.ready_versions(f"{model}__canary") == [2]
        assert {v for _, v in wait_for_answers(traffic, 40)} == {"1"}  # weight 0: nothing reaches it

        for step, weight in enumerate((10, 50), start=1):
            rollout.set_weight(model, weight, step=step)
            time.sleep(SETTLE_S)
            seen = wait_for_answers(traffic, 200)
            wrong = [(rid, v) for rid, v in seen if v != ("2" if _route_bucket(rid) < weight else "1")]
            assert not wrong, f"weight {weight}: {len(wrong)} requests on the other version, e.g. {wrong[:3]}"
            share = 100 * sum(v == "2" for _, v in seen) / len(seen)
            assert weight - 15 <= share <= weight + 15, (weight, share)

        status = model_status(model)  # what `pitcrew status --model M` prints
        assert [(v["version"], v["role"], v["weight"]) for v in status["versions"]] == [
            (1, "champion", 50.0), (2, "challenger", 50.0)
        ]
        with pytest.raises(RolloutStateError, match="rollout of version 2 is under way"):
            rollout.start(model, 3)
        result = rollout.promote(model)
        assert (result.version, result.previous) == (2, 1)
        assert {v for _, v in wait_for_answers(traffic, 40)} == {"2"}
        assert client.ready_versions(model) == [2] and client.ready_versions(f"{model}__canary") == []
        assert [(v["version"], v["weight"]) for v in model_status(model)["versions"]] == [(2, 100.0)]
        if core is not None:
            assert client.ready_versions(f"{model}_core") == [2]

        # Version 3 rolled out to half the traffic, then aborted: version 2 alone again, 3 gone from disk.
        front, core = serving_configs(entry, artifacts[(model, 3)], target)
        rollout.start(model, 3, artifacts[(model, 3)], front, core)
        rollout.set_weight(model, 50, step=1)
        time.sleep(SETTLE_S)
        assert Counter(v for _, v in wait_for_answers(traffic, 100))["3"] > 20
        assert rollout.abort(model) == 3
        assert {v for _, v in wait_for_answers(traffic, 40)} == {"2"}
        assert rollout.abort(model) is None  # safe to retry
    assert traffic.failures == [], traffic.failures[:5]
    repo = settings.repository_dir
    assert client.ready_versions(model) == [2] and client.ready_versions(f"{model}__canary") == []
    assert not (repo / model / "3").exists() and not (repo / f"{model}__canary").exists()
    assert not (repo / ".pitcrew" / "routing" / f"{model}.json").exists()


def _step_verdict(model: str, champion: int, challenger: int) -> dict:
    """One step's analysis, as the triggerer runs it, against the real Prometheus (weight 50)."""
    from operators.rollout_trigger import RolloutStepTrigger
    from pitcrew.rollout.plan import Analysis, Tolerances

    analysis = Analysis(initial_delay=3, interval=4, count=2)
    # Room for latency noise on two shared cores; the class mix keeps its default tolerance.
    tolerances = Tolerances(p99_latency_ratio=10, confidence_drop=1, min_requests=3)
    trigger = RolloutStepTrigger(model, champion, challenger, weight=50, pause_s=0,
                                 analysis=analysis.model_dump(), tolerances=tolerances.model_dump())  # fmt: skip

    async def first() -> dict:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger fired nothing")

    event = asyncio.run(first())
    assert event["status"] == "success", event
    return event["result"]


def test_the_step_analysis_compares_both_versions_on_real_prometheus(world) -> None:
    """A challenger with the champion's own network passes every check on measured data; one whose
    network (another seed) predicts other classes fails on the class mix."""
    settings, artifacts, model = world["settings"], world["artifacts"], "split_mix"
    entry = world["models"].get(model)
    swapper = make_swapper(entry, settings.triton_http_url, settings.repository_dir, lock_timeout_s=60)
    rollout = WeightedRollout(swapper, drain_s=0.5)
    target = target_from_settings()
    swapper.deploy(model, 1, artifacts[(model, 1)], *serving_configs(entry, artifacts[(model, 1)], target))
    twin = world["root"] / "split_mix-twin"  # the champion's network, registered as another version
    shutil.copytree(artifacts[(model, 1)], twin)
    with IdTraffic(settings.triton_http_url, model, clients=2, text=TEXTS, interval_s=0.02) as traffic:
        for version, artifact, expected in ((2, twin, "successful"), (3, artifacts[(model, 3)], "failed")):
            rollout.start(model, version, artifact, *serving_configs(entry, artifact, target))
            rollout.set_weight(model, 50, step=1)
            verdict = _step_verdict(model, 1, version)
            rollout.abort(model)
            checks = {c["name"]: c for m in verdict["measurements"] for c in m["checks"]}
            assert verdict["phase"] == expected, verdict
            if expected == "successful":  # every check measured real data, both versions
                for name in ("error ratio", "p99 latency", "mean confidence", "class mix"):
                    assert checks[name]["phase"] == "successful", checks[name]
                    assert checks[name]["champion"] is not None and checks[name]["challenger"] is not None
                assert checks["class mix"]["challenger"] < 0.05  # the same network: the same mix
            else:
                assert checks["class mix"]["phase"] == "failed", checks
                assert "class mix" in verdict["reason"], verdict
    assert traffic.failures == [], traffic.failures[:3]
