"""monitoring.text_features: numeric features derived from text, with and without the packaged tokenizer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.text_features import load_tokenizer, text_features


class TestTextFeatures:
    def test_without_tokenizer_counts_words(self) -> None:
        out = text_features(pd.Series(["hello world", "", None, "a b c"]))
        assert list(out.columns) == ["length", "tokens"]
        assert out["length"].tolist()[:2] == [11.0, 0.0] and np.isnan(out["length"][2])
        assert out["tokens"].tolist()[3] == 3.0

    def test_packaged_tokenizer_measures_unknown_tokens(self) -> None:
        tokenizer = load_tokenizer()
        out = text_features(pd.Series(["my invoice is wrong", "🦜🦜 🦜"]), tokenizer)
        assert out["unk_rate"].tolist()[0] == 0.0
        assert out["unk_rate"].tolist()[1] == 1.0
        assert out["tokens"].tolist()[0] >= 4

    def test_missing_tokenizer_file_is_a_clear_error(self, tmp_path) -> None:
        with pytest.raises(FileNotFoundError, match="tokenizer.json"):
            load_tokenizer(str(tmp_path))

