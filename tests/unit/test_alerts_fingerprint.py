from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pitcrew.alerts.fingerprint import labels_fingerprint


class TestLabelsFingerprint:
    def test_matches_prometheus_common_signature_vectors(self) -> None:
        # Vectors of prometheus/common model/signature_test.go (LabelsToSignature).
        assert int(labels_fingerprint({}), 16) == 14695981039346656037
        labels = {"name": "garland, briggs", "fear": "love is not enough"}
        assert int(labels_fingerprint(labels), 16) == 5799056148416392346

    def test_is_sixteen_hex_digits(self) -> None:
        fp = labels_fingerprint({"alertname": "A", "model": "textclf"})
        assert len(fp) == 16
        int(fp, 16)

    @given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=6))
    def test_independent_of_insertion_order(self, labels: dict[str, str]) -> None:
        reversed_labels = dict(reversed(list(labels.items())))
        assert labels_fingerprint(labels) == labels_fingerprint(reversed_labels)

    def test_value_changes_fingerprint(self) -> None:
        assert labels_fingerprint({"model": "a"}) != labels_fingerprint({"model": "b"})
