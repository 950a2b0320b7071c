"""Suite-wide set-up."""

from __future__ import annotations

import signal


def pytest_configure(config) -> None:  # noqa: ARG001
    # A CI timeout or Ctrl-C sends SIGTERM/SIGINT: turn SIGTERM into an exception too, so the `finally`
    # blocks of stack fixtures run and no server outlives the test session.
    def _raise(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)
