"""Typed errors. Each message is one line that says what went wrong and what to do next.

The CLI maps every ``ScaLearnError`` to that line on stderr and exit code 1 (2 for usage errors);
tracebacks are shown only with ``SCALEARN_DEBUG=1``.
"""

from __future__ import annotations


class ScaLearnError(Exception):
    """Base class: a domain error whose ``str()`` is shown to the user as-is."""

    exit_code = 1


class UsageError(ScaLearnError):
    """Bad option values or combinations (exit code 2)."""

    exit_code = 2


class TaskError(ScaLearnError):
    """Unknown task or a task definition that does not fit the data."""


class DataError(ScaLearnError):
    """Missing, empty or malformed data files, or labels outside the task's label set."""


class ModelError(ScaLearnError):
    """The base model cannot be found or loaded, or does not fit the adapter kind."""


class ArtifactError(ScaLearnError):
    """An adapter/composition folder is missing, corrupted, changed, or would be overwritten."""


class TrainingError(ScaLearnError):
    """Training went numerically wrong (a non-finite loss); nothing was saved."""


class CompositionError(ScaLearnError):
    """Sources that cannot be composed together (mismatched base model, kind, duplicates...)."""


class RegistryError(ScaLearnError):
    """Registry unreachable, repo/revision not found, auth refused, integrity failure."""
