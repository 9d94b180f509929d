"""Load any adapter folder (source or composition) and score it on a task split with the paper's metrics."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from scalearn_cli.artifacts import read_folder, read_metadata
from scalearn_cli.backbone import load_backbone
from scalearn_cli.compose import load_composition
from scalearn_cli.data.rows import recorded_data
from scalearn_cli.errors import UsageError
from scalearn_cli.metrics import majority_baseline, per_label_scores, predictions, score_predictions
from scalearn_cli.model import build_head, task_model_for
from scalearn_cli.multilabel import DEFAULT_THRESHOLD
from scalearn_cli.resolve import Resolver
from scalearn_cli.stages.common import DataOptions, head_thresholds, prepare, score
from scalearn_cli.stages.source import load_source_model
from scalearn_cli.tasks import MULTI_LABEL, task_from_dict
from scalearn_cli.train import TrainConfig, evaluate


def load_model(folder: Path, resolver: Resolver | None = None):  # -> (TaskModel, tokenizer, meta)
    """A saved source, composition or merged export as a task model in eval mode (everything verified)."""
    kind = read_metadata(folder).get("kind")
    if kind == "composition":
        return load_composition(folder, resolver=resolver)
    if kind == "merged":  # `scalearn export --format merged`: a plain encoder folder + our head
        return _load_merged(folder)
    return load_source_model(folder)


def _load_merged(folder: Path):  # -> (TaskModel, tokenizer, meta)
    found = read_folder(folder, kind="merged")
    generative = found.meta.problem_type == "generation"
    encoder, tokenizer, _ = load_backbone(str(folder), causal_lm=generative)
    encoder.float()  # a float16/bfloat16 export is scored in fp32, like the fp32 head
    head = None if generative else build_head(found.meta.head, found.path)
    model = task_model_for(encoder, head, found.meta.problem_type)
    model.eval()
    return model, tokenizer, found.meta.to_dict()


def evaluate_folder(
    folder: Path,
    data: DataOptions | None = None,
    split: str = "test",
    batch_size: int = 64,
    max_length: int | None = None,
    resolver: Resolver | None = None,
) -> dict[str, Any]:
    """Metrics of the adapter in ``folder`` on ``split`` (test = the official validation split; dev = 10% of train)."""
    if split not in ("test", "dev"):
        raise UsageError(f"--split must be test or dev, got '{split}'")
    model, tokenizer, meta = load_model(folder, resolver)
    saved_spec = task_from_dict(meta["task"])
    if data is None:  # default: the data the adapter was trained on (a built-in task's own when that is gone)
        data_dir, data_file = recorded_data(meta.get("data"), saved_spec, what="the adapter",
                                            todo="restore it, or pass --data-dir/--data-file with the task's data")
        data = DataOptions(task=saved_spec.name, data_dir=data_dir, data_file=data_file)
    if data.task in (saved_spec.name, "custom") or data.task == "":
        data = replace(data, task=saved_spec.name, task_spec=saved_spec)
    spec = data.spec()
    check_same_labels(saved_spec, spec)
    training = meta.get("training", {})
    config = TrainConfig(batch_size=batch_size, eval_batch_size=batch_size,
                         max_length=max_length or int(training.get("max_length", 128)))
    prepared = prepare(data, tokenizer, config, sample_seed=int(training.get("seed", 42)))
    if spec.problem_type == MULTI_LABEL:
        metrics, extra = multi_label_scores(model, prepared, split)
    else:
        metrics, extra = score(model, prepared, splits=(split,))[split], {}
    return {
        "adapter": str(Path(folder)),
        "kind": meta["kind"],
        "task": spec.name,
        "trained_on": saved_spec.name,  # another task only when asked for with --task
        "split": split,
        "examples": len(getattr(prepared.splits, split)),
        "metrics": metrics,
        "main_metric": spec.main_metric,
        **extra,
    }


def multi_label_scores(model, prepared, split: str) -> tuple[dict[str, float], dict[str, Any]]:
    """A multi-label split's metrics (+ loss), and beside them each label's F1 and support, the thresholds used and
    the baseline's metrics (each label held by more than half of the train rows)."""
    spec = prepared.spec
    loss, logits, labels = evaluate(model, getattr(prepared, split))
    thresholds = head_thresholds(model) or (DEFAULT_THRESHOLD,) * spec.num_labels
    preds = predictions(spec, logits, thresholds)
    metrics = {**score_predictions(spec, preds, labels), "loss": float(loss)}
    train_labels = prepared.splits.train[spec.label_field]
    return metrics, {"per_label": per_label_scores(spec, preds, labels), "thresholds": list(thresholds),
                     "baseline": majority_baseline(spec, train_labels, labels)}


def _labels(spec) -> str:  # spec: TaskSpec
    if spec.problem_type == "regression":
        return "regression"
    names = ", ".join(spec.label_names) if spec.label_names else f"{spec.num_labels} labels"
    return f"{spec.problem_type}, labels {names}"


def check_same_labels(trained, other) -> None:
    """Refuse to score an adapter on a task whose outputs mean something else (problem type or label set/order)."""
    same = trained.problem_type == other.problem_type and trained.num_labels == other.num_labels
    if same and trained.problem_type != "regression" and trained.label_names and other.label_names:
        same = tuple(trained.label_names) == tuple(other.label_names)
    if not same:
        raise UsageError(
            f"adapter was trained on '{trained.name}' ({_labels(trained)}) and cannot score task '{other.name}' "
            f"({_labels(other)}): its head's outputs mean other labels; pass --task {trained.name} or a task "
            f"with the same labels"
        )
