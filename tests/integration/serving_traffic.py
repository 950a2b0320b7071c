"""Steady unversioned requests in the background, the way clients call a model during a hot swap."""

from __future__ import annotations

import threading
from collections import Counter

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
