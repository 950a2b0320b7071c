"""Steady unversioned requests in the background, the way clients call a model during a hot swap."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence

from pitcrew.serving.client import TritonControl


class Traffic:
    """Unversioned requests in a loop until the block ends; counts answers per version and every failure."""

    def __init__(self, url: str, model: str, text: str = "refund my order") -> None:
        self.client = TritonControl(url, retries=1)
        self.model, self.text = model, text
        self.answers: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def ok(self) -> int:
        return sum(self.answers.values())

    @property
    def versions(self) -> set[str]:
        return set(self.answers)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers[self.client.classify(self.model, [self.text])[0].version] += 1
            except Exception as exc:  # every failure is a finding of the test
                self.failures.append(str(exc))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class IdTraffic:
    """``clients`` clients in a loop, each request with a fresh id; records (id, version), each answer's
    (version, label) and every failure. ``text`` is one text, or several sent in turn."""

    def __init__(
        self,
        url: str,
        model: str,
        clients: int = 2,
        text: str | Sequence[str] = "please refund my order",
        interval_s: float = 0.0,
    ) -> None:
        self.url, self.model, self.interval_s = url, model, interval_s
        self.texts = [text] if isinstance(text, str) else list(text)
        self.answers: list[tuple[str, str]] = []
        self.labels: list[tuple[str, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        client = TritonControl(self.url, retries=1)
        for text in itertools.cycle(self.texts):
            if self._stop.is_set():
                return
            rid = uuid.uuid4().hex
            try:
                (answer,) = client.classify(self.model, [text], request_id=rid)
                self.answers.append((rid, answer.version))
                self.labels.append((answer.version, answer.label))
            except Exception as exc:  # every failure is a finding
                self.failures.append(str(exc))
            self._stop.wait(self.interval_s)

    def mark(self) -> int:
        return len(self.answers)

    def __enter__(self) -> IdTraffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def wait_for_answers(traffic: IdTraffic, n: int) -> list[tuple[str, str]]:
    """The next ``n`` answers (waits at most two minutes for them)."""
    start = traffic.mark()
    deadline = time.monotonic() + 120
    while traffic.mark() < start + n and time.monotonic() < deadline:
        time.sleep(0.05)
    return traffic.answers[start : start + n]
