"""Splits -> padded batches: tokenize once, dynamic padding, length-sorted evaluation, length-grouped training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from scalearn_cli.data.generation import make_loader as make_lm_loader
from scalearn_cli.errors import DataError, UsageError
from scalearn_cli.prompts import render_prompt
from scalearn_cli.tasks import TaskSpec

__all__ = ["example_texts", "make_loader"]


def _segment_texts(ds: datasets.Dataset, fields: Sequence[str]) -> list[str]:
    columns = [ds[f] for f in fields]
    return [" ".join("" if v is None else str(v) for v in values) for values in zip(*columns)]


class _Collator:
    """Pads each batch to its longest sequence; stacks choices to (batch, n_choices, seq) for multiple choice."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, n_choices: int | None, label_dtype: torch.dtype) -> None:
        self.pad = DataCollatorWithPadding(tokenizer, return_tensors="pt")
        self.n_choices = n_choices
        self.label_dtype = label_dtype

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labels = [f["labels"] for f in features if "labels" in f]
        inputs = [{k: v for k, v in f.items() if k != "labels"} for f in features]
        if self.n_choices is None:
            batch = dict(self.pad(inputs))
        else:
            flat = [{k: v[c] for k, v in f.items()} for f in inputs for c in range(self.n_choices)]
            padded = self.pad(flat)  # (batch * n_choices, seq)
            batch = {k: v.view(len(inputs), self.n_choices, -1) for k, v in padded.items()}
        if labels:
            batch["labels"] = torch.tensor(labels, dtype=self.label_dtype)
        return batch


def _encode(
    dataset: datasets.Dataset, spec: TaskSpec, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> list[dict[str, Any]]:
    """Tokenize every row once; one feature dict per row (lists of per-choice encodings for multiple choice)."""
    segments = [_segment_texts(dataset, seg) for seg in spec.text_fields]
    if spec.problem_type != "multiple_choice":
        enc = tokenizer(*segments, truncation=True, max_length=max_length)
        return [{k: enc[k][i] for k in enc} for i in range(len(dataset))]
    n = len(spec.choice_fields)
    contexts = [text for text in segments[0] for _ in range(n)]
    choices = [c for row in zip(*(_segment_texts(dataset, (f,)) for f in spec.choice_fields)) for c in row]
    enc = tokenizer(contexts, choices, truncation=True, max_length=max_length)
    return [{k: enc[k][i * n : (i + 1) * n] for k in enc} for i in range(len(dataset))]


def make_loader(
    dataset: datasets.Dataset,
    spec: TaskSpec,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    max_length: int = 128,
    shuffle: bool = False,
    seed: int = 0,
    sort_by_length: bool = False,
    group_by_length: bool = False,
    split: str | None = None,
) -> DataLoader:
    """Tokenize ``dataset`` once and batch it with dynamic padding.

    ``sort_by_length`` (evaluation): rows in order of length, so each batch pads to its own few tokens (metrics do
    not depend on row order). ``group_by_length`` (training, with ``shuffle``): transformers' own
    ``LengthGroupedSampler``, random mega-batches sorted by length, as the Trainer's ``group_by_length``.

    Batches hold the tokenizer's tensors (``input_ids``, ``attention_mask``, maybe ``token_type_ids``) of shape
    ``(batch, seq)``, and ``labels`` (long; float for regression, float rows for multi-label) when the label
    column is present. Two text segments are encoded as a pair, truncated to ``max_length``. Multiple choice: each row becomes
    ``num_labels`` (context, choice) encodings, so tensors are ``(batch, n_choices, seq)``; the model flattens
    them. Shuffling uses a ``torch.Generator`` seeded with ``seed``, so a new loader replays the same order.
    """
    if batch_size < 1:
        raise UsageError(f"batch size is {batch_size}; give a positive --batch-size")
    if spec.problem_type == "generation":  # prompt -> answer rows for a causal LM: answer-only labels, left padding
        return make_lm_loader(dataset, spec, tokenizer, batch_size, max_length, shuffle, seed, sort_by_length, split)
    missing = [f for f in spec.all_text_fields if f not in dataset.column_names]
    if missing:
        raise DataError(
            f"task {spec.name} needs column {missing[0]!r}; columns present: {', '.join(dataset.column_names)}"
        )
    features = _encode(dataset, spec, tokenizer, max_length)
    if spec.label_field in dataset.column_names:
        for feature, label in zip(features, dataset[spec.label_field]):
            feature["labels"] = label
    # regression values and multi-label 0/1 rows (batch, num_labels) are floats; class ids are longs
    label_dtype = torch.float32 if spec.problem_type in ("regression", "multi_label_classification") else torch.long
    n_choices = len(spec.choice_fields) if spec.problem_type == "multiple_choice" else None
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    lengths = [_n_tokens(f["input_ids"]) for f in features]
    sampler = None
    if group_by_length and shuffle:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        sampler, shuffle = LengthGroupedSampler(batch_size, lengths=lengths, generator=generator), False
    elif sort_by_length and not shuffle:
        features = [features[i] for i in sorted(range(len(features)), key=lambda i: lengths[i])]
    return DataLoader(
        features,  # type: ignore[arg-type]  # a list is a valid map-style dataset
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        generator=generator if sampler is None else None,
        collate_fn=_Collator(tokenizer, n_choices, label_dtype),
    )


def _n_tokens(ids: Any) -> int:
    """Tokens of one feature: a list of ids, or (multiple choice) one list per choice."""
    return sum(_n_tokens(x) for x in ids) if ids and isinstance(ids[0], (list, tuple)) else len(ids)


def example_texts(ds: datasets.Dataset, spec: TaskSpec) -> list[str]:
    """Each row's text segments joined with a space (what a similarity over tasks reads, e.g. AdapterSoup);
    a generation task's rendered prompts."""
    if spec.prompt_template is not None:
        return [render_prompt(spec.prompt_template, row) for row in ds]
    segments = [_segment_texts(ds, seg) for seg in spec.text_fields]
    return [" ".join(parts) for parts in zip(*segments)]
