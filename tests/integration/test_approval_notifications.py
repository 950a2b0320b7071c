"""Approvers are told, end to end on the real local stack with the tiny model.

A nightly run that reaches its approval tells every channel of the model's ``notify`` list at once: a
generic webhook and a Slack incoming webhook (both an HTTP sink on 127.0.0.1: the Slack connection's URL
points there) and email (aiosmtpd on 127.0.0.1). Each message has the subject, the key figures and the
link to the Airflow page where the approval is answered, and that link answers. The watch DAG's
``remind`` task reminds before the timeout, through Airflow's REST API as the read-only service user.
Nobody answers: the short ``approval_timeout_h`` expires, Airflow applies the default (Reject), the run
ends green as ``rejected_by_human``, the rejection is told, and Triton still serves the old version.

Everything is real, as in test_nightly_e2e.py: Airflow 3 runs the repo's DAGs, MLflow holds the registry,
Triton serves. The channels' connections reach Airflow's processes as ``AIRFLOW_CONN_*`` variables.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from pitcrew import registry
from tests.notify_receivers import (
    NOTIFY,
    SLACK_TOKEN,
    HttpSink,
    SmtpSink,
    connections,
    email_text,
    http_sink,
    smtp_sink,
    wait_for,
)
from tests.pipeline_world import RUN_TIMEOUT_S, PipelineWorld, pipeline_world

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

MODEL = "notified"
DAG_ID = f"pitcrew_nightly_retrain_{MODEL}"
#: 90 s to answer, a reminder after 27 s: room for the watch DAG's run to start and remind in between.
TIMEOUT_H, REMINDER_H = 0.025, 0.0075


@dataclass
class Notified:
    world: PipelineWorld
    http: HttpSink
    smtp: SmtpSink

    def hooks(self, event: str) -> list[dict]:
        return [p for p in self.http.json_posts("/hook/approvals") if p["event"] == event and p["dag_id"] == DAG_ID]

    def slacks(self, prefix: str) -> list[dict]:
        return [p for p in self.http.json_posts(f"/slack/{SLACK_TOKEN}") if p["text"].startswith(prefix)]

    def mails(self, subject_prefix: str) -> list:
        return [m for m in self.smtp.messages if m["Subject"].startswith(subject_prefix)]


@pytest.fixture(scope="module")
def notified(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Notified]:
    thresholds = {"window_hours": 1, "min_window_rows": 50, "approval_timeout_h": TIMEOUT_H,
                  "approval_reminder_after_h": REMINDER_H, "max_golden_drop": 0.2, "min_accuracy_gain": -0.05}  # fmt: skip
    with http_sink() as http, smtp_sink() as smtp, pytest.MonkeyPatch.context() as mp:
        for name, value in connections(http.port, smtp.port).items():
            mp.setenv(name, value)  # the stack passes this process's environment on to Airflow
        root = tmp_path_factory.mktemp("notify")
        with pipeline_world(root, [MODEL], notify=NOTIFY, thresholds=thresholds) as world:
            yield Notified(world=world, http=http, smtp=smtp)


def _approval_page_answers(n: Notified, link: str, run_id: str) -> None:
    """The link is Airflow's page of this approval, under the API server's address, and it answers."""
    assert link == (
        f"{n.world.settings.airflow_url}/dags/{DAG_ID}/runs/{run_id}/tasks/approval/required_actions?map_index=-1"
    )
    page = httpx.get(link, timeout=30, follow_redirects=True)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"], page.text[:300]
    # The page is Airflow's UI app; what it shows there is the request, which the approver may read (and answer).
    request = n.world.approver.tasks.get_hitl_detail(DAG_ID, run_id, "approval", -1)
    assert request.response_received is False and [u.name for u in request.assigned_users] == ["approver"]


def test_a_parked_approval_is_told_reminded_and_its_timeout_told(notified: Notified) -> None:
    n = notified
    n.world.champion_with_traffic(MODEL, labelled=True)
    n.world.admin.wait_for_dag(DAG_ID)
    run_id = n.world.admin.trigger(DAG_ID, {"model": MODEL, "trigger": "manual"})
    n.world.admin.wait_for_task(DAG_ID, run_id, "approval", {"awaiting_input"}, RUN_TIMEOUT_S)
    detail = n.world.admin.tasks.get_hitl_detail(DAG_ID, run_id, "approval", -1)
    asked = detail.created_at

    # 1. Told at once, on every channel, with the figures, the deadline and the link.
    (hook,) = wait_for("the webhook notice", lambda: n.hooks("approval_waiting"), 30)
    assert hook["run_id"] == run_id and hook["task_id"] == "approval" and hook["model"] == MODEL
    assert hook["subject"] == f"pitcrew: deploy {MODEL} v2? (approval waiting)"
    assert hook["body"] == detail.body and hook["approvers"] == ["approver"] and hook["default"] == ["Reject"]
    assert any(f.startswith("accuracy, new traffic hold-out: champion ") for f in hook["figures"]), hook["figures"]
    deadline = dt.datetime.fromisoformat(hook["deadline"])
    assert abs((deadline - asked).total_seconds() - TIMEOUT_H * 3600) < 10, (deadline, asked)
    _approval_page_answers(n, hook["link"], run_id)

    (slack,) = wait_for("the Slack notice", lambda: n.slacks(hook["subject"]), 30)
    assert f"<{hook['link']}|Answer here>" in str(slack["blocks"])
    (mail,) = wait_for("the email", lambda: n.mails(hook["subject"]), 30)
    assert {a.addr_spec for a in mail["To"].addresses} == {"approver@example.com", "oncall@example.com"}
    html = email_text(mail)
    (href,) = re.findall(r'<a href="([^"]+)">Answer here</a>', html)
    assert href.replace("&amp;", "&") == hook["link"]
    assert "accuracy, new traffic hold-out: champion " in html and "approver" in html

    # 2. A reminder before the deadline, from the watch DAG (triggered here rather than waiting for its
    # five-minute schedule; a scheduled run may send it first: one reminder either way).
    time.sleep(max(0.0, (asked + dt.timedelta(hours=REMINDER_H) - dt.datetime.now(dt.UTC)).total_seconds()))
    n.world.admin.wait_for_dag("pitcrew_watch")
    n.world.admin.trigger("pitcrew_watch", {"forward": False})
    (reminder,) = wait_for("the reminder", lambda: n.hooks("approval_reminder"), 60)
    assert reminder["subject"].startswith(f"pitcrew: reminder: deploy {MODEL} v2? (no answer yet: Reject at ")
    assert reminder["link"] == hook["link"] and reminder["figures"] == hook["figures"]
    assert dt.datetime.now(dt.UTC) < deadline  # it came while an answer still counts
    wait_for("the reminder by email", lambda: n.mails("pitcrew: reminder: "), 30)
    assert n.world.admin.task_states(DAG_ID, run_id)["approval"] == "awaiting_input"

    # 3. Nobody answers: Airflow applies the default at the deadline; the run ends green as a rejection.
    state = n.world.admin.wait_for_run(DAG_ID, run_id, RUN_TIMEOUT_S)
    states = n.world.admin.task_states(DAG_ID, run_id)
    assert state == "success", states
    for task_id in ("hot_swap", "canary", "canary_decision", "promote", "rollback"):
        assert states[task_id] == "skipped", (task_id, states)
    answered = n.world.admin.tasks.get_hitl_detail(DAG_ID, run_id, "approval", -1)
    assert answered.chosen_options == ["Reject"] and answered.responded_by_user is None
    assert n.world.admin.xcom_value(DAG_ID, run_id, "record_outcome")["outcome"] == "rejected_by_human"
    # Nothing swapped: Triton serves version 1 alone, and it is still the champion.
    assert n.world.triton.ready_versions(MODEL) == [1]
    assert {p.version for p in n.world.triton.classify(MODEL, ["where is my parcel"])} == {"1"}
    assert registry.alias_version(n.world.mlflow, MODEL, registry.CHAMPION) == 1
    assert len(n.hooks("approval_reminder")) == 1  # reminded once

    # 4. The rejection by timeout is told: the approval operator calls the notifiers' ``timed_out``.
    (told,) = wait_for("the timeout notice", lambda: n.hooks("approval_timed_out"), 30)
    assert told["subject"] == f"pitcrew: deploy {MODEL} v2? No answer in time: rejected by timeout, nothing deployed"
    assert told["figures"] == hook["figures"] and told["run_link"] == hook["run_link"]
    wait_for("the timeout email", lambda: n.mails(told["subject"]), 30)
    wait_for("the timeout on Slack", lambda: n.slacks(told["subject"]), 30)
