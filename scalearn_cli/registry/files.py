"""A local registry's writes on disk: atomic text files, shared-registry file modes, verified pulled folders."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
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


def pull_into(local_dir: Path, names: Iterable[str], fill: Callable[[Path], None],
              verify: Callable[[Path], None]) -> Path:
    """The one way a pull lands in ``local_dir``: a folder already holding exactly ``names`` is verified and kept
    (idempotent); otherwise ``fill`` writes the files into a temporary folder beside it, ``verify`` checks them,
    and the folder is renamed into place only then, never replacing a concurrent pull's."""
    if existing_pull(local_dir, names):
        verify(local_dir)
        return local_dir
    local_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{local_dir.name}.tmp-{os.getpid()}-", dir=local_dir.parent))
    try:
        fill(tmp)
        verify(tmp)
        publish(tmp, local_dir)  # never replaces: a concurrent pull that won keeps its folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return local_dir


def materialize(
    blobs: dict[str, Path], expected: dict[str, str], local_dir: Path, repo_id: str, commit: str
) -> Path:
    """Copy verified blobs into ``local_dir`` (``pull_into``).

    Copies, never hard links: a link shares the blob's inode, and read-only modes do not stop root (or a
    ``chmod``), so editing a pulled file would silently change the registry's blob and fail every later pull.
    """
    def fill(tmp: Path) -> None:
        for name, blob in blobs.items():
            if not blob.is_file():
                raise RegistryError(f"{repo_id}@{commit[:12]}: the blob of {name} is missing; re-push the adapter")
            shutil.copyfile(blob, tmp / name)  # a new, writable file owned by the user

    return pull_into(local_dir, expected, fill, lambda folder: verify_files(folder, expected, repo_id, commit))
