"""Check a freshly loaded version before it takes traffic for good.

Two questions: does it answer the golden set exactly as the artifact recorded (same labels, probabilities
within a tolerance), and is its latency within budget. Latency is taken from Triton's statistics API: the
per-version success time divided by the success count over each verification request, so queueing inside
Triton counts and client-side noise does not.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from pitcrew.serving.artifact import Golden
from pitcrew.serving.client import TritonControl
from pitcrew.serving.errors import VerificationError


@dataclass(frozen=True)
class VerificationReport:
    version: int
    golden_texts: int
    mismatched_labels: int
    max_probability_diff: float
    p95_ms: float
    latency_budget_ms: float
    seconds: float

    def as_dict(self) -> dict:
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else 0.0


def verify_version(
    client: TritonControl,
    model: str,
    version: int,
    golden: Golden,
    *,
    latency_budget_ms: float,
    rounds: int = 3,
    atol: float = 1e-3,
    batch_size: int = 32,
    max_latency_samples: int = 60,
) -> VerificationReport:
    """Send the golden set to ``version`` (pinned) and raise :class:`VerificationError` on any mismatch.

    :param rounds: latency is sampled over ``rounds`` passes of single-text requests, at most
        ``max_latency_samples`` of them, so a large golden set does not make verification slow.
    :param batch_size: golden texts per request for the answer check (below the model's max batch size).
    """
    started = time.monotonic()
    answers = [
        answer
        for first in range(0, len(golden.texts), batch_size)
        for answer in client.classify(model, golden.texts[first : first + batch_size], version=version)
    ]
    served = {a.version for a in answers}
    if served != {str(version)}:
        raise VerificationError(f"{model}: asked version {version} but versions {sorted(served)} answered")
    mismatched = sum(a.label != want for a, want in zip(answers, golden.labels, strict=True))
    diff = float(
        np.max(np.abs(np.array([a.probabilities for a in answers]) - np.array(golden.probabilities)))
    )
    samples: list[float] = []
    texts = (golden.texts * rounds)[:max_latency_samples]
    for text in texts:
        before = client.stats(model, version)
        client.classify(model, [text], version=version)
        after = client.stats(model, version)
        count = after.success_count - before.success_count
        if count > 0:
            samples.append((after.success_ns - before.success_ns) / count / 1e6)
    report = VerificationReport(
        version=version,
        golden_texts=len(golden.texts),
        mismatched_labels=mismatched,
        max_probability_diff=diff,
        p95_ms=percentile(samples, 95),
        latency_budget_ms=latency_budget_ms,
        seconds=time.monotonic() - started,
    )
    problems = []
    if mismatched:
        problems.append(f"{mismatched}/{len(golden.texts)} golden labels differ")
    if diff > atol:
        problems.append(f"golden probabilities differ by up to {diff:.2e} (tolerance {atol:.0e})")
    if report.p95_ms > latency_budget_ms:
        problems.append(f"p95 latency {report.p95_ms:.1f} ms exceeds budget {latency_budget_ms:.1f} ms")
    if problems:
        raise VerificationError(f"{model} version {version} failed verification: {'; '.join(problems)}")
    return report
