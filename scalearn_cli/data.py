"""TaskSpec + a source of rows (hub dataset or local files) -> train/dev/test splits (batches: ``batches.py``).

The split protocol follows the paper: the task's official validation split is the test set, and 10% of the
official train split (stratified, seed 42) is held out as the dev set for model selection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets import load_dataset
from sklearn.model_selection import train_test_split

from scalearn_cli.demo_data import demo_folder, write_demo_tasks
from scalearn_cli.errors import DataError, UsageError
from scalearn_cli.tasks import DEMO_TASKS, MULTI_LABEL, TaskSpec

__all__ = ["Splits", "load_raw", "make_splits", "write_demo_tasks"]

logger = logging.getLogger(__name__)

#: File name extensions read from a data folder, in order of preference.
DATA_EXTENSIONS: tuple[str, ...] = (".jsonl", ".json", ".csv", ".tsv")
UNLABELLED = -1  # GLUE/SNLI convention for rows without a gold label


# ----------------------------------------------------------------------------------------------- raw rows


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
    import codecs

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


# ------------------------------------------------------------------------------------------------- labels


def _infer_label_names(values: Sequence[Any]) -> tuple[tuple[str, ...], dict[Any, int]]:
    """Sorted unique labels (numbers numerically) and the value -> id map for custom classification."""
    unique = sorted({v for v in values if v is not None and v != UNLABELLED}, key=lambda v: (isinstance(v, str), v))
    if len(unique) < 2:
        raise DataError(
            f"the labels hold {len(unique)} distinct value(s) ({', '.join(_label_name(v) for v in unique)}); "
            f"classification needs at least two classes"
        )
    mapping = {v: i for i, v in enumerate(unique)}
    return tuple(_label_name(v) for v in unique), mapping


def _label_name(value: Any) -> str:
    """A label as people write it: a float column's ``1.0`` is the class ``1`` (JSON/CSV readers make ints floats)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _label_error(spec: TaskSpec, split: str, row: int, value: Any) -> DataError:
    if spec.problem_type == "regression":
        return DataError(
            f"row {row} of {split} has label {value!r}, but task {spec.name} needs finite numeric labels"
        )
    names = spec.label_names or ()
    return DataError(
        f"row {row} of {split} has label {value!r}, but task {spec.name} has labels 0..{len(names) - 1} "
        f"({', '.join(names)})"
    )


def _label_id(value: Any, names: tuple[str, ...], mapping: dict[Any, int] | None) -> int | None:
    """The label id of ``value``, or None when it is not a valid label."""
    if mapping is not None:
        return mapping.get(value)
    if isinstance(value, str):
        if value in names:
            return names.index(value)
        value = value.strip()
        if value.lstrip("-").isdigit():
            value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (int, np.integer)) and 0 <= int(value) < len(names):
        return int(value)
    return None


def _convert_labels(
    spec: TaskSpec, ds: datasets.Dataset, split: str, mapping: dict[Any, int] | None = None
) -> datasets.Dataset:
    """Drop unlabelled (-1) rows and replace the label column by int ids (or floats for regression)."""
    if spec.problem_type == "generation":
        from scalearn_cli.generation.data import check_answers

        return check_answers(spec, ds, split)
    if spec.problem_type == MULTI_LABEL:
        return _convert_label_sets(spec, ds, split, mapping)
    keep: list[int] = []
    converted: list[float | int] = []
    for row, value in enumerate(ds[spec.label_field]):
        if value == UNLABELLED or (isinstance(value, str) and value.strip() == "-1"):
            continue
        if spec.problem_type == "regression":
            try:
                new: float | int | None = float(value)
            except (TypeError, ValueError):
                new = None
            if new is not None and not np.isfinite(new):  # nan, inf, -inf: no score to learn
                new = None
        else:
            new = _label_id(value, spec.label_names or (), mapping)
        if new is None:
            raise _label_error(spec, split, row, value)
        keep.append(row)
        converted.append(new)
    if not keep:
        raise DataError(
            f"the {split} split of task {spec.name} has no labelled rows (all labels missing or -1); "
            "give a labelled file for it"
        )
    dtype = "float32" if spec.problem_type == "regression" else "int64"
    out = ds.select(keep) if len(keep) < len(ds) else ds
    return out.remove_columns(spec.label_field).add_column(
        spec.label_field, converted, feature=datasets.Value(dtype)
    )


def _convert_label_sets(
    spec: TaskSpec, ds: datasets.Dataset, split: str, mapping: dict[Any, int] | None
) -> datasets.Dataset:
    """Multi-label: replace the label column by 0/1 rows of ``num_labels`` floats (every row kept: [] = no label)."""
    from scalearn_cli.multilabel import multi_hot, parse_label_sets

    names = spec.label_names or ()
    sets = parse_label_sets(list(ds[spec.label_field]), spec.label_field, split, spec.label_separator)
    rows = multi_hot(sets, names, lambda value: _label_id(value, names, mapping), split, spec.name)
    feature = datasets.Sequence(datasets.Value("float32"), length=len(names))
    return ds.remove_columns(spec.label_field).add_column(spec.label_field, rows, feature=feature)


def _check_columns(spec: TaskSpec, ds: datasets.Dataset, split: str) -> None:
    if len(ds) == 0:
        raise DataError(f"the {split} split of task {spec.name} is empty; give a file with at least one row")
    for field in (*spec.all_text_fields, spec.label_field):
        if field not in ds.column_names:
            raise DataError(
                f"the {split} split has no column {field!r} needed by task {spec.name}; "
                f"columns present: {', '.join(ds.column_names)}"
            )


# ------------------------------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Splits:
    """Train/dev/test datasets with int (or float, regression) labels, and the resolved task spec.

    ``spec`` equals the input spec, except that a custom classification task without label names gets the
    names inferred from the data.
    """

    train: datasets.Dataset
    dev: datasets.Dataset
    test: datasets.Dataset
    spec: TaskSpec

    def sizes(self) -> dict[str, int]:
        """Number of rows per split."""
        return {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)}


def _split_indices(
    labels: Sequence[Any] | None, n: int, size: float | int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (rest, held_out) index split of ``range(n)``; stratified by ``labels`` when possible."""
    indices = np.arange(n)
    if labels is not None:
        try:
            rest, held = train_test_split(indices, test_size=size, random_state=seed, stratify=labels)
            return np.sort(rest), np.sort(held)
        except ValueError:  # a class with a single row, or fewer held-out rows than classes
            logger.info("cannot stratify a split of %d rows; splitting at random instead", n)
    rest, held = train_test_split(indices, test_size=size, random_state=seed)
    return np.sort(rest), np.sort(held)


def _subsample(ds: datasets.Dataset, spec: TaskSpec, k: int, seed: int) -> datasets.Dataset:
    """Keep ``k`` seeded rows of ``ds`` (stratified when possible); all rows when ``k >= len(ds)``."""
    if k >= len(ds):
        return ds
    if spec.problem_type == MULTI_LABEL:  # label sets do not stratify: cover each label, rarest first
        from scalearn_cli.multilabel import subsample

        return ds.select(subsample(np.asarray(ds[spec.label_field]), k, seed))
    labels = _stratify_labels(spec, ds)
    _, keep = _split_indices(labels, len(ds), k, seed)
    return ds.select(keep)


def _stratify_labels(spec: TaskSpec, ds: datasets.Dataset) -> list[Any] | None:
    return None if spec.problem_type in ("regression", "generation", MULTI_LABEL) else list(ds[spec.label_field])


def _resolve_spec(
    spec: TaskSpec, train: datasets.Dataset, test: datasets.Dataset | None
) -> tuple[TaskSpec, dict[Any, int] | None]:
    """Infer label names for a custom classification task; returns (spec, value -> id map or None)."""
    if spec.label_names is not None or spec.problem_type in ("regression", "generation"):
        return spec, None
    if spec.problem_type == MULTI_LABEL:  # the label set is what train holds (recorded with the task)
        from scalearn_cli.multilabel import infer_label_names, parse_label_sets

        sets = parse_label_sets(list(train[spec.label_field]), spec.label_field, "train", spec.label_separator)
        names, mapping = infer_label_names(sets)
        logger.info("task %s: labels from train %s", spec.name, ", ".join(names))
        return replace(spec, label_names=names), mapping
    values = list(train[spec.label_field]) + (list(test[spec.label_field]) if test is not None else [])
    names, mapping = _infer_label_names(values)
    logger.info("task %s: inferred labels %s", spec.name, ", ".join(names))
    return replace(spec, label_names=names), mapping


def make_splits(
    spec: TaskSpec,
    raw: datasets.DatasetDict,
    seed: int = 42,
    max_train_samples: int | None = None,
    few_shot: int | None = None,
    sample_seed: int = 0,
    max_dev_samples: int | None = None,
) -> Splits:
    """Build the paper's train/dev/test splits from raw splits.

    * test = the official validation split (``spec.test_split``, else ``validation``);
    * dev = 10% of the official train split (``seed``, stratified by label for classification); train = the rest.
    * Without a validation split (a single custom file), train is split 80/10/10 into train/dev/test; a named
      task without its test split raises :class:`DataError` naming the missing file.
    * Rows labelled -1 (unlabelled) are dropped; a split left empty raises :class:`DataError`.
    * ``max_train_samples`` keeps that many train rows (seeded by ``sample_seed``, stratified when possible), and
      dev becomes 10% of the pool the capped train came from (``ceil(cap / 9)`` rows, at least 32), so a capped
      run does not evaluate thousands of dev rows after every epoch; ``max_dev_samples`` overrides the dev size.
    * ``few_shot=K`` keeps K train rows likewise and caps dev at ``max(K, 32)`` rows, so model selection
      does not use more labelled data than a few-shot budget allows; K above the train rows is a UsageError.

    String labels equal to a label name are mapped to its id; other labels outside ``0..num_labels-1`` raise
    :class:`DataError` naming the split, row and value.
    """
    if max_train_samples is not None and few_shot is not None:
        raise UsageError("--max-train-samples and --few-shot were both given; pass only one of them")
    for option, value in (("--max-train-samples", max_train_samples), ("--few-shot", few_shot)):
        if value is not None and value < 1:
            raise UsageError(f"{option} is {value}; give a positive number of examples")
    if "train" not in raw:
        raise DataError(f"task {spec.name} has no train split (have: {', '.join(raw)}); provide a train file")
    test_key = next((k for k in (spec.test_split, "validation") if k in raw), None)
    for key in ("train", test_key):
        if key is not None:
            _check_columns(spec, raw[key], key)
    if test_key is None and spec.name != "custom":
        # only a custom task's single file is split 80/10/10; a named task is scored on its official split
        raise DataError(
            f"task {spec.name} needs its {spec.test_split} split as the test set, but there is no "
            f"{spec.test_split}.jsonl (or .csv/.tsv): put it beside train.jsonl in --data-dir"
        )
    spec, mapping = _resolve_spec(spec, raw["train"], raw[test_key] if test_key else None)
    full = _convert_labels(spec, raw["train"], "train", mapping)
    labels = _stratify_labels(spec, full)
    if test_key is not None:
        test = _convert_labels(spec, raw[test_key], test_key, mapping)
        train_idx, dev_idx = _split_indices(labels, len(full), 0.1, seed)
    else:
        logger.info("task %s has no validation split: splitting train 80/10/10 into train/dev/test", spec.name)
        train_idx, held = _split_indices(labels, len(full), 0.2, seed)
        held_labels = [labels[i] for i in held] if labels is not None else None
        dev_pos, test_pos = _split_indices(held_labels, len(held), 0.5, seed)
        dev_idx, test = held[dev_pos], full.select(held[test_pos])
    train, dev = full.select(train_idx), full.select(dev_idx)
    if max_train_samples is not None and max_train_samples < len(train):
        train = _subsample(train, spec, max_train_samples, sample_seed)
        if max_dev_samples is None:  # --max-dev-samples overrides this default
            dev = _subsample(dev, spec, max(-(-max_train_samples // 9), 32), sample_seed)
    if few_shot is not None:
        if few_shot > len(train):
            raise UsageError(
                f"--few-shot {few_shot} asks for more rows than task {spec.name} has for training: {len(train)} "
                f"(of {len(full)} labelled rows, after holding out the dev split); give --few-shot {len(train)} or less"
            )
        train = _subsample(train, spec, few_shot, sample_seed)
        dev = _subsample(dev, spec, max(few_shot, 32), sample_seed)
    if max_dev_samples is not None:
        if max_dev_samples < 1:
            raise UsageError(f"--max-dev-samples is {max_dev_samples}; give a positive number of examples")
        dev = _subsample(dev, spec, max_dev_samples, sample_seed)
    for name, part in (("train", train), ("dev", dev), ("test", test)):
        if len(part) == 0:
            raise DataError(f"the {name} split of task {spec.name} is empty; give more labelled rows")
    return Splits(train=train, dev=dev, test=test, spec=spec)
