from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from training.errors import DataError
from training.evaluate import EvaluateConfig, evaluate


def test_trained_challenger_beats_untrained_champion(tiny_trained: Path, tiny_base: Path,
                                                     demo_data: dict[str, Path]) -> None:
    verdict = evaluate(EvaluateConfig(challenger=tiny_trained, champion=tiny_base, eval_data=demo_data["a_eval"],
                                      golden_data=demo_data["golden"], min_gain=0.1, max_golden_drop=0.25))
    assert verdict.decision == "promote", verdict.reasons
    assert verdict.comparison["accuracy_gain"] >= 0.1
    assert verdict.comparison["mcnemar"]["c"] > verdict.comparison["mcnemar"]["b"]
    assert set(verdict.challenger) == {"eval", "golden"}
    for split in ("eval", "golden"):
        metrics = verdict.challenger[split]
        assert {"accuracy", "macro_f1", "ece", "per_class"} <= set(metrics)
        assert set(metrics["per_class"]) == {"billing", "technical", "account", "shipping"}
    assert json.loads(json.dumps(verdict.to_dict()))["decision"] == "promote"


def test_worse_challenger_is_rejected_with_reasons(tiny_trained: Path, tiny_base: Path,
                                                   demo_data: dict[str, Path]) -> None:
    verdict = evaluate(EvaluateConfig(challenger=tiny_base, champion=tiny_trained, eval_data=demo_data["a_eval"]))
    assert verdict.decision == "reject"
    assert any(r.startswith("accuracy gain") and "below the minimum" in r for r in verdict.reasons)
    assert any("significantly worse" in r for r in verdict.reasons)


def test_first_model_is_judged_on_the_floor(tiny_trained: Path, demo_data: dict[str, Path]) -> None:
    assert evaluate(EvaluateConfig(challenger=tiny_trained, eval_data=demo_data["a_eval"])).promote
    strict = evaluate(EvaluateConfig(challenger=tiny_trained, eval_data=demo_data["a_eval"], min_accuracy=1.01))
    assert strict.decision == "reject"
    assert strict.champion is None


def test_unknown_labels_in_eval_are_named(tmp_path: Path, tiny_trained: Path) -> None:
    pd.DataFrame({"text": ["x", "y"], "label": ["billing", "returns"]}).to_parquet(tmp_path / "eval.parquet")
    with pytest.raises(DataError, match=r"labels \['returns'\] are not among the model's labels"):
        evaluate(EvaluateConfig(challenger=tiny_trained, eval_data=tmp_path / "eval.parquet"))
