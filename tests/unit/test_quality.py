"""monitoring.quality: bad rows are quarantined with every reason and counted, never dropped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.errors import QualitySchemaError
from monitoring.quality import REASONS_COLUMN, QualitySpec, check_quality

LABELS = ("billing", "technical", "account", "shipping")


def spec(**overrides) -> QualitySpec:
    settings = {
        "required": {"text": "text", "label": "categorical", "confidence": "numeric"},
        "nullable": ("confidence",),
        "ranges": {"confidence": (0.0, 1.0)},
        "max_text_chars": 40,
    }
    return QualitySpec.for_text_classifier(LABELS, **{**settings, **overrides})


def table() -> pd.DataFrame:
    return pd.DataFrame({
        "text": ["refund please", "   ", None, "x" * 41, "refund please", "app crashes", "ok then"],
        "label": ["billing", "billing", "account", "technical", "billing", "refunds", "shipping"],
        "confidence": [0.9, 1.5, 0.3, np.nan, 0.9, 0.2, np.inf],
    })


def test_every_bad_row_is_kept_with_all_its_reasons() -> None:
    result = check_quality(table(), spec())
    reasons = dict(zip(result.quarantined.index, result.quarantined[REASONS_COLUMN], strict=True))
    assert reasons == {
        1: "empty_text;out_of_range:confidence",
        2: "missing:text",
        3: "text_too_long",
        4: "duplicate",
        5: "unknown_label",
        6: "out_of_range:confidence",
    }
    assert result.clean.index.tolist() == [0]
    assert result.n_rows == len(table())  # nothing silently dropped


def test_counts_per_reason_and_summary() -> None:
    result = check_quality(table(), spec())
    assert result.counts == {
        "missing:text": 1, "empty_text": 1, "text_too_long": 1, "out_of_range:confidence": 2,
        "unknown_label": 1, "duplicate": 1,
    }
    summary = result.to_dict()
    assert summary["quarantined"] == 6 and summary["quarantine_ratio"] == pytest.approx(6 / 7)


def test_clean_table_passes_untouched() -> None:
    df = table().iloc[[0, 6]].assign(confidence=[0.1, 0.2])
    result = check_quality(df, spec())
    assert result.quarantined.empty and result.counts == {}
    pd.testing.assert_frame_equal(result.clean, df)


def test_missing_required_column_is_a_schema_error() -> None:
    with pytest.raises(QualitySchemaError, match="required column.*label"):
        check_quality(table().drop(columns="label"), spec())


def test_wrong_kind_is_a_schema_error() -> None:
    with pytest.raises(QualitySchemaError, match="confidence must be numeric"):
        check_quality(table().assign(confidence="high"), spec(ranges={}))


def test_empty_table_gives_empty_result() -> None:
    result = check_quality(table().head(0), spec())
    assert result.n_rows == 0 and result.quarantine_ratio == 0.0
