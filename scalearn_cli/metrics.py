"""Task metrics from scikit-learn and scipy, reported x100 like the paper (accuracy 0.85 -> 85.0)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, precision_recall_fscore_support

from scalearn_cli.errors import DataError, TaskError
from scalearn_cli.multilabel import predict
from scalearn_cli.tasks import MULTI_LABEL, TaskSpec

ArrayLike = np.ndarray | torch.Tensor | Sequence[Any]


def _to_numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().float().numpy() if values.is_floating_point() else values.cpu().numpy()
    return np.asarray(values)


def _constant(values: np.ndarray) -> bool:
    return values.size == 0 or bool(np.all(values == values.flat[0]))


def _correlation(fn: Callable[..., Any], preds: np.ndarray, labels: np.ndarray) -> float:
    # A constant input has no defined correlation; scipy warns and returns NaN. Report 0.0 (no signal) instead.
    if _constant(preds) or _constant(labels):
        return 0.0
    value = float(fn(preds, labels)[0])
    return 0.0 if math.isnan(value) else value


def _matthews(labels: np.ndarray, preds: np.ndarray) -> float:
    if _constant(preds) and _constant(labels):
        return 0.0  # one class only: MCC is undefined
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(matthews_corrcoef(labels, preds))
    return 0.0 if math.isnan(value) else value


_SCORERS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda y, p: float(accuracy_score(y, p)),
    "f1": lambda y, p: float(f1_score(y, p, average="binary", pos_label=1, zero_division=0)),
    "macro_f1": lambda y, p: float(f1_score(y, p, average="macro", zero_division=0)),
    "micro_f1": lambda y, p: float(f1_score(y, p, average="micro", zero_division=0)),
    "matthews": _matthews,
    "pearson": lambda y, p: _correlation(pearsonr, p, y),
    "spearman": lambda y, p: _correlation(spearmanr, p, y),
}


def predictions(spec: TaskSpec, logits: ArrayLike, thresholds: Sequence[float] | None = None) -> np.ndarray:
    """Turn model outputs into predictions: argmax over the last axis, or the squeezed value for regression.

    Classification/multiple-choice logits have shape ``(n, num_labels)``; a 1-D integer array is taken as
    predictions already. Regression outputs have shape ``(n,)`` or ``(n, 1)``. Multi-label logits ``(n, num_labels)``
    become 0/1 rows: each label whose sigmoid exceeds its threshold (``thresholds``, default 0.5 for all).
    """
    out = _to_numpy(logits)
    if spec.problem_type == MULTI_LABEL:
        if out.ndim != 2:
            raise _shape_error(spec, out)
        return out.astype(np.int64) if not np.issubdtype(out.dtype, np.floating) else predict(out, thresholds)
    if spec.problem_type == "regression":
        if out.ndim > 2 or (out.ndim == 2 and out.shape[-1] != 1):
            raise _shape_error(spec, out)
        return out.reshape(-1).astype(np.float64)
    if out.ndim == 1 and not np.issubdtype(out.dtype, np.floating):
        return out.astype(np.int64)
    if out.ndim != 2:
        raise _shape_error(spec, out)
    return out.argmax(axis=-1).astype(np.int64)


def _shape_error(spec: TaskSpec, out: np.ndarray) -> DataError:
    return DataError(
        f"task {spec.name} ({spec.problem_type}) got model outputs of shape {tuple(out.shape)}; "
        "expected (n, num_labels) logits or (n,) regression values"
    )


def score_predictions(spec: TaskSpec, preds: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Compute every metric of ``spec`` for ready-made predictions, x100 (multi-label: 0/1 rows, F1 from sklearn's
    indicator format; accuracy is subset accuracy)."""
    rows = spec.problem_type == MULTI_LABEL  # (n, num_labels) indicator rows, not one label per row
    y_pred = _to_numpy(preds) if rows else _to_numpy(preds).reshape(-1)
    y_true = _to_numpy(labels) if rows else _to_numpy(labels).reshape(-1)
    if y_true.size == 0:
        raise DataError(f"task {spec.name}: no examples to score; check that the evaluation split is not empty")
    if y_pred.shape != y_true.shape:
        raise DataError(
            f"task {spec.name}: {y_pred.size} predictions for {y_true.size} labels; score the same examples"
        )
    if spec.problem_type == "regression":
        y_true, y_pred = y_true.astype(np.float64), y_pred.astype(np.float64)
    else:
        y_true, y_pred = y_true.astype(np.int64), y_pred.astype(np.int64)
    return {name: 100.0 * _SCORERS[name](y_true, y_pred) for name in spec.metrics}


def compute_metrics(
    spec: TaskSpec, logits: ArrayLike, labels: ArrayLike, thresholds: Sequence[float] | None = None
) -> dict[str, float]:
    """Score model outputs against gold labels with the task's metrics (x100), e.g. ``{"accuracy": 85.0}``
    (``thresholds``: multi-label decision thresholds, default 0.5)."""
    return score_predictions(spec, predictions(spec, logits, thresholds), labels)


def per_label_scores(spec: TaskSpec, preds: ArrayLike, labels: ArrayLike) -> dict[str, dict[str, float]]:
    """Multi-label: each label's F1 (x100) and support (gold rows holding it), by label name."""
    y_pred, y_true = _to_numpy(preds).astype(np.int64), _to_numpy(labels).astype(np.int64)
    _, _, f1, support = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    names = spec.label_names or tuple(str(i) for i in range(y_true.shape[1]))
    return {name: {"f1": 100.0 * float(f), "support": int(n)} for name, f, n in zip(names, f1, support)}


def main_score(spec: TaskSpec, metrics: dict[str, float]) -> float:
    """The task's headline number (``spec.main_metric``) from a metrics dict."""
    if spec.main_metric not in metrics:
        raise TaskError(
            f"metrics for task {spec.name} lack its main metric {spec.main_metric!r} (have {sorted(metrics)}); "
            "compute them with compute_metrics for this task"
        )
    return float(metrics[spec.main_metric])


def majority_baseline(spec: TaskSpec, train_labels: ArrayLike, test_labels: ArrayLike) -> dict[str, float]:
    """Metrics of a constant predictor: the most frequent train label (lowest id on ties), or the train mean;
    multi-label: each label held by more than half of the train rows (usually none)."""
    rows = spec.problem_type == MULTI_LABEL
    train = _to_numpy(train_labels) if rows else _to_numpy(train_labels).reshape(-1)
    test = _to_numpy(test_labels) if rows else _to_numpy(test_labels).reshape(-1)
    if train.size == 0:
        raise DataError(f"task {spec.name}: no train labels for the majority baseline; check the train split")
    if rows:
        frequent = (train.astype(np.float64).mean(0) > 0.5).astype(np.int64)  # (num_labels,)
        return score_predictions(spec, np.broadcast_to(frequent, test.shape), test)
    if spec.problem_type == "regression":
        constant: float | int = float(train.astype(np.float64).mean())
    else:
        constant = int(np.bincount(train.astype(np.int64)).argmax())
    return score_predictions(spec, np.full(test.shape, constant), test)
