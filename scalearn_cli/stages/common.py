"""What the stages share: data options -> splits and loaders; scoring; the metadata of a trained folder."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from scalearn_cli import __version__
from scalearn_cli.artifacts import AdapterSpec, HeadSpec, Metadata
from scalearn_cli.artifacts.meta import POOLINGS
from scalearn_cli.backbone import _pooling_config, auto_pooling, default_pooling
from scalearn_cli.data.batches import make_loader
from scalearn_cli.data.rows import load_raw
from scalearn_cli.data.splits import make_splits
from scalearn_cli.decoder.model import answer_nll
from scalearn_cli.decoder.score import score_generation
from scalearn_cli.errors import UsageError
from scalearn_cli.metrics import compute_metrics
from scalearn_cli.multilabel import DEFAULT_THRESHOLD, parse_threshold, tune_thresholds
from scalearn_cli.tasks import MULTI_LABEL, custom_task, generation_task, get_task, task_to_dict
from scalearn_cli.train import TrainConfig, TrainResult, evaluate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataOptions:
    """Where a task's data comes from and how much of it to use."""

    task: str
    data_dir: Path | None = None
    data_file: Path | None = None
    text_fields: tuple[str, ...] = ()
    label_field: str = "label"
    prompt_field: str | None = None  # generation: the prompt column, or
    prompt_template: str | None = None  # a template with {column} placeholders
    answer_field: str | None = None  # generation: the answer column
    choice_fields: tuple[str, ...] = ()  # generation: candidate-answer columns (scored by log-likelihood)
    problem_type: str = "classification"
    label_names: tuple[str, ...] | None = None
    max_train_samples: int | None = None
    few_shot: int | None = None
    max_dev_samples: int | None = None  # default: 10% of the train pool (capped runs: of the capped pool)
    task_spec: Any = None  # a resolved TaskSpec (e.g. read from an adapter's metadata) wins over ``task``
    label_separator: str | None = None  # custom multi-label: labels joined in one string
    threshold: str | None = None  # multi-label: a probability for every label, or "tune" (per label, on dev)

    def __post_init__(self) -> None:
        if self.threshold is not None:
            parse_threshold(self.threshold)  # a bad value fails before any model loads

    def spec(self):  # -> TaskSpec
        if self.task_spec is not None:
            return self.task_spec
        if self.task == "custom" and self.problem_type == "generation":
            return generation_task(self.answer_field, self.prompt_field, self.prompt_template,
                                   list(self.choice_fields) or None)
        if self.task == "custom":
            if not self.text_fields:
                raise UsageError("--task custom needs --text-fields (e.g. --text-fields sentence1,sentence2)")
            return custom_task(
                list(self.text_fields),
                self.label_field,
                self.problem_type,
                list(self.label_names) if self.label_names else None,
                label_separator=self.label_separator,
            )
        if self.label_separator is not None:  # a built-in task's labels are read as its dataset holds them
            raise UsageError(f"--label-separator is for --task custom; task {self.task} reads its own label column")
        return get_task(self.task)


@dataclass
class Prepared:
    options: DataOptions
    spec: Any  # TaskSpec, resolved against the data (custom label names inferred)
    splits: Any  # data.Splits
    train: Any  # DataLoader
    dev: Any
    test: Any
    tokenizer: Any = None  # generation targets decode and score with it
    max_length: int = 128
    eval_batch_size: int = 128


def prepare(options: DataOptions, tokenizer, config: TrainConfig, sample_seed: int | None = None) -> Prepared:
    """Load the task's data, split it by the paper's protocol, and build the three loaders."""
    spec = options.spec()
    raw = load_raw(spec, data_dir=options.data_dir, data_file=options.data_file)
    splits = make_splits(
        spec,
        raw,
        max_train_samples=options.max_train_samples,
        few_shot=options.few_shot,
        sample_seed=config.seed if sample_seed is None else sample_seed,
        max_dev_samples=options.max_dev_samples,
    )
    spec = splits.spec
    if options.threshold is not None and spec.problem_type != MULTI_LABEL:
        raise UsageError(f"--label-threshold sets multi-label decisions; task {spec.name} is {spec.problem_type}: "
                         "drop it")
    train = make_loader(splits.train, spec, tokenizer, config.batch_size, config.max_length, shuffle=True,
                        seed=config.seed, group_by_length=config.group_by_length, split="train")

    def eval_loader(ds, split):  # length-sorted, larger batches: evaluation is most of a small run's time on a CPU
        return make_loader(ds, spec, tokenizer, config.eval_batch_size, config.max_length, sort_by_length=True,
                           split=split)

    return Prepared(options, spec, splits, train, eval_loader(splits.dev, "dev"), eval_loader(splits.test, "test"),
                    tokenizer, config.max_length, config.eval_batch_size)


def score(model: nn.Module, prepared: Prepared, splits: tuple[str, ...] = ("dev", "test")) -> dict[str, dict]:
    """The task's metrics on the named splits (plus the split's mean loss)."""
    out = {}
    for split in splits:
        loss, logits, labels = evaluate(model, getattr(prepared, split))
        if prepared.spec.problem_type == "generation":  # exact match of greedy answers, or the likeliest choice
            metrics = score_generation(model, prepared.spec, getattr(prepared.splits, split), prepared.tokenizer,
                                       prepared.max_length, prepared.eval_batch_size)
        else:
            metrics = compute_metrics(prepared.spec, logits, labels, head_thresholds(model))
        out[split] = {**metrics, "loss": float(loss)}
    return out


def head_thresholds(model: nn.Module) -> tuple[float, ...] | None:
    """The multi-label decision thresholds recorded on a task model's head (None: 0.5, or no head)."""
    return getattr(getattr(model, "head", None), "thresholds", None)


def set_thresholds(model: nn.Module, prepared: Prepared) -> None:
    """Multi-label: put the decision thresholds on the trained head (saved with it in scalearn.json): the
    ``--label-threshold`` value for every label, or (``tune``) each label's best on the dev split."""
    head = getattr(model, "head", None)
    if head is None or prepared.spec.problem_type != MULTI_LABEL:
        return
    choice = parse_threshold(prepared.options.threshold or DEFAULT_THRESHOLD)
    if choice == "tune":
        _, logits, labels = evaluate(model, prepared.dev)
        head.thresholds = tuple(tune_thresholds(logits, labels))
        logger.info("thresholds tuned on %d dev rows: %s", len(labels), list(head.thresholds))
    else:
        head.thresholds = (float(choice),) * prepared.spec.num_labels


def metric_fn(spec):  # -> Callable[[np.ndarray, np.ndarray], dict[str, float]]
    if spec.problem_type == "generation":  # per epoch only the answers' mean NLL per token (decoding is costly)
        return lambda logits, labels: {"answer_nll": answer_nll(logits)}

    def fn(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return compute_metrics(spec, logits, labels)

    return fn


def run_metadata(
    kind: str,
    prepared: Prepared,
    base_ref,
    config: TrainConfig,
    result: TrainResult,
    adapter: AdapterSpec,
    head: HeadSpec,
    metrics: dict[str, dict[str, float]],
    extra: dict[str, Any] | None = None,
) -> Metadata:
    """scalearn.json of a trained source or composition (files and hashes are added when the folder is written)."""
    options = prepared.options
    return Metadata(
        kind=kind, task=task_to_dict(prepared.spec), base_model=base_ref.to_dict(), adapter=adapter, head=head,
        metrics=metrics, seed=config.seed, scalearn_version=__version__, extra=dict(extra or {}),
        data={
            "data_dir": str(Path(options.data_dir).resolve()) if options.data_dir else None,
            "data_file": str(Path(options.data_file).resolve()) if options.data_file else None,
            "max_train_samples": options.max_train_samples,
            "few_shot": options.few_shot,
            "max_dev_samples": options.max_dev_samples,
            # multi-label: the --label-threshold asked for ("tune" or a probability; the values are on the head)
            **({"threshold": options.threshold} if options.threshold is not None else {}),
        },
        training={
            **asdict(config),
            "best_epoch": result.best_epoch,
            "best_dev_loss": result.best_dev_loss,
            "initial_dev_loss": result.initial_dev_loss,
            "improved_on_initial": result.improved_on_initial,
            "initial_dev_metrics": result.initial_dev_metrics,
            "best_dev_metrics": result.best_dev_metrics,
            "processes": result.processes,
            "steps": result.steps,
            "train_seconds": round(result.train_seconds, 2),
            "examples_per_second": round(result.examples_per_second, 2),
            "train_examples": len(prepared.splits.train),
            "dev_examples": len(prepared.splits.dev),
            "test_examples": len(prepared.splits.test),
            "history": [asdict(h) for h in result.history],
        },
    )


def check_pooling(pooling: str) -> None:
    if pooling not in (*POOLINGS, "auto"):
        raise UsageError(f"--pooling must be auto or one of {', '.join(POOLINGS)}, got '{pooling}'")


def resolve_pooling(pooling: str, model: str, model_type: str | None = None) -> tuple[str, str]:
    """(pooling, why): ``auto`` becomes what the model was trained with — a sentence-transformers pooling config
    (``backbone.auto_pooling``), else the last real token of a decoder LM and the first token of an encoder."""
    check_pooling(pooling)
    if pooling != "auto":
        return pooling, "asked for"
    if _pooling_config(model) is None and default_pooling(model_type) == "last":
        return "last", "a decoder LM: the last real token (the only one that has seen the whole input)"
    return auto_pooling(model)
