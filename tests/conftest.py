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


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ARG001
    # Integration modules first, unit modules after, each group still in pytest-randomly's shuffled order
    # (it shuffles before any plain hook, and this sort is stable). Under pytest-xdist (./dev.sh test runs
    # two workers) the long modules then start early and the short unit tests fill in around them, instead
    # of one long module running alone at the end.
    items.sort(key=lambda item: item.get_closest_marker("integration") is None)
