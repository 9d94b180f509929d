"""One way to read a scalearn folder (source, composition, merged export): ``read_folder`` parses ``scalearn.json``
into :class:`Metadata` and verifies, once, the sha256 of every file it records, of the model card, and the digest
of ``scalearn.json`` itself, so an edited weight, ω, ``composition.json``, card or metadata field is refused before
use. The record is never optional: a ``scalearn.json`` without ``files`` or ``metadata_sha256`` is refused too
(deleting the record is an edit). Writing is ``artifacts.folders``'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scalearn_cli.artifacts.io import METADATA_FILE, MODEL_CARD_FILE, content_hash, folder_fingerprint, read_json, sha256_file
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
    require_record(folder, data)
    meta = Metadata.from_dict(data, str(folder))
    wanted = (kind,) if isinstance(kind, str) else kind
    if wanted and meta.kind not in wanted:
        raise ArtifactError(f"{folder} is a {meta.kind}, not a {' or '.join(wanted)}; pass a {wanted[0]} folder")
    files = verify_recorded(folder, meta.files)
    check_card(folder, data)
    return Folder(folder, meta, files)


#: what an unrecorded folder is told to do (folders written before records existed, or stripped of theirs)
RESAVE = ("re-create it with the command that made it (train-source, transfer, export), re-pull it from its "
          "registry, or, if you trust every file in it, re-save its record with `scalearn record FOLDER`")


def require_record(folder: Path, data: dict) -> None:
    """Refuse a scalearn.json without its record (``files`` and ``metadata_sha256``) or edited after writing."""
    missing = [key for key in ("metadata_sha256", "files") if not data.get(key)]
    if missing or not isinstance(data.get("files"), dict):
        raise ArtifactError(f"{folder}/{METADATA_FILE} has no integrity record ({' and '.join(missing) or 'files'} "
                            f"missing or malformed), so its files cannot be trusted; {RESAVE}")
    check_digest(folder, data)


def check_digest(folder: Path, data: dict) -> None:
    """Refuse a scalearn.json edited after scalearn wrote it (its recorded ``metadata_sha256`` no longer matches)."""
    recorded = data.get("metadata_sha256")
    if recorded is not None and recorded != metadata_digest(data):
        raise ArtifactError(
            f"{folder}/{METADATA_FILE} was edited after scalearn wrote it (its digest does not match); "
            f"re-create or re-pull the folder"
        )


def check_record(folder: Path) -> dict[str, str]:
    """Hold a folder to what its scalearn.json records (digest, file hashes, card) without parsing the rest of it.

    ``read_folder`` does this and more; ``push`` needs only this. A folder without a record is refused, as is an
    edited one.
    """
    data = read_metadata(folder)
    require_record(folder, data)
    files = verify_recorded(folder, {str(k): str(v) for k, v in data["files"].items()})
    check_card(folder, data)
    return files


def card_covered(data: dict) -> bool:
    """Whether scalearn.json records its model card's sha256 (folders written before that did not)."""
    return isinstance(data.get("card_sha256"), str)


def check_card(folder: Path, data: dict) -> None:
    """Refuse a model card edited (or removed) since scalearn wrote it; an unrecorded card is simply never used."""
    if not card_covered(data):
        return
    card = Path(folder) / MODEL_CARD_FILE
    if not card.is_file():
        raise ArtifactError(f"{card} is missing; re-create or re-pull the folder")
    if sha256_file(card) != data["card_sha256"]:
        raise ArtifactError(f"{card} changed since it was saved (sha256 mismatch); re-create or re-pull the folder")


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
