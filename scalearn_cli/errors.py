"""Typed errors. Each message is one line that says what went wrong and what to do next.

The CLI maps every ``ScaLearnError`` to that line on stderr and exit code 1 (2 for usage errors);
tracebacks are shown only with ``SCALEARN_DEBUG=1``.
"""

from __future__ import annotations

import re

#: ANSI escape sequences (CSI ``ESC [ ... letter``, OSC ``ESC ] ... BEL|ESC \\``) as libraries colour their text
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
#: control characters (C0, DEL, C1) and the Unicode bidi/format controls that reorder what a terminal shows
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def printable(text: object) -> str:
    """``text`` safe to print on a terminal: every control character escaped (``\\x1b``, ``\\n``, ``\\u202e``).

    Untrusted strings (weight and file names from a downloaded adapter, config values, other libraries'
    messages) go through this before they reach the user, so a file cannot clear the screen or set the title.
    """
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


def strip_ansi(text: str) -> str:
    """``text`` without the ANSI colour/cursor sequences another library put in its message."""
    return _ANSI.sub("", text)


class ScaLearnError(Exception):
    """Base class: a domain error whose ``str()`` is shown to the user as-is."""

    exit_code = 1


class UsageError(ScaLearnError):
    """Bad option values or combinations (exit code 2)."""

    exit_code = 2


class TaskError(ScaLearnError):
    """Unknown task or a task definition that does not fit the data."""


class UnknownTaskError(TaskError, UsageError):
    """A task name that is in no task table: a usage error (exit code 2)."""


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
