from __future__ import annotations

from collections import Counter

import pytest
from transformers import AutoTokenizer

from pretrained import minilm_dir
from training.demo_data import _CUES_B, _PRODUCTS_B, LABELS, generate


def _b_vocabulary_share(texts: list[str]) -> float:
    markers = [cue for cues in _CUES_B.values() for cue in cues] + _PRODUCTS_B
    return sum(any(m in t for m in markers) for t in texts) / len(texts)


def test_seeded_balanced_and_deterministic() -> None:
    first = generate(200, domain="B", shift=0.7, seed=5)
    assert first.equals(generate(200, domain="B", shift=0.7, seed=5))
    assert not first.equals(generate(200, domain="B", shift=0.7, seed=6))
    assert set(Counter(first["label"]).values()) == {50}
    assert set(first["label"]) == set(LABELS)


def test_shift_controls_how_much_b_vocabulary_appears() -> None:
    shares = [_b_vocabulary_share(generate(400, domain="B", shift=s).text.tolist()) for s in (0.0, 0.5, 1.0)]
    assert shares[0] == 0.0
    assert shares[0] < shares[1] < shares[2] == 1.0
    assert _b_vocabulary_share(generate(400, domain="A", shift=1.0).text.tolist()) == 0.0


def test_domain_b_raises_the_unknown_token_rate() -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())

    def unk_rate(texts: list[str]) -> float:
        ids = [i for t in texts for i in tokenizer(t, add_special_tokens=False)["input_ids"]]
        return ids.count(tokenizer.unk_token_id) / len(ids)

    assert unk_rate(generate(200, domain="A").text.tolist()) == 0.0
    assert unk_rate(generate(200, domain="B", shift=1.0).text.tolist()) > 0.02


@pytest.mark.parametrize("kwargs", [{"domain": "C"}, {"shift": 1.5}, {"shift": -0.1}, {"n": -1}])
def test_bad_arguments_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate(**{"n": 4, **kwargs})
