"""monitoring.text_features and monitoring.embedding: derived text features, MMD, MiniLM embeddings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.embedding import embed_texts, mmd_test
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


class TestMMD:
    def test_same_distribution_is_not_significant(self) -> None:
        rng = np.random.default_rng(0)
        result = mmd_test(rng.normal(size=(200, 5)), rng.normal(size=(200, 5)), n_permutations=100)
        assert result.pvalue > 0.05

    def test_shift_is_significant_and_p_is_never_zero(self) -> None:
        rng = np.random.default_rng(1)
        result = mmd_test(rng.normal(size=(200, 5)), rng.normal(0.7, 1, size=(200, 5)), n_permutations=100)
        assert result.pvalue == pytest.approx(1 / 101) and result.mmd2 > 0.01

    def test_shape_mismatch_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="equal width"):
            mmd_test(np.zeros((5, 3)), np.zeros((5, 4)))


def test_minilm_embeddings_are_normalised_and_meaningful() -> None:
    texts = ["my invoice is wrong", "I was billed twice", "the app crashes on start", "the app crashes at launch"]
    emb = embed_texts(texts)
    assert emb.shape == (4, 384)
    assert np.linalg.norm(emb, axis=1) == pytest.approx(np.ones(4), abs=1e-5)
    similarity = emb @ emb.T
    assert similarity[2, 3] > similarity[0, 2] and similarity[0, 1] > similarity[1, 3]
