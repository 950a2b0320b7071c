"""Triton Python backend of a pitcrew text classifier: raw text in; label, probabilities, version out.

Why one module of about 770 lines, over the project's 400: the hot-swap publishes this file alone into every
version folder (docs/model-artifact.md), so what it needs beyond installed packages (tokenizer, metrics, both
runtimes' inference paths, routing) has to live in it; splitting it would mean publishing and versioning a
package beside every model version.

Each version folder holds this file plus a model artifact (docs/model-artifact.md). Tokenization runs here
with the artifact's tokenizer, truncated to its ``max_length``; the network runs in ONNX Runtime in this
process (runtime ``python-onnxruntime``) or in a ``<name>_core`` model of Triton's ORT/TensorRT backend
called through BLS (``core_model`` parameter), always its own version number of it. A dynamic batch is
tokenized in one call and run in groups of similar length (:func:`length_groups`). Every request gets its
own response: a bad request (empty text, invalid UTF-8) gets a ``TritonError`` and the rest of the batch is
served. Business metrics go to Triton's metrics endpoint (parameter ``metrics`` "off": none); each
prediction goes to the inference log (parameter ``inference_log_uri``), whose failures are only counted.
With the artifact's ``calibration.json`` (training/calibration.py) the metrics also carry the sum and count
of temperature-scaled top-class confidence, and the count of texts at or above the ATC threshold, whose share
of all texts estimates accuracy before labels arrive.

During a weighted rollout (pitcrew/rollout/routing.py) the version clients reach sends the share of
requests whose id hashes below the challenger's weight to ``<name>__canary`` through BLS, or in shadow mode
a copy of every request, and answers the rest itself; what the challenger fails to answer it answers
itself, so no request fails for it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

# Encode on the calling thread. Triton instances give the parallelism; a rayon pool would add idle
# spinning threads on few cores and, created by the low-priority loading thread, would inherit its
# low priority for serving requests.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: Longest text (characters) handed to the tokenizer; beyond max_length tokens it is truncated anyway,
#: and cutting first keeps a 1 MB request from costing a second of tokenization.
CHARS_PER_TOKEN_BOUND = 32
TOKEN_BUCKETS = [4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]
RATIO_BUCKETS = [0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0]
#: Niceness of the loading thread (19 is the lowest priority an unprivileged process may take).
LOAD_NICENESS = 19
#: Niceness of the inference log's flush thread: best effort, so requests in this process come first.
LOG_FLUSH_NICENESS = 10
CONFIDENCE_BUCKETS = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0]
#: How often the front looks for a new routing table (one ``stat``): a new weight applies within this.
ROUTING_RECHECK_S = 0.25
#: Seconds a request spends in the version that answers it (decode and its network; a challenger times itself).
LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
#: What a weighted rollout's challenger is loaded as, beside the model clients call
#: (pitcrew/serving/model_config.py: canary_model_name).
CANARY_SUFFIX = "__canary"
OUTPUTS = ["label", "probabilities", "version", "request_id"]
#: A dynamic batch of mixed lengths padded as one costs 2-3x its real tokens (MiniLM, 16 demo texts): the
#: network runs once per group of similar lengths, each padded to at most this factor of its real tokens.
PAD_SLACK = 1.25


def _lower_priority(niceness: int) -> None:
    """Give the calling thread ``niceness`` (Linux niceness is per thread); where not permitted, keep it."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except OSError:
        pass


def length_groups(lengths: np.ndarray, slack: float = PAD_SLACK) -> list[np.ndarray]:
    """Row indices by ascending length, cut into groups whose tokens padded to the group's longest row are
    at most ``slack`` x their real tokens (a single row is always a group of its own)."""
    order = np.argsort(lengths, kind="stable")
    groups, first, real = [], 0, 0
    for i, row in enumerate(order):
        if i > first and lengths[row] * (i + 1 - first) > slack * (real + lengths[row]):
            groups.append(order[first:i])
            first, real = i, 0
        real += lengths[row]
    return [*groups, order[first:]]


class InvalidText(ValueError):
    """A request's text cannot be classified; becomes that request's TritonError."""


def _decode(raw: object, max_chars: int) -> tuple[str, bool]:
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidText(f"text is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = str(raw)
    if not text.strip():
        raise InvalidText("text is empty")
    return text[:max_chars], len(text) > max_chars


class FastTokenizer:
    """The artifact's ``tokenizer.json`` run by the ``tokenizers`` library directly.

    It is the same fast tokenizer ``AutoTokenizer`` wraps (same ids, truncation and padding), without
    importing transformers: that import costs about 2 s of CPU, which a hot swap would take from the
    version that is serving.
    """

    def __init__(self, folder: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        pad_token = _token_text(config.get("pad_token")) or "[PAD]"
        pad_id = self.tokenizer.token_to_id(pad_token)
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(pad_id=pad_id if pad_id is not None else 0, pad_token=pad_token)
        unk = _token_text(config.get("unk_token"))
        self.unk_token_id = self.tokenizer.token_to_id(unk) if unk else None
        self.all_special_ids = [i for i, t in self.tokenizer.get_added_tokens_decoder().items() if t.special]

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        encodings = self.tokenizer.encode_batch(texts)
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }


def _token_text(token: object) -> str | None:
    """A special token from tokenizer_config.json: a string, or an AddedToken dict with ``content``."""
    if isinstance(token, dict):
        return token.get("content")
    return token if isinstance(token, str) else None


class _AutoTokenizer:
    """Fallback for artifacts without ``tokenizer.json`` (slow tokenizers): transformers' AutoTokenizer."""

    def __init__(self, folder: Path, max_length: int) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.max_length = max_length
        self.unk_token_id = self.tokenizer.unk_token_id
        self.all_special_ids = self.tokenizer.all_special_ids

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        return {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items()}


def load_tokenizer(folder: Path, max_length: int):
    if (folder / "tokenizer.json").exists():
        return FastTokenizer(folder, max_length)
    return _AutoTokenizer(folder, max_length)


class _BucketCounters:
    """A Prometheus classic histogram kept as counters: ``<name>_bucket{le}``, ``<name>_sum``, ``<name>_count``.

    Each Metric call of the Python backend is a round trip to the server process, so observing every
    text one by one costs more than classifying it. These counters take a whole batch of observations in
    one increment per bucket; ``histogram_quantile()`` reads them like a native histogram.
    """

    def __init__(
        self, metrics: _Metrics, name: str, description: str, labels: dict, buckets: list[float]
    ) -> None:
        self.bounds = np.array([*buckets, np.inf])
        family = metrics.family(f"{name}_bucket", f"{description} (cumulative buckets)")
        self.buckets = [
            family.Metric(labels={**labels, "le": f"{b:g}" if np.isfinite(b) else "+Inf"})
            for b in self.bounds
        ]
        self.sum = metrics.family(f"{name}_sum", f"{description} (sum)").Metric(labels=labels)
        self.count = metrics.family(f"{name}_count", f"{description} (count)").Metric(labels=labels)

    def add(self, values: np.ndarray) -> None:
        cumulative = (values[:, None] <= self.bounds[None, :]).sum(axis=0)
        for metric, n in zip(self.buckets, cumulative, strict=True):
            if n:
                metric.increment(float(n))
        self.sum.increment(float(values.sum()))
        self.count.increment(float(len(values)))


class _Metrics:
    """pitcrew_* business metrics, labelled by model and version (and class for predictions).

    ``execute`` only queues a batch's numbers; a background thread sends them to Triton every
    ``flush_s`` seconds in a few aggregated increments, so metrics never sit on a request's path.
    """

    def __init__(
        self, model: str, version: str, labels: list[str], flush_s: float = 1.0, temperature: float = 1.0,
        atc_threshold: float | None = None,
    ) -> None:  # fmt: skip
        # A family must outlive its metrics, so every family is kept on this object.
        self.families: list = []
        base = {"model": model, "version": version}
        tokens = "pitcrew_input_tokens", "Tokens per classified text after truncation."
        self.tokens = _BucketCounters(self, *tokens, base, TOKEN_BUCKETS)
        unknown = "pitcrew_unknown_token_ratio", "Share of unknown tokens per classified text."
        self.unknown_ratio = _BucketCounters(self, *unknown, base, RATIO_BUCKETS)
        confidence = "pitcrew_top_class_confidence", "Probability of the predicted class."
        self.confidence = _BucketCounters(self, *confidence, base, CONFIDENCE_BUCKETS)
        predictions = self.family("pitcrew_predictions_total", "Predictions served, by predicted class.")
        self.predictions = [predictions.Metric(labels={**base, "class": c}) for c in labels]
        self.log_failures = self.family(
            "pitcrew_inference_log_failures_total",
            "Inference log rows that could not be written (the requests were still served).",
        ).Metric(labels=base)
        self.rejected = self.family(
            "pitcrew_rejected_texts_total", "Requests answered with an error (empty text, invalid UTF-8)."
        ).Metric(labels=base)
        # Counters, not a histogram: Prometheus divides rate(sum) by rate(count) for the estimated accuracy.
        self.temperature = temperature
        self.calibrated_sum = self.family(
            "pitcrew_calibrated_confidence_sum", "Sum of calibrated top-class confidence (calibration.json)."
        ).Metric(labels=base)
        self.calibrated_count = self.family(
            "pitcrew_calibrated_confidence_count", "Texts in pitcrew_calibrated_confidence_sum."
        ).Metric(labels=base)
        # No threshold (no calibration.json): no series, so no estimate rather than a wrong 0.
        self.atc_threshold = atc_threshold
        self.confident = None
        if atc_threshold is not None:
            self.confident = self.family(
                "pitcrew_confident_texts_total",
                "Texts with top-class confidence at or above the ATC threshold fitted on the eval set; "
                "divided by pitcrew_calibrated_confidence_count it estimates accuracy.",
            ).Metric(labels=base)
        # Each version times the requests it answers itself (a challenger inside <name>__canary). Made at
        # load, at 0: Prometheus's increase() does not count a counter's first sample, so a series born with
        # the first answers would hide them from a rollout's analysis.
        self.latency = _BucketCounters(
            self, "pitcrew_request_seconds", "Seconds a request spent in the version that answered it "
            "(decode and network)", base, LATENCY_BUCKETS,
        )  # fmt: skip
        weight = self.family("pitcrew_route_weight_percent", "Share of requests each version answers, in percent "
                             "(the routing table of a weighted rollout).", pb_utils.MetricFamily.GAUGE)  # fmt: skip
        self.route_weight = _Series(lambda v: weight.Metric(labels={"model": model, "version": v}))
        fallback = self.family("pitcrew_route_fallbacks_total", "Requests for the challenger this version "
                               "answered itself because the challenger failed or was gone (in shadow mode: "
                               "texts whose copy it failed).")  # fmt: skip
        self.fallbacks = _Series(lambda v: fallback.Metric(labels={**base, "challenger": v}))
        shadow = [
            self.family(f"pitcrew_shadow_{name}", description)
            for name, description in (
                ("compared_total", "Texts answered by this version and, in shadow, by the challenger."),
                ("agreed_total", "Shadowed texts where the challenger predicted the same class."),
                ("confidence_shift_sum", "Sum of the challenger's top-class confidence minus this version's."),
            )
        ]
        self.shadow = _Series(lambda v: [f.Metric(labels={**base, "challenger": v}) for f in shadow])
        self._pending: list[tuple[np.ndarray, ...]] = []
        self._events: list[tuple] = []  # (kind, version, *numbers) of routing, latency and shadow
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.flush_s = flush_s
        self._thread = threading.Thread(target=self._run, name="pitcrew-metrics", daemon=True)

    def start(self) -> None:
        """Start sending; called from a normal-priority thread (threads inherit their creator's niceness)."""
        self._thread.start()

    def family(self, name: str, description: str, kind=None):
        kind = pb_utils.MetricFamily.COUNTER if kind is None else kind
        family = pb_utils.MetricFamily(name=name, description=description, kind=kind)
        self.families.append(family)
        return family

    def event(self, kind: str, version: str, *numbers) -> None:
        """Queue a latency (this version), fallback or shadow (the challenger's version) figure for the next
        flush: never a round trip on the request path."""
        with self._lock:
            self._events.append((kind, version, *numbers))

    def set_route(self, weights: dict[str, float]) -> None:
        """The routing gauges, set at once: a rule changes a few times per rollout."""
        for version, weight in weights.items():
            self.route_weight[version].set(float(weight))

    def record(
        self,
        top: np.ndarray,
        confidence: np.ndarray,
        tokens: np.ndarray,
        unknown_ratio: np.ndarray,
        probs: np.ndarray,
    ) -> None:
        with self._lock:
            self._pending.append((top, confidence, tokens, unknown_ratio, probs))

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            events, self._events = self._events, []
        for kind, version, *numbers in events:
            if kind == "latency":
                self.latency.add(numbers[0])
            elif kind == "fallback":
                self.fallbacks[version].increment(float(numbers[0]))
            elif kind == "shadow":
                for metric, value in zip(self.shadow[version], numbers, strict=True):
                    metric.increment(float(value))
        if not pending:
            return
        top, confidence, tokens, ratio, probs = (
            np.concatenate(parts) for parts in zip(*pending, strict=True)
        )
        for metric, n in zip(
            self.predictions, np.bincount(top, minlength=len(self.predictions)), strict=True
        ):
            if n:
                metric.increment(float(n))
        self.confidence.add(confidence.astype(float))
        self.tokens.add(tokens.astype(float))
        self.unknown_ratio.add(ratio.astype(float))
        calibrated = confidence if self.temperature == 1.0 else calibrated_confidence(probs, self.temperature)
        self.calibrated_sum.increment(float(np.sum(calibrated, dtype=np.float64)))
        self.calibrated_count.increment(float(len(calibrated)))
        if self.confident is not None:
            confident = int(np.count_nonzero(confidence >= self.atc_threshold))
            if confident:
                self.confident.increment(float(confident))

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception as exc:  # metrics are best effort: keep serving, say why once per flush
                pb_utils.Logger.log_warn(f"pitcrew metrics: {exc}")

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.flush_s + 5)
        self.flush()


class _Series(dict):
    """Series of one family by version, each made when first used."""

    def __init__(self, make) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, version: str):
        self[version] = series = self.make(version)
        return series


class _NoMetrics:
    """Parameter ``metrics`` "off" (pitcrew/serving/model_config.py): any metric call does nothing."""

    __getattr__ = __call__ = __getitem__ = lambda self, *_: self  # noqa: E731 - metrics.rejected.increment(1) and the like


def calibrated_confidence(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Top class of ``softmax(log p / T)`` (= ``softmax(logits / T)``), as training/calibration.py computes it."""
    log_p = np.log(np.maximum(probs.astype(np.float64), np.finfo(np.float64).tiny))
    return 1.0 / np.exp((log_p - log_p.max(axis=1, keepdims=True)) / temperature).sum(axis=1)


def read_calibration(folder: Path) -> tuple[float, float | None]:
    """(T, ATC threshold) of the version's ``calibration.json``; (1.0, None) without one, so confidence is
    used raw and no estimate is exported. A broken file fails the load."""
    path = folder / "calibration.json"
    if not path.exists():
        pb_utils.Logger.log_info(f"{path} missing: calibrated confidence is the raw confidence (T = 1)")
        return 1.0, None
    try:
        raw = json.loads(path.read_text())
        temperature = float(raw["temperature"]) if raw["method"] == "temperature" else float("nan")
        threshold = raw.get("atc_threshold")
        threshold = None if threshold is None else float(threshold)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ValueError(f"{path}: not a calibration file ({type(exc).__name__}: {exc})") from None
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"{path}: need method 'temperature' and a finite temperature > 0, got {raw}")
    if threshold is not None and not (np.isfinite(threshold) and 0 <= threshold <= 1):
        raise ValueError(f"{path}: atc_threshold must be in [0, 1], got {threshold}")
    return temperature, threshold


# ----------------------------------------------------------------------------------------------
# routing: a weighted rollout's split, read from the table pitcrew/rollout/routing.py writes
def route_bucket(request_id: str) -> float:
    """Where a request id falls in [0, 100), the same in every process and version. The challenger
    answers the ids below its weight, so a request id keeps its version within a step (retries and
    feedback stay consistent) and raising the weight only moves more ids to the challenger."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") % 10_000) / 100.0


def routing_rule(raw: object, model: str, version: int) -> dict | None:
    """The rule this version applies from a routing table: ``{challenger, weight, mode}``, or None when the
    table is not for this model, names another champion (after a promotion the new version ignores it), or
    sends nothing anywhere. A table that is not valid raises ValueError."""
    if not isinstance(raw, dict):
        raise ValueError("the routing table is not a JSON object")
    if raw.get("model") != model or raw.get("champion") != version:
        return None
    challenger, weight, mode = raw.get("challenger"), raw.get("weight"), raw.get("mode", "split")
    if not isinstance(challenger, int) or isinstance(challenger, bool) or challenger == version:
        raise ValueError(f"challenger must be another version number, not {challenger!r}")
    if not isinstance(weight, int | float) or isinstance(weight, bool) or not 0 <= weight <= 100:
        raise ValueError(f"weight must be a percentage 0-100, not {weight!r}")
    if mode not in ("split", "shadow"):
        raise ValueError(f"mode must be split or shadow, not {mode!r}")
    if mode == "split" and weight == 0:
        return None
    return {"challenger": challenger, "weight": float(weight), "mode": mode}


class _Routing:
    """The front's routing rule, re-read when its table's file changes (new inode or time: the writer
    replaces it atomically), checked at most every :data:`ROUTING_RECHECK_S`. No file, or one that cannot
    be read, means this version answers everything itself; a bad file is logged once per change."""

    def __init__(self, path: Path, model: str, version: int, on_change) -> None:
        self.path, self.model, self.version, self.on_change = path, model, version, on_change
        self.rule: dict | None = None
        self._key: tuple | None = None
        self._checked = -math.inf

    def current(self) -> dict | None:
        now = time.monotonic()
        if now - self._checked < ROUTING_RECHECK_S:
            return self.rule
        self._checked = now
        try:
            stat = os.stat(self.path)
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            key = None
        except OSError as exc:
            pb_utils.Logger.log_warn(f"pitcrew routing: cannot stat {self.path}: {exc}; serving alone")
            key = ("unreadable",)
        if key != self._key:
            self._key = key
            self._set(self._read() if key is not None and key != ("unreadable",) else None)
        return self.rule

    def _read(self) -> dict | None:
        try:
            return routing_rule(json.loads(self.path.read_text()), self.model, self.version)
        except (OSError, ValueError) as exc:
            pb_utils.Logger.log_warn(f"pitcrew routing: {self.path} ignored ({exc}); serving alone")
            return None

    def _set(self, rule: dict | None) -> None:
        previous, self.rule = self.rule, rule
        if rule != previous:
            pb_utils.Logger.log_info(f"pitcrew routing of {self.model} v{self.version}: {rule or 'serving alone'}")
            self.on_change(previous, rule)


class _Item:
    """One request's texts: ``key`` routes it (its request id), ``ids`` name its texts in the log.

    A plain class: Triton loads this file without registering it as a module, which ``dataclass`` needs."""

    __slots__ = ("index", "key", "texts", "ids", "shadow")

    def __init__(self, index: int, key: str, texts: list[str], ids: list[str], shadow: bool) -> None:
        self.index, self.key, self.texts, self.ids, self.shadow = index, key, texts, ids, shadow


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        # During a hot swap this version loads while the old one serves on the same cores. The heavy part
        # (imports, tokenizer, ONNX Runtime session, a warm-up run) runs in a thread of low CPU priority
        # (Linux niceness is per thread), so serving requests win the CPU and the swap barely shows in
        # their latency; the serving thread itself keeps normal priority.
        loaded: dict = {}
        thread = threading.Thread(target=self._load_niced, args=(args, loaded), name="pitcrew-load")
        thread.start()
        thread.join()
        if "error" in loaded:
            raise loaded["error"]
        params = loaded["params"]
        self.metrics.start()
        # The model clients call reads its routing table; the challenger and the staging model never route.
        self.routing, self._fallback_warned = None, -math.inf
        if self.serves_as == self.model_name:
            table = Path(args["model_repository"]).parent / ".pitcrew" / "routing" / f"{self.model_name}.json"
            self.routing = _Routing(table, self.model_name, int(self.version), self._route_changed)
            self._route_changed(None, None)
        self.log = None
        log_uri = params.get("inference_log_uri", "")
        if log_uri:
            from monitoring.inference_log import InferenceLogWriter

            self.log = InferenceLogWriter(
                log_uri,
                flush_interval_s=float(params.get("inference_log_flush_s", "2.0")),
                on_failure=lambda _exc, rows: self.metrics.log_failures.increment(rows),
                niceness=LOG_FLUSH_NICENESS,
            )

    def _load_niced(self, args: dict, loaded: dict) -> None:
        _lower_priority(LOAD_NICENESS)
        try:
            loaded["params"] = self._load(args)
        except BaseException as exc:  # re-raised in initialize, so Triton reports the load as failed
            loaded["error"] = exc

    def _load(self, args: dict) -> dict:
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.model_name = args["model_name"]
        # A weighted rollout's challenger is loaded as <model>__canary but serves <model>: its metrics and
        # log rows carry the model's name and its own version (pitcrew/serving/model_config.py).
        self.serves_as = params.get("serves_as") or self.model_name
        self.canary_model = f"{self.serves_as}{CANARY_SUFFIX}"
        self.version = str(args["model_version"])
        folder = Path(args["model_repository"]) / self.version
        self.labels = json.loads((folder / "labels.json").read_text())
        self.label_bytes = np.array([[label.encode()] for label in self.labels], dtype=np.object_)
        serving = json.loads((folder / "serving.json").read_text())
        self.max_length = int(serving.get("max_length", 128))
        self.input_names = list(serving.get("input_names", ["input_ids", "attention_mask"]))
        self.output_name = serving.get("output_name", "logits")
        self.max_chars = self.max_length * CHARS_PER_TOKEN_BOUND
        self.tokenizer = load_tokenizer(folder, self.max_length)
        self.unk_id = self.tokenizer.unk_token_id
        # [UNK] is a special token too, but it is content: it is what the unknown-token rate counts.
        self.special_ids = np.array(
            sorted(set(self.tokenizer.all_special_ids) - {self.unk_id}), dtype=np.int64
        )
        self.core_model = params.get("core_model") or None
        self.core_max_batch = int(params.get("core_max_batch_size", "64"))
        self.session = None
        if self.core_model is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = int(params.get("ort_threads", "1"))
            options.inter_op_num_threads = 1
            self.session = ort.InferenceSession(
                str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
            )
            self._predict(["warm-up"])  # first-run allocations happen here, not in a served request
        else:  # BLS is not allowed during initialize: warm at least the tokenizer and its buffers
            self.tokenizer(["warm-up"])
        # Creating ~50 metric series is as many round trips to the server: also done at low priority.
        metrics = (self.serves_as, self.version, self.labels, float(params.get("metrics_flush_s", "1.0")))
        calibration = read_calibration(folder)  # a broken file fails the load, metrics on or off
        self.metrics = _Metrics(*metrics, *calibration) if params.get("metrics", "on") != "off" else _NoMetrics()
        if params.get("inference_log_uri"):
            import monitoring.inference_log  # noqa: F401 - pandas/pyarrow imported at low priority too
        return params

    # ------------------------------------------------------------------------------------------
    def execute(self, requests: list) -> list:
        started = time.perf_counter()
        responses: list = [None] * len(requests)
        items: list[_Item] = []
        for i, request in enumerate(requests):
            try:
                tensor = pb_utils.get_input_tensor_by_name(request, "text")
                if tensor is None:
                    raise InvalidText("input 'text' is missing")
                decoded = [_decode(x, self.max_chars)[0] for x in tensor.as_numpy().reshape(-1)]
                if not decoded:
                    raise InvalidText("no text in request")
            except InvalidText as exc:
                self.metrics.rejected.increment(1)
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
                continue
            items.append(self._item(i, request, decoded))
        if not items:
            return responses
        rule = self.routing.current() if self.routing is not None else None
        decoded_s = time.perf_counter() - started
        if rule is not None and rule["mode"] == "split":
            to_challenger = [route_bucket(item.key) < rule["weight"] for item in items]
            if any(to_challenger):
                routed = [item for item, away in zip(items, to_challenger, strict=True) if away]
                local = [item for item, away in zip(items, to_challenger, strict=True) if not away]
                # What the challenger could not answer, this version answers: a request never fails for it.
                items = local + self._forward(routed, rule["challenger"], responses)
        if items:
            shadow = rule["challenger"] if rule is not None and rule["mode"] == "shadow" else None
            self._answer(items, responses, decoded_s, shadow)
        return responses

    def _item(self, index: int, request, texts: list[str]) -> _Item:
        key = request.request_id() or uuid.uuid4().hex
        ids = [key] if len(texts) == 1 else [f"{key}:{j}" for j in range(len(texts))]
        shadow = False
        if self.serves_as != self.model_name:  # the challenger, called by its champion's front through BLS
            given = json.loads(request.parameters() or "{}")
            forwarded = json.loads(given.get("pitcrew_request_ids", "null") or "null")
            if isinstance(forwarded, list) and len(forwarded) == len(texts):
                ids = [str(x) for x in forwarded]
            shadow = bool(given.get("pitcrew_shadow"))
        return _Item(index, key, texts, ids, shadow)

    def _answer(self, items: list[_Item], responses: list, decoded_s: float, shadow: int | None) -> None:
        """Classify ``items`` with this version's network; log and count what was served (not shadow copies)."""
        texts = [text for item in items for text in item.texts]
        mark = time.perf_counter()
        try:
            probs, token_counts, unk_ratios = self._predict(texts)
        except Exception as exc:  # the model itself failed: every pending request gets the error
            for item in items:
                responses[item.index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"inference failed: {exc}")
                )
            return
        top = probs.argmax(axis=1)
        confidence = probs[np.arange(len(top)), top]
        predicted = [self.labels[k] for k in top]
        now, first, records, served = time.time(), 0, [], []
        for item in items:
            rows = slice(first, first + len(item.texts))
            first = rows.stop
            responses[item.index] = pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor("label", self.label_bytes[top[rows]]),
                    pb_utils.Tensor("probabilities", probs[rows].astype(np.float32)),
                    pb_utils.Tensor("version", np.array([[self.version.encode()]] * len(item.texts), dtype=np.object_)),
                    pb_utils.Tensor("request_id", np.array([[x.encode()] for x in item.ids], dtype=np.object_)),
                ]
            )  # fmt: skip
            if not item.shadow:
                served.extend(range(rows.start, rows.stop))
                if self.log is not None:
                    records.extend(self._records(item.ids, texts[rows], predicted[rows], confidence[rows], now))
        if served:  # each version times its own answers (a challenger's too, inside it: the hop is not its own)
            seconds = decoded_s + time.perf_counter() - mark
            self.metrics.event("latency", self.version, np.full(sum(not i.shadow for i in items), seconds))
            keep = np.array(served)
            self.metrics.record(top[keep], confidence[keep], token_counts[keep], unk_ratios[keep], probs[keep])
        if records:
            self.log.append(records)
        if shadow is not None:
            self._shadow(texts, [x for item in items for x in item.ids], top, confidence, shadow)

    def _forward(self, items: list[_Item], challenger: int, responses: list) -> list[_Item]:
        """Have the challenger answer ``items`` (one BLS call); return those it could not answer."""
        try:
            outputs = self._call_challenger(
                [t for item in items for t in item.texts], [x for item in items for x in item.ids], shadow=False
            )
            answered = {v[0].decode() if isinstance(v[0], bytes) else str(v[0]) for v in outputs["version"]}
            if answered != {str(challenger)}:
                raise RuntimeError(f"{self.canary_model} answered as version {sorted(answered)}, not {challenger}")
        except Exception as exc:  # noqa: BLE001 - any failure of the challenger falls back to this version
            self._fallback(challenger, len(items), exc)
            return items
        first = 0
        for item in items:
            rows = slice(first, first + len(item.texts))
            first = rows.stop
            responses[item.index] = pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(name, outputs[name][rows]) for name in OUTPUTS]
            )
        return []

    def _shadow(self, texts: list[str], ids: list[str], top: np.ndarray, confidence: np.ndarray, challenger: int) -> None:
        """Shadow mode: the challenger answers a copy; count agreement and its confidence shift, return nothing."""
        try:
            outputs = self._call_challenger(texts, ids, shadow=True)
            probs = outputs["probabilities"].astype(np.float64)
        except Exception as exc:  # noqa: BLE001 - a shadow never touches what clients get
            self._fallback(challenger, len(texts), exc)
            return
        theirs = probs.argmax(axis=1)
        shift = probs[np.arange(len(theirs)), theirs] - confidence
        self.metrics.event("shadow", str(challenger), len(texts), int(np.sum(theirs == top)), float(shift.sum()))

    def _call_challenger(self, texts: list[str], ids: list[str], *, shadow: bool) -> dict[str, np.ndarray]:
        parameters = {"pitcrew_request_ids": json.dumps(ids)}
        if shadow:
            parameters["pitcrew_shadow"] = "1"
        request = pb_utils.InferenceRequest(
            model_name=self.canary_model, requested_output_names=OUTPUTS, parameters=parameters,
            inputs=[pb_utils.Tensor("text", np.array([[t.encode()] for t in texts], dtype=np.object_))],
        )  # fmt: skip
        response = request.exec()
        if response.has_error():
            raise RuntimeError(response.error().message())
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in OUTPUTS}

    def _fallback(self, challenger: int, n: int, exc: Exception) -> None:
        self.metrics.event("fallback", str(challenger), n)
        now = time.monotonic()
        if now - self._fallback_warned > 10:  # a gone challenger fails every call: say so every 10 s
            self._fallback_warned = now
            pb_utils.Logger.log_warn(f"pitcrew routing: {self.canary_model} v{challenger} failed ({exc}); "
                                     "this version answers its requests")  # fmt: skip

    def _route_changed(self, previous: dict | None, rule: dict | None) -> None:
        if rule is not None:  # the challenger's fallback and shadow series from 0 (see _Metrics.latency)
            self.metrics.fallbacks[str(rule["challenger"])]  # noqa: B018 - made on first use
            if rule["mode"] == "shadow":
                self.metrics.shadow[str(rule["challenger"])]  # noqa: B018
        weights = {self.version: 100.0}
        if previous is not None:
            weights[str(previous["challenger"])] = 0.0
        if rule is not None:
            share = rule["weight"] if rule["mode"] == "split" else 0.0
            weights.update({self.version: 100.0 - share, str(rule["challenger"]): share})
        self.metrics.set_route(weights)

    def _predict(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        encoded = self.tokenizer(texts)  # one call for the batch, padded to its longest text
        ids, mask = encoded["input_ids"], encoded["attention_mask"].astype(bool)
        lengths = mask.sum(axis=1)
        logits = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        # Right-padded (every row starts with a token): each length group runs cut to its own longest row.
        for rows in length_groups(lengths) if mask[:, 0].all() else [np.arange(len(texts))]:
            feeds = {name: encoded[name][rows, : lengths[rows].max()] for name in self.input_names}
            run = self.session.run if self.session is not None else self._core_logits
            logits[rows] = run([self.output_name], feeds)[0]
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        content = mask & ~np.isin(ids, self.special_ids)
        token_counts = content.sum(axis=1)
        is_unknown = ids == self.unk_id if self.unk_id is not None else np.zeros_like(content)
        unknown = (content & is_unknown).sum(axis=1)
        ratios = np.divide(unknown, token_counts, out=np.zeros(len(texts)), where=token_counts > 0)
        return probs, token_counts, ratios

    def _core_logits(self, outputs: list[str], feeds: dict) -> list[np.ndarray]:
        """``[logits]`` from ``<name>_core`` version N for front version N (never another version's network),
        in chunks of at most the core's max batch size (a TensorRT profile's maximum); like ORT's ``run``."""
        rows, step, parts = len(next(iter(feeds.values()))), self.core_max_batch, []
        for first in range(0, rows, step):
            inputs = [pb_utils.Tensor(name, value[first : first + step]) for name, value in feeds.items()]
            request = pb_utils.InferenceRequest(
                model_name=self.core_model, model_version=int(self.version), requested_output_names=outputs,
                inputs=inputs,
            )  # fmt: skip
            response = request.exec()
            if response.has_error():
                raise RuntimeError(f"{self.core_model} v{self.version}: {response.error().message()}")
            parts.append(pb_utils.get_output_tensor_by_name(response, outputs[0]).as_numpy())
        return [np.concatenate(parts)]

    def _records(self, ids, texts, labels, confidences, now: float) -> list:
        from monitoring.inference_log import InferenceRecord

        return [
            InferenceRecord(rid, now, self.serves_as, self.version, text, label, float(conf))
            for rid, text, label, conf in zip(ids, texts, labels, confidences, strict=True)
        ]

    def finalize(self) -> None:
        # An unload runs while the new version serves on the same cores: wind down (last flushes, then the
        # interpreter's exit on this thread) at the lowest priority. Lowering it needs no privilege.
        _lower_priority(LOAD_NICENESS)
        self.metrics.close()
        if self.log is not None:
            self.log.close()
