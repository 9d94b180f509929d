"""A split's label column as the model reads it: class ids (names inferred for custom tasks), floats for regression,
0/1 rows for multi-label; unlabelled rows dropped and every other bad label refused with its row."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import datasets
import numpy as np

from scalearn_cli.errors import DataError
from scalearn_cli.multilabel import infer_label_names, multi_hot, parse_label_sets
from scalearn_cli.tasks import MULTI_LABEL, TaskSpec

logger = logging.getLogger(__name__)

UNLABELLED = -1  # GLUE/SNLI convention for rows without a gold label


def _infer_label_names(values: Sequence[Any]) -> tuple[tuple[str, ...], dict[Any, int]]:
    """Sorted unique labels (numbers numerically) and the value -> id map for custom classification."""
    unique = sorted({v for v in values if v is not None and v != UNLABELLED}, key=lambda v: (isinstance(v, str), v))
    if len(unique) < 2:
        raise DataError(
            f"the labels hold {len(unique)} distinct value(s) ({', '.join(label_name(v) for v in unique)}); "
            f"classification needs at least two classes"
        )
    mapping = {v: i for i, v in enumerate(unique)}
    return tuple(label_name(v) for v in unique), mapping


def label_name(value: Any) -> str:
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


def convert_labels(
    spec: TaskSpec, ds: datasets.Dataset, split: str, mapping: dict[Any, int] | None = None
) -> datasets.Dataset:
    """Drop unlabelled (-1) rows and replace the label column by int ids (or floats for regression); a generation
    task's answers are checked by ``data.generation.check_answers`` instead."""
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
    names = spec.label_names or ()
    sets = parse_label_sets(list(ds[spec.label_field]), spec.label_field, split, spec.label_separator)
    rows = multi_hot(sets, names, lambda value: _label_id(value, names, mapping), split, spec.name)
    feature = datasets.Sequence(datasets.Value("float32"), length=len(names))
    return ds.remove_columns(spec.label_field).add_column(spec.label_field, rows, feature=feature)


def check_columns(spec: TaskSpec, ds: datasets.Dataset, split: str) -> None:
    """The split has rows and every column the task reads."""
    if len(ds) == 0:
        raise DataError(f"the {split} split of task {spec.name} is empty; give a file with at least one row")
    for field in (*spec.all_text_fields, spec.label_field):
        if field not in ds.column_names:
            raise DataError(
                f"the {split} split has no column {field!r} needed by task {spec.name}; "
                f"columns present: {', '.join(ds.column_names)}"
            )


def resolve_spec(
    spec: TaskSpec, train: datasets.Dataset, test: datasets.Dataset | None
) -> tuple[TaskSpec, dict[Any, int] | None]:
    """Infer label names for a custom classification task; returns (spec, value -> id map or None)."""
    if spec.label_names is not None or spec.problem_type in ("regression", "generation"):
        return spec, None
    if spec.problem_type == MULTI_LABEL:  # the label set is what train holds (recorded with the task)
        sets = parse_label_sets(list(train[spec.label_field]), spec.label_field, "train", spec.label_separator)
        names, mapping = infer_label_names(sets)
        logger.info("task %s: labels from train %s", spec.name, ", ".join(names))
        return replace(spec, label_names=names), mapping
    values = list(train[spec.label_field]) + (list(test[spec.label_field]) if test is not None else [])
    names, mapping = _infer_label_names(values)
    logger.info("task %s: inferred labels %s", spec.name, ", ".join(names))
    return replace(spec, label_names=names), mapping
