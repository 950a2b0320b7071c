"""What an approver is told, built from the human-in-the-loop request itself (pure: no Airflow).

An :class:`ApprovalNotice` carries one request (subject, Markdown body, who may answer, deadline, default
answer, the page where it is answered) at one stage: it started ``waiting``, a ``reminder`` before the
timeout, or it ``timed_out`` and the default was applied. Each channel renders it its own way: plain
text, HTML for email, a JSON body for a generic webhook, text and blocks for Slack. The key figures are
read from the body the approval operator wrote, so the notice never disagrees with the request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import re
from typing import Any, Literal
from urllib.parse import quote

#: Which gate asks: deploy a challenger, roll back to the previous champion, keep a version after an
#: inconclusive canary.
Kind = Literal["deploy", "rollback", "canary"]
KINDS: tuple[Kind, ...] = ("deploy", "rollback", "canary")
#: When the notice is sent: the request started waiting, a reminder, or no answer came in time.
Stage = Literal["waiting", "reminder", "timed_out"]
#: The pitcrew DAGs that ask for approvals, by prefix; the rest of the id is the model's name.
DAG_PREFIXES = ("pitcrew_maintenance_", "pitcrew_nightly_retrain_", "pitcrew_rollback_")

_QUESTIONS: dict[Kind, tuple[str, str]] = {  # with a known version, without
    "deploy": ("deploy {model} v{version}?", "deploy a new version of {model}?"),
    "rollback": ("roll {model} back to v{version}?", "roll {model} back to the previous champion?"),
    "canary": ("keep {model} v{version} after an inconclusive canary?",
               "keep the new version of {model} after an inconclusive canary?"),
}  # fmt: skip
_TIMED_OUT: dict[Kind, str] = {
    "deploy": "rejected by timeout, nothing deployed",
    "rollback": "rejected by timeout, nothing rolled back",
    "canary": "rolled back by timeout",
}
_ANYONE = "any user whose Airflow role may answer approvals"
_MAX_FIGURES = 12
#: Characters left as they are in a URL path segment (a run id such as ``manual__2026-12-01T00:00:00+00:00``).
_PATH_SAFE = ":+@!$&'()*,;=~"


def required_actions_url(base_url: str, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """The Airflow UI page where the request is answered (Airflow 3's "required actions" of the task)."""
    return (
        f"{run_url(base_url, dag_id, run_id)}/tasks/{quote(task_id, safe=_PATH_SAFE)}"
        f"/required_actions?map_index={map_index}"
    )


def run_url(base_url: str, dag_id: str, run_id: str) -> str:
    """The run's page in the Airflow UI."""
    return (
        f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe=_PATH_SAFE)}/runs/{quote(run_id, safe=_PATH_SAFE)}"
    )


def model_of(dag_id: str, models: list[str] | tuple[str, ...] | set[str]) -> str | None:
    """The model a pitcrew DAG maintains (``pitcrew_<dag>_<model>``), or None for any other DAG."""
    for prefix in DAG_PREFIXES:
        if dag_id.startswith(prefix) and dag_id[len(prefix) :] in models:
            return dag_id[len(prefix) :]
    return None


def kind_of(dag_id: str, task_id: str) -> Kind:
    """Which gate a pitcrew approval task is: the rollback DAG's, the canary decision, or the deploy approval."""
    if dag_id.startswith("pitcrew_rollback_"):
        return "rollback"
    return "canary" if task_id.startswith("canary") else "deploy"


def _plain(text: str) -> str:
    """Markdown emphasis and code marks removed."""
    return re.sub(r"\*\*|__|`", "", text).strip()


def headline(body: str | None) -> str:
    """The body's first heading, as plain text ("" without one)."""
    for line in (body or "").splitlines():
        if line.lstrip().startswith("#"):
            return _plain(line.lstrip().lstrip("#"))
    return ""


def key_figures(body: str | None, limit: int = _MAX_FIGURES) -> list[str]:
    """The request's facts, one plain line each: table rows as ``name: column value, ...``, other lines as
    they are; headings, table headers and lines of links are left out (the notice has its own links)."""
    figures: list[str] = []
    header: list[str] | None = None
    for raw in (body or "").splitlines():
        line = raw.strip()
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if all(cell and set(cell) <= set("-: ") for cell in cells):
                continue  # the separator row
            if header is None:
                header = cells
                continue
            values = ", ".join(
                f"{col} {_plain(val)}" for col, val in zip(header[1:], cells[1:], strict=False)
            )
            figures.append(f"{_plain(cells[0])}: {values}")
            continue
        header = None
        if not line or line.startswith("#") or "](" in line:
            continue
        figures.append(_plain(line[2:] if line.startswith("- ") else line))
    return figures[:limit]


def _version(text: str) -> int | None:
    match = re.search(r"\bversion (\d+)\b", text)
    return int(match.group(1)) if match else None


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclasses.dataclass(frozen=True)
class ApprovalNotice:
    """One human-in-the-loop request at one stage, and how each channel shows it."""

    kind: Kind
    stage: Stage
    model: str
    dag_id: str
    run_id: str
    task_id: str
    question: str  # the request's subject as Airflow shows it
    body: str  # the request's Markdown body
    link: str  # where it is answered
    run_link: str
    deadline: dt.datetime | None
    approvers: tuple[str, ...] = ()  # empty: anyone whose role may answer
    default: tuple[str, ...] = ()  # what no answer in time chooses
    version: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown approval kind {self.kind!r}; one of {', '.join(KINDS)}")
        if self.version is None:
            object.__setattr__(self, "version", _version(headline(self.body)))

    # -- content ----------------------------------------------------------------------------------
    @property
    def action(self) -> str:
        with_version, without = _QUESTIONS[self.kind]
        template = with_version if self.version is not None else without
        return template.format(model=self.model, version=self.version)

    @property
    def subject(self) -> str:
        if self.stage == "waiting":
            return f"pitcrew: {self.action} ({'review' if self.kind == 'canary' else 'approval'} waiting)"
        if self.stage == "reminder":
            when = f": {self.default_text} at {_when(self.deadline)}" if self.deadline else ""
            return f"pitcrew: reminder: {self.action} (no answer yet{when})"
        return f"pitcrew: {self.action} No answer in time: {_TIMED_OUT[self.kind]}"

    @property
    def default_text(self) -> str:
        return " + ".join(self.default) or "the default"

    @property
    def who(self) -> str:
        return ", ".join(self.approvers) or _ANYONE

    @property
    def figures(self) -> list[str]:
        return key_figures(self.body)

    def facts(self) -> list[tuple[str, str]]:
        """Who may answer, the deadline, what happens without an answer: (label, value) lines."""
        if self.stage == "timed_out":
            when = f" by {_when(self.deadline)}" if self.deadline else ""
            return [("Outcome", f"no answer arrived{when}: Airflow chose {self.default_text}, "
                                f"{_TIMED_OUT[self.kind]}")]  # fmt: skip
        deadline = _when(self.deadline) if self.deadline else "none"
        return [
            ("Who may answer", self.who),
            ("Deadline", f"{deadline} (no answer by then: {self.default_text})"),
        ]

    def links(self) -> list[tuple[str, str]]:
        if self.stage == "timed_out":
            return [("Run", self.run_link)]
        return [("Answer here", self.link), ("Run", self.run_link)]

    # -- renderings -------------------------------------------------------------------------------
    def text(self) -> str:
        lines = [self.subject, ""]
        top = headline(self.body) or self.question
        lines.append(top)
        lines += [f"  - {figure}" for figure in self.figures]
        lines.append("")
        lines += [f"{label}: {value}" for label, value in self.facts()]
        lines += [f"{label}: {url}" for label, url in self.links()]
        return "\n".join(lines)

    def html(self) -> str:
        esc = html.escape
        parts = [f"<h3>{esc(headline(self.body) or self.question)}</h3>"]
        if self.figures:
            parts.append("<ul>" + "".join(f"<li>{esc(f)}</li>" for f in self.figures) + "</ul>")
        parts += [f"<p><b>{esc(label)}:</b> {esc(value)}</p>" for label, value in self.facts()]
        parts += [
            f'<p><a href="{esc(url, quote=True)}">{esc(label)}</a>: {esc(url)}</p>'
            for label, url in self.links()
        ]
        return "<html><body>" + "\n".join(parts) + "</body></html>"

    def webhook_payload(self) -> dict[str, Any]:
        """The JSON a generic webhook receives: the rendered text and every field, machine-readable."""
        return {
            "source": "pitcrew",
            "event": f"approval_{self.stage}",
            "kind": self.kind,
            "model": self.model,
            "version": self.version,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "subject": self.subject,
            "question": self.question,
            "headline": headline(self.body),
            "figures": self.figures,
            "approvers": list(self.approvers),
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "default": list(self.default),
            "link": self.link,
            "run_link": self.run_link,
            "text": self.text(),
            "body": self.body,
        }

    def slack_message(self) -> tuple[str, list[dict[str, Any]]]:
        """Slack's fallback text and its blocks (mrkdwn; ``&``, ``<``, ``>`` escaped as Slack requires)."""

        def esc(text: str) -> str:
            return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{esc(self.subject)}*"}}
        ]
        top = headline(self.body) or self.question
        lines = [esc(top)] + [f"• {esc(f)}" for f in self.figures]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:2900]}})
        facts = "\n".join(f"*{esc(label)}:* {esc(value)}" for label, value in self.facts())
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": facts}})
        links = "  ".join(f"<{url}|{esc(label)}>" for label, url in self.links())
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": links}})
        return f"{self.subject}: {self.links()[0][1]}", blocks

    # -- storage (XCom) ---------------------------------------------------------------------------
    def at(self, stage: Stage) -> ApprovalNotice:
        return dataclasses.replace(self, stage=stage)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["deadline"] = self.deadline.isoformat() if self.deadline else None
        data["approvers"], data["default"] = list(self.approvers), list(self.default)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApprovalNotice:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        if values.get("deadline"):
            values["deadline"] = dt.datetime.fromisoformat(str(values["deadline"]))
        values["approvers"] = tuple(values.get("approvers") or ())
        values["default"] = tuple(values.get("default") or ())
        return cls(**values)


def notice_from_detail(
    detail: dict[str, Any], *, model: str, base_url: str, timeout: dt.timedelta | None, stage: Stage
) -> ApprovalNotice:
    """A notice from a request as Airflow's REST API lists it (``GET .../hitlDetails``): the deadline is
    when it was created plus the model's approval timeout."""
    ti = detail["task_instance"]
    created = detail.get("created_at")
    if isinstance(created, str):
        created = dt.datetime.fromisoformat(created)
    map_index = -1 if ti.get("map_index") is None else int(ti["map_index"])
    dag_id, run_id, task_id = ti["dag_id"], ti.get("dag_run_id") or ti["run_id"], ti["task_id"]
    return ApprovalNotice(
        kind=kind_of(dag_id, task_id),
        stage=stage,
        model=model,
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        question=detail.get("subject") or "",
        body=detail.get("body") or "",
        link=required_actions_url(base_url, dag_id, run_id, task_id, map_index),
        run_link=run_url(base_url, dag_id, run_id),
        deadline=created + timeout if (created and timeout) else None,
        approvers=tuple(u.get("name") or u.get("id") for u in detail.get("assigned_users") or []),
        default=tuple(detail.get("defaults") or ()),
    )
