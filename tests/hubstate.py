"""The state behind the test Hub (tests/hubserver.py): repos, commits, branches and tags in memory, contents on disk.

Git objects are modelled, not stored: a commit is a dict of files; small files get their git blob sha1 as ``oid``;
LFS files (safetensors, binary, > 10 MB) their sha256 in ``lfs.oid``, as on the Hub. Contents live on disk under
``<root>/blobs/<sha256>`` so a test can tamper with them (:meth:`HubState.blob_path`). The JSON the routes answer
with for a model and a file (``model_json``, ``file_json``) is built here.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".npz", ".zip")


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class FileEntry:
    size: int
    sha256: str  # of the content: names the blob on disk
    lfs: bool
    oid: str  # git blob id, recorded at commit time: of the content (small files) or of the LFS pointer


@dataclass
class Repo:
    repo_id: str
    private: bool
    created: str
    commits: dict[str, dict[str, Any]] = field(default_factory=dict)  # oid -> {files, parent, title, date}
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class HubState:
    """In-memory repos + on-disk blobs. One lock: tests are small."""

    def __init__(self, root: Path, base_url: str = "") -> None:
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.base_url = base_url
        self.repos: dict[str, Repo] = {}
        self.lock = threading.RLock()

    # ---- storage -----------------------------------------------------------------------------------------
    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        (self.root / "blobs" / sha).write_bytes(data)
        return sha

    def has_blob(self, sha: str) -> bool:
        return (self.root / "blobs" / sha).is_file()

    def blob_path(self, repo_id: str, revision: str, filename: str) -> Path:
        """Where the content of ``filename`` at ``revision`` is stored (for tamper tests)."""
        repo = self.repos[repo_id]
        return self.root / "blobs" / self.files(repo, self.commit_of(repo, revision))[filename].sha256

    def entry(self, data: bytes, path: str) -> FileEntry:
        lfs = is_lfs(path, len(data), data[:512])
        sha = self.put_blob(data)
        return FileEntry(len(data), sha, lfs, git_sha1(lfs_pointer(sha, len(data)) if lfs else data))

    # ---- model -------------------------------------------------------------------------------------------
    def repo(self, repo_id: str, authed: bool) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        if repo.private and not authed:
            raise HubError(401, "Repository not found", "RepoNotFound")
        return repo

    def commit_of(self, repo: Repo, revision: str) -> str:
        for table in (repo.branches, repo.tags):
            if revision in table:
                return table[revision]
        if revision in repo.commits:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def files(self, repo: Repo, commit: str) -> dict[str, FileEntry]:
        return repo.commits[commit]["files"]

    def new_commit(self, repo: Repo, branch: str, files: dict[str, FileEntry], title: str) -> str:
        parent = repo.branches.get(branch)
        body = json.dumps([parent, title, time.time_ns(), {p: (e.sha256, e.lfs) for p, e in sorted(files.items())}])
        oid = hashlib.sha1(body.encode()).hexdigest()
        repo.commits[oid] = {"files": files, "parent": parent, "title": title, "date": now()}
        repo.branches[branch] = oid
        return oid

    def tags_of(self, repo: Repo) -> list[str]:
        """Model tags as the Hub derives them from the README's YAML header (``tags`` + ``library_name``)."""
        readme = self.files(repo, repo.branches["main"]).get("README.md")
        if readme is None:
            return []
        text = (self.root / "blobs" / readme.sha256).read_text(encoding="utf-8", errors="replace")
        if not text.startswith("---"):
            return []
        try:
            meta = yaml.safe_load(text.split("---", 2)[1]) or {}
        except yaml.YAMLError:
            return []
        tags = list(meta.get("tags") or []) if isinstance(meta, dict) else []
        if isinstance(meta, dict) and meta.get("library_name"):
            tags.append(meta["library_name"])
        return [str(tag) for tag in tags]

    def file_json(self, path: str, entry: FileEntry) -> dict[str, Any]:
        info: dict[str, Any] = {"type": "file", "path": path, "size": entry.size, "oid": entry.oid}
        if entry.lfs:
            info["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": len(lfs_pointer(entry.sha256, 1))}
        return info

    def model_json(self, repo: Repo, commit: str, blobs: bool) -> dict[str, Any]:
        siblings = []
        for path, entry in sorted(self.files(repo, commit).items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.lfs:
                    sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": 134}
            siblings.append(sibling)
        return {
            "_id": repo.repo_id,
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": commit,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": self.tags_of(repo),
            "createdAt": repo.created,
            "lastModified": repo.commits[commit]["date"],
            "siblings": siblings,
        }


def is_lfs(path: str, size: int, sample: bytes) -> bool:
    return path.endswith(LFS_SUFFIXES) or size > 10 * 1024 * 1024 or b"\0" in sample


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
