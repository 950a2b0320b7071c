"""Approvers are told: a human-in-the-loop notifier per channel of the model's ``notify`` list.

Airflow's HITL operators call their ``notifiers`` right after the request is written, before the task
parks in ``awaiting_input``; :class:`ApprovalNotifier` then sends the subject, the key figures (read from
the request's body), who may answer, the deadline and the link to the Airflow page where it is answered.
The approval operators call :meth:`ApprovalNotifier.timed_out` when the scheduler applied the default
because nobody answered in time. Reminders come from the watch DAG
(:class:`operators.watch_operators.ApprovalReminderOperator`), through :func:`send_notice` as well.

Each channel goes through its Airflow provider, which reads the secret from the channel's connection:
``webhook``: ``HttpNotifier`` (apache-airflow-providers-http; a JSON body); ``slack``:
``SlackWebhookNotifier`` (an incoming webhook, connection type ``slackwebhook``); ``email``:
``SmtpNotifier`` (connection type ``smtp``). The provider notifiers are called with ``notify`` directly,
so nothing of the message is rendered as a Jinja template.

A channel that fails is logged (without the URL or the error text that may hold a token) and never
fails the approval: the request still waits, and its deadline still applies.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    from airflow.sdk import Context

    from pitcrew.models_file import ModelEntry, NotifyChannel
    from pitcrew.notify.messages import ApprovalNotice, Kind, Stage

#: XCom key of the notice sent when the request started waiting (the timeout notice reuses it: on
#: resume the operator is a fresh object without the body it wrote).
NOTICE_KEY = "pitcrew_notice"
#: Seconds a webhook or Slack post may take; an SMTP connection's own ``timeout`` extra applies to email.
SEND_TIMEOUT_S = 15
_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


def channel_id(channel: NotifyChannel) -> str:
    """A stable name of a channel, for logs and the reminder log (no secret: connection ids only)."""
    if channel.type == "email":
        return f"email:{channel.conn_id}:{','.join(channel.to)}"
    if channel.type == "webhook" and channel.endpoint:
        return f"webhook:{channel.conn_id}:{channel.endpoint}"
    return f"{channel.type}:{channel.conn_id}"


def deliver(channel: NotifyChannel, notice: ApprovalNotice, context: Context) -> None:
    """Send ``notice`` on ``channel`` through the channel's provider; raises what the provider raises."""
    if channel.type == "webhook":
        from airflow.providers.http.notifications.http import HttpNotifier

        HttpNotifier(
            http_conn_id=channel.conn_id, endpoint=channel.endpoint, json=notice.webhook_payload(),
            extra_options={"timeout": SEND_TIMEOUT_S},
        ).notify(context)  # fmt: skip
    elif channel.type == "slack":
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        text, blocks = notice.slack_message()
        SlackWebhookNotifier(
            slack_webhook_conn_id=channel.conn_id, text=text, blocks=blocks, unfurl_links=False,
            timeout=SEND_TIMEOUT_S,
        ).notify(context)  # fmt: skip
    elif channel.type == "email":
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        SmtpNotifier(
            to=list(channel.to), from_email=channel.from_email, subject=notice.subject,
            html_content=notice.html(), smtp_conn_id=channel.conn_id,
        ).notify(context)  # fmt: skip
    else:  # the models file admits no other type
        raise ValueError(f"unknown notify channel type {channel.type!r}")


def redact(text: str) -> str:
    """An error message without URLs (a Slack webhook URL is its token)."""
    return _URL.sub("<url>", text)[:300]


def send_notice(channel: NotifyChannel, notice: ApprovalNotice, context: Context, log: Any) -> bool:
    """:func:`deliver`, logging the outcome; a failure is logged and returned, never raised."""
    try:
        deliver(channel, notice, context)
    except Exception as exc:  # noqa: BLE001  (a broken channel must not fail the approval)
        log.warning(
            "could not tell %s about %s.%s (%s): %s: %s", channel_id(channel), notice.dag_id, notice.task_id,
            notice.stage, type(exc).__name__, redact(str(exc)),
        )  # fmt: skip
        return False
    log.info("told %s: %s", channel_id(channel), notice.subject)
    return True


class ApprovalNotifier(BaseNotifier):
    """Tell one channel that a pitcrew approval waits, and later that it timed out.

    :param channel: one entry of the model's ``notify`` list.
    :param kind: which gate: ``deploy``, ``rollback`` or ``canary``.
    :param model: the model's name.
    """

    template_fields: Sequence[str] = ()

    def __init__(self, *, channel: NotifyChannel, kind: Kind, model: str) -> None:
        from pitcrew.notify.messages import KINDS

        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown approval kind {kind!r}; one of {', '.join(KINDS)}")
        self.channel, self.kind, self.model = channel, kind, model

    def notice(self, context: Context, stage: Stage) -> ApprovalNotice:
        """The notice of the request the running task wrote (``context["task"]``, a HITL operator)."""
        from airflow.configuration import conf

        from pitcrew.notify.messages import ApprovalNotice, required_actions_url, run_url

        task, ti = context["task"], context["ti"]
        base = conf.get("api", "base_url", fallback="")
        map_index = getattr(ti, "map_index", -1)
        map_index = -1 if map_index is None else map_index
        deadline = (getattr(task, "hitl_summary_extra", None) or {}).get("timeout_datetime")
        if deadline:
            deadline = dt.datetime.fromisoformat(deadline)
        elif getattr(task, "response_timeout", None):
            deadline = dt.datetime.now(dt.UTC) + task.response_timeout
        return ApprovalNotice(
            kind=self.kind,
            stage=stage,
            model=self.model,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            question=str(getattr(task, "subject", "") or ""),
            body=str(getattr(task, "body", "") or ""),
            link=required_actions_url(base, ti.dag_id, ti.run_id, ti.task_id, map_index),
            run_link=run_url(base, ti.dag_id, ti.run_id),
            deadline=deadline or None,
            approvers=tuple(u.get("name") or u["id"] for u in getattr(task, "assigned_users", None) or []),
            default=tuple(getattr(task, "defaults", None) or ()),
        )

    def notify(self, context: Context) -> None:
        """The request started waiting: tell the channel, and keep the notice for the timeout message."""
        notice = self.notice(context, "waiting")
        context["ti"].xcom_push(key=NOTICE_KEY, value=notice.to_dict())
        send_notice(self.channel, notice, context, self.log)

    def timed_out(self, context: Context) -> None:
        """Nobody answered in time and Airflow applied the default (reject; for the canary: roll back)."""
        from pitcrew.notify.messages import ApprovalNotice

        stored = context["ti"].xcom_pull(task_ids=context["task"].task_id, key=NOTICE_KEY)
        try:
            notice = ApprovalNotice.from_dict(stored) if stored else self.notice(context, "waiting")
        except (TypeError, ValueError, KeyError) as exc:
            self.log.warning("the stored notice is unreadable (%s); telling without the figures", exc)
            notice = self.notice(context, "waiting")
        send_notice(self.channel, notice.at("timed_out"), context, self.log)


def approval_notifiers(entry: ModelEntry, kind: Kind) -> list[ApprovalNotifier]:
    """One notifier per channel of the model's ``notify`` list (none: nobody is told)."""
    return [ApprovalNotifier(channel=channel, kind=kind, model=entry.name) for channel in entry.notify]
