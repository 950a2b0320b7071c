"""Traffic-split benchmark: a weighted rollout's shares, stickiness and latency under steady load.

Starts its own Triton (bundled CPU server, free loopback ports, private folder), serves version 1 of a tiny
text classifier, loads version 2 as the challenger (``WeightedRollout.start``: ``textclf__canary``, weight
0), and drives steady load from concurrent gRPC clients while the challenger's weight moves through
0 → 10 → 50 → 100 → 0 percent by rewriting the routing table (no model reloads). Each client sends request
ids drawn from a pool of its own, so ids repeat and stickiness can be checked. Prints one JSON line.

Per step (from ``--settle-s`` after its weight was written to the next change): the share of requests
version 2 answered against the weight (``max_share_error_pp``), and ids answered by both versions
(``sticky_violations``). ``p99_change_ms`` covers requests sent from ``--settle-s`` before to
``--change-window-s`` after each change; ``p99_steady_ms`` every other request after a 1 s warm-up.

Targets: 0 failures over >= 20,000 requests; each step's share within ±2 points of its weight over
>= 2,000 requests; p99 around changes <= 1.25 x steady; no sticky violation.

    .venv/bin/python benchmarks/traffic_split.py [--clients 16] [--step-requests 5000] [--runtime single]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from pitcrew.serving.client import TritonControl  # noqa: E402
from pitcrew.serving.swap import HotSwapper  # noqa: E402
from pitcrew.serving.weighted import WeightedRollout  # noqa: E402

MODEL = "textclf"
LABELS = ["billing", "technical", "account", "shipping"]
TEXTS = ["my invoice was charged twice", "the app crashes on start", "change my account email", "where is my parcel"]
WEIGHTS = [0, 10, 50, 100, 0]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads")
    parser.add_argument("--step-requests", type=int, default=5000, help="requests measured per weight step")
    parser.add_argument("--ids-per-client", type=int, default=400, help="request ids each client draws from")
    parser.add_argument("--settle-s", type=float, default=0.5, help="after a change, before a step is measured")
    parser.add_argument("--change-window-s", type=float, default=2.0, help="after a change, counted as 'change'")
    parser.add_argument("--max-seconds", type=float, default=400.0, help="hard cap on the load phase")
    parser.add_argument("--runtime", choices=("single", "pair"), default="single")
    parser.add_argument("--workdir", type=Path, help="folder for artifacts and Triton state (default: temp)")
    args = parser.parse_args()
    if args.clients < 1 or args.step_requests < 100 or args.ids_per_client < 1:
        parser.error("--clients >= 1, --step-requests >= 100 and --ids-per-client >= 1")
    return args


class Load:
    """``clients`` gRPC threads sending one-text requests with ids from their pools as fast as answers come."""

    def __init__(self, url: str, clients: int, ids_per_client: int) -> None:
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self.url = url
        self.pools = [[f"c{c}-{i}" for i in range(ids_per_client)] for c in range(clients)]
        # (start, latency_s, request id, version) per client
        self.samples: list[list[tuple[float, float, str, str]]] = [[] for _ in range(clients)]
        self.failures: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, index: int) -> None:
        grpc = self._grpc
        client = grpc.InferenceServerClient(self.url)
        data = np.array([[TEXTS[index % len(TEXTS)].encode()]], dtype=object)
        inputs = [grpc.InferInput("text", [1, 1], "BYTES")]
        inputs[0].set_data_from_numpy(data)
        outputs = [grpc.InferRequestedOutput("version")]
        pool, out, rng = self.pools[index], self.samples[index], random.Random(index)
        while not self._stop.is_set():
            rid = rng.choice(pool)
            start = time.perf_counter()
            try:
                result = client.infer(MODEL, inputs, request_id=rid, outputs=outputs)
                out.append((start, time.perf_counter() - start, rid, result.as_numpy("version")[0][0].decode()))
            except Exception as exc:  # every failure is what this benchmark counts
                self.failures.append((start, str(exc)[:200]))
        client.close()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def count(self) -> int:
        return sum(len(s) for s in self.samples) + len(self.failures)

    def between(self, t0: float, t1: float) -> list[tuple[float, float, str, str]]:
        return [s for samples in self.samples for s in samples if t0 <= s[0] < t1]


def main() -> int:
    args = parse_args()
    from pitcrew.serving.model_config import ServingOptions, core_model_config, text_model_config
    from tests.integration.serving_artifacts import build_artifact
    from tests.stack_fixtures import make_settings, running_stack

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pitcrew-split-"))
    settings = make_settings(workdir / "home")
    runtime = "python-onnxruntime" if args.runtime == "single" else "onnxruntime"
    artifacts = {v: build_artifact(workdir / f"artifact-v{v}", LABELS, seed=v, runtime=runtime) for v in (1, 2)}

    def configs(version: int):
        if args.runtime == "single":
            return text_model_config(MODEL, len(LABELS), ServingOptions()), None
        from pitcrew.serving.artifact import read_artifact

        contract = read_artifact(artifacts[version]).core_contract()
        options = ServingOptions(runtime="onnxruntime", core_max_batch_size=contract.max_batch_size)
        return text_model_config(MODEL, len(LABELS), options), core_model_config(MODEL, contract, options, standin=True)

    with running_stack(settings, only=("triton",)):
        client = TritonControl(settings.triton_http_url)
        swapper = HotSwapper(client, settings.repository_dir, latency_budget_ms=2000.0, lock_timeout_s=60)
        swapper.deploy(MODEL, 1, artifacts[1], *configs(1))
        rollout = WeightedRollout(swapper)
        rollout.start(MODEL, 2, artifacts[2], *configs(2))

        load = Load(settings.triton_grpc_url, args.clients, args.ids_per_client)
        started = time.perf_counter()
        load.start()
        time.sleep(1.0)  # warm-up
        steps: list[dict] = []
        for index, weight in enumerate(WEIGHTS):
            rollout.set_weight(MODEL, weight, step=index)
            changed = time.perf_counter()  # the table is written: the fronts apply it within 0.25 s
            measured_from = changed + args.settle_s
            deadline = started + args.max_seconds
            while time.perf_counter() < deadline:
                time.sleep(0.25)
                if len(load.between(measured_from, time.perf_counter())) >= args.step_requests:
                    break
            steps.append({"weight": weight, "changed": changed, "from": measured_from, "to": time.perf_counter()})
        load.stop()
        elapsed = time.perf_counter() - started
        rollout.abort(MODEL)
        serving_after = client.ready_versions(MODEL)

    report_steps, violations = [], 0
    for step in steps:
        seen = load.between(step["from"], step["to"])
        share = 100.0 * sum(version == "2" for *_, version in seen) / len(seen) if seen else float("nan")
        versions_of: dict[str, set[str]] = defaultdict(set)
        for _, _, rid, version in seen:
            versions_of[rid].add(version)
        switched = sum(len(v) > 1 for v in versions_of.values())
        violations += switched
        report_steps.append({"weight": step["weight"], "requests": len(seen), "share_pp": round(share, 2),
                             "error_pp": round(abs(share - step["weight"]), 2), "ids": len(versions_of),
                             "switched_ids": switched})  # fmt: skip
    changes = [(s["changed"] - args.settle_s, s["changed"] + args.change_window_s) for s in steps[1:]]
    all_samples = [s for samples in load.samples for s in samples if s[0] >= started + 1.0]
    near = [s[1] * 1000 for s in all_samples if any(a <= s[0] < b for a, b in changes)]
    steady = [s[1] * 1000 for s in all_samples if not any(a <= s[0] < b for a, b in changes)]
    p99_steady = float(np.percentile(steady, 99))
    p99_change = float(np.percentile(near, 99)) if near else 0.0
    report = {
        "benchmark": "traffic_split",
        "runtime": args.runtime,
        "requests": load.count(),
        "failures": len(load.failures),
        "clients": args.clients,
        "throughput_rps": round(load.count() / elapsed, 1),
        "steps": report_steps,
        "max_share_error_pp": max(s["error_pp"] for s in report_steps),
        "min_step_requests": min(s["requests"] for s in report_steps),
        "p50_steady_ms": round(float(np.percentile(steady, 50)), 2),
        "p99_steady_ms": round(p99_steady, 2),
        "p99_change_ms": round(p99_change, 2),
        "p99_change_over_steady": round(p99_change / p99_steady, 3),
        "sticky_violations": violations,
        "serving_after": serving_after,
        "first_failures": [f for _, f in load.failures[:3]],
    }
    report["targets_met"] = {
        "zero_failures": report["failures"] == 0,
        "requests_ge_20000": report["requests"] >= 20_000,
        "share_within_2pp": report["max_share_error_pp"] <= 2.0 and report["min_step_requests"] >= 2000,
        "p99_change_le_1.25x_steady": p99_change <= 1.25 * p99_steady,
        "sticky": violations == 0,
    }
    print(json.dumps(report))
    return 0 if all(report["targets_met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
