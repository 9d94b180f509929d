"""A local registry's writes on disk: atomic text files, shared-registry file modes, verified pulled folders."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from scalearn_cli.artifacts.outputs import publish
from scalearn_cli.errors import RegistryError
from scalearn_cli.registry.base import existing_pull, verify_files


def _mode(bits: int) -> int:
    """``bits`` minus the process umask (mkstemp/mkdtemp create private files; a registry may be shared)."""
    umask = os.umask(0)
    os.umask(umask)
    return bits & ~umask


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a unique temporary name beside ``path``, then rename over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, _mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _materialize(
    blobs: dict[str, Path], expected: dict[str, str], local_dir: Path, repo_id: str, commit: str
) -> Path:
    """Copy verified blobs into a temporary folder, then rename it to ``local_dir``.

    Copies, never hard links: a link shares the blob's inode, and read-only modes do not stop root (or a
    ``chmod``), so editing a pulled file would silently change the registry's blob and fail every later pull.
    """
    if existing_pull(local_dir, expected):
        verify_files(local_dir, expected, repo_id, commit)  # already pulled: idempotent
        return local_dir
    local_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{local_dir.name}.tmp-{os.getpid()}-", dir=local_dir.parent))
    try:
        for name, blob in blobs.items():
            if not blob.is_file():
                raise RegistryError(f"{repo_id}@{commit[:12]}: the blob of {name} is missing; re-push the adapter")
            shutil.copyfile(blob, tmp / name)  # a new, writable file owned by the user
        verify_files(tmp, expected, repo_id, commit)
        publish(tmp, local_dir)  # never replaces: a concurrent pull that won keeps its folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return local_dir
