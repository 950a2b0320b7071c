"""The weighted split and shadow mode of model_repository/textclf/model.py, outside Triton.

The champion's front (version 1) and the challenger loaded as ``textclf__canary`` (version 2, a network
trained with another seed) are both real instances of the backend; the stand-in BLS of
tests/unit/conftest.py has the one call the other. What a real Triton adds (BLS between processes,
dynamic batching, its metrics endpoint) is tested against Triton in tests/integration.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from pitcrew.rollout.routing import RoutingTable, clear_routing, write_routing
from tests.unit.conftest import BLS_MODELS, LABELS, _initialized, _Request, _series

TEXTS = ["my invoice was charged twice", "the app crashes on start", "reset my password", "where is my parcel"]


@pytest.fixture()
def pair(backend, monkeypatch):
    from tests.integration.serving_artifacts import build_artifact

    module, root = backend
    if not (root / "repo" / "2").exists():
        build_artifact(root / "repo" / "2", LABELS, max_length=16, seed=7)
    monkeypatch.setattr(module, "ROUTING_RECHECK_S", 0.0)  # a new table applies on the next batch
    log = {"inference_log_uri": {"string_value": str(root / "log")},
           "inference_log_flush_s": {"string_value": "60"}}  # fmt: skip
    champion = _initialized(module, root, {"parameters": log})
    challenger = _initialized(module, root, {"parameters": {**log, "serves_as": {"string_value": "textclf"}}},
                              name="textclf__canary", version="2")  # fmt: skip
    BLS_MODELS["textclf__canary"] = challenger
    yield module, root, champion, challenger
    BLS_MODELS.clear()
    clear_routing(root, "textclf")
    champion.finalize()
    challenger.finalize()


def _send(champion, ids: list[str]) -> list:
    return [champion.execute([_Request([TEXTS[i % 4]], rid)])[0] for i, rid in enumerate(ids)]


def _versions(responses: list) -> list[str]:
    assert [r.error for r in responses] == [None] * len(responses)
    return [r.outputs["version"][0][0].decode() for r in responses]


def _values(instance, name: str) -> dict[tuple, float]:
    instance.metrics.flush()
    return {tuple(sorted(m.labels.items())): m.value for m in _series(instance, name)}


def test_route_bucket_is_stable_uniform_and_in_range(backend) -> None:
    module, _ = backend
    buckets = np.array([module.route_bucket(f"req-{i}") for i in range(20_000)])
    assert buckets.min() >= 0 and buckets.max() < 100
    assert [module.route_bucket(f"req-{i}") for i in range(50)] == list(buckets[:50])
    for weight in (10, 50, 90):  # the share below a weight is the weight, within half a point
        assert abs(100 * np.mean(buckets < weight) - weight) < 0.5


@pytest.mark.parametrize(
    ("table", "rule"),
    [
        ({"model": "textclf", "champion": 1, "challenger": 2, "weight": 10}, {"challenger": 2, "weight": 10.0, "mode": "split"}),
        ({"model": "textclf", "champion": 1, "challenger": 2, "weight": 0, "mode": "shadow"}, {"challenger": 2, "weight": 0.0, "mode": "shadow"}),
        ({"model": "textclf", "champion": 1, "challenger": 2, "weight": 0}, None),  # nothing to send
        ({"model": "textclf", "champion": 3, "challenger": 4, "weight": 50}, None),  # another champion's table
        ({"model": "other", "champion": 1, "challenger": 2, "weight": 50}, None),
    ],
)  # fmt: skip
def test_routing_rule(backend, table: dict, rule: dict | None) -> None:
    module, _ = backend
    assert module.routing_rule(table, "textclf", 1) == rule


@pytest.mark.parametrize(
    ("table", "message"),
    [([1], "not a JSON object"), ({"model": "textclf", "champion": 1, "challenger": 1, "weight": 5}, "another version"),
     ({"model": "textclf", "champion": 1, "challenger": 2, "weight": 101}, "percentage"),
     ({"model": "textclf", "champion": 1, "challenger": 2, "weight": 5, "mode": "mirror"}, "split or shadow")],
)  # fmt: skip
def test_a_bad_routing_table_is_refused(backend, table: object, message: str) -> None:
    module, _ = backend
    with pytest.raises(ValueError, match=message):
        module.routing_rule(table, "textclf", 1)


def test_the_split_follows_the_weight_by_request_id_and_sticks(pair) -> None:
    module, root, champion, challenger = pair
    ids = [f"client-{i}" for i in range(200)]
    assert set(_versions(_send(champion, ids))) == {"1"}  # no table: the champion answers all

    write_routing(root, RoutingTable("textclf", champion=1, challenger=2, weight=30))
    versions = _versions(_send(champion, ids))
    expected = ["2" if module.route_bucket(rid) < 30 else "1" for rid in ids]
    assert versions == expected and 40 <= versions.count("2") <= 80
    assert _versions(_send(champion, ids)) == expected  # the same ids land on the same version

    write_routing(root, RoutingTable("textclf", champion=1, challenger=2, weight=60))
    wider = _versions(_send(champion, ids))
    assert all(w == "2" for v, w in zip(versions, wider, strict=True) if v == "2")  # raising only adds ids

    # What the challenger answered carries its version and the client's request id, is logged by it (as
    # the model clients call) and counted in its metrics; the champion logged only what it answered.
    responses = _send(champion, ["flip-0", "flip-1", "flip-2", "flip-3", "flip-4", "flip-5"])
    assert [r.outputs["request_id"][0][0].decode() for r in responses] == [f"flip-{i}" for i in range(6)]
    challenger.log.flush()
    champion.log.flush()
    from monitoring.inference_log import read_inference_log

    rows = read_inference_log(str(root / "log"), datetime.now(UTC) - timedelta(minutes=5),
                              datetime.now(UTC) + timedelta(minutes=1), model="textclf")  # fmt: skip
    served = dict(zip(rows["request_id"], rows["version"].astype(str), strict=True))
    for response in responses:
        rid = response.outputs["request_id"][0][0].decode()
        assert served[rid] == response.outputs["version"][0][0].decode()
    predictions = _values(challenger, "pitcrew_predictions_total")
    answered = 2 * versions.count("2") + wider.count("2") + sum(r.outputs["version"][0][0] == b"2" for r in responses)
    assert sum(predictions.values()) == answered  # the weight-30 round ran twice
    assert {(dict(k)["model"], dict(k)["version"]) for k in predictions} == {("textclf", "2")}

    weights = _values(champion, "pitcrew_route_weight_percent")
    assert weights == {(("model", "textclf"), ("version", "1")): 40.0, (("model", "textclf"), ("version", "2")): 60.0}
    # Each version times what it answered itself (the challenger inside itself: the hop is not its cost).
    own = _values(champion, "pitcrew_request_seconds_count")
    theirs = _values(challenger, "pitcrew_request_seconds_count")
    assert own == {(("model", "textclf"), ("version", "1")): 4 * 200 + 6 - answered}
    assert theirs == {(("model", "textclf"), ("version", "2")): answered}


def test_a_failing_or_gone_challenger_costs_no_request(pair) -> None:
    _, root, champion, _ = pair
    write_routing(root, RoutingTable("textclf", champion=1, challenger=2, weight=100))
    assert set(_versions(_send(champion, ["a", "b"]))) == {"2"}
    del BLS_MODELS["textclf__canary"]  # unloaded, or crashed
    assert set(_versions(_send(champion, [f"r{i}" for i in range(10)]))) == {"1"}
    fallbacks = _values(champion, "pitcrew_route_fallbacks_total")
    assert fallbacks == {(("challenger", "2"), ("model", "textclf"), ("version", "1")): 10.0}


def test_a_table_that_is_not_for_this_champion_or_is_broken_is_ignored(pair) -> None:
    _, root, champion, _ = pair
    write_routing(root, RoutingTable("textclf", champion=5, challenger=2, weight=100))
    assert set(_versions(_send(champion, ["a", "b", "c"]))) == {"1"}
    path = root / ".pitcrew" / "routing" / "textclf.json"
    path.write_text('{"model": "textclf", "champion": 1, "challenger": 2, "weight": 500}')
    assert set(_versions(_send(champion, ["a", "b", "c"]))) == {"1"}
    path.write_text("{half a json")
    assert set(_versions(_send(champion, ["a", "b", "c"]))) == {"1"}


def test_shadow_mode_returns_the_champion_and_counts_agreement(pair) -> None:
    _, root, champion, challenger = pair
    write_routing(root, RoutingTable("textclf", champion=1, challenger=2, weight=0, mode="shadow"))
    responses = _send(champion, [f"s{i}" for i in range(12)])
    assert set(_versions(responses)) == {"1"}  # clients only ever see the champion
    own = [r.outputs["probabilities"][0] for r in responses]
    theirs = challenger.execute([_Request([TEXTS[i % 4]], f"x{i}") for i in range(12)])
    their_probs = [r.outputs["probabilities"][0] for r in theirs]
    agreed = sum(int(np.argmax(a) == np.argmax(b)) for a, b in zip(own, their_probs, strict=True))
    shift = sum(float(np.max(b) - np.max(a)) for a, b in zip(own, their_probs, strict=True))
    key = (("challenger", "2"), ("model", "textclf"), ("version", "1"))
    assert _values(champion, "pitcrew_shadow_compared_total") == {key: 12.0}
    assert _values(champion, "pitcrew_shadow_agreed_total").get(key, 0.0) == agreed
    assert _values(champion, "pitcrew_shadow_confidence_shift_sum")[key] == pytest.approx(shift, abs=1e-4)
    # The shadow copies are neither logged nor counted as served by the challenger (only the 12 direct calls).
    assert sum(_values(challenger, "pitcrew_predictions_total").values()) == 12
    challenger.log.flush()
    from monitoring.inference_log import read_inference_log

    rows = read_inference_log(str(root / "log"), datetime.now(UTC) - timedelta(minutes=5),
                              datetime.now(UTC) + timedelta(minutes=1), model="textclf")  # fmt: skip
    assert not any(str(r).startswith("s") and v == "2" for r, v in zip(rows["request_id"], rows["version"].astype(str), strict=True))
    assert json.loads((root / ".pitcrew" / "routing" / "textclf.json").read_text())["mode"] == "shadow"


def test_routing_with_metrics_off_serves_the_same(pair) -> None:
    module, root, _, challenger = pair
    from tests.unit.conftest import _initialized

    quiet = _initialized(module, root, {"parameters": {"metrics": {"string_value": "off"}}})
    try:
        write_routing(root, RoutingTable("textclf", champion=1, challenger=2, weight=100))
        assert set(_versions(_send(quiet, ["m0", "m1"]))) == {"2"}
        write_routing(root, RoutingTable("textclf", champion=1, challenger=2, weight=0, mode="shadow"))
        assert set(_versions(_send(quiet, ["m2"]))) == {"1"}
    finally:
        quiet.finalize()
