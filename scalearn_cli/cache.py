"""Where scalearn keeps per-user files: ``$XDG_CACHE_HOME/scalearn``, else ``~/.cache/scalearn``; the local registry's
default root (in it, unless ``$SCALEARN_REGISTRY`` says otherwise)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """The per-user cache folder (not created here): the local registry's default root and the demo data live in it."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "scalearn"


def default_local_root() -> Path:
    """``$SCALEARN_REGISTRY``, else ``$XDG_CACHE_HOME/scalearn/registry``, else ``~/.cache/scalearn/registry``."""
    configured = os.environ.get("SCALEARN_REGISTRY")
    if configured:
        return Path(configured).expanduser()
    return cache_home() / "registry"
