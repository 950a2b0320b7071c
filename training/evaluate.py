"""Evaluate a challenger against the champion on the same rows and decide ``promote`` or ``reject``.

Metrics on the eval set and on a fixed golden set; McNemar's test on the paired correctness of the two
models; a configurable minimum accuracy gain. The champion may be absent (first model): then the
challenger is judged on an absolute accuracy floor only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from training.data import LabelledText, load_labelled
from training.inference import batched_logits, load_classifier, model_labels, softmax
from training.metrics import McNemarResult, classification_metrics, mcnemar


@dataclass
class EvaluateConfig:
    """Gate settings; defaults follow docs/design.md, "Approvals": a challenger must beat or match the champion.

    ``metadata["help"]`` of each field is its help in ``python -m training evaluate`` (flags built from this
    class by ``transformers.HfArgumentParser``).
    """

    challenger: Path = field(metadata={"help": "fine-tuned challenger folder"})
    eval_data: Path = field(metadata={"help": "eval data with text and label columns"})
    champion: Path | None = field(
        default=None, metadata={"help": "current champion folder (omit for the first model)"}
    )
    golden_data: Path | None = field(
        default=None, metadata={"help": "fixed golden set with text and label columns"}
    )
    min_gain: float = field(
        default=0.0,
        metadata={"help": "challenger accuracy minus champion accuracy on the eval set must reach this"},
    )
    alpha: float = field(default=0.05, metadata={"help": "McNemar significance level"})
    require_significance: bool = field(
        default=False, metadata={"help": "also demand p < alpha for a positive gain"}
    )
    max_golden_drop: float = field(
        default=0.0, metadata={"help": "golden-set accuracy may not fall more than this below the champion's"}
    )
    min_accuracy: float = field(
        default=0.0, metadata={"help": "absolute eval-accuracy floor, the only bar when there is no champion"}
    )
    max_length: int = field(default=128, metadata={"help": "tokenizer truncation length"})
    batch_size: int = field(default=64, metadata={"help": "inference batch size"})
    text_column: str = field(default="text", metadata={"help": "name of the text column"})
    label_column: str = field(default="label", metadata={"help": "name of the label column"})


@dataclass
class Verdict:
    """The gate's answer with every figure it was based on; ``to_dict()`` is JSON-safe."""

    decision: str  # promote | reject
    reasons: list[str]
    challenger: dict
    champion: dict | None = None
    comparison: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def promote(self) -> bool:
        return self.decision == "promote"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Scored:
    metrics: dict
    correct: np.ndarray


def _score(model_dir: Path, datasets: dict[str, LabelledText], config: EvaluateConfig) -> dict[str, _Scored]:
    """Load the model once and score it on every dataset."""
    model, tokenizer = load_classifier(model_dir)
    labels = model_labels(model_dir, model)
    scored = {}
    for name, data in datasets.items():
        y = data.label_ids(labels)  # raises DataError naming unknown labels
        probabilities = softmax(batched_logits(model, tokenizer, data.texts, batch_size=config.batch_size,
                                               max_length=config.max_length))
        scored[name] = _Scored(classification_metrics(y, probabilities, labels),
                               probabilities.argmax(axis=1) == np.asarray(y))
    return scored


def evaluate(config: EvaluateConfig) -> Verdict:
    """Score challenger (and champion) on the eval and golden sets, then apply the gate."""
    read = lambda path: load_labelled(path, text_column=config.text_column, label_column=config.label_column)  # noqa: E731
    datasets = {"eval": read(config.eval_data)}
    if config.golden_data is not None:
        datasets["golden"] = read(config.golden_data)
    for name, data in datasets.items():
        if not len(data):
            raise ValueError(f"{data.source}: the {name} set is empty")

    challenger = _score(Path(config.challenger), datasets, config)
    champion = _score(Path(config.champion), datasets, config) if config.champion is not None else None
    failures: list[str] = []
    notes: list[str] = []
    comparison: dict = {}
    accuracy = challenger["eval"].metrics["accuracy"]
    if accuracy < config.min_accuracy:
        failures.append(f"eval accuracy {accuracy:.4f} is below the floor {config.min_accuracy:.4f}")
    if champion is None:
        notes.append("no champion to compare against: judged on the accuracy floor only")
    else:
        _compare(challenger, champion, config, comparison, failures, notes)
    decision = "reject" if failures else "promote"
    reasons = failures + notes + ([] if failures else ["all gate checks passed"])
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    return Verdict(decision, reasons, {k: v.metrics for k, v in challenger.items()},
                   {k: v.metrics for k, v in champion.items()} if champion else None, comparison, settings)


def _compare(challenger: dict[str, _Scored], champion: dict[str, _Scored], config: EvaluateConfig,
             comparison: dict, failures: list[str], notes: list[str]) -> None:
    """Paired comparison on the same rows: appends gate failures and informative notes."""
    gain = challenger["eval"].metrics["accuracy"] - champion["eval"].metrics["accuracy"]
    test: McNemarResult = mcnemar(champion["eval"].correct, challenger["eval"].correct)
    comparison.update(accuracy_gain=gain, mcnemar=test.to_dict())
    if gain < config.min_gain:
        failures.append(f"accuracy gain {gain:+.4f} is below the minimum {config.min_gain:+.4f}")
    else:
        notes.append(f"accuracy gain {gain:+.4f} meets the minimum {config.min_gain:+.4f}")
    if test.p_value < config.alpha and test.b > test.c:
        failures.append(f"challenger is significantly worse (McNemar p={test.p_value:.3g}, b={test.b}, c={test.c})")
    elif config.require_significance and gain > 0 and test.p_value >= config.alpha:
        failures.append(f"gain not significant (McNemar p={test.p_value:.3g} >= alpha {config.alpha})")
    else:
        notes.append(f"McNemar p={test.p_value:.3g} (b={test.b} champion-only, c={test.c} challenger-only)")
    if "golden" in challenger:
        golden_gain = challenger["golden"].metrics["accuracy"] - champion["golden"].metrics["accuracy"]
        comparison["golden_accuracy_gain"] = golden_gain
        if golden_gain < -config.max_golden_drop:
            failures.append(f"golden accuracy fell by {-golden_gain:.4f}, more than the allowed {config.max_golden_drop:.4f}")


def write_verdict(verdict: Verdict, path: Path) -> None:
    Path(path).write_text(json.dumps(verdict.to_dict(), indent=2))
