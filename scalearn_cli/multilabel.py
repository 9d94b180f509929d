"""Multi-label tasks: a set of labels per row (none, one or several), as transformers' ``problem_type``
``multi_label_classification``: one logit per label, sigmoid, binary cross-entropy.

Rows hold their label set as a list of ids or names (JSON), or as a delimiter-separated string
(``--label-separator``); :func:`parse_label_sets` checks a split's column and :func:`multi_hot` turns the sets into
0/1 rows. Prediction keeps each label whose probability exceeds its threshold (0.5, or one tuned per label on dev by
:func:`tune_thresholds`, recorded with the head). :func:`subsample` picks a few-shot sample that covers the labels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from scalearn_cli.errors import DataError, UsageError
from scalearn_cli.tasks import MULTI_LABEL

__all__ = ["MULTI_LABEL", "multi_hot", "parse_label_sets", "parse_threshold", "predict", "subsample", "tune_thresholds"]

DEFAULT_THRESHOLD = 0.5
#: the thresholds --label-threshold tune tries for each label (ties keep the one closest to 0.5)
THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))

Threshold = float | Literal["tune"]


def parse_threshold(value: str | float | None) -> Threshold:
    """``--label-threshold``: a probability in (0, 1) used for every label, or ``tune`` (one per label, on dev)."""
    if value is None:
        return DEFAULT_THRESHOLD
    if isinstance(value, str) and value.strip().lower() == "tune":
        return "tune"
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0.0 < number < 1.0:
        raise UsageError(f"--label-threshold is {value!r}; give a probability between 0 and 1 (e.g. 0.5) or 'tune'")
    return number


# ------------------------------------------------------------------------------------------- label sets


def _as_list(value: Any, separator: str | None) -> list[Any] | None:
    """A row's label set, or None when the value is a scalar (not a list)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str) and value.strip().startswith("["):  # a CSV cell holding a JSON list
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return parsed
    if separator is not None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return []  # an empty CSV cell: no label
        text = value if isinstance(value, str) else _name(value)
        return [part.strip() for part in text.split(separator) if part.strip()]
    return None


def parse_label_sets(values: Sequence[Any], field: str, split: str, separator: str | None = None) -> list[list[Any]]:
    """Each row's label set from a label column; one-line :class:`DataError` for a column that is not a list, a row
    mixing a scalar among lists, or a nested value. An empty list is a row with no label."""
    parsed = [_as_list(v, separator) for v in values]
    scalars = [i for i, p in enumerate(parsed) if p is None]
    if scalars and len(scalars) == len(parsed):
        raise DataError(
            f"the {split} split's label column {field!r} holds single values (row 0: {values[0]!r}), not lists, but "
            "the task is multi-label: write each row's labels as a JSON list (e.g. [0, 3], [] for none), or pass "
            "--label-separator ',' for labels joined in one string"
        )
    if scalars:
        row = scalars[0]
        raise DataError(
            f"row {row} of {split} has the single label {values[row]!r} while other rows hold lists; write every "
            f"row's labels as a list (e.g. [{values[row]!r}])"
        )
    for row, labels in enumerate(parsed):
        bad = next((x for x in labels if isinstance(x, (list, tuple, dict)) or x is None), _OK)
        if bad is not _OK:
            raise DataError(f"row {row} of {split} has label set {values[row]!r} with the element {bad!r}; "
                            "give a flat list of label ids or names")
    return parsed  # type: ignore[return-value]


_OK = object()


def _name(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def infer_label_names(sets: Sequence[Sequence[Any]]) -> tuple[tuple[str, ...], dict[Any, int]]:
    """Sorted unique labels over the train rows' sets (numbers numerically) and the value -> id map."""
    unique = sorted({v for labels in sets for v in labels}, key=lambda v: (isinstance(v, str), v))
    if len(unique) < 2:
        raise DataError(f"the train labels hold {len(unique)} distinct value(s) "
                        f"({', '.join(_name(v) for v in unique)}); a multi-label task needs at least two labels")
    return tuple(_name(v) for v in unique), {v: i for i, v in enumerate(unique)}


def multi_hot(
    sets: Sequence[Sequence[Any]], names: Sequence[str], to_id: Callable[[Any], int | None], split: str, task: str
) -> list[list[float]]:
    """0/1 rows (n, num_labels); a label outside the label set is a one-line :class:`DataError`."""
    rows = []
    for row, labels in enumerate(sets):
        out = [0.0] * len(names)
        for value in labels:
            index = to_id(value)
            if index is None:
                shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                raise DataError(
                    f"row {row} of {split} has label {value!r}, which is not in task {task}'s label set (ids "
                    f"0..{len(names) - 1}: {shown}); fix the row (a custom task's labels are those its train rows hold)"
                )
            out[index] = 1.0
        rows.append(out)
    return rows


# ------------------------------------------------------------------------------------------ prediction


def probabilities(logits: np.ndarray) -> np.ndarray:
    """sigmoid(logits), computed stably: (n, num_labels)."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, dtype=np.float64)))


def predict(logits: np.ndarray, thresholds: Sequence[float] | float | None = None) -> np.ndarray:
    """0/1 predictions (n, num_labels): each label whose probability exceeds its threshold (default 0.5)."""
    limit = np.asarray(DEFAULT_THRESHOLD if thresholds is None else thresholds, dtype=np.float64)
    return (probabilities(logits) > limit).astype(np.int64)


def tune_thresholds(logits: np.ndarray, labels: np.ndarray, grid: Sequence[float] = THRESHOLD_GRID) -> list[float]:
    """One threshold per label: the grid value of best F1 for that label on these (dev) rows; ties keep the one
    closest to 0.5, so a label without signal keeps the default."""
    from sklearn.metrics import f1_score

    probs, gold = probabilities(logits), np.asarray(labels).astype(np.int64)
    order = sorted(grid, key=lambda t: (abs(t - DEFAULT_THRESHOLD), t))
    scores = np.stack([f1_score(gold, (probs > t).astype(np.int64), average=None, zero_division=0) for t in order])
    best = scores.argmax(0)  # (num_labels,): argmax keeps the first maximum, i.e. the one closest to 0.5
    return [float(order[i]) for i in best]


# ------------------------------------------------------------------------------------------- few-shot


def subsample(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` seeded row indices (sorted) that cover as many labels as ``k`` allows: for each label, rarest first,
    one row holding it (unless a picked row already does); the rest at random. Stratifying by label *sets* would
    fail on sets seen once, and a plain random sample of 32 rows misses most of a long tail of labels."""
    gold = np.asarray(labels) > 0.5  # (n, num_labels)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(gold))
    picked: list[int] = []
    covered = np.zeros(gold.shape[1], dtype=bool)
    for label in np.argsort(gold.sum(0), kind="stable"):
        if len(picked) >= k or covered[label] or not gold[:, label].any():
            continue
        row = next(int(i) for i in order if gold[i, label] and int(i) not in picked)
        picked.append(row)
        covered |= gold[row]
    chosen = set(picked)
    picked += [int(i) for i in order if int(i) not in chosen][: k - len(picked)]
    return np.sort(np.asarray(picked, dtype=np.int64))
