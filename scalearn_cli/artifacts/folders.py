"""One way to read and one way to write a scalearn folder (source, composition, merged export).

``read_folder`` parses ``scalearn.json`` into :class:`Metadata` and verifies, once, the sha256 of every file it
records and the digest of ``scalearn.json`` itself, so an edited weight, ω, ``composition.json`` or metadata
field is refused before use. ``write_folder`` stages everything in a temporary folder, fingerprints it, writes
``scalearn.json`` and the model card, then renames it into place.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from scalearn_cli.artifacts.io import (
    METADATA_FILE, content_hash, folder_fingerprint, read_json, staged_output, write_json,
)
from scalearn_cli.artifacts.meta import Metadata, metadata_digest
from scalearn_cli.errors import ArtifactError


@dataclass(frozen=True)
class Folder:
    """A verified scalearn folder: where it is, its metadata and the sha256 of its files (as checked)."""

    path: Path
    meta: Metadata
    files: dict[str, str]

    @property
    def content_hash(self) -> str:
        return self.meta.content_hash or content_hash(self.files)


def read_metadata(folder: Path) -> dict:
    """scalearn.json as a dict (not verified): for listings and quick looks, never before loading weights."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"adapter folder {folder} does not exist; check the path or pull it first")
    return read_json(folder / METADATA_FILE)


def read_folder(folder: Path, kind: str | tuple[str, ...] | None = None) -> Folder:
    """Parse and verify a scalearn folder; ``kind`` (source, composition, merged) is checked when given."""
    folder = Path(folder)
    data = read_metadata(folder)
    check_digest(folder, data)
    meta = Metadata.from_dict(data, str(folder))
    wanted = (kind,) if isinstance(kind, str) else kind
    if wanted and meta.kind not in wanted:
        raise ArtifactError(f"{folder} is a {meta.kind}, not a {' or '.join(wanted)}; pass a {wanted[0]} folder")
    return Folder(folder, meta, verify_recorded(folder, meta.files))


def check_digest(folder: Path, data: dict) -> None:
    """Refuse a scalearn.json edited after scalearn wrote it (its recorded ``metadata_sha256`` no longer matches)."""
    recorded = data.get("metadata_sha256")
    if recorded is not None and recorded != metadata_digest(data):
        raise ArtifactError(
            f"{folder}/{METADATA_FILE} was edited after scalearn wrote it (its digest does not match); "
            f"re-create or re-pull the folder"
        )


def check_record(folder: Path) -> dict[str, str]:
    """Hold a folder to what its scalearn.json records (digest, file hashes) without parsing the rest of it.

    ``read_folder`` does this and more; ``push`` needs only this, so a hand-written folder that records no
    hashes can still be shared, while an edited one never is.
    """
    data = read_metadata(folder)
    check_digest(folder, data)
    files = data.get("files") or {}
    if not isinstance(files, dict):
        raise ArtifactError(f"{folder}/{METADATA_FILE} has a malformed 'files' record; re-create the folder")
    return verify_recorded(folder, {str(k): str(v) for k, v in files.items()})


def verify_recorded(folder: Path, recorded: dict[str, str]) -> dict[str, str]:
    """Check every recorded file's sha256; return the folder's fingerprint."""
    actual = folder_fingerprint(folder)
    for name, digest in recorded.items():
        if name not in actual:
            raise ArtifactError(f"{folder}/{name} is missing; re-create or re-pull the adapter")
        if actual[name] != digest:
            raise ArtifactError(f"{folder}/{name} changed since it was saved (sha256 mismatch); "
                                "re-create or re-pull it")
    return actual


@contextmanager
def write_folder(out: Path, overwrite: bool = False) -> Iterator["FolderWriter"]:
    """Stage a folder: the caller writes its files into ``writer.path`` and calls ``writer.finish(meta, ...)``.

    On success the staged folder replaces ``out`` atomically; on any error nothing is left behind.
    """
    with staged_output(out, overwrite) as tmp:
        writer = FolderWriter(tmp)
        yield writer
        if writer.meta is None:
            raise ArtifactError(f"internal error: {out} was staged without metadata; nothing was written")


class FolderWriter:
    """The staged folder being written; ``finish`` fingerprints it and writes scalearn.json + the model card."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.meta: Metadata | None = None

    def finish(self, meta: Metadata, title: str, body: str) -> Metadata:
        from scalearn_cli.cards import write_model_card

        files = folder_fingerprint(self.path)
        self.meta = meta.with_files(files, content_hash(files))
        data = self.meta.to_dict()
        write_json(self.path / METADATA_FILE, data)
        write_model_card(self.path, data, title, body)
        return self.meta
