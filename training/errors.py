"""Typed errors of the training package; each message names the problem so a CLI can print one line."""

from __future__ import annotations


class TrainingError(Exception):
    """Base class: anything in ``training`` that a caller may want to catch as one kind."""


class DataError(TrainingError, ValueError):
    """Training or evaluation data is missing, empty, single-class, or has labels the model does not know."""


class BaseModelError(TrainingError, ValueError):
    """The base model path does not exist, or a hub id is not in the local cache (we never download)."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; the run stops and writes nothing."""


class ParityError(TrainingError):
    """A compiled model disagrees with torch beyond tolerance; nothing deployable is written."""
