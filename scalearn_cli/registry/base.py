"""The registry interface shared by the ``local`` and ``hub`` backends, and the checks both apply.

A registry stores adapter folders under repo ids (``org/name``) as immutable commits reachable through
branches (default ``main``) and tags. Only flat folders of ``*.safetensors``, ``*.json`` and ``README.md``
are pushed or pulled: no pickle ever crosses a registry.
"""

from __future__ import annotations

import abc
import importlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from scalearn_cli.artifacts import MODEL_CARD_FILE, sha256_file
from scalearn_cli.artifacts.records import card_covered, check_record, read_metadata
from scalearn_cli.errors import ArtifactError, RegistryError, UsageError

logger = logging.getLogger(__name__)

DEFAULT_BRANCH = "main"
#: what a registry ever stores or hands back (patterns in huggingface_hub's fnmatch syntax)
ALLOW_PATTERNS = ("*.safetensors", "*.json", MODEL_CARD_FILE)
#: the weights files of adapters other libraries publish (PEFT's .bin, AdapterHub's): *pulled* for use as sources
#: only, and only ever read with ``torch.load(weights_only=True)`` by ``scalearn_cli.formats``; never pushed
PULL_ONLY_FILES = ("adapter_model.bin", "pytorch_adapter.bin")
#: suffixes that betray pickle (torch.save, joblib, numpy object arrays...): refused with a pointed hint
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")

_NAME = r"[A-Za-z0-9_][A-Za-z0-9._-]*"
_REPO_ID_RE = re.compile(rf"^{_NAME}(/{_NAME})?$")
_NAME_RE = re.compile(rf"^{_NAME}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
#: the Hub's limit on a repo id (huggingface_hub.utils.validate_repo_id)
MAX_REPO_ID_LENGTH = 96


@dataclass(frozen=True)
class PushResult:
    """Where a push landed: the repo and the commit hash of the revision it created (or found unchanged)."""

    repo_id: str
    commit: str

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.commit}"


@dataclass(frozen=True)
class RepoEntry:
    """One repo of a registry listing: its id, the commit ``main`` points at, and its parsed scalearn.json."""

    repo_id: str
    commit: str
    metadata: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # file -> bytes, where the backend knows them


class Registry(abc.ABC):
    """A store of adapter folders addressed by ``repo_id`` and revision (branch, tag or commit hash)."""

    #: shown in error messages: the local root or the Hub endpoint
    location: str
    #: a path it handed out is pulled again (verified against its own record) before a composition uses it
    repull_snapshots: bool = False

    @property
    def reference(self) -> str:
        """How a composition records this registry (``--registry`` takes it back): the location by default."""
        return self.location

    @abc.abstractmethod
    def push(
        self,
        folder: Path,
        repo_id: str,
        revision: str | None = None,
        tag: str | None = None,
        private: bool = False,
        commit_message: str | None = None,
    ) -> PushResult:
        """Commit the files of ``folder`` to branch ``revision`` (default main), optionally tag that commit."""

    @abc.abstractmethod
    def pull(self, repo_id: str, revision: str | None = None, local_dir: Path | None = None) -> Path:
        """Fetch a revision, verify every file's hash against the registry's record, return the folder."""

    @abc.abstractmethod
    def resolve(self, repo_id: str, revision: str | None = None) -> str:
        """The commit hash a branch, tag or commit hash points at."""

    @abc.abstractmethod
    def list(self, filter: str | None = None) -> list[RepoEntry]:  # noqa: A002 - mirrors `scalearn list --filter`
        """Repos holding scalearn metadata, optionally only those whose id or metadata contain ``filter``."""

    @abc.abstractmethod
    def file_hashes(self, repo_id: str, commit: str) -> dict[str, str]:
        """sha256 of every file of a commit, by file name: what a composition records about its sources."""

    def exists(self) -> bool:
        """False only for a registry that was never created (a local root nothing was pushed to)."""
        return True


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split ``"org/name@rev"`` into ``("org/name", "rev")``; without ``@`` the revision is None."""
    repo_id, sep, revision = ref.partition("@")
    if sep and not revision:
        raise UsageError(f"{ref!r} ends with '@' but names no revision: write ORG/NAME@BRANCH-TAG-OR-COMMIT")
    validate_repo_id(repo_id)
    if sep:
        validate_revision(revision)
    return repo_id, revision or None


def validate_repo_id(repo_id: str) -> str:
    """Accept ``name`` or ``org/name`` made of letters, digits, ``.``, ``_``, ``-``; nothing that could escape.

    At most 96 characters, like the Hub, so a local push cannot create what the Hub would refuse.
    """
    if (
        not isinstance(repo_id, str)
        or len(repo_id) > MAX_REPO_ID_LENGTH
        or not _REPO_ID_RE.match(repo_id)
        or ".." in repo_id
        or "--" in repo_id
    ):
        raise UsageError(
            f"invalid repo id {_shorten(repo_id)!r}: use ORG/NAME with letters, digits, '.', '_' or '-' "
            f"(no leading '.' or '-', no '..' or '--', no slashes beyond the one after ORG, "
            f"at most {MAX_REPO_ID_LENGTH} characters)"
        )
    return repo_id


def _shorten(value: object, limit: int = 60) -> object:
    """A long string cut for a one-line message, with its length; anything else unchanged."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:40]}... ({len(value)} characters)"
    return value


def _plain_name(value: object) -> bool:
    """One path component of the allowed alphabet: nothing that could escape a folder."""
    return isinstance(value, str) and bool(_NAME_RE.match(value)) and ".." not in value


def validate_revision(revision: str) -> str:
    """Accept a branch or tag name (same alphabet as repo names, no slash) or a 40-hex commit hash."""
    if not _plain_name(revision):
        raise UsageError(
            f"invalid revision {revision!r}: use a branch or tag name of letters, digits, '.', '_' or '-', "
            "or a 40-character commit hash"
        )
    return revision


def validate_ref_name(name: str, what: str) -> str:
    """A branch or tag to create (``what`` says which): a plain name that cannot be mistaken for a commit hash."""
    if not _plain_name(name):
        raise UsageError(
            f"invalid {what} {name!r}: use a {what} name of letters, digits, '.', '_' or '-' "
            "(no '/', no '..', no leading '.' or '-')"
        )
    if is_commit_hash(name):
        raise UsageError(f"invalid {what} {name!r}: it looks like a commit hash; choose a name such as v1 or dev")
    return name


def validate_filename(name: str) -> str:
    """A file name inside a repo: one path component of the allowed alphabet (no folders, no '..')."""
    if not _plain_name(name):
        raise RegistryError(
            f"refusing file name {name!r}: registry files must be plain names of letters, digits, '.', '_' or '-'; "
            "the registry record is corrupted or hostile"
        )
    return name


def is_commit_hash(revision: str) -> bool:
    """True for a full 40-hex commit hash."""
    return bool(_COMMIT_RE.match(revision))


def is_allowed_file(name: str) -> bool:
    """Only safetensors, JSON and the model card ever enter or leave a registry."""
    return name == MODEL_CARD_FILE or name.endswith((".safetensors", ".json"))


def is_pullable_file(name: str) -> bool:
    """What a pull fetches: the allowed files plus other libraries' adapter weights (see PULL_ONLY_FILES)."""
    return is_allowed_file(name) or name in PULL_ONLY_FILES


def collect_push_files(folder: Path) -> dict[str, Path]:
    """The files of an adapter folder to push, by name; refuse anything that is not safetensors/JSON/README.

    The folder must pass its own record (``artifacts.folders.check_record``), so an edited weight file or
    scalearn.json is never published under a name others trust. Hidden entries (``.cache``, ``.DS_Store``...) are
    skipped. Pickle files and sub-folders are refused with a one-line error rather than silently left behind, so
    what is pushed is exactly what loads.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder} is not a folder: pass the adapter folder written by scalearn train/transfer")
    check_record(folder)  # valid metadata, unedited (metadata_sha256), every recorded file and the card as hashed
    trusted_card = card_covered(read_metadata(folder))
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        name = path.name
        if name.startswith("."):
            continue
        if name == MODEL_CARD_FILE and not trusted_card:  # written before cards were recorded: never trusted
            logger.warning("%s is in no record of %s: not pushed (re-create the folder to publish a card)", name, folder)
            continue
        if path.is_symlink() or not path.is_file():
            raise ArtifactError(
                f"{path} is not a plain file: push expects a flat adapter folder; move it out of {folder}"
            )
        if name.endswith(PICKLE_SUFFIXES):
            raise ArtifactError(
                f"refusing to push {path}: pickle-based files are never shared; convert it to safetensors or remove it"
            )
        if not is_allowed_file(name) or not _NAME_RE.match(name):
            raise ArtifactError(
                f"refusing to push {path}: only *.safetensors, *.json and README.md files are pushed; remove it"
            )
        files[name] = path
    return files


def existing_pull(local_dir: Path, names: Iterable[str]) -> bool:
    """Whether ``local_dir`` already holds exactly the files ``names`` (verify it, do not pull again).

    False for a missing or empty folder (pull into it); an existing file, or a folder holding other files, is
    refused so a pull never overwrites or mixes with the user's files.
    """
    if local_dir.exists() and not local_dir.is_dir():
        raise ArtifactError(f"--local-dir {local_dir} is a file, not a folder; pass a new or empty folder path")
    present = sorted(p.name for p in local_dir.iterdir()) if local_dir.is_dir() else []
    if present and present != sorted(names):
        raise ArtifactError(f"{local_dir} already holds other files; choose an empty --local-dir or remove it")
    return bool(present)


def verify_files(folder: Path, expected: dict[str, str], repo_id: str, commit: str) -> None:
    """Check that ``folder`` holds exactly the files of ``expected`` with those sha256; raise on any mismatch."""
    folder = Path(folder)
    for name, digest in sorted(expected.items()):
        path = folder / validate_filename(name)
        if not path.is_file():
            raise RegistryError(
                f"{repo_id}@{commit[:12]}: {name} is missing from {folder}; delete that folder and pull again"
            )
        actual = sha256_file(path)
        if actual != digest:
            raise RegistryError(
                f"{repo_id}@{commit[:12]}: {name} has sha256 {actual[:12]}... but the registry recorded "
                f"{digest[:12]}...; the copy is corrupted or was tampered with: do not use it, re-push the adapter"
            )


@dataclass(frozen=True)
class Backend:
    """One registry backend: the ``--registry`` values it takes (exact names, prefixes) and how to open one."""

    names: tuple[str, ...]
    prefixes: tuple[str, ...]
    #: how to open one: ``open(spec, endpoint) -> Registry``, or its ``"module:function"`` name, imported on first
    #: use (the built-in backends' modules import this one, so it names them instead of importing them)
    open: Callable[[str, "str | None"], Registry] | str
    usage: str  # for the unknown-registry message
    #: it sends the user's token, so a stored record naming it must be a trusted endpoint (resolve.py)
    sends_token: bool = False

    def takes(self, spec: str) -> bool:
        return spec in self.names or spec.startswith(self.prefixes)


#: the registry backends, tried in order; a new backend is one more entry (``register_backend``)
BACKENDS: list[Backend] = [
    Backend(("local",), ("local:",), "scalearn_cli.registry.local:open_local", "'local', 'local:/some/dir'"),
    Backend(("hub",), ("http://", "https://"), "scalearn_cli.registry.hub:open_hub", "'hub' or a Hub URL",
            sends_token=True),
]


def backend_for(spec: str) -> Backend | None:
    """The table entry that takes ``spec`` (a ``--registry`` value or a recorded one), or None."""
    return next((backend for backend in BACKENDS if backend.takes(spec)), None)


def register_backend(backend: Backend) -> Backend:
    """Add a backend at run time (plugins, tests); its names and prefixes must be new."""
    if any(set(b.names) & set(backend.names) or set(b.prefixes) & set(backend.prefixes) for b in BACKENDS):
        raise UsageError(f"a registry backend for {backend.usage} is already registered")
    BACKENDS.append(backend)
    return backend


def get_registry(name_or_url: str | None = None, endpoint: str | None = None) -> Registry:
    """The backend whose table entry takes ``name_or_url``: ``local`` (default), ``local:/dir``, ``hub``, a URL."""
    spec = (name_or_url or "local").strip()
    backend = backend_for(spec)
    if backend is not None:
        opener = backend.open
        if isinstance(opener, str):
            module, _, name = opener.partition(":")
            opener = getattr(importlib.import_module(module), name)
        return opener(spec, endpoint)
    raise UsageError(f"unknown registry {spec!r}: use {', '.join(b.usage for b in BACKENDS)}")


def matches(entry: RepoEntry, text: str | None) -> bool:
    """Case-insensitive substring match on repo id, task, base model, adapter kind and kind."""
    if not text:
        return True
    meta = entry.metadata
    base = meta.get("base_model")
    adapter = meta.get("adapter")
    task = meta.get("task")
    fields = [
        entry.repo_id,
        str(task.get("name", "")) if isinstance(task, dict) else str(task or ""),
        str(meta.get("kind", "")),
        str(base.get("id", "")) if isinstance(base, dict) else str(base or ""),
        str(adapter.get("kind", "")) if isinstance(adapter, dict) else str(adapter or ""),
    ]
    needle = text.lower()
    return any(needle in value.lower() for value in fields)
