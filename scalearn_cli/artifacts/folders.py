"""One way to write a scalearn folder (source, composition, merged export); reading it is ``artifacts.records``'.

``write_folder`` stages everything in a temporary folder, fingerprints it, writes the model card and
``scalearn.json`` (which records the card's sha256), then renames it into place (see ``artifacts.outputs``).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from scalearn_cli.artifacts.io import (
    METADATA_FILE, MODEL_CARD_FILE, content_hash, folder_fingerprint, sha256_file, write_json,
)
from scalearn_cli.artifacts.meta import Metadata, metadata_digest
from scalearn_cli.artifacts.outputs import staged_output
from scalearn_cli.artifacts.records import read_metadata, require_record
from scalearn_cli.cards import write_model_card
from scalearn_cli.errors import ArtifactError


def record_folder(folder: Path) -> dict:
    """Re-save the record of a folder that has none (written before records, or by hand): the sha256 of its files
    and of its card, and the digest of scalearn.json. A folder whose record exists is never re-recorded: an edited
    one must be re-created, not blessed. Returns the new scalearn.json."""
    folder = Path(folder)
    data = read_metadata(folder)
    if data.get("metadata_sha256") or data.get("files"):
        require_record(folder, data)  # an edited folder is refused here, with its own message
        raise ArtifactError(f"{folder} already has its record and it verifies; nothing to re-save")
    if data.get("kind") not in ("source", "composition", "merged"):
        raise ArtifactError(f"{folder}/{METADATA_FILE} names no scalearn kind (source, composition or merged); "
                            "re-create the folder with scalearn")
    files = folder_fingerprint(folder)
    if not files:
        raise ArtifactError(f"{folder} holds no adapter files to record; re-create the folder with scalearn")
    data.update(files=files, content_hash=content_hash(files))
    if (folder / MODEL_CARD_FILE).is_file():
        data["card_sha256"] = sha256_file(folder / MODEL_CARD_FILE)
    data["metadata_sha256"] = metadata_digest(data)
    write_json(folder / METADATA_FILE, data)
    return data


@contextmanager
def write_folder(out: Path, overwrite: bool = False, inputs: Iterable[Path | str] = (),
                 registry: str | None = None) -> Iterator["FolderWriter"]:
    """Stage a folder: the caller writes its files into ``writer.path`` and calls ``writer.finish(meta, ...)``.

    ``inputs``: the command's inputs, which ``out`` may never be, contain or lie inside (``artifacts.outputs``).
    On success the staged folder takes ``out``'s place atomically; on any error nothing is left behind.
    """
    with staged_output(out, overwrite, inputs, registry) as tmp:
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
        files = folder_fingerprint(self.path)
        meta = meta.with_files(files, content_hash(files))
        write_model_card(self.path, meta.to_dict(), title, body)
        self.meta = meta.with_card(sha256_file(self.path / MODEL_CARD_FILE))
        write_json(self.path / METADATA_FILE, self.meta.to_dict())
        return self.meta
