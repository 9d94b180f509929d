"""The lazy lookup both extension tables share (adapter kinds, combiners): entries are ``"module:Class"`` strings
imported on first use (so `scalearn --help` stays instant) or ready instances."""

from __future__ import annotations

import importlib
from typing import Any


def lookup(table: dict[str, Any], name: str) -> Any | None:
    """The instance registered under ``name`` (imported and cached on first use), or None."""
    entry = table.get(name)
    if isinstance(entry, str):
        module, _, cls = entry.partition(":")
        entry = table[name] = getattr(importlib.import_module(module), cls)()
    return entry
