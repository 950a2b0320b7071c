"""Load generators and figures of benchmarks/serving.py: the texts, raw ONNX Runtime, Triton clients.

Every measurement is a *slice*: a few seconds of one case, with its texts counted, its latencies kept and
the CPU it cost. benchmarks/serving.py interleaves slices of the cases, so that a shared machine's drifting
background load falls on all of them alike, and pools each case's slices with :func:`pooled`.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from pathlib import Path

import numpy as np


def summarize(latencies_s: list[float], completed: int, seconds: float) -> dict:
    """texts/s over ``seconds``, and p50/p99 latency in ms (None without samples)."""
    ms = np.asarray(latencies_s, dtype=float) * 1000
    pct = (lambda q: round(float(np.percentile(ms, q)), 2)) if len(ms) else (lambda q: None)
    rate = round(completed / seconds, 2) if seconds > 0 else 0.0
    return {"texts_per_s": rate, "p50_ms": pct(50), "p99_ms": pct(99)}


def pooled(slices: list[dict]) -> dict:
    """One case's slices as one measurement: texts and seconds summed, latencies pooled."""
    latencies = [x for s in slices for x in s["latencies"]]
    return summarize(latencies, sum(s["completed"] for s in slices), sum(s["seconds"] for s in slices))


def mixed_texts(n: int, seed: int = 17) -> list[str]:
    """``n`` support messages of both demo domains, 1 to 8 of them joined: a dozen to over 128 tokens."""
    from training.demo_data import generate

    pool = [*generate(400, domain="A", seed=seed).text, *generate(400, domain="B", seed=seed + 1).text]
    rng = random.Random(seed)
    return [" ".join(rng.choice(pool) for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 5, 8)))) for _ in range(n)]


class RawOrt:
    """The front's work without a server: the artifact's tokenizer (truncated, padded to the longest text
    of the batch), ONNX Runtime on the CPU with ``threads`` intra-op threads, softmax."""

    def __init__(self, artifact: Path, threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        serving = json.loads((artifact / "serving.json").read_text())
        self.input_names = list(serving["input_names"])
        self.output_name = serving.get("output_name", "logits")
        self.tokenizer = Tokenizer.from_file(str(artifact / "tokenizer.json"))
        self.tokenizer.enable_truncation(int(serving["max_length"]))
        pad = self.tokenizer.token_to_id("[PAD]")
        self.tokenizer.enable_padding(pad_id=pad if pad is not None else 0, pad_token="[PAD]")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(artifact / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def __call__(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
        feeds = {n: np.array([getattr(e, fields[n]) for e in encodings], dtype=np.int64) for n in self.input_names}
        logits = self.session.run([self.output_name], feeds)[0]
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    def slice(self, texts: list[str], batch: int, callers: int, seconds: float) -> dict:
        """``callers`` threads each running batches of the next ``batch`` texts for ``seconds`` (ONNX Runtime
        and the tokenizer release the GIL); every text of a batch has the batch's latency."""
        stream, lock = itertools.cycle(texts), threading.Lock()
        latencies: list[float] = []
        cpu0 = time.process_time()
        started = time.perf_counter()

        def call() -> None:
            while time.perf_counter() - started < seconds:
                with lock:
                    chunk = [next(stream) for _ in range(batch)]
                t0 = time.perf_counter()
                self(chunk)
                latencies.extend([time.perf_counter() - t0] * batch)

        threads = [threading.Thread(target=call) for _ in range(callers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        return {"completed": len(latencies), "seconds": elapsed, "latencies": latencies,
                "cpu_share": (time.process_time() - cpu0) / elapsed}  # fmt: skip


class ClientLoad:
    """``clients`` threads of this process, each with its own gRPC connection, sending one text per request
    (the next of a shared stream) in a closed loop to whichever model the current slice names.

    Between slices they pause: :meth:`slice` waits until every request it sent is answered, so a slice
    counts exactly its own requests over the time from its first send to its last answer. ``max_requests``
    bounds the requests of the whole run.
    """

    def __init__(self, url: str, texts: list[str], clients: int, max_requests: int) -> None:
        self.url, self.max_requests = url, max_requests
        self._stream = itertools.cycle([t.encode() for t in texts])
        self._cond = threading.Condition()
        self._target: str | None = None
        self._closed = False
        self._inflight = self._sent = 0
        self._samples: list[tuple[float, str | None]] = []  # (latency_s, error) per answered request
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.url)
        try:
            while True:
                with self._cond:
                    while not self._closed and (self._target is None or self._sent >= self.max_requests):
                        self._cond.wait()
                    if self._closed:
                        return
                    model, text = self._target, next(self._stream)
                    self._inflight += 1
                    self._sent += 1
                inputs = [grpcclient.InferInput("text", [1, 1], "BYTES")]
                inputs[0].set_data_from_numpy(np.array([[text]], dtype=np.object_))
                error = None
                t0 = time.perf_counter()
                try:
                    client.infer(model, inputs)
                except Exception as exc:  # counted and reported; the load goes on
                    error = str(exc)[:200]
                with self._cond:
                    self._samples.append((time.perf_counter() - t0, error))
                    self._inflight -= 1
                    self._cond.notify_all()
        finally:
            client.close()

    def slice(self, model: str, seconds: float, cpu_of_server) -> dict:
        """Load ``model`` for ``seconds``, then drain; ``cpu_of_server()`` is the server's CPU seconds so far."""
        with self._cond:
            first = len(self._samples)
            self._target = model
            self._cond.notify_all()
        cpu0, server0, started = time.process_time(), cpu_of_server(), time.perf_counter()
        time.sleep(seconds)
        with self._cond:
            self._target = None
            self._cond.wait_for(lambda: self._inflight == 0, timeout=120)
            samples = self._samples[first:]
        elapsed = time.perf_counter() - started
        failures = [e for _, e in samples if e is not None]
        return {"completed": len(samples) - len(failures), "seconds": elapsed, "failures": len(failures),
                "latencies": [lat for lat, e in samples if e is None], "first_failures": failures[:3],
                "cpu_share": (time.process_time() - cpu0) / elapsed,
                "server_cpu_share": (cpu_of_server() - server0) / elapsed}  # fmt: skip

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=60)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` and their descendants (Triton and its Python-backend stubs)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total
