"""A task's raw rows: a Hub dataset, a folder of split files or one file, read through ``datasets``'s loaders."""

from __future__ import annotations

import codecs
import logging
from pathlib import Path
from typing import Any

import datasets
from datasets import load_dataset

from scalearn_cli.data.demo import demo_folder
from scalearn_cli.errors import DataError, UsageError
from scalearn_cli.tasks import DEMO_TASKS, TaskSpec

logger = logging.getLogger(__name__)

#: File name extensions read from a data folder, in order of preference.
DATA_EXTENSIONS: tuple[str, ...] = (".jsonl", ".json", ".csv", ".tsv")


def _read_file(path: Path) -> datasets.Dataset:
    """Read one local JSONL/CSV/TSV file with the ``datasets`` packaged loaders (no network needed)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        builder, options = "json", {}
    elif suffix in (".csv", ".tsv"):
        # TSV: no quoting, since GLUE-style text holds unbalanced quote characters.
        builder, options = "csv", ({"delimiter": "\t", "quoting": 3} if suffix == ".tsv" else {})
    else:
        raise DataError(f"cannot read {path}: unknown file type {suffix!r}; use .jsonl, .csv or .tsv")
    with open(path, "rb") as handle:  # the json/csv loaders fail on an empty file with a bare StopIteration
        if not handle.read(1 << 16).strip():
            raise DataError(f"data file {path} is empty; give a file with at least one labelled row")
    _check_utf8(path)
    try:
        return load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as exc:  # datasets wraps parser errors in several exception types
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"cannot read {path} ({type(exc).__name__}: {reason}); check the file's format") from exc


def _check_utf8(path: Path) -> None:
    """Refuse a file that is not UTF-8 (a latin-1/cp1252 export) before a parser fails on it deep inside."""
    decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"data file {path} is not UTF-8 text (byte {offset + exc.start} is {block[exc.start]:#04x}): "
                    "save it as UTF-8 and retry"
                ) from exc
            offset += len(block)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise DataError(f"data file {path} ends inside a UTF-8 character: save it as UTF-8 and retry") from exc


def _find_split_file(data_dir: Path, split: str) -> Path | None:
    for ext in DATA_EXTENSIONS:
        path = data_dir / f"{split}{ext}"
        if path.is_file():
            return path
    return None


def _load_dir(spec: TaskSpec, data_dir: Path) -> datasets.DatasetDict:
    if not data_dir.is_dir():
        raise DataError(
            f"data folder {data_dir} does not exist; pass --data-dir DIR with train.jsonl and validation.jsonl"
        )
    raw = datasets.DatasetDict()
    for split in dict.fromkeys(("train", "validation", spec.test_split, "test")):
        path = _find_split_file(data_dir, split)
        if path is not None:
            raw[split] = _read_file(path)
    if "train" not in raw:
        raise DataError(
            f"no training file for task {spec.name}: expected {data_dir / 'train.jsonl'} (or train.csv / train.tsv)"
        )
    return raw


def _load_hub(spec: TaskSpec) -> datasets.DatasetDict:
    if spec.hub_id is None:
        if spec.name in DEMO_TASKS:  # generated, deterministically, into the per-user cache
            return _load_dir(spec, demo_folder(spec.name))
        raise DataError(f"task {spec.name} has no hub dataset; pass --data-file FILE or --data-dir DIR")
    try:
        return load_dataset(spec.hub_id, spec.hub_config)
    except Exception as exc:  # offline, unknown repo, auth...: all end the same way for the user
        reason = " ".join(str(exc).split())[:160]
        raise DataError(
            f"cannot load {spec.hub_id} ({spec.hub_config or 'default'}) from the Hub "
            f"({type(exc).__name__}: {reason}); pass --data-dir DIR with {{train,validation}}.jsonl"
        ) from exc


def load_raw(spec: TaskSpec, data_dir: Path | None = None, data_file: Path | None = None) -> datasets.DatasetDict:
    """Load the task's raw splits.

    With ``data_dir``: ``{train,validation,test}.{jsonl,json,csv,tsv}`` found there (``train`` required; a
    ``validation_matched`` file is read too when it is the task's ``test_split``). With ``data_file``: that one
    file as the ``train`` split (custom tasks). Otherwise the hub dataset ``spec.hub_id``/``spec.hub_config``.
    Local files are read through the ``datasets`` packaged loaders, which work offline and cache under the
    default HF cache, never inside the user's folder.
    """
    if data_dir is not None and data_file is not None:
        raise UsageError("both --data-dir and --data-file were given; pass only one of them")
    if data_file is not None:
        path = Path(data_file)
        if not path.is_file():
            raise DataError(f"data file {path} does not exist; pass --data-file with an existing .jsonl/.csv/.tsv")
        return datasets.DatasetDict({"train": _read_file(path)})
    if data_dir is not None:
        return _load_dir(spec, Path(data_dir))
    return _load_hub(spec)


def recorded_data(saved: dict[str, Any] | None, spec, todo: str | None = None, what: str = "it"
                  ) -> tuple[Path | None, Path | None]:
    """The data folder and file a trained folder's scalearn.json recorded (``saved``: its ``data``), where they exist.

    One recorded path that is gone: a built-in task (demo or Hub dataset) is read from the task itself, its rows
    do not depend on where they were once written (None); a custom task's rows exist nowhere else: with ``todo``
    a one-line DataError ("``what`` was trained on …, which is missing; ``todo``"), without one None (the caller
    has its own fallback, e.g. export's random tokens).
    """
    found: list[Path | None] = []
    for name, exists in (("data_dir", Path.is_dir), ("data_file", Path.is_file)):
        path = Path(saved[name]) if (saved or {}).get(name) else None
        if path is not None and not exists(path):
            builtin = spec.name in DEMO_TASKS or bool(spec.hub_id)
            if not builtin and todo is not None:
                raise DataError(f"{what} was trained on {path}, which is missing; {todo}")
            logger.info("recorded %s %s is gone; %s", name.replace("_", " "), path,
                        f"reading task {spec.name}'s own data" if builtin else "not using it")
            path = None
        found.append(path)
    return found[0], found[1]
