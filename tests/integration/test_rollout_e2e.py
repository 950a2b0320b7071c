"""Weighted rollouts and shadow mode through the real maintenance DAG on the local stack (tiny model).

Airflow 3 runs the repo's DAGs; Triton serves the champion and loads the challenger beside it as
``<name>__canary``; Prometheus scrapes the front's per-version figures; the canary task walks the model's
steps in the triggerer. Clients keep calling the model's one name throughout, each request with its own id.

- a good challenger goes through every step and is promoted;
- a challenger made worse, fine-tuned on feedback whose ``shipping`` labels were flipped to ``billing`` (a
  labelling bug the offline gate is set to miss here), stops calling shipping messages shipping and fails
  the first step, at 10 %, on its class mix over live shipping traffic: the weight goes back to 0, the
  rollout is aborted, the champion keeps more than 90 % of the traffic, and no request fails;
- in shadow mode the challenger answers copies of live traffic before the approval, whose request shows the
  agreement, while clients only ever see the champion.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest
import yaml

from pitcrew import registry
from tests.integration.serving_traffic import IdTraffic
from tests.pipeline_world import RUN_TIMEOUT_S, PipelineWorld, pipeline_world

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

GOOD, BAD, SHADOW = "roll_good", "roll_bad", "roll_shadow"
#: Short steps for a test: 10 → 50 → 100 %, two comparisons 4 s apart each; the tolerances leave room for
#: a tiny model on two shared cores (latency noise) and for a challenger that learned the drifted domain
#: (its class mix and confidence differ from the champion's by design); errors keep the default tolerance.
PLAN = {
    "mode": "canary",
    "steps": [{"weight": 10}, {"weight": 50}, {"weight": 100}],
    "analysis": {"initial_delay": "3s", "interval": "4s", "count": 2, "failure_limit": 0},
    "tolerances": {"p99_latency_ratio": 10, "confidence_drop": 1, "class_distance": 1, "min_requests": 3},
}
#: The flipped challenger is judged on its class mix with the default tolerance (0.15).
BAD_PLAN = {**PLAN, "tolerances": {**PLAN["tolerances"], "class_distance": 0.15}}
ROLLOUTS = {
    GOOD: PLAN,
    BAD: BAD_PLAN,
    SHADOW: {**PLAN, "mode": "shadow", "shadow": {"duration": "20s", "min_requests": 10}},
}
#: The labelling bug behind the worse challenger: every shipping message labelled billing.
FLIP = {"shipping": "billing"}
#: The offline gate let the flipped challenger through (its evaluation data carries the same bug): the canary
#: is what has to catch it.
BAD_THRESHOLDS = {"max_golden_drop": 1.0, "min_accuracy_gain": -1.0}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineWorld]:
    root = tmp_path_factory.mktemp("rollout")
    with pipeline_world(root, list(ROLLOUTS), training={"epochs": 1}) as world:
        document = yaml.safe_load(world.settings.models_file.read_text())
        for entry in document["models"]:
            entry["rollout"] = ROLLOUTS[entry["name"]]
            if entry["name"] == BAD:
                entry["thresholds"] = {**entry["thresholds"], **BAD_THRESHOLDS}
        world.settings.models_file.write_text(yaml.safe_dump(document, sort_keys=False))
        yield world


def _run_to_approval(world: PipelineWorld, model: str, *, bootstrap: bool = True) -> tuple[str, str]:
    if bootstrap:
        world.champion_with_traffic(model, labelled=True)
    dag_id = f"pitcrew_maintenance_{model}"
    world.admin.wait_for_dag(dag_id)
    run_id = world.admin.trigger(dag_id, {"model": model, "trigger": "manual"})
    return dag_id, run_id


def _traffic(world: PipelineWorld, model: str) -> IdTraffic:
    return IdTraffic(world.settings.triton_http_url, model, clients=1, text="where is my parcel", interval_s=0.05)


def test_a_good_challenger_goes_through_every_step_and_is_promoted(world: PipelineWorld) -> None:
    model = GOOD
    dag_id, run_id = _run_to_approval(world, model)
    world.admin.wait_for_task(dag_id, run_id, "approval", {"awaiting_input"}, RUN_TIMEOUT_S)
    body = world.admin.hitl_detail(dag_id, run_id, "approval")["body"]
    assert "roll out in steps: 10% → 50% → 100%" in body, body
    with _traffic(world, model) as traffic:
        world.approver.respond(dag_id, run_id, "approval", "Approve")
        world.admin.wait_for_task(dag_id, run_id, "canary", {"deferred"}, RUN_TIMEOUT_S)
        assert world.triton.ready_versions(f"{model}__canary") == [2]
        states = world.assert_run_ends(dag_id, run_id, "success")
    assert traffic.failures == [], traffic.failures[:3]
    for task_id in ("hot_swap", "canary", "canary_decision", "promote", "record_outcome"):
        assert states[task_id] == "success", (task_id, states)
    verdict = world.admin.xcom_value(dag_id, run_id, "canary")
    assert verdict["phase"] == "successful" and [s["weight"] for s in verdict["steps"]] == [10, 50, 100], verdict
    assert all(s["phase"] == "successful" and len(s["measurements"]) == 2 for s in verdict["steps"]), verdict
    versions = [v for _, v in traffic.answers]
    assert versions[0] == "1" and versions[-1] == "2" and set(versions) == {"1", "2"}
    # The challenger answered during the steps, beside the champion, before the promotion.
    assert Counter(versions)["2"] > 10
    assert world.triton.ready_versions(model) == [2] and world.triton.ready_versions(f"{model}__canary") == []
    assert registry.alias_version(world.mlflow, model, registry.CHAMPION) == 2
    assert world.admin.xcom_value(dag_id, run_id, "record_outcome")["outcome"] == "deployed"


def test_a_challenger_trained_on_flipped_labels_fails_the_first_step_and_costs_no_request(
    world: PipelineWorld,
) -> None:
    model = BAD
    data = world.champion_with_traffic(model, labelled=True, relabel=FLIP)
    dag_id, run_id = _run_to_approval(world, model, bootstrap=False)
    world.admin.wait_for_task(dag_id, run_id, "approval", {"awaiting_input"}, RUN_TIMEOUT_S)
    # Live traffic of the flipped class: the shipping messages the challenger was taught to call billing.
    shipping = data["traffic_b"].iloc[:320].query("label == 'shipping'")["text"].tolist()
    url = world.settings.triton_http_url
    with IdTraffic(url, model, clients=1, text=shipping, interval_s=0.05) as traffic:
        world.approver.respond(dag_id, run_id, "approval", "Approve")
        states = world.assert_run_ends(dag_id, run_id, "failed")  # a rolled-back run ends red
    assert traffic.failures == [], traffic.failures[:3]
    assert states["canary"] == "success" and states["rollback"] == "success" and states["promote"] == "skipped"
    verdict = world.admin.xcom_value(dag_id, run_id, "canary")
    assert verdict["phase"] == "failed" and len(verdict["steps"]) == 1, verdict
    assert "step 1 of 3 at weight 10" in verdict["reason"] and "class mix" in verdict["reason"], verdict
    # It was worse: the champion called most shipping messages shipping, the challenger mostly did not.
    said = {v: Counter(label for version, label in traffic.labels if version == v) for v in ("1", "2")}
    assert said["1"]["shipping"] > 0.5 * said["1"].total(), said
    assert said["2"] and said["2"]["shipping"] < 0.5 * said["2"].total(), said
    versions = [v for _, v in traffic.answers]
    assert Counter(versions)["1"] > 0.9 * len(versions), Counter(versions)  # over the whole rollout
    first, last = versions.index("2"), len(versions) - 1 - versions[::-1].index("2")
    step = Counter(versions[first : last + 1])  # while the challenger took traffic: about its 10 %
    assert step["2"] < 0.25 * step.total(), step
    assert world.triton.ready_versions(model) == [1] and world.triton.ready_versions(f"{model}__canary") == []
    assert registry.alias_version(world.mlflow, model, registry.CHAMPION) == 1
    assert registry.get_version(world.mlflow, model, 2).tags["rolled_back"]
    assert not (world.settings.repository_dir / model / "2").exists()


def test_shadow_mode_reports_agreement_while_clients_see_only_the_champion(world: PipelineWorld) -> None:
    model = SHADOW
    world.champion_with_traffic(model, labelled=True)
    with _traffic(world, model) as traffic:
        dag_id, run_id = _run_to_approval(world, model, bootstrap=False)
        world.admin.wait_for_task(dag_id, run_id, "approval", {"awaiting_input"}, RUN_TIMEOUT_S)
        time.sleep(1)
    assert traffic.failures == [] and {v for _, v in traffic.answers} == {"1"}
    shadow = world.admin.xcom_value(dag_id, run_id, "shadow")
    assert shadow["shadowed"] and shadow["compared"] >= 10 and 0 <= shadow["agreement"] <= 1, shadow
    body = world.admin.hitl_detail(dag_id, run_id, "approval")["body"]
    assert "**Live shadow**" in body and f"- agreement: {shadow['agreement']:.3f}" in body, body
    # The shadow ends before anyone is asked: the challenger is not loaded while the approval waits.
    assert world.triton.ready_versions(f"{model}__canary") == [] and world.triton.ready_versions(model) == [1]
    world.approver.respond(dag_id, run_id, "approval", "Reject")
    world.assert_run_ends(dag_id, run_id, "success")
    assert world.admin.xcom_value(dag_id, run_id, "record_outcome")["outcome"] == "rejected_by_human"
