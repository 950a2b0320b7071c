"""Suite-wide set-up."""

from __future__ import annotations

import os
import signal


def pytest_configure(config) -> None:  # noqa: ARG001
    # A CI timeout or Ctrl-C sends SIGTERM/SIGINT: turn SIGTERM into an exception in the pytest process,
    # so the `finally` blocks of stack fixtures run and no server outlives the test session. Processes
    # forked by tests (multiprocessing pools) keep the default action: terminate() must end them.
    main_pid = os.getpid()

    def _raise(signum, frame):  # noqa: ARG001
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)
