"""A task's raw rows (``data.rows``) -> train/dev/test splits with model-ready labels (batches: ``data.batches``).

The split protocol follows the paper: the task's official validation split is the test set, and 10% of the
official train split (stratified, seed 42) is held out as the dev set for model selection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
from sklearn.model_selection import train_test_split

from scalearn_cli.data.generation import check_answers
from scalearn_cli.data.labels import check_columns, convert_labels, resolve_spec
from scalearn_cli.errors import DataError, UsageError
from scalearn_cli.multilabel import subsample
from scalearn_cli.tasks import MULTI_LABEL, TaskSpec

logger = logging.getLogger(__name__)


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
        return ds.select(subsample(np.asarray(ds[spec.label_field]), k, seed))
    labels = _stratify_labels(spec, ds)
    _, keep = _split_indices(labels, len(ds), k, seed)
    return ds.select(keep)


def _stratify_labels(spec: TaskSpec, ds: datasets.Dataset) -> list[Any] | None:
    return None if spec.problem_type in ("regression", "generation", MULTI_LABEL) else list(ds[spec.label_field])


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
    _check_sample_options(max_train_samples, few_shot)
    test_key = _test_split(spec, raw)
    spec, mapping = resolve_spec(spec, raw["train"], raw[test_key] if test_key else None)
    full = _labelled(spec, raw["train"], "train", mapping)
    test = _labelled(spec, raw[test_key], test_key, mapping) if test_key is not None else None
    train, dev, test = _hold_out(spec, full, test, seed)
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


def _check_sample_options(max_train_samples: int | None, few_shot: int | None) -> None:
    """The sampling options are positive, and --max-train-samples and --few-shot are not both given."""
    if max_train_samples is not None and few_shot is not None:
        raise UsageError("--max-train-samples and --few-shot were both given; pass only one of them")
    for option, value in (("--max-train-samples", max_train_samples), ("--few-shot", few_shot)):
        if value is not None and value < 1:
            raise UsageError(f"{option} is {value}; give a positive number of examples")


def _test_split(spec: TaskSpec, raw: datasets.DatasetDict) -> str | None:
    """The raw split that is the test set (the task's official one), None for a custom task's single file."""
    if "train" not in raw:
        raise DataError(f"task {spec.name} has no train split (have: {', '.join(raw)}); provide a train file")
    test_key = next((k for k in (spec.test_split, "validation") if k in raw), None)
    for key in ("train", test_key):
        if key is not None:
            check_columns(spec, raw[key], key)
    if test_key is None and spec.name != "custom":
        # only a custom task's single file is split 80/10/10; a named task is scored on its official split
        raise DataError(
            f"task {spec.name} needs its {spec.test_split} split as the test set, but there is no "
            f"{spec.test_split}.jsonl (or .csv/.tsv): put it beside train.jsonl in --data-dir"
        )
    return test_key


def _labelled(spec: TaskSpec, ds: datasets.Dataset, split: str, mapping: dict[Any, int] | None) -> datasets.Dataset:
    """The split with model-ready labels: checked answers for a generation task, label ids otherwise."""
    if spec.problem_type == "generation":
        return check_answers(spec, ds, split)
    return convert_labels(spec, ds, split, mapping)


def _hold_out(
    spec: TaskSpec, full: datasets.Dataset, test: datasets.Dataset | None, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset, datasets.Dataset]:
    """(train, dev, test): dev is 10% of ``full``; without a test split, ``full`` is split 80/10/10."""
    labels = _stratify_labels(spec, full)
    if test is not None:
        train_idx, dev_idx = _split_indices(labels, len(full), 0.1, seed)
    else:
        logger.info("task %s has no validation split: splitting train 80/10/10 into train/dev/test", spec.name)
        train_idx, held = _split_indices(labels, len(full), 0.2, seed)
        held_labels = [labels[i] for i in held] if labels is not None else None
        dev_pos, test_pos = _split_indices(held_labels, len(held), 0.5, seed)
        dev_idx, test = held[dev_pos], full.select(held[test_pos])
    return full.select(train_idx), full.select(dev_idx), test
