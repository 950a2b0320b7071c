"""Real local receivers of approval notifications: an HTTP sink (generic webhook and Slack incoming webhook
posts) and an SMTP server (aiosmtpd), both on 127.0.0.1, and the Airflow connections that reach them."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: The Slack webhook token of the test connection: it must never appear in a log or an error.
SLACK_TOKEN = "T0PITCREW/B0TEST/s3cr3tW3bh00kT0k3n"


@dataclass
class HttpSink:
    port: int
    posts: list[dict[str, Any]] = field(default_factory=list)
    #: Paths answered with this status instead of 200 (a receiver that is down).
    failing: dict[str, int] = field(default_factory=dict)

    def json_posts(self, prefix: str) -> list[dict[str, Any]]:
        return [p["json"] for p in self.posts if p["path"].startswith(prefix)]


@dataclass
class SmtpSink:
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)


@contextmanager
def http_sink() -> Iterator[HttpSink]:
    """A threaded HTTP server recording every POST (path, headers, body) and answering ``ok``."""
    sink = HttpSink(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            sink.posts.append({"path": self.path, "headers": dict(self.headers), "json": body, "raw": raw})
            status = sink.failing.get(self.path.split("?")[0], 200)
            payload = b"ok" if status == 200 else b"down"
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    """aiosmtpd's SMTP server on 127.0.0.1 (a free port), keeping every message parsed."""
    from aiosmtpd.controller import Controller

    from tests.stack_fixtures import free_ports

    sink = SmtpSink(port=free_ports(1)[0])

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            sink.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            sink.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            return "250 Message accepted"

    controller = Controller(Handler(), hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def connections(http_port: int, smtp_port: int) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` of the three test channels: webhook and Slack at the HTTP sink, SMTP at the server."""
    return {
        "AIRFLOW_CONN_PITCREW_TEST_WEBHOOK": json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": http_port, "schema": "http"}
        ),
        # Slack's incoming-webhook URL is <host>/<token>: pointed at the sink, the token is a path.
        "AIRFLOW_CONN_PITCREW_TEST_SLACK": json.dumps(
            {"conn_type": "slackwebhook", "host": f"http://127.0.0.1:{http_port}/slack", "password": SLACK_TOKEN}
        ),
        "AIRFLOW_CONN_PITCREW_TEST_SMTP": json.dumps(
            {"conn_type": "smtp", "host": "127.0.0.1", "port": smtp_port,
             "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 10, "retry_limit": 1,
                       "from_email": "pitcrew@example.com"}}
        ),
    }  # fmt: skip


#: The ``notify`` list of a models-file entry that uses the three test channels.
NOTIFY = [
    {"type": "webhook", "conn_id": "pitcrew_test_webhook", "endpoint": "/hook/approvals"},
    {"type": "slack", "conn_id": "pitcrew_test_slack"},
    {"type": "email", "conn_id": "pitcrew_test_smtp", "to": ["approver@example.com", "oncall@example.com"]},
]


def wait_for(what: str, predicate: Callable[[], Any], timeout_s: float, poll_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def email_text(message: EmailMessage) -> str:
    """The message's HTML part as text (the notifier sends HTML)."""
    part = message.get_body(preferencelist=("html", "plain"))
    return part.get_content() if part is not None else ""
