"""Every alert's ``runbook_url`` points at a heading that exists in docs/runbooks.md."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from pitcrew.settings import REPO_ROOT

RUNBOOKS = REPO_ROOT / "docs" / "runbooks.md"
PROMETHEUS_RULES = sorted((REPO_ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
GRAFANA_RULES = REPO_ROOT / "deploy" / "grafana" / "provisioning" / "alerting" / "rules.yml"


def github_anchor(heading: str) -> str:
    """GitHub's heading slug: lowercase, punctuation other than ``-`` and ``_`` dropped, spaces to ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def heading_anchors(markdown: str) -> set[str]:
    """Anchors of the ATX headings outside code fences; repeats get GitHub's ``-1``, ``-2`` suffixes."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        match = None if in_fence else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = github_anchor(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            anchors.add(base if count == 0 else f"{base}-{count}")
    return anchors


def _runbook_urls(node: object) -> list[tuple[str, str]]:
    """``(alert name, runbook_url)`` for every rule (Prometheus ``alert:`` or Grafana ``title:``) below node."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        url = (node.get("annotations") or {}).get("runbook_url")
        if url is not None:
            found.append((str(node.get("alert") or node.get("title")), url))
        for value in node.values():
            found.extend(_runbook_urls(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_runbook_urls(item))
    return found


def _alert_names(path: Path) -> list[str]:
    rules = yaml.safe_load(path.read_text())
    return [rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


LINKS = [(path.name, alert, url) for path in PROMETHEUS_RULES for alert, url in _runbook_urls(yaml.safe_load(path.read_text()))]  # fmt: skip
GRAFANA_LINKS = _runbook_urls(yaml.safe_load(GRAFANA_RULES.read_text()))


class TestGithubAnchor:
    @pytest.mark.parametrize(
        ("heading", "anchor"),
        [
            ("TritonInferenceFailures", "tritoninferencefailures"),
            ("Rolling back by hand", "rolling-back-by-hand"),
            ("What pitcrew does when `any` alert fires!", "what-pitcrew-does-when-any-alert-fires"),
            ("snake_case and-dash", "snake_case-and-dash"),
        ],
    )
    def test_slug(self, heading: str, anchor: str) -> None:
        assert github_anchor(heading) == anchor

    def test_repeated_headings_and_fences(self) -> None:
        text = "# Checks\n## Checks\n```\n# not a heading\n```\n### Other #\n"
        assert heading_anchors(text) == {"checks", "checks-1", "other"}


def test_every_prometheus_alert_has_a_runbook_link() -> None:
    alerts = [(path.name, name) for path in PROMETHEUS_RULES for name in _alert_names(path)]
    assert alerts, "no alert rules found"
    assert sorted(alerts) == sorted((file, alert) for file, alert, _ in LINKS)


@pytest.mark.parametrize(("rules_file", "alert", "url"), LINKS, ids=[alert for _, alert, _ in LINKS])
def test_prometheus_runbook_anchor_exists(rules_file: str, alert: str, url: str) -> None:
    parts = urlsplit(url)
    assert parts.path.endswith("/docs/runbooks.md"), f"{rules_file}: {alert} links to {url}"
    assert parts.fragment == alert.lower(), f"{rules_file}: {alert} links to #{parts.fragment}"
    assert parts.fragment in heading_anchors(RUNBOOKS.read_text()), f"no heading for #{parts.fragment}"


@pytest.mark.parametrize(("alert", "url"), GRAFANA_LINKS, ids=[alert for alert, _ in GRAFANA_LINKS])
def test_grafana_runbook_anchor_exists(alert: str, url: str) -> None:
    parts = urlsplit(url)
    assert parts.path.endswith("/docs/runbooks.md") and parts.fragment, url
    assert parts.fragment in heading_anchors(RUNBOOKS.read_text()), f"{alert}: no #{parts.fragment}"


def _paging_table() -> dict[str, list[str]]:
    """The rows of "Who is paged for what": alert -> [pager, people, webhook] cells."""
    text = RUNBOOKS.read_text()
    section = text.split("## Who is paged for what", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip().strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_paging_table_lists_every_alert_as_routed() -> None:
    from tests.unit.conftest import alert_labels, expected_receivers

    labels = alert_labels()
    table = _paging_table()
    alerts = sorted({name for path in PROMETHEUS_RULES for name in _alert_names(path)})
    assert set(alerts) <= set(table), "every alert needs a row in the paging table"
    for alert in alerts:
        pager, people, webhook = table[alert]
        receivers = expected_receivers(alert, labels[alert])
        assert pager.startswith("yes") == ("pager" in receivers), alert
        assert people.startswith("yes") == ("people" in receivers), alert
        assert webhook.startswith("yes") == ("pitcrew" in receivers), alert
