"""Alertmanager's label-set fingerprint, so polled alerts dedup against webhook alerts of the same labels.

Alertmanager computes ``model.LabelSet.Fingerprint()`` (prometheus/common ``LabelsToSignature``): FNV-1a 64
over the label names in sorted order, each name and value followed by the separator byte 0xff, printed as
16 hex digits. Computing the same value for an ``ALERTS`` series makes the poller and the webhook agree.
"""

from __future__ import annotations

from collections.abc import Mapping

_OFFSET64 = 14695981039346656037
_PRIME64 = 1099511628211
_MASK64 = (1 << 64) - 1
_SEPARATOR = 0xFF


def _add(h: int, data: bytes) -> int:
    for byte in data:
        h ^= byte
        h = (h * _PRIME64) & _MASK64
    return h


def labels_fingerprint(labels: Mapping[str, str]) -> str:
    """The fingerprint Alertmanager gives an alert with exactly these labels."""
    h = _OFFSET64
    for name in sorted(labels):
        h = _add(h, name.encode())
        h = _add(h, bytes([_SEPARATOR]))
        h = _add(h, str(labels[name]).encode())
        h = _add(h, bytes([_SEPARATOR]))
    return f"{h:016x}"
