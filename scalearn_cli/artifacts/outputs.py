"""Where a command may write: ``--out`` resolved and checked against the command's inputs, then renamed into place.

Every decision is taken on the resolved path (symlinks and ``..`` followed), never on its text:

* ``--out`` may not be, contain or lie inside an input of the command (its sources, the composition it exports
  or prunes, its data files, its base-model folder), a registry root or a registry snapshot, and may not be the
  working directory or one of its parents;
* ``--overwrite`` replaces only a folder that verifies as a scalearn artifact: an unedited ``scalearn.json`` of a
  known kind, every recorded file as hashed, and nothing else in it that the replace would destroy;
* without ``--overwrite`` the final rename never replaces anything (``renameat2(RENAME_NOREPLACE)`` where the
  kernel has it, else a lock file), so of two writers racing for one new folder the second loses with one line;
* leftovers of an interrupted run beside ``--out`` (``.NAME.old-PID``, ``.NAME.tmp-PID-*``) are restored or
  removed by the next run.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from scalearn_cli.artifacts.io import METADATA_FILE, MODEL_CARD_FILE
from scalearn_cli.artifacts.records import read_metadata, require_record, verify_recorded
from scalearn_cli.cache import default_local_root
from scalearn_cli.errors import ArtifactError, UsageError

logger = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_KINDS = ("source", "composition", "merged")


def resolve_path(path: Path | str) -> Path:
    """``path`` absolute with ``~``, symlinks and ``..`` resolved (what every output decision is taken on)."""
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise UsageError(f"cannot resolve the path {path} ({exc.__class__.__name__}); pass a plain folder path") \
            from exc


def protected_paths(inputs: Iterable[Path | str] = (), registry: str | None = None) -> list[tuple[Path, str]]:
    """(resolved path, what it is) for everything a write must never touch: the inputs and the registry roots."""
    found: list[tuple[Path, str]] = [(resolve_path(p), "an input of this command") for p in inputs if str(p)]
    roots = [default_local_root()]
    if registry and registry.startswith("local:") and registry[len("local:"):]:
        roots.append(Path(registry[len("local:"):]))
    with contextlib.suppress(Exception):  # huggingface_hub missing or misconfigured: nothing of it to protect
        from huggingface_hub import constants

        roots.append(Path(constants.HF_HUB_CACHE))
    found += [(resolve_path(root), "a registry root") for root in roots]
    return found


def command_inputs(*paths: Path | str | None, folders_of_files: Iterable[Path | str | None] = ()) -> list[Path]:
    """The inputs a command names, as a writer protects them: ``paths`` that exist (a hub id is no path), and the
    plain files inside each of ``folders_of_files`` (a data folder: writing beside its files is fine)."""
    found = [Path(p).expanduser() for p in paths if p is not None and str(p) and Path(p).expanduser().exists()]
    for folder in folders_of_files:
        if folder is not None and Path(folder).is_dir():
            found += [p for p in Path(folder).iterdir() if p.is_file()]
    return found


def _registry_snapshot(path: Path) -> Path | None:
    """The registry repo folder (``models--org--name``) that ``path`` is or lies inside, if any."""
    for parent in (path, *path.parents):
        if parent.name.startswith("models--") and ((parent / "snapshots").is_dir() or (parent / "blobs").is_dir()):
            return parent
    return None


def check_out_dir(out_dir: Path, overwrite: bool = False, inputs: Iterable[Path | str] = (),
                  registry: str | None = None) -> Path:
    """Refuse (before any work) an ``--out`` that would destroy an input or a folder scalearn did not write.

    ``inputs``: the command's own inputs (sources, the folder it reads, data files, a local base model);
    ``registry``: the ``--registry`` option (a ``local:`` root is protected like the default one). Returns the
    resolved output path.
    """
    out = resolve_path(out_dir)
    shown = f"--out {out_dir}" + (f" (= {out})" if str(out) != str(out_dir) else "")
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{shown} exists and is not a folder; choose another --out")
    clean_leftovers(out)
    cwd = resolve_path(Path.cwd())
    if out == cwd or out in cwd.parents:
        raise ArtifactError(f"{shown} is the working directory or one of its parents; choose a new folder for --out")
    repo = _registry_snapshot(out)
    if repo is not None:
        raise ArtifactError(f"{shown} lies inside the registry folder {repo}; a registry is written only by push: "
                            "choose another --out")
    for path, what in protected_paths(inputs, registry):
        relation = ("is" if out == path else "contains" if out in path.parents else
                    "lies inside" if path in out.parents else None)
        if relation:
            raise ArtifactError(f"{shown} {relation} {what} ({path}); writing there would destroy it: "
                                "choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ArtifactError(f"{shown} already holds files; pass --overwrite to replace it or choose another --out")
        check_replaceable(out, shown)
    return out


def check_out_file(path: Path, option: str, inputs: Iterable[Path | str] = ()) -> Path:
    """The resolved path of a single output file (a plot): not a folder, never inside an input or a registry."""
    out = resolve_path(path)
    if out.is_dir():
        raise ArtifactError(f"{option} {path} is a folder; name a file")
    repo = _registry_snapshot(out)
    inside = repo or next((root for root, _ in protected_paths(inputs) if root in out.parents or out == root), None)
    if inside is not None:
        raise ArtifactError(f"{option} {path} lies inside {inside}, an input of this command or a registry; writing "
                            "there would change it: choose another path")
    return out


def check_pull_dir(local_dir: Path, registry_root: Path | None = None) -> Path:
    """The resolved ``--local-dir`` of a pull: not a symlink, not a registry's own folder nor the working directory
    (or a parent of it). Whether it may hold files is the registry's call (an identical earlier pull may)."""
    given = Path(local_dir).expanduser()
    if given.is_symlink():
        raise ArtifactError(f"--local-dir {local_dir} is a symbolic link (to {os.readlink(given)}); pass the real "
                            "folder path or a new one")
    out = resolve_path(given)
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"--local-dir {local_dir} is a file, not a folder; pass a new or empty folder path")
    cwd = resolve_path(Path.cwd())
    if out == cwd or out in cwd.parents:
        raise ArtifactError(f"--local-dir {local_dir} is the working directory or one of its parents; pass a new "
                            "folder path")
    repo = _registry_snapshot(out)
    roots = [root for root, _ in protected_paths((), None)] + ([resolve_path(registry_root)] if registry_root else [])
    inside = repo or next((root for root in roots if out == root or root in out.parents or out in root.parents),
                          None)
    if inside is not None:
        raise ArtifactError(f"--local-dir {local_dir} is or overlaps the registry folder {inside}; pull into a "
                            "folder of your own")
    clean_leftovers(out)
    return out


def check_replaceable(out: Path, shown: str) -> None:
    """Refuse to replace a folder unless it verifies as a scalearn artifact holding nothing but its record's files."""
    why = ("holds files that scalearn did not write (no scalearn.json)" if not (out / METADATA_FILE).is_file()
           else None)
    if why is None:
        try:
            data = read_metadata(out)
            require_record(out, data)
            if data.get("kind") not in _KINDS:
                raise ArtifactError(f"its scalearn.json names no scalearn kind ({data.get('kind')!r})")
            verify_recorded(out, {str(k): str(v) for k, v in data["files"].items()})
        except ArtifactError as exc:
            why = f"does not verify as a scalearn folder ({exc})"
    if why is None:
        known = {METADATA_FILE, MODEL_CARD_FILE, *data["files"]}
        extra = sorted(p.name for p in out.iterdir() if p.name not in known or not p.is_file() or p.is_symlink())
        if extra:
            why = f"holds {extra[0]!r}, which is in no record of scalearn's"
    if why is not None:
        raise ArtifactError(f"{shown} {why}; --overwrite replaces only an unchanged scalearn folder: choose "
                            "another --out or move its files away yourself")


@contextlib.contextmanager
def staged_output(out_dir: Path, overwrite: bool = False, inputs: Iterable[Path | str] = (),
                  registry: str | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside ``out_dir``; on success it takes ``out_dir``'s place in one rename.

    On any error (Ctrl-C included) the temporary folder is removed and ``out_dir`` is untouched. With
    ``overwrite`` the folder is verified again just before the rename (it may have changed during training);
    without it the rename itself refuses a folder another writer created meanwhile.
    """
    inputs = tuple(inputs)
    out = check_out_dir(out_dir, overwrite, inputs, registry)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        yield tmp
        if overwrite:  # what is there now (maybe written meanwhile) must still verify before it is replaced
            out = check_out_dir(out_dir, overwrite, inputs, registry)
        publish(tmp, out, replace=overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(tmp: Path, out: Path, replace: bool = False) -> None:
    """Rename ``tmp`` to ``out``. Without ``replace`` a new (or empty) ``out`` is never replaced: a writer that got
    there first wins. With it, an existing ``out`` (already checked as replaceable) is first renamed aside to
    ``.NAME.old-PID``, then ``tmp`` takes its place without replacing anything, then the old folder is removed."""
    if out.is_dir() and not any(out.iterdir()):
        with contextlib.suppress(OSError):
            out.rmdir()  # an empty folder the user made for us; another writer's files make rmdir fail
    if not out.exists() or not replace:
        try:
            rename_noreplace(tmp, out)
        except FileExistsError:
            raise ArtifactError(f"{out} was written by another process while this one ran; this run's output was "
                                "discarded: choose another --out (or pass --overwrite)") from None
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    try:  # two renames: a Ctrl-C between them puts the previous folder back (a kill: the next run does)
        os.replace(out, old)
        rename_noreplace(tmp, out)
    except BaseException:
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` unless ``dst`` exists (``FileExistsError``): atomic with renameat2, else locked."""
    if _renameat2(src, dst, _RENAME_NOREPLACE):
        return
    from filelock import FileLock

    with FileLock(str(dst.with_name(f".{dst.name}.lock")), timeout=60):
        if dst.exists() or dst.is_symlink():
            raise FileExistsError(errno.EEXIST, "exists", str(dst))
        os.rename(src, dst)
    with contextlib.suppress(OSError):
        dst.with_name(f".{dst.name}.lock").unlink()


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """True once renamed with ``renameat2``; False where the libc or file system lacks it (use the fallback)."""
    try:
        call = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if call(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(dst))  # EEXIST becomes FileExistsError


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(out: Path) -> None:
    """Restore or remove what a killed run left beside ``out``: its previous folder, its temporary folders."""
    if not out.parent.is_dir():
        return
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.(old|tmp)-(\d+)(-.*)?$")
    for entry in sorted(out.parent.iterdir()):
        match = pattern.match(entry.name)
        if not match or _alive(int(match.group(2))) or not entry.is_dir() or entry.is_symlink():
            continue
        if match.group(1) == "old" and not out.exists():
            os.replace(entry, out)
            logger.warning("restored %s from %s, left by an interrupted replace", out, entry.name)
        else:
            shutil.rmtree(entry, ignore_errors=True)
            logger.info("removed %s, left by an interrupted run", entry)
