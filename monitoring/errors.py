"""Typed errors of the monitoring package; callers branch on the type, never on message text."""

from __future__ import annotations


class MonitoringError(ValueError):
    """Base class: bad input that the caller can fix (subclass of ValueError so the CLI prints one line)."""


class DriftInputError(MonitoringError):
    """Reference and current window cannot be compared (missing column, incompatible dtypes, bad config)."""


class QualitySchemaError(MonitoringError):
    """A table does not have the schema a data-quality spec requires (a dataset-level, not a row-level, fault)."""


class ProfileFormatError(MonitoringError):
    """A saved reference profile is missing, truncated or from an incompatible format version."""
