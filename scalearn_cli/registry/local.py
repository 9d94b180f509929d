"""The embedded registry: a directory laid out like huggingface_hub's cache, with commits that can be verified.

    <root>/.locks/models--org--name.lock        one writer at a time per repo (filelock)
    <root>/models--org--name/
        blobs/<sha256>                         file contents, read-only, named by their hash
        snapshots/<commit>/<file>              relative symlinks to blobs (copies where links fail)
        commits/<commit>.json                  manifest: files (sha256, size), parent, message, time
        refs/<branch-or-tag>                   the commit a branch or tag points at
        tags/<tag>                             marks which refs are (immutable) tags

A commit is the first 40 hex digits of the sha256 of its manifest (parent included), so it names its exact
content and history. Every write goes to a temporary name first and is renamed into place, in the order
blobs -> snapshot -> manifest -> ref: an interrupted push leaves at most unreferenced blobs, never a
half-written revision. Because ``refs``/``snapshots``/``blobs`` follow huggingface_hub's cache layout, a
registry root also works as ``HF_HUB_CACHE`` for offline loading (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from scalearn_cli.artifacts import METADATA_FILE, read_json
from scalearn_cli.artifacts.outputs import check_pull_dir
from scalearn_cli.cache import default_local_root
from scalearn_cli.errors import RegistryError, ScaLearnError, UsageError
from scalearn_cli.registry.files import _atomic_write, _mode, materialize
from scalearn_cli.registry.base import (
    DEFAULT_BRANCH,
    PushResult,
    Registry,
    RepoEntry,
    collect_push_files,
    is_commit_hash,
    matches,
    validate_filename,
    validate_ref_name,
    validate_repo_id,
    validate_revision,
    verify_files,
)

logger = logging.getLogger(__name__)

MANIFEST_FORMAT_VERSION = 1
_LOCK_TIMEOUT_S = 120
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class LocalRegistry(Registry):
    """A registry in a local directory (no server): same repo ids, revisions and integrity checks as the Hub."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self.location = str(self.root)
        blocker = next((p for p in (self.root, *self.root.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise RegistryError(f"the local registry root {self.root} is not a folder ({blocker} is a file): point "
                                "SCALEARN_REGISTRY or --registry local:PATH at a folder")

    repull_snapshots = True  # its snapshots are plain folders anyone may edit: verify against the manifest

    @property
    def reference(self) -> str:
        return f"local:{self.root}"

    # ---- paths -------------------------------------------------------------------------------------------
    def _repo_dir(self, repo_id: str) -> Path:
        return self.root / ("models--" + validate_repo_id(repo_id).replace("/", "--"))

    def _inside(self, path: Path) -> Path:
        """``path`` with every symlink resolved; refused unless it stays under the registry root.

        Registry state (refs, manifests, snapshot links) is data anyone with write access may have edited: no
        path built from it is read before this check.
        """
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise RegistryError(
                f"refusing {path}: it leads outside the registry {self.root}; the registry is corrupted or "
                "hostile: re-push the adapter into a fresh registry"
            )
        return resolved

    def _lock(self, repo_id: str) -> FileLock:
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(locks / f"{self._repo_dir(repo_id).name}.lock"), timeout=_LOCK_TIMEOUT_S)

    # ---- write -------------------------------------------------------------------------------------------
    def push(
        self,
        folder: Path,
        repo_id: str,
        revision: str | None = None,
        tag: str | None = None,
        private: bool = False,
        commit_message: str | None = None,
    ) -> PushResult:
        """Store ``folder`` as a new commit on branch ``revision`` (``private`` has no meaning locally)."""
        repo_dir = self._repo_dir(repo_id)
        branch = validate_ref_name(revision or DEFAULT_BRANCH, "branch")
        if tag is not None:
            validate_ref_name(tag, "tag")
        files = collect_push_files(folder)
        (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
        # Blobs are content-addressed, so they can be written before taking the lock: concurrent pushes of the
        # same bytes rename identical files onto the same name.
        records = {name: self._store_blob(repo_dir, path) for name, path in files.items()}
        try:
            with self._lock(repo_id):
                message = commit_message or f"Push {Path(folder).name}"
                commit = self._commit(repo_dir, repo_id, branch, records, message, tag)
                if tag is not None:
                    self._tag(repo_dir, repo_id, tag, commit)
        except TimeoutError as exc:
            raise RegistryError(
                f"{repo_id} is locked by another scalearn process; retry, or remove a stale {self.root}/.locks file"
            ) from exc
        return PushResult(repo_id=repo_id, commit=commit)

    def _store_blob(self, repo_dir: Path, source: Path) -> dict[str, Any]:
        """Copy ``source`` into blobs/ under its sha256 (hashing the copy, so the record matches what is stored)."""
        blobs = repo_dir / "blobs"
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=blobs)
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        try:
            with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
                while block := src.read(1 << 20):
                    digest.update(block)
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
            size = tmp.stat().st_size
            target = blobs / digest.hexdigest()
            if target.exists():
                tmp.unlink()
            else:
                tmp.chmod(_mode(0o444))
                os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return {"sha256": digest.hexdigest(), "size": size}

    def _commit(
        self,
        repo_dir: Path,
        repo_id: str,
        branch: str,
        records: dict[str, dict[str, Any]],
        message: str,
        tag: str | None,
    ) -> str:
        """Write manifest + snapshot and move the branch (caller holds the lock). Unchanged files: no commit.

        A ``tag`` that already exists is checked first, so a refused tag leaves the branch untouched.
        """
        if (repo_dir / "tags" / branch).exists():
            raise RegistryError(f"{repo_id}: {branch!r} is a tag, and tags never move; push to a branch instead")
        parent = self._read_ref(repo_dir, branch)
        if parent is None and branch != DEFAULT_BRANCH:
            parent = self._read_ref(repo_dir, DEFAULT_BRANCH)  # a new branch starts from main, as on the Hub
        unchanged = parent is not None and self._manifest(repo_dir, repo_id, parent)["files"] == records
        tagged = self._read_ref(repo_dir, tag) if tag is not None else None
        if tagged is not None and not (unchanged and tagged == parent):
            raise RegistryError(
                f"{repo_id}: tag {tag!r} already points at {tagged[:12]} and tags never move; choose a new tag"
            )
        if unchanged:
            self._write_ref(repo_dir, branch, parent)  # type: ignore[arg-type]
            return parent  # type: ignore[return-value]
        manifest = {
            "format_version": MANIFEST_FORMAT_VERSION,
            "repo_id": repo_id,
            "parent": parent,
            "message": message,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": records,
        }
        payload = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        commit = hashlib.sha256(payload.encode()).hexdigest()[:40]
        self._write_snapshot(repo_dir, commit, records)
        commits = repo_dir / "commits"
        commits.mkdir(exist_ok=True)
        _atomic_write(commits / f"{commit}.json", payload)
        self._write_ref(repo_dir, branch, commit)
        return commit

    def _write_snapshot(self, repo_dir: Path, commit: str, records: dict[str, dict[str, Any]]) -> None:
        snapshots = repo_dir / "snapshots"
        snapshots.mkdir(exist_ok=True)
        final = snapshots / commit
        if final.is_dir():
            return
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{commit[:12]}-", dir=snapshots))
        tmp.chmod(_mode(0o777))
        try:
            for name, record in records.items():
                blob = repo_dir / "blobs" / record["sha256"]
                try:
                    os.symlink(os.path.join("..", "..", "blobs", record["sha256"]), tmp / name)
                except OSError:  # no symlinks (some Windows setups, odd filesystems): copy
                    shutil.copyfile(blob, tmp / name)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _tag(self, repo_dir: Path, repo_id: str, tag: str, commit: str) -> None:
        existing = self._read_ref(repo_dir, tag)
        is_tag = (repo_dir / "tags" / tag).exists()
        if existing is not None and not is_tag:
            raise RegistryError(f"{repo_id}: {tag!r} is already a branch; choose another tag name")
        if existing is not None and existing != commit:
            raise RegistryError(
                f"{repo_id}: tag {tag!r} already points at {existing[:12]} and tags never move; choose a new tag"
            )
        (repo_dir / "tags").mkdir(exist_ok=True)
        _atomic_write(repo_dir / "tags" / tag, commit)
        self._write_ref(repo_dir, tag, commit)

    def _write_ref(self, repo_dir: Path, name: str, commit: str) -> None:
        (repo_dir / "refs").mkdir(exist_ok=True)
        _atomic_write(repo_dir / "refs" / name, commit)  # no newline: huggingface_hub reads refs verbatim

    # ---- read --------------------------------------------------------------------------------------------
    def _read_ref(self, repo_dir: Path, name: str) -> str | None:
        """The commit hash a branch or tag points at, None when it does not exist; anything else is refused."""
        path = repo_dir / "refs" / validate_revision(name)
        if not path.is_file():
            return None
        commit = self._inside(path).read_text(encoding="utf-8").strip()
        if not is_commit_hash(commit):
            raise RegistryError(
                f"ref {name!r} of {repo_dir.name} does not hold a commit hash; the registry {self.root} is "
                "corrupted or hostile: re-push the adapter"
            )
        return commit

    def _manifest(self, repo_dir: Path, repo_id: str, commit: str) -> dict[str, Any]:
        """Read a commit's manifest and check it still hashes to its name (so a record cannot be edited)."""
        if not is_commit_hash(commit):
            raise RegistryError(f"{commit!r} is not a commit hash of {repo_id}; run `scalearn list` to see what exists")
        path = repo_dir / "commits" / f"{commit}.json"
        if not path.is_file():
            raise RegistryError(
                f"revision {commit[:12]} not found in {repo_id} ({self.root}): run `scalearn list` to see what exists"
            )
        payload = self._inside(path).read_bytes()
        if hashlib.sha256(payload).hexdigest()[:40] != commit:
            raise RegistryError(
                f"{repo_id}@{commit[:12]}: its manifest {path} was modified; the registry is corrupted, re-push it"
            )
        manifest = json.loads(payload)
        for name, record in manifest["files"].items():
            validate_filename(name)
            if not isinstance(record, dict) or not _SHA256_RE.match(str(record.get("sha256"))):
                raise RegistryError(
                    f"{repo_id}@{commit[:12]}: the manifest records no valid sha256 for {name}; re-push the adapter"
                )
        return manifest

    def resolve(self, repo_id: str, revision: str | None = None) -> str:
        """The commit of a branch, tag or commit hash; one-line errors for unknown repos and revisions."""
        repo_dir = self._repo_dir(repo_id)
        revision = validate_revision(revision or DEFAULT_BRANCH)
        if not (repo_dir / "commits").is_dir():
            raise RegistryError(
                f"repo {repo_id} not found in the local registry {self.root}: check the id, "
                "push it first, or run `scalearn list` (use --registry hub for the Hub)"
            )
        if is_commit_hash(revision):
            self._manifest(repo_dir, repo_id, revision)
            return revision
        commit = self._read_ref(repo_dir, revision)
        if commit is None:
            refs = sorted(p.name for p in (repo_dir / "refs").iterdir()) if (repo_dir / "refs").is_dir() else []
            raise RegistryError(
                f"revision {revision!r} not found in {repo_id}: known branches and tags are {', '.join(refs) or 'none'}"
            )
        return commit

    def file_hashes(self, repo_id: str, commit: str) -> dict[str, str]:
        """sha256 of every file of ``commit``, from its (self-verifying) manifest."""
        manifest = self._manifest(self._repo_dir(repo_id), repo_id, self.resolve(repo_id, commit))
        return {name: record["sha256"] for name, record in manifest["files"].items()}

    def pull(self, repo_id: str, revision: str | None = None, local_dir: Path | None = None) -> Path:
        """Verify a revision's files; return its snapshot, or a verified copy in ``local_dir``."""
        repo_dir = self._repo_dir(repo_id)
        commit = self.resolve(repo_id, revision)
        expected = self.file_hashes(repo_id, commit)
        if local_dir is None:
            snapshot = repo_dir / "snapshots" / commit
            for name in expected:
                self._inside(snapshot / name)  # a snapshot entry is a link into blobs/, never elsewhere
            verify_files(snapshot, expected, repo_id, commit)
            return snapshot
        local_dir = check_pull_dir(local_dir, self.root)
        blobs = {name: self._inside(repo_dir / "blobs" / digest) for name, digest in expected.items()}
        return materialize(blobs, expected, local_dir, repo_id, commit)

    def exists(self) -> bool:
        """True once the root is a folder (a push creates it)."""
        return self.root.is_dir()

    def list(self, filter: str | None = None) -> list[RepoEntry]:  # noqa: A002
        """Every repo whose ``main`` holds scalearn.json, filtered on id/task/base model/adapter kind.

        Metadata is read from the blob its verified manifest names, so a ref or snapshot edited to point
        elsewhere is skipped with a warning instead of being read.
        """
        if not self.exists():
            raise RegistryError(f"no registry at {self.root}; push an adapter first or pass --registry local:/path")
        entries: list[RepoEntry] = []
        for repo_dir in sorted(self.root.glob("models--*")):
            repo_id = repo_dir.name[len("models--") :].replace("--", "/")
            try:
                entry = self._entry(repo_dir, repo_id)
            except ScaLearnError as exc:
                logger.warning("skipping %s: %s", repo_dir.name, exc)
                continue
            if entry is not None and matches(entry, filter):
                entries.append(entry)
        return entries

    def _entry(self, repo_dir: Path, repo_id: str) -> RepoEntry | None:
        """The listing entry of one repo folder: None without a ``main`` branch or scalearn.json."""
        validate_repo_id(repo_id)
        commit = self._read_ref(repo_dir, DEFAULT_BRANCH)
        if commit is None:
            return None
        files = self._manifest(repo_dir, repo_id, commit)["files"]
        record = files.get(METADATA_FILE)
        if record is None:
            return None
        blob = self._inside(repo_dir / "blobs" / record["sha256"])
        verify_files(blob.parent, {blob.name: record["sha256"]}, repo_id, commit)
        sizes = {name: int(f["size"]) for name, f in files.items() if isinstance(f.get("size"), int)}
        return RepoEntry(repo_id=repo_id, commit=commit, metadata=read_json(blob), sizes=sizes)


def open_local(spec: str, endpoint: str | None) -> LocalRegistry:
    """The ``local`` / ``local:/dir`` backend's opener (``registry.base.BACKENDS``)."""
    if endpoint is not None:
        raise UsageError("--endpoint only applies to --registry hub; drop it or pass --registry hub")
    root = spec.partition(":")[2]
    return LocalRegistry(Path(root).expanduser() if root else default_local_root())
