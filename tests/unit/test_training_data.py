from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from training.data import LabelledText, load_feedback_join, load_labelled
from training.errors import DataError

FRAME = pd.DataFrame({"text": ["a", "b", "c"], "label": ["billing", "account", "billing"]})


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_load_labelled_reads_each_format(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"rows{suffix}"
    {".parquet": lambda: FRAME.to_parquet(path), ".csv": lambda: FRAME.to_csv(path, index=False),
     ".jsonl": lambda: FRAME.to_json(path, orient="records", lines=True)}[suffix]()
    data = load_labelled(path)
    assert data.texts == FRAME["text"].tolist()
    assert data.labels == FRAME["label"].tolist()


def test_missing_file_and_column_and_format_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_labelled(tmp_path / "absent.parquet")
    FRAME.rename(columns={"label": "y"}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(DataError, match=r"missing column\(s\) \['label'\]"):
        load_labelled(tmp_path / "x.parquet")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unsupported format"):
        load_labelled(tmp_path / "x.txt")


def test_trainable_rejects_empty_and_single_class() -> None:
    with pytest.raises(DataError, match="no rows"):
        LabelledText([], [], "empty").require_trainable()
    with pytest.raises(DataError, match="only one class"):
        LabelledText(["a", "b"], ["billing", "billing"], "one").require_trainable()
    LabelledText(["a", "b"], ["billing", "account"]).require_trainable()


def test_unknown_labels_are_listed() -> None:
    data = LabelledText(["a", "b"], ["billing", "refunds"], "eval.parquet")
    with pytest.raises(DataError, match=r"eval.parquet: labels \['refunds'\]"):
        data.label_ids(["billing", "account"])
    assert LabelledText(["a"], ["account"]).label_ids(["billing", "account"]) == [1]


def test_feedback_join_keeps_labelled_requests_and_last_label(tmp_path: Path) -> None:
    log = pd.DataFrame({"request_id": ["r1", "r2", "r3"], "text": ["t1", "t2", "t3"],
                        "prediction": ["billing"] * 3, "confidence": [0.9] * 3})
    feedback = pd.DataFrame({"request_id": ["r1", "r3", "r3", "r9"],
                             "label": ["account", "billing", "shipping", "technical"]})
    (tmp_path / "log").mkdir()
    log.to_parquet(tmp_path / "log" / "part-0.parquet")  # a partitioned dataset folder, like the serving log
    feedback.to_parquet(tmp_path / "feedback.parquet")
    data = load_feedback_join(tmp_path / "log", tmp_path / "feedback.parquet")
    assert sorted(zip(data.texts, data.labels, strict=True)) == [("t1", "account"), ("t3", "shipping")]
