"""A source's files are hashed once per process while unchanged (counted, not timed): resolving it again, or its
recorded reference for another command, reads no file twice; a changed file is always hashed again."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from helpers import make_source

from scalearn_cli.artifacts import LORA_WEIGHTS_FILE
from scalearn_cli.artifacts import digests
from scalearn_cli.errors import ArtifactError
from scalearn_cli.resolve import Resolver


def age(folder: Path, seconds: float = 60.0) -> None:
    """Date every file of ``folder`` back, as a shelf saved earlier is (fresh files are hashed every time)."""
    past = time.time() - seconds
    for path in folder.iterdir():
        os.utime(path, (past, past))


def hashed(folder: Path) -> dict[str, int]:
    """How many times each file of ``folder`` was read and hashed so far in this process."""
    return {p.name: digests.HASHED[os.path.abspath(p)] for p in sorted(folder.iterdir())
            if digests.HASHED[os.path.abspath(p)]}


@pytest.fixture
def source(tiny_model_dir, tmp_path) -> Path:
    folder = make_source(tmp_path / "lora0", tiny_model_dir, "lora")
    age(folder)
    return folder


def test_resolving_a_source_again_and_its_record_hash_each_file_once(source):
    resolver = Resolver()
    first = resolver.source(str(source))
    counts = hashed(source)
    assert LORA_WEIGHTS_FILE in counts and set(counts.values()) == {1}
    again = resolver.source(str(source))  # a second site or command in the same run
    recorded = Resolver().recorded(first.ref)  # eval / export / prune re-finding the recorded source
    assert again.ref.files == recorded.ref.files == first.ref.files
    assert hashed(source) == counts


def test_a_changed_file_is_hashed_again_even_with_its_old_times(source):
    first = Resolver().source(str(source))
    weights = source / LORA_WEIGHTS_FILE
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # modification time put back: the ctime still moved
    with pytest.raises(ArtifactError, match=f"{LORA_WEIGHTS_FILE} changed since it was saved"):
        Resolver().recorded(first.ref)
    assert hashed(source)[LORA_WEIGHTS_FILE] == 2


def test_a_file_written_just_now_is_not_kept(tiny_model_dir, tmp_path):
    """Within the racy window a same-size rewrite could keep its times: such a file is hashed on every read."""
    folder = make_source(tmp_path / "fresh", tiny_model_dir, "lora")
    for path in folder.iterdir():
        os.utime(path)  # now
    Resolver().source(str(folder))
    Resolver().source(str(folder))
    assert hashed(folder)[LORA_WEIGHTS_FILE] >= 2
