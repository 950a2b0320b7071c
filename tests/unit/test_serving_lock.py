from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from pitcrew.serving.errors import SwapInProgressError
from pitcrew.serving.lock import lock_path, model_lock


def _hold(repo, model, seconds, ready):
    with model_lock(repo, model):
        ready.set()
        time.sleep(seconds)


class TestModelLock:
    def test_second_holder_fails_clearly_naming_the_holder(self, tmp_path):
        with model_lock(tmp_path, "textclf"):
            with pytest.raises(
                SwapInProgressError, match=r"textclf: another swap is in progress.*holder pid \d+"
            ):
                with model_lock(tmp_path, "textclf"):
                    pass

    def test_other_models_are_independent(self, tmp_path):
        with model_lock(tmp_path, "a"), model_lock(tmp_path, "b"):
            assert lock_path(tmp_path, "a").exists() and lock_path(tmp_path, "b").exists()

    def test_waiter_gets_lock_after_release(self, tmp_path):
        order = []
        ready = threading.Event()

        def first():
            with model_lock(tmp_path, "m"):
                ready.set()
                time.sleep(0.3)
                order.append("first done")

        thread = threading.Thread(target=first)
        thread.start()
        ready.wait()
        with model_lock(tmp_path, "m", timeout_s=5):
            order.append("second in")
        thread.join()
        assert order == ["first done", "second in"]

    def test_held_by_another_process(self, tmp_path):
        ctx = multiprocessing.get_context("fork")
        ready = ctx.Event()
        proc = ctx.Process(target=_hold, args=(tmp_path, "m", 3.0, ready))
        proc.start()
        try:
            assert ready.wait(10)
            started = time.monotonic()
            with pytest.raises(SwapInProgressError):
                with model_lock(tmp_path, "m", timeout_s=0.2):
                    pass
            assert 0.2 <= time.monotonic() - started < 2.5  # gave up at its timeout, not when the holder let go
        finally:
            proc.join()
        with model_lock(tmp_path, "m"):  # released when the holder exits
            pass
