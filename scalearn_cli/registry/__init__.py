"""Adapter registries: ``local`` (a directory, the default) and ``hub`` (a Hugging Face Hub endpoint).

    registry = get_registry("local")            # or "local:/dir", "hub", "https://hub.example"
    result = registry.push(folder, "org/rte-lora", tag="v1")   # PushResult(repo_id, commit)
    path = registry.pull(*parse_ref("org/rte-lora@v1"))       # verified folder
"""

from scalearn_cli.cache import default_local_root
from scalearn_cli.registry.base import (
    DEFAULT_BRANCH,
    PushResult,
    Registry,
    RepoEntry,
    get_registry,
    parse_ref,
    validate_repo_id,
    validate_revision,
)

__all__ = [
    "DEFAULT_BRANCH",
    "PushResult",
    "Registry",
    "RepoEntry",
    "default_local_root",
    "get_registry",
    "parse_ref",
    "validate_repo_id",
    "validate_revision",
]
