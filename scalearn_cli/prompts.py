"""Prompt templates of generation tasks: ``{field}`` placeholders filled from a row's columns."""

from __future__ import annotations

import string
from typing import Any

from scalearn_cli.errors import TaskError

IGNORE = -100  # the label of a position that is not scored (prompt tokens, padding): torch's ignore_index


def template_fields(template: str) -> tuple[str, ...]:
    """The ``{field}`` names of a prompt template, in order of first use (``{{``/``}}`` are literal braces)."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise TaskError(f"prompt template {template!r} is not a valid {{field}} template ({exc})") from exc
    if any(not n for n in names):
        raise TaskError(f"prompt template {template!r} has an empty {{}} placeholder; name a column in braces")
    return tuple(dict.fromkeys(names))


def render_prompt(template: str, row: dict[str, Any]) -> str:
    """``template`` with each ``{field}`` replaced by the row's value (the text as-is; no format specs)."""
    return "".join(literal + ("" if name is None else _text(row.get(name)))
                   for literal, name, _, _ in string.Formatter().parse(template))


def _text(value: Any) -> str:
    return "" if value is None else str(value)
