"""Approvers are told: the models file's ``notify`` channels, the notice, the notifier on a real HITL
operator and the watch DAG's reminders, delivered to real local receivers.

Every channel goes through its real Airflow provider (HttpHook, SlackWebhookHook, SmtpHook) to an HTTP
sink and an aiosmtpd server on 127.0.0.1 (tests/notify_receivers.py); the Slack connection points its
incoming-webhook URL at the sink. Only Airflow's task supervisor (the HITL request write) and the REST
listing of waiting requests are stood in for; the end-to-end test runs them for real.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk.exceptions import TaskAwaitingInput

from operators.approval_operators import CanaryDecisionOperator
from operators.notifiers import NOTICE_KEY, ApprovalNotifier, approval_notifiers, channel_id, redact
from operators.watch_operators import ApprovalReminderOperator
from pitcrew.models_file import ModelEntry, ModelsFileError, load_models_file
from pitcrew.notify.messages import (
    ApprovalNotice,
    headline,
    key_figures,
    kind_of,
    model_of,
    notice_from_detail,
    required_actions_url,
)
from pitcrew.notify.reminders import MAX_ATTEMPTS, ReminderLog, reminders_file
from pitcrew.pipeline.release_steps import approval_body
from pitcrew.settings import REPO_ROOT, get_settings
from tests.notify_receivers import (
    NOTIFY,
    SLACK_TOKEN,
    HttpSink,
    SmtpSink,
    connections,
    email_text,
    http_sink,
    smtp_sink,
)
from tests.unit.operator_context import RUN_ID, context_for, in_dag, use_models

MODEL = "textclf"
LABELS = ["billing", "technical", "account", "shipping"]
BASE_URL = "https://airflow.example.com"
APPROVERS = [{"id": "ann", "name": "ann"}, {"id": "bob", "name": "bob"}]
EVALUATION = {
    "decision": "promote", "reasons": ["accuracy +0.120 on new traffic (McNemar p=0.001)"],
    "challenger": {"eval": {"accuracy": 0.91, "macro_f1": 0.9}, "golden": {"accuracy": 0.95}},
    "champion": {"eval": {"accuracy": 0.79, "macro_f1": 0.75}, "golden": {"accuracy": 0.95}},
}  # fmt: skip
REPLAY = {"rows": 300, "agreement": 0.82, "confidence_shift": 0.07, "label_flips": {"billing->account": 31}}
DRIFT = {"decision": "drift", "reason": "1 of 3 columns drifted", "columns": [{"column": "text.length", "drifted": True}]}
BODY = approval_body(model=MODEL, version=3, champion=2, evaluation=EVALUATION, replay=REPLAY, drift=DRIFT,
                     links={"Airflow run": f"{BASE_URL}/dags/d/runs/r"})  # fmt: skip
DEPLOY_DAG = f"pitcrew_maintenance_{MODEL}"


def _entry(**kwargs: Any) -> ModelEntry:
    fields = {"name": MODEL, "train_data": "t.parquet", "inference_log": "log", "feedback": "fb", "labels": LABELS,
              "approvers": ["ann", "bob"], "notify": NOTIFY, **kwargs}  # fmt: skip
    return ModelEntry(**fields)


# -- the models file ------------------------------------------------------------------------------
class TestModelsFile:
    def _load(self, tmp_path: Path, **fields: Any) -> ModelEntry:
        entry = {"name": MODEL, "train_data": "t.parquet", "inference_log": "log", "feedback": "fb",
                 "labels": LABELS, **fields}  # fmt: skip
        path = tmp_path / "models.yaml"
        path.write_text(yaml.safe_dump({"models": [entry]}))
        return load_models_file(path).get(MODEL)

    def test_no_channels_by_default(self, tmp_path: Path) -> None:
        entry = self._load(tmp_path)
        assert entry.notify == [] and approval_notifiers(entry, "deploy") == []

    def test_the_three_channel_types(self, tmp_path: Path) -> None:
        entry = self._load(tmp_path, notify=[*NOTIFY, {"type": "email", "to": "team@example.com"}])
        assert [c.type for c in entry.notify] == ["webhook", "slack", "email", "email"]
        assert entry.notify[0].endpoint == "/hook/approvals"
        assert entry.notify[3].conn_id == "smtp_default" and entry.notify[3].to == ["team@example.com"]
        assert [channel_id(c) for c in entry.notify] == [
            "webhook:pitcrew_test_webhook:/hook/approvals", "slack:pitcrew_test_slack",
            "email:pitcrew_test_smtp:approver@example.com,oncall@example.com", "email:smtp_default:team@example.com",
        ]  # fmt: skip

    @pytest.mark.parametrize(
        ("notify", "message"),
        [
            ([{"type": "sms", "conn_id": "x"}], "notify.0: Input tag 'sms' found using 'type' does not match"),
            ([{"type": "webhook"}], "notify.0.webhook.conn_id: Field required"),
            ([{"type": "slack", "conn_id": "my slack"}], "notify.0.slack.conn_id: String should match pattern"),
            ([{"type": "email", "to": []}], "notify.0.email.to: List should have at least 1 item"),
            ([{"type": "email", "to": ["ann"]}], "notify.0.email.to: Value error, not an email address: ann"),
            ([{"type": "slack", "conn_id": "s", "url": "https://hooks"}], "notify.0.slack.url: Extra inputs"),
            ([{"type": "slack", "conn_id": "s"}] * 2, "notify: Value error, the same channel is listed twice"),
        ],
    )  # fmt: skip
    def test_bad_channels_are_refused_naming_the_field(self, tmp_path: Path, notify: list, message: str) -> None:
        with pytest.raises(ModelsFileError, match="models.0." + message.replace("(", r"\(").replace(".", r"\.")):
            self._load(tmp_path, notify=notify)

    def test_reminder_after_half_the_timeout_unless_set_and_before_the_timeout(self, tmp_path: Path) -> None:
        assert self._load(tmp_path, thresholds={"approval_timeout_h": 8}).thresholds.reminder_after_h == 4
        thresholds = {"approval_timeout_h": 8, "approval_reminder_after_h": 7.5}
        assert self._load(tmp_path, thresholds=thresholds).thresholds.reminder_after_h == 7.5
        with pytest.raises(ModelsFileError, match="approval_reminder_after_h .* must be less than approval_timeout_h"):
            self._load(tmp_path, thresholds={"approval_timeout_h": 8, "approval_reminder_after_h": 8})


# -- the notice -----------------------------------------------------------------------------------
def _notice(kind: str = "deploy", stage: str = "waiting", **kwargs: Any) -> ApprovalNotice:
    fields = {
        "kind": kind, "stage": stage, "model": MODEL, "dag_id": DEPLOY_DAG, "run_id": RUN_ID, "task_id": "approval",
        "question": f"Deploy a new version of {MODEL}?", "body": BODY,
        "link": required_actions_url(BASE_URL, DEPLOY_DAG, RUN_ID, "approval"),
        "run_link": f"{BASE_URL}/dags/{DEPLOY_DAG}/runs/{RUN_ID}",
        "deadline": dt.datetime(2026, 12, 2, 3, 4, tzinfo=dt.UTC), "approvers": ("ann", "bob"), "default": ("Reject",),
        **kwargs,
    }  # fmt: skip
    return ApprovalNotice(**fields)


class TestNotice:
    def test_key_figures_from_the_approval_body(self) -> None:
        figures = key_figures(BODY)
        assert headline(BODY) == f"Deploy {MODEL} version 3 (replacing 2)"
        assert "accuracy, new traffic hold-out: champion 0.790, challenger 0.910" in figures
        assert "accuracy, golden set: champion 0.950, challenger 0.950" in figures
        assert any(f.startswith("Gate: promote — accuracy +0.120") for f in figures), figures
        assert any("0.820" in f for f in figures), figures  # replay agreement
        assert "Drift: drift — 1 of 3 columns drifted" in figures
        assert not [f for f in figures if "](" in f or "**" in f or "|" in f or "`" in f], figures

    def test_canary_table_rows(self) -> None:
        body = "### Canary: inconclusive\n\nno data\n\n| metric | values | phase |\n| --- | --- | --- |\n" \
               "| failure_ratio | [nan] | inconclusive |"  # fmt: skip
        assert key_figures(body) == ["no data", "failure_ratio: values [nan], phase inconclusive"]

    @pytest.mark.parametrize(
        ("kind", "stage", "version", "subject"),
        [
            ("deploy", "waiting", 3, "pitcrew: deploy textclf v3? (approval waiting)"),
            ("deploy", "reminder", 3, "pitcrew: reminder: deploy textclf v3? (no answer yet: Reject at 2026-12-02 03:04 UTC)"),
            ("deploy", "timed_out", 3, "pitcrew: deploy textclf v3? No answer in time: rejected by timeout, nothing deployed"),
            ("rollback", "waiting", 2, "pitcrew: roll textclf back to v2? (approval waiting)"),
            ("rollback", "timed_out", 2, "pitcrew: roll textclf back to v2? No answer in time: rejected by timeout, nothing rolled back"),
            ("canary", "waiting", None, "pitcrew: keep the new version of textclf after an inconclusive canary? (review waiting)"),
            ("canary", "timed_out", None, "pitcrew: keep the new version of textclf after an inconclusive canary? No answer in time: rolled back by timeout"),
        ],
    )  # fmt: skip
    def test_subjects(self, kind: str, stage: str, version: int | None, subject: str) -> None:
        body = BODY if version == 3 else f"### Roll `{MODEL}` back to version 2" if version else "### Canary: inconclusive"
        assert _notice(kind, stage, body=body).subject == subject

    def test_text_has_figures_who_deadline_and_link(self) -> None:
        notice = _notice()
        text = notice.text()
        assert text.startswith(notice.subject + "\n\nDeploy textclf version 3 (replacing 2)\n")
        assert "  - accuracy, new traffic hold-out: champion 0.790, challenger 0.910" in text
        assert "Who may answer: ann, bob" in text
        assert "Deadline: 2026-12-02 03:04 UTC (no answer by then: Reject)" in text
        assert f"Answer here: {notice.link}" in text
        assert "Who may answer: any user whose Airflow role may answer approvals" in _notice(approvers=()).text()
        timed_out = notice.at("timed_out").text()
        assert "Answer here" not in timed_out and f"Run: {notice.run_link}" in timed_out
        assert "Outcome: no answer arrived by 2026-12-02 03:04 UTC: Airflow chose Reject" in timed_out

    def test_the_link_is_airflows_required_actions_page(self) -> None:
        task = in_dag(lambda: ApprovalOperator(task_id="approval", subject="s"), dag_id=DEPLOY_DAG)
        ti = context_for(task)["ti"]
        airflow_own = task.generate_link_to_ui(task_instance=ti, base_url=BASE_URL)
        assert required_actions_url(BASE_URL + "/", DEPLOY_DAG, RUN_ID, "approval") == airflow_own
        assert airflow_own.endswith(f"/dags/{DEPLOY_DAG}/runs/{RUN_ID}/tasks/approval/required_actions?map_index=-1")
        assert "/runs/a%2Fb%20c%3F/" in required_actions_url(BASE_URL, "d", "a/b c?", "t")

    def test_renderings_escape_what_they_must(self) -> None:
        notice = _notice(body="### Deploy `textclf` version 3\n\n- <b>&</b> \"q\"", approvers=("<ann>",))
        assert "<li>&lt;b&gt;&amp;&lt;/b&gt; &quot;q&quot;</li>" in notice.html()
        text, blocks = notice.slack_message()
        assert text == f"{notice.subject}: {notice.link}"
        flat = json.dumps(blocks)
        assert "&lt;b&gt;&amp;&lt;/b&gt;" in flat and "&lt;ann&gt;" in flat and f"<{notice.link}|Answer here>" in flat

    def test_stored_in_xcom_and_read_back(self) -> None:
        notice = _notice()
        assert ApprovalNotice.from_dict(json.loads(json.dumps(notice.to_dict()))) == notice

    def test_which_model_and_which_gate(self) -> None:
        models = {"textclf", "text"}
        assert model_of("pitcrew_maintenance_textclf", models) == "textclf"
        assert model_of("pitcrew_nightly_retrain_text", models) == "text"
        assert model_of("pitcrew_rollback_textclf", models) == "textclf"
        assert model_of("pitcrew_maintenance_other", models) is None and model_of("pitcrew_watch", models) is None
        assert kind_of("pitcrew_rollback_textclf", "approval") == "rollback"
        assert kind_of(DEPLOY_DAG, "canary_decision") == "canary" and kind_of(DEPLOY_DAG, "approval") == "deploy"

    def test_redact_drops_urls(self) -> None:
        message = f"404 Client Error: Not Found for url: https://hooks.slack.com/services/{SLACK_TOKEN}"
        assert SLACK_TOKEN not in redact(message) and "<url>" in redact(message)


# -- the notifier on a real HITL operator --------------------------------------------------------
class Receivers:
    def __init__(self, http: HttpSink, smtp: SmtpSink) -> None:
        self.http, self.smtp = http, smtp

    def webhook(self) -> list[dict[str, Any]]:
        return self.http.json_posts("/hook/approvals")

    def slack(self) -> list[dict[str, Any]]:
        return self.http.json_posts("/slack/")


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receivers]:
    with http_sink() as http, smtp_sink() as smtp:
        for name, value in connections(http.port, smtp.port).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AIRFLOW__API__BASE_URL", BASE_URL + "/")
        yield Receivers(http, smtp)


@pytest.fixture
def upserts(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The HITL requests written (Airflow's call to the task supervisor, recorded)."""
    recorded: list[dict[str, Any]] = []
    monkeypatch.setattr(
        "airflow.providers.standard.operators.hitl.upsert_hitl_detail", lambda **kwargs: recorded.append(kwargs)
    )
    return recorded


def _deploy_approval(entry: ModelEntry) -> HITLOperator:
    """An approval with the deployment body (the real DeploymentApprovalOperator builds it from MLflow)."""
    return in_dag(
        lambda: ApprovalOperator(
            task_id="approval", subject=f"Deploy a new version of {MODEL}?", body=BODY, defaults=["Reject"],
            assigned_users=APPROVERS, response_timeout=dt.timedelta(hours=24),
            notifiers=approval_notifiers(entry, "deploy"),
        ),
        "hot_swap", dag_id=DEPLOY_DAG,
    )  # fmt: skip


def _park(task: HITLOperator, context: dict[str, Any]) -> None:
    with pytest.raises(TaskAwaitingInput):
        task.execute(context)


class TestApprovalNotifier:
    def test_a_waiting_approval_reaches_every_channel(self, receivers: Receivers, upserts: list) -> None:
        task = _deploy_approval(_entry())
        context = context_for(task)
        before = dt.datetime.now(dt.UTC)
        _park(task, context)
        assert len(upserts) == 1  # the request is written before anyone is told
        link = HITLOperator.generate_link_to_ui_from_context(context=context)

        (hook,) = receivers.webhook()
        assert hook["event"] == "approval_waiting" and hook["kind"] == "deploy" and hook["model"] == MODEL
        assert hook["subject"] == "pitcrew: deploy textclf v3? (approval waiting)"
        assert hook["link"] == link and hook["version"] == 3
        assert "accuracy, new traffic hold-out: champion 0.790, challenger 0.910" in hook["figures"]
        assert hook["approvers"] == ["ann", "bob"] and hook["default"] == ["Reject"]
        deadline = dt.datetime.fromisoformat(hook["deadline"])
        assert before + dt.timedelta(hours=24) <= deadline <= dt.datetime.now(dt.UTC) + dt.timedelta(hours=24)
        assert hook["body"] == BODY and (hook["dag_id"], hook["run_id"], hook["task_id"]) == (DEPLOY_DAG, RUN_ID, "approval")

        (slack,) = [p for p in receivers.http.posts if p["path"].startswith("/slack/")]
        assert slack["path"] == f"/slack/{SLACK_TOKEN}"
        assert slack["json"]["text"] == f"pitcrew: deploy textclf v3? (approval waiting): {link}"
        assert f"<{link}|Answer here>" in json.dumps(slack["json"]["blocks"])

        (mail,) = receivers.smtp.messages
        assert receivers.smtp.envelopes == [("pitcrew@example.com", ["approver@example.com", "oncall@example.com"])]
        assert mail["Subject"] == "pitcrew: deploy textclf v3? (approval waiting)"
        html = email_text(mail)
        assert f'href="{link.replace("&", "&amp;")}"' in html
        assert "accuracy, new traffic hold-out: champion 0.790, challenger 0.910" in html
        assert "ann, bob" in html

        stored = context["ti"].pushed(NOTICE_KEY)
        assert ApprovalNotice.from_dict(stored).subject == hook["subject"]

    def test_the_timeout_is_told_with_the_figures_of_the_request(self, receivers: Receivers, upserts: list) -> None:
        task = _deploy_approval(_entry())
        context = context_for(task)
        _park(task, context)
        # Resumed after the timeout, the task is a fresh object: the body it wrote is gone, the XCom is not.
        resumed = _deploy_approval(_entry())
        resumed.body = None
        for notifier in resumed.notifiers:
            notifier.timed_out({**context, "task": resumed})

        waiting, timed_out = receivers.webhook()
        assert timed_out["event"] == "approval_timed_out"
        assert timed_out["subject"] == "pitcrew: deploy textclf v3? No answer in time: rejected by timeout, nothing deployed"
        assert timed_out["figures"] == waiting["figures"] and "Airflow chose Reject" in timed_out["text"]
        assert receivers.slack()[1]["text"].startswith(timed_out["subject"])
        assert [m["Subject"] for m in receivers.smtp.messages] == [waiting["subject"], timed_out["subject"]]

    def test_canary_review(self, receivers: Receivers, upserts: list) -> None:
        entry = _entry(notify=[NOTIFY[0]])
        task = in_dag(
            lambda: CanaryDecisionOperator(task_id="canary_decision", assigned_users=APPROVERS,
                                           response_timeout=dt.timedelta(hours=2),
                                           notifiers=approval_notifiers(entry, "canary")),
            "promote", "rollback", dag_id=DEPLOY_DAG,
        )  # fmt: skip
        context = context_for(task, canary={"phase": "inconclusive", "reason": "no traffic", "measurements": [
            {"metric": "failure_ratio", "values": "[nan]", "phase": "inconclusive"}]})  # fmt: skip
        _park(task, context)
        (notifier,) = task.notifiers
        notifier.timed_out(context)
        waiting, timed_out = receivers.webhook()
        assert waiting["subject"] == f"pitcrew: keep the new version of {MODEL} after an inconclusive canary? (review waiting)"
        assert waiting["default"] == ["Roll back"] and "failure_ratio: bound n/a, measured [nan], phase inconclusive" in waiting["figures"]
        assert timed_out["subject"].endswith("No answer in time: rolled back by timeout")
        assert waiting["link"].endswith("/tasks/canary_decision/required_actions?map_index=-1")

    def test_a_broken_channel_never_fails_the_approval_nor_logs_a_secret(
        self, receivers: Receivers, upserts: list, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
    ) -> None:
        from tests.stack_fixtures import free_ports

        receivers.http.failing[f"/slack/{SLACK_TOKEN}"] = 500
        dead_smtp = json.loads(connections(receivers.http.port, free_ports(1)[0])["AIRFLOW_CONN_PITCREW_TEST_SMTP"])
        monkeypatch.setenv("AIRFLOW_CONN_PITCREW_TEST_SMTP", json.dumps(dead_smtp))
        task = _deploy_approval(_entry())
        _park(task, context_for(task))  # still parks: the request waits, its deadline applies
        assert len(receivers.webhook()) == 1 and receivers.smtp.messages == []
        out, err = capfd.readouterr()  # Airflow's task logging (structlog) writes to the console here
        failures = [line for line in (out + err).splitlines() if "could not tell" in line]
        assert any("could not tell slack:pitcrew_test_slack" in m and "Status Code: 500" in m for m in failures), out + err
        assert any("could not tell email:pitcrew_test_smtp" in m for m in failures), failures
        assert SLACK_TOKEN not in out + err

    def test_unknown_kind_is_refused(self) -> None:
        with pytest.raises(ValueError, match="unknown approval kind 'merge'"):
            ApprovalNotifier(channel=_entry().notify[0], kind="merge", model=MODEL)  # type: ignore[arg-type]


# -- reminders -------------------------------------------------------------------------------------
class FakeApi:
    """Airflow's REST listing of waiting requests (``AirflowApi.waiting_approvals``), as its JSON."""

    def __init__(self) -> None:
        self.waiting: list[dict[str, Any]] = []
        self.calls: list[str] = []

    def waiting_approvals(self, dag_id_prefix: str = "pitcrew_") -> list[dict[str, Any]]:
        self.calls.append(dag_id_prefix)
        return [d for d in self.waiting if d["task_instance"]["dag_id"].startswith(dag_id_prefix)]

    def ask(self, dag_id: str, *, hours_ago: float, task_id: str = "approval", run_id: str = RUN_ID) -> dict:
        detail = {
            "task_instance": {"dag_id": dag_id, "dag_run_id": run_id, "task_id": task_id, "map_index": -1},
            "created_at": (dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours_ago)).isoformat(),
            "subject": f"Deploy a new version of {MODEL}?", "body": BODY, "assigned_users": APPROVERS,
            "defaults": ["Reject"], "options": ["Approve", "Reject"], "response_received": False,
        }  # fmt: skip
        self.waiting.append(detail)
        return detail


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, receivers: Receivers) -> FakeApi:
    from operators.airflow_api_hook import AirflowApiHook

    fake = FakeApi()
    monkeypatch.setattr(AirflowApiHook, "api", property(lambda hook: fake))
    use_models(
        monkeypatch, tmp_path,
        _entry(thresholds={"approval_timeout_h": 24}),  # reminded after 12 h
        _entry(name="quiet", notify=[]),
        _entry(name="other", notify=[NOTIFY[0]], thresholds={"approval_timeout_h": 4, "approval_reminder_after_h": 1}),
    )  # fmt: skip
    yield fake
    get_settings.cache_clear()


def _remind() -> list[dict[str, Any]]:
    task = in_dag(lambda: ApprovalReminderOperator(task_id="remind"), dag_id="pitcrew_watch")
    return task.execute(context_for(task))


class TestReminders:
    def test_once_per_request_and_channel_after_reminder_after(self, api: FakeApi, receivers: Receivers) -> None:
        api.ask(DEPLOY_DAG, hours_ago=13)  # due: 12 h of 24
        api.ask(f"pitcrew_rollback_{MODEL}", hours_ago=11)  # not yet
        api.ask("pitcrew_maintenance_quiet", hours_ago=13)  # no channels
        api.ask("pitcrew_nightly_retrain_other", hours_ago=1.5, task_id="canary_decision")  # due: 1 h of 4
        api.ask("pitcrew_maintenance_other", hours_ago=5)  # past its deadline: the timeout is due, not a reminder
        tried = _remind()
        assert api.calls == ["pitcrew_"]
        assert {(t["dag_id"], t["channel"]) for t in tried} == {
            (DEPLOY_DAG, "webhook:pitcrew_test_webhook:/hook/approvals"), (DEPLOY_DAG, "slack:pitcrew_test_slack"),
            (DEPLOY_DAG, "email:pitcrew_test_smtp:approver@example.com,oncall@example.com"),
            ("pitcrew_nightly_retrain_other", "webhook:pitcrew_test_webhook:/hook/approvals"),
        }  # fmt: skip
        assert all(t["delivered"] for t in tried)
        by_model = {p["model"]: p for p in receivers.webhook()}
        deploy, canary = by_model[MODEL], by_model["other"]
        assert deploy["event"] == "approval_reminder" and deploy["model"] == MODEL
        assert deploy["subject"].startswith("pitcrew: reminder: deploy textclf v3? (no answer yet: Reject at ")
        assert deploy["link"] == f"{BASE_URL}/dags/{DEPLOY_DAG}/runs/{RUN_ID}/tasks/approval/required_actions?map_index=-1"
        created = dt.datetime.fromisoformat(api.waiting[0]["created_at"])
        assert dt.datetime.fromisoformat(deploy["deadline"]) == created + dt.timedelta(hours=24)
        assert canary["kind"] == "canary" and canary["model"] == "other"
        assert [m["Subject"] for m in receivers.smtp.messages] == [deploy["subject"]]
        assert len(receivers.slack()) == 1
        # The next poll reminds nobody again.
        assert _remind() == []
        assert len(receivers.http.posts) == 3 and len(receivers.smtp.messages) == 1

    def test_a_failed_channel_is_tried_again_then_given_up(self, api: FakeApi, receivers: Receivers) -> None:
        api.ask(DEPLOY_DAG, hours_ago=13)
        receivers.http.failing[f"/slack/{SLACK_TOKEN}"] = 503
        first = _remind()
        assert {t["channel"]: t["delivered"] for t in first}["slack:pitcrew_test_slack"] is False
        for _ in range(MAX_ATTEMPTS - 1):
            assert [(t["channel"], t["delivered"]) for t in _remind()] == [("slack:pitcrew_test_slack", False)]
        assert _remind() == []  # given up
        assert len(receivers.webhook()) == 1 and len(receivers.smtp.messages) == 1

    def test_answered_requests_are_forgotten(self, api: FakeApi, receivers: Receivers) -> None:
        api.ask(DEPLOY_DAG, hours_ago=13)
        _remind()
        path = reminders_file(get_settings().home_dir)
        assert len(json.loads(path.read_text())) == 1
        api.waiting.clear()
        assert _remind() == []
        assert json.loads(path.read_text()) == {}

    def test_nobody_to_remind_asks_no_api(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        from operators.airflow_api_hook import AirflowApiHook

        monkeypatch.setattr(AirflowApiHook, "api", property(lambda hook: pytest.fail("the API was called")))
        use_models(monkeypatch, tmp_path, _entry(notify=[]))
        assert _remind() == []
        get_settings.cache_clear()

    def test_reminder_log_survives_a_damaged_file(self, tmp_path: Path) -> None:
        path = tmp_path / "reminders.json"
        path.write_text("{not json")
        with ReminderLog(path) as log:
            assert log.pending("k", ["a"]) == ["a"]
            log.record("k", "a", delivered=True, now=dt.datetime.now(dt.UTC))
        with ReminderLog(path) as log:
            assert log.pending("k", ["a", "b"]) == ["b"]

    def test_notice_from_the_rest_listing(self) -> None:
        detail = FakeApi().ask(f"pitcrew_rollback_{MODEL}", hours_ago=1)
        detail["body"] = f"### Roll `{MODEL}` back to version 2\n\n- Triton serves version **3** now"
        notice = notice_from_detail(detail, model=MODEL, base_url=BASE_URL, timeout=dt.timedelta(hours=2),
                                    stage="reminder")  # fmt: skip
        assert notice.kind == "rollback" and notice.version == 2 and notice.approvers == ("ann", "bob")
        assert notice.figures == ["Triton serves version 3 now"]
        assert notice.deadline == dt.datetime.fromisoformat(detail["created_at"]) + dt.timedelta(hours=2)


# -- wiring ----------------------------------------------------------------------------------------
def test_dags_pass_the_models_channels_to_every_gate(tmp_path: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    entry = {"train_data": "t.parquet", "inference_log": "log", "feedback": "fb", "labels": LABELS}
    models = {"models": [{"name": "alpha", **entry, "notify": NOTIFY[:2]}, {"name": "beta", **entry}]}
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(models))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PITCREW_MODELS_FILE", str(tmp_path / "models.yaml"))
        mp.syspath_prepend(str(REPO_ROOT / "dags"))
        get_settings.cache_clear()
        bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    get_settings.cache_clear()
    assert bag.import_errors == {}
    gates = {("pitcrew_maintenance_alpha", "approval"): "deploy", ("pitcrew_maintenance_alpha", "canary_decision"): "canary",
             ("pitcrew_nightly_retrain_alpha", "approval"): "deploy", ("pitcrew_rollback_alpha", "approval"): "rollback"}  # fmt: skip
    for (dag_id, task_id), kind in gates.items():
        notifiers = bag.dags[dag_id].get_task(task_id).notifiers
        assert [(type(n), n.kind, n.model, n.channel.type) for n in notifiers] == [
            (ApprovalNotifier, kind, "alpha", "webhook"), (ApprovalNotifier, kind, "alpha", "slack")
        ], (dag_id, task_id)  # fmt: skip
    assert bag.dags["pitcrew_maintenance_beta"].get_task("approval").notifiers == []
    remind = bag.dags["pitcrew_watch"].get_task("remind")
    assert isinstance(remind, ApprovalReminderOperator) and remind.upstream_task_ids == set()
