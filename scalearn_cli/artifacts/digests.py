"""sha256 of files, each file hashed once per process while it is unchanged.

A run that loads a shelf touches every source's files several times — resolving (its recorded hashes checked),
re-resolving a recorded source for eval, export or prune in the same process, the registry's own checks — and a
shelf of hundreds is hundreds of megabytes. The digest of a file is kept, keyed by what changes when its bytes
can have changed: device, inode, size, modification and status-change times (``st_ctime_ns`` moves on every
write and on every ``utime``, so resetting the modification time does not fool it; a file replaced by rename has
a new inode). A file whose modification time is within :data:`RACY_SECONDS` of the moment it was hashed is not
kept (git's "racy" rule): a write in the same clock tick would leave its times unchanged on a coarse file system.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from pathlib import Path

#: a file modified less than this long before it was hashed is hashed again next time (coarse mtimes: FAT's 2 s)
RACY_SECONDS = 2.0

_Key = tuple[int, int, int, int, int]
_DIGESTS: dict[str, tuple[_Key, str]] = {}
#: how many times each file (absolute path) was read and hashed in this process: the cache's misses
HASHED: Counter[str] = Counter()


def _key(st: os.stat_result) -> _Key:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes; read once per process while the file's stat key is unchanged."""
    name = os.path.abspath(path)  # no symlink walk: the key's device and inode tell files apart
    before = os.stat(name)
    cached = _DIGESTS.get(name)
    if cached is not None and cached[0] == _key(before):
        return cached[1]
    digest = hashlib.sha256()
    with open(name, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
        after = os.fstat(handle.fileno())
    HASHED[name] += 1
    hexdigest = digest.hexdigest()
    settled = time.time_ns() - after.st_mtime_ns > RACY_SECONDS * 1e9
    if _key(before) == _key(after) and settled:  # not written while read, nor too recently to tell
        _DIGESTS[name] = (_key(after), hexdigest)
    else:
        _DIGESTS.pop(name, None)
    return hexdigest


def clear_digests() -> None:
    """Forget every kept digest (the next read of each file hashes it again)."""
    _DIGESTS.clear()
