"""Send feedback rows to ``POST /pitcrew/feedback`` in batches, retrying what the server says to retry."""

from __future__ import annotations

import json
from collections.abc import Sequence

import httpx
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from pitcrew.feedback.body import MAX_ROWS


class FeedbackRefused(RuntimeError):
    """The server refused a batch as a whole (auth, unknown model, malformed); the message is its reason."""


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 503


@retry(retry=retry_if_exception(_retryable), stop=stop_after_attempt(5),
       wait=wait_exponential(multiplier=0.5, max=10), reraise=True)  # fmt: skip
def _post(client: httpx.Client, url: str, body: bytes, token: str) -> httpx.Response:
    response = client.post(url, content=body, headers={"Authorization": f"Bearer {token}",
                                                       "Content-Type": "application/json"})  # fmt: skip
    if response.status_code == 503:
        response.raise_for_status()
    return response


def send_feedback(
    base_url: str, token: str, model: str, rows: Sequence[dict], *, batch_size: int = MAX_ROWS, timeout_s: float = 60
) -> dict:
    """Post ``rows`` in batches; the totals, and every rejected row numbered from 0 over all of ``rows``.

    :raises FeedbackRefused: a batch was refused whole; batches before it are stored (re-sending them
        is harmless: the endpoint counts them as duplicates).
    """
    if not 1 <= batch_size <= MAX_ROWS:
        raise ValueError(f"batch_size must be in 1..{MAX_ROWS}, got {batch_size}")
    totals = {"model": model, "rows": len(rows), "new": 0, "relabelled": 0, "duplicates": 0, "rejected": []}
    url = f"{base_url.rstrip('/')}/pitcrew/feedback"
    with httpx.Client(timeout=timeout_s) as client:
        for start in range(0, len(rows), batch_size):
            body = json.dumps({"model": model, "feedback": list(rows[start : start + batch_size])}).encode()
            response = _post(client, url, body, token)
            answer = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
            if "rejected" not in answer:  # refused whole: 400/401/413/422 with {"error": ...}
                reason = answer.get("error") or response.text[:500]
                raise FeedbackRefused(f"rows {start}..{start + batch_size - 1}: HTTP {response.status_code}: {reason}")
            for key in ("new", "relabelled", "duplicates"):
                totals[key] += answer[key]
            totals["rejected"] += [{**r, "row": r["row"] + start} for r in answer["rejected"]]
    return totals
