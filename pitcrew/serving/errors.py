"""Typed errors of the serving package; each message names the model, version or server concerned."""

from __future__ import annotations


class ServingError(RuntimeError):
    """Base class of every serving failure."""


class ArtifactError(ServingError, ValueError):
    """A model artifact folder is missing files or has invalid metadata (docs/model-artifact.md)."""


class PublishError(ServingError):
    """A version folder cannot be published into the model repository."""


class TritonUnavailableError(ServingError):
    """Triton did not answer after the bounded retries; retrying later may help."""


class ModelLoadError(ServingError):
    """Triton refused to load a version (corrupt model, bad config); the previous version keeps serving."""


class VerificationError(ServingError):
    """A loaded version answered the golden set differently or too slowly; it was rolled back."""


class SwapInProgressError(ServingError):
    """Another swap of the same model holds the lock; swaps of one model never interleave."""


class NothingToRollBackError(ServingError):
    """There is no earlier version of the model to go back to."""
