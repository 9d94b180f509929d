"""Prompt -> answer rows as causal-LM batches: prompt tokens masked from the loss, left padding.

Each row becomes ``prompt ids + answer ids + eos``. The answer ids are the tokens that follow the prompt when
``prompt + " " + answer`` is tokenized as one text (so the model learns the tokens it would meet in running text);
where the tokenizer merges across that boundary, the answer is tokenized on its own. Labels are the answer ids
(and eos) and -100 on every prompt token, so the loss is the answer's alone. Batches are padded on the left, which
is where ``generate`` appends; labels are right-aligned to one width per loader, so evaluation can stack them.

A row longer than ``--max-length`` keeps its answer whole and loses the start of its prompt (for few-shot prompts:
the earliest examples); a row whose answer alone does not fit is dropped. Both are counted in one warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from torch.utils.data import DataLoader

from scalearn_cli.data.labels import label_name
from scalearn_cli.errors import DataError
from scalearn_cli.prompts import IGNORE, render_prompt
from scalearn_cli.tasks import TaskSpec

logger = logging.getLogger(__name__)



def check_answers(spec: TaskSpec, ds: datasets.Dataset, split: str) -> datasets.Dataset:
    """Every row has a non-empty answer (and, with choices, one of its choices); the answer column becomes text."""
    answers = []
    for row, value in enumerate(ds[spec.label_field]):
        text = "" if value is None else label_name(value)
        if not text.strip():
            raise DataError(f"row {row} of {split} has no answer in column {spec.label_field!r}; every row of a "
                            f"generation task needs one")
        answers.append(text)
    if spec.choice_fields:
        for row, (answer, choices) in enumerate(zip(answers, row_choices(spec, ds))):
            if answer.strip() not in [c.strip() for c in choices]:
                raise DataError(f"row {row} of {split} has answer {answer!r}, which is none of its choices "
                                f"({', '.join(map(repr, choices))}); the answer must be one of them")
    return ds.remove_columns(spec.label_field).add_column(spec.label_field, answers,
                                                          feature=datasets.Value("string"))


def prompts(spec: TaskSpec, ds: datasets.Dataset) -> list[str]:
    """Each row's prompt, rendered from the task's template."""
    return [render_prompt(str(spec.prompt_template), row) for row in ds]


def row_choices(spec: TaskSpec, ds: datasets.Dataset) -> list[list[str]]:
    """Each row's candidate answers (multiple-choice generation tasks)."""
    columns = [ds[f] for f in spec.choice_fields]
    return [["" if v is None else str(v) for v in values] for values in zip(*columns)]


def gold_index(answer: str, choices: list[str]) -> int:
    return [c.strip() for c in choices].index(answer.strip())


@dataclass
class Fitted:
    """Token ids of rows that fit ``--max-length`` (None where a row was dropped), and how many were cut."""

    pairs: list[tuple[list[int], list[int]] | None]
    cut: int = 0
    dropped: int = 0


def encode_pairs(tokenizer, prompt_texts: list[str], answer_texts: list[str], max_length: int,
                 eos: bool = True) -> Fitted:
    """(prompt ids, answer ids [+ eos]) per row, fitted into ``max_length`` (see the module docstring)."""
    seps = ["" if not p or p[-1].isspace() else " " for p in prompt_texts]
    prompt_ids = tokenizer(prompt_texts)["input_ids"]
    full_ids = tokenizer([p + s + a for p, s, a in zip(prompt_texts, seps, answer_texts)])["input_ids"]
    out = Fitted([])
    for p, full, sep, answer in zip(prompt_ids, full_ids, seps, answer_texts):
        a = full[len(p):] if full[:len(p)] == p and len(full) > len(p) else (
            tokenizer(sep + answer, add_special_tokens=False)["input_ids"])
        if eos and tokenizer.eos_token_id is not None:
            a = [*a, tokenizer.eos_token_id]
        if len(p) + len(a) > max_length:
            room = max_length - len(a)
            if room < 1:
                out.pairs.append(None)
                out.dropped += 1
                continue
            keep_first = room > 1 and tokenizer.bos_token_id is not None and p[0] == tokenizer.bos_token_id
            p = [p[0], *p[len(p) - room + 1:]] if keep_first else p[len(p) - room:]
            out.cut += 1
        out.pairs.append((list(p), list(a)))
    return out


def report(fitted: Fitted, n: int, max_length: int, split: str | None) -> None:
    """One warning for rows cut or dropped to fit ``--max-length``; an error when none is left."""
    where = f"the {split} split" if split else "the data"
    if fitted.dropped == n:
        raise DataError(f"every row of {where} has an answer of {max_length} tokens or more, so none fits "
                        f"--max-length {max_length}; raise --max-length")
    if fitted.cut or fitted.dropped:
        logger.warning("%s: %d of %d rows do not fit --max-length %d: %d prompts cut from the left (the end, next "
                       "to the answer, kept), %d rows dropped (the answer alone does not fit); raise --max-length to "
                       "keep them whole", where, fitted.cut + fitted.dropped, n, max_length, fitted.cut,
                       fitted.dropped)


def lm_features(pairs: list[tuple[list[int], list[int]] | None], with_answer: bool = True) -> list[dict[str, Any]]:
    """One feature per kept row: the whole sequence with answer-only labels, or (``with_answer=False``) the prompt."""
    feats = []
    for pair in pairs:
        if pair is None:
            continue
        p, a = pair
        if with_answer:
            feats.append({"input_ids": p + a, "labels": [IGNORE] * len(p) + a})
        else:
            feats.append({"input_ids": p})
    return feats


class LeftPadCollator:
    """Pads ``input_ids`` on the left to the batch's longest row (``attention_mask`` 0 there); ``labels`` on the
    left with -100 to ``width`` (one width per loader), right-aligned with the inputs."""

    def __init__(self, pad_id: int, width: int) -> None:
        self.pad_id, self.width = pad_id, width

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seq = max(len(f["input_ids"]) for f in features)
        batch = {
            "input_ids": torch.tensor([[self.pad_id] * (seq - len(f["input_ids"])) + f["input_ids"] for f in features]),
            "attention_mask": torch.tensor([[0] * (seq - len(f["input_ids"])) + [1] * len(f["input_ids"])
                                            for f in features]),
        }
        if features and "labels" in features[0]:
            batch["labels"] = torch.tensor([[IGNORE] * (self.width - len(f["labels"])) + f["labels"]
                                            for f in features])
        return batch


def loader(features: list[dict[str, Any]], tokenizer, batch_size: int, shuffle: bool = False, seed: int = 0,
           sort_by_length: bool = False) -> DataLoader:
    """A DataLoader over ready features with left padding (length-sorted for evaluation when asked)."""
    if sort_by_length and not shuffle:
        features = sorted(features, key=lambda f: len(f["input_ids"]))
    width = max((len(f["input_ids"]) for f in features), default=1)
    return DataLoader(
        features,  # type: ignore[arg-type]  # a list is a valid map-style dataset
        batch_size=batch_size, shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
        collate_fn=LeftPadCollator(tokenizer.pad_token_id, width),
    )


def make_loader(dataset: datasets.Dataset, spec: TaskSpec, tokenizer, batch_size: int, max_length: int = 128,
                shuffle: bool = False, seed: int = 0, sort_by_length: bool = False,
                split: str | None = None) -> DataLoader:
    """Batches of ``prompt + answer + eos`` with answer-only labels (see the module docstring)."""
    missing = [f for f in (*spec.all_text_fields, spec.label_field) if f not in dataset.column_names]
    if missing:
        raise DataError(f"task {spec.name} needs column {missing[0]!r}; columns present: "
                        f"{', '.join(dataset.column_names)}")
    fitted = encode_pairs(tokenizer, prompts(spec, dataset), list(dataset[spec.label_field]), max_length)
    report(fitted, len(dataset), max_length, split)
    return loader(lm_features(fitted.pairs), tokenizer, batch_size, shuffle, seed, sort_by_length)
