"""``scalearn train-source`` and ``scalearn transfer``: train a source adapter, compose sources on a target task."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from scalearn_cli.cli.combiner_options import method_options, with_combiner_options
from scalearn_cli.cli.common import (
    BatchOpt, DataDirOpt, DataFileOpt, EndpointOpt, EpochsOpt, EvalBatchOpt, FewShotOpt, GradCheckpointOpt,
    GroupByLengthOpt, JsonOpt,
    LabelFieldOpt, LrOpt, MaxDevOpt, MaxLenOpt, PromptFieldOpt, PromptTemplateOpt, AnswerFieldOpt, ChoiceFieldsOpt,
    MaxStepsOpt, MaxTrainOpt, ModelOpt, OutOpt, OverwriteOpt, PatienceOpt, PrecisionOpt, ProblemOpt, RegistryOpt,
    SeedOpt, SelectOnOpt, TaskOpt, TextFieldsOpt, console, print_json, resolver, split_csv,
    LabelSeparatorOpt, ThresholdOpt,
)
from scalearn_cli.cli.shelf import (
    ExcludeOpt, FamilyOpt, IncludeOpt, KindOpt, SelectEpochsOpt, SelectOpt, SelectSparsityOpt, SelectStepsOpt,
    ShelfOpt, select_options, shelf_filter,
)
from scalearn_cli.cli.tables import metrics_table
from scalearn_cli.combiners import DEFAULT_METHOD, allows, combiner_names, get_combiner
from scalearn_cli.errors import UsageError

METHOD_HELP = (f"How the sources are combined: {', '.join(combiner_names())} (default {DEFAULT_METHOD}, which "
               "learns ω; see docs/cli.md). Fixed baselines train the head only; each method's own options follow.")


def _data(task, data_dir, data_file, text_fields, label_field, problem_type, max_train_samples, few_shot,
          max_dev_samples=None, generation=(None, None, None, None), multi_label=(None, None)):
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.stages.common import DataOptions

    prompt_field, prompt_template, answer_field, choice_fields = generation
    label_separator, threshold = multi_label
    return DataOptions(
        task=task, data_dir=data_dir, data_file=data_file, text_fields=split_csv(text_fields),
        label_field=label_field, problem_type=problem_type, max_train_samples=max_train_samples, few_shot=few_shot,
        max_dev_samples=max_dev_samples, prompt_field=prompt_field, prompt_template=prompt_template,
        answer_field=answer_field, choice_fields=split_csv(choice_fields),
        label_separator=label_separator, threshold=threshold,
    )


def _config(epochs, lr, batch_size, max_length, seed, patience, max_steps, precision, eval_batch_size=128,
            group_by_length=False, gradient_checkpointing=False, select_on="auto"):
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.train import TrainConfig

    return TrainConfig(
        epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length, seed=seed,
        patience=patience or None, max_steps=max_steps, precision=precision,  # --patience 0: no early stopping
        eval_batch_size=eval_batch_size, group_by_length=group_by_length,
        gradient_checkpointing=gradient_checkpointing, select_on=select_on,
    )


@contextmanager
def _summary_says_it():
    """Drop the training loop's log records that ``_report`` repeats in its summary (said once, at the end)."""
    log = logging.getLogger("scalearn_cli.train")

    def keep(record: logging.LogRecord) -> bool:
        return not getattr(record, "summarized", False)

    log.addFilter(keep)
    try:
        yield
    finally:
        log.removeFilter(keep)


def _progress(label: str):  # -> RichProgress | None
    """The progress display, on the main process only (under ``accelerate launch`` every process runs this)."""
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.cli.progress import RichProgress
    from scalearn_cli.processes import is_main_process

    return RichProgress(label) if is_main_process() else None


def _untrained_warning(meta: dict) -> str | None:
    training = meta["training"]
    if training.get("improved_on_initial", True):
        return None
    if training.get("select_on") == "metric":
        main = meta["task"]["main_metric"]
        initial, best = (f"{v:.2f}" if isinstance(v, (int, float)) else "n/a"
                         for v in (training["initial_dev_metrics"].get(main), training["best_dev_metrics"].get(main)))
        return (f"the dev {main} never improved on the initial weights' ({initial}; best {best} at epoch "
                f"{training['best_epoch']}): try another --lr or more --epochs")
    return (f"the dev loss never improved on the initial weights ({training['initial_dev_loss']:.4f}; best "
            f"{training['best_dev_loss']:.4f} at epoch {training['best_epoch']}): try another --lr or more --epochs")


def _report(meta: dict, out: Path, as_json: bool) -> None:
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.processes import is_main_process

    if not is_main_process():  # one summary per run, not one per process
        return
    summary = {
        "out": str(out), "kind": meta["kind"], "task": meta["task"]["name"], "adapter": meta["adapter"],
        "metrics": meta["metrics"], "best_epoch": meta["training"]["best_epoch"],
        "select_on": meta["training"].get("select_on", "loss"),  # what best_epoch is best at
        "examples_per_second": meta["training"]["examples_per_second"],
    }
    warning = _untrained_warning(meta)
    if warning:
        summary["warning"] = warning
    learned, omega_warning, hint = _composition_notes(meta, out)
    if learned:
        summary.update(omega=learned, **({"omega_warning": omega_warning} if omega_warning else {}))
    if hint:
        summary["hint"] = hint
    if as_json:
        print_json(summary)
        return
    console.print(metrics_table(f"{meta['task']['name']}: {out}", meta["metrics"]))
    what = "transfer parameters (ω / fusion; head excluded)" if meta["kind"] == "composition" else "adapter parameters"
    console.print(f"{meta['adapter']['parameters']:,} trained {what}; saved to [bold]{out}[/]")
    if learned:
        # lazy: keeps torch out of `scalearn --help`
        from scalearn_cli.inspection import learned_line

        console.print(learned_line(learned))
    for line in (warning, omega_warning):
        if line:
            console.print(f"[bold yellow]Warning:[/] {line}")
    if hint:
        console.print(f"[bold]Hint:[/] {hint}")


def _composition_notes(meta: dict, out: Path) -> tuple[dict | None, str | None, str | None]:
    """A composition's ω summary, its warning (``inspection.omega_summary``/``omega_warning``) and the selection
    hint (``inspection.selection_hint``); all None for a source."""
    if meta["kind"] != "composition":
        return None, None, None
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.compose import read_record
    from scalearn_cli.inspection import omega_summary, omega_warning, selection_hint

    hint = selection_hint(read_record(out), meta["training"].get("train_examples"))
    if not allows(meta["adapter"].get("method"), "train_omega"):
        return None, None, hint
    learned = omega_summary(out)
    return learned, omega_warning(learned), hint


def train_source(
    task: TaskOpt,
    out: OutOpt,
    adapter: Annotated[str, typer.Option(help="lora (PEFT) or bottleneck (the paper's Pfeiffer adapter).")] = "lora",
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
    data_file: DataFileOpt = None,
    text_fields: TextFieldsOpt = None,
    label_field: LabelFieldOpt = "label",
    problem_type: ProblemOpt = "classification",
    prompt_field: PromptFieldOpt = None,
    prompt_template: PromptTemplateOpt = None,
    answer_field: AnswerFieldOpt = None,
    choice_fields: ChoiceFieldsOpt = None,
    label_separator: LabelSeparatorOpt = None,
    threshold: ThresholdOpt = None,
    lora_r: Annotated[Optional[int], typer.Option("--lora-r", help="LoRA rank (default: the library's, see "
                                                                   "docs/cli.md).")] = None,
    lora_alpha: Annotated[Optional[int], typer.Option("--lora-alpha", help="LoRA alpha (scaling = alpha / r; "
                                                                           "default: the library's).")] = None,
    lora_targets: Annotated[Optional[str], typer.Option(
        "--lora-targets", help="Comma-separated module names (default: PEFT's for the architecture, e.g. "
                               "query,value for BERT, q_proj,v_proj for Llama/Qwen2/Mistral, c_attn for GPT-2).")
    ] = None,
    reduction_factor: Annotated[Optional[int], typer.Option(
        "--reduction-factor", help="Bottleneck: hidden / size (default: the paper's 16).")] = None,
    pooling: Annotated[str, typer.Option(
        help="How the head reads the sequence: auto (the encoder's own sentence-transformers pooling; else last for "
             "decoder LMs, first otherwise), first (the paper's), mean (over tokens) or last (real token).")
    ] = "auto",
    epochs: EpochsOpt = 30,
    lr: LrOpt = None,
    batch_size: BatchOpt = 32,
    max_length: MaxLenOpt = 128,
    seed: SeedOpt = 42,
    patience: PatienceOpt = 5,
    select_on: SelectOnOpt = "auto",
    max_train_samples: MaxTrainOpt = None,
    few_shot: FewShotOpt = None,
    max_dev_samples: MaxDevOpt = None,
    max_steps: MaxStepsOpt = None,
    eval_batch_size: EvalBatchOpt = 128,
    group_by_length: GroupByLengthOpt = False,
    gradient_checkpointing: GradCheckpointOpt = False,
    precision: PrecisionOpt = "no",
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a source adapter (LoRA or bottleneck) and its head on a task, on a frozen encoder."""
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.sources import get_kind
    from scalearn_cli.stages.source import train_source as run

    per_kind = {  # each kind takes the options that are its own; unset ones keep the kind's defaults (one source)
        "lora": {("--lora-r", "r"): lora_r, ("--lora-alpha", "alpha"): lora_alpha,
                 ("--lora-targets", "target_modules"): split_csv(lora_targets) if lora_targets else None},
        "bottleneck": {("--reduction-factor", "reduction_factor"): reduction_factor},
    }
    for kind, given in per_kind.items():  # another kind's option is an error, never silently ignored
        flag = next((flag for (flag, _), value in given.items() if value is not None and kind != adapter), None)
        if flag:
            raise UsageError(f"{flag} applies to --adapter {kind}, not {adapter}; drop it")
    options = {key: value for (_, key), value in per_kind.get(adapter, {}).items() if value is not None}
    settings = get_kind(adapter).settings(options)
    data = _data(task, data_dir, data_file, text_fields, label_field, problem_type, max_train_samples, few_shot,
                 max_dev_samples, (prompt_field, prompt_template, answer_field, choice_fields),
                 (label_separator, threshold))
    config = _config(epochs, lr, batch_size, max_length, seed, patience, max_steps, precision,
                     eval_batch_size, group_by_length, gradient_checkpointing, select_on)
    with _summary_says_it():
        meta = run(data, out, adapter, settings, config, model, overwrite, _progress(f"{adapter} {task}"),
                   pooling=pooling)
    _report(meta, out, as_json)


@with_combiner_options
def transfer(
    task: TaskOpt,
    out: OutOpt,
    source: Annotated[
        Optional[list[str]],
        typer.Option("--source", "-s", help="A source: scalearn, PEFT LoRA or AdapterHub folder, a pulled path, "
                                            "org/name[@rev] or hf://org/name[@rev]; repeat."),
    ] = None,  # None, not required: "no sources" gets the library's one-line error
    variant: Annotated[Optional[str], typer.Option(
        help="The method's variant: scalearn, scalearn-uniform, scalearn++ or scalearn-uniform++ for the default "
             "method (default: its first).")] = None,
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = DEFAULT_METHOD,
    sparsity: Annotated[float, typer.Option(help="Group-lasso strength λ on per-source ω (helps `prune`).")] = 0.0,
    shelf: ShelfOpt = None,
    shelf_family: FamilyOpt = None,
    shelf_kind: KindOpt = None,
    shelf_include: IncludeOpt = None,
    shelf_exclude: ExcludeOpt = None,
    select: SelectOpt = None,
    select_steps: SelectStepsOpt = None,
    select_epochs: SelectEpochsOpt = None,
    select_sparsity: SelectSparsityOpt = None,
    pooling: Annotated[Optional[str], typer.Option(
        help="Head pooling: auto, first, mean or last (default: the one the sources' heads were trained with).")
    ] = None,
    registry: RegistryOpt = None,
    endpoint: EndpointOpt = None,
    data_dir: DataDirOpt = None,
    data_file: DataFileOpt = None,
    text_fields: TextFieldsOpt = None,
    label_field: LabelFieldOpt = "label",
    problem_type: ProblemOpt = "classification",
    prompt_field: PromptFieldOpt = None,
    prompt_template: PromptTemplateOpt = None,
    answer_field: AnswerFieldOpt = None,
    choice_fields: ChoiceFieldsOpt = None,
    label_separator: LabelSeparatorOpt = None,
    threshold: ThresholdOpt = None,
    epochs: EpochsOpt = 30,
    lr: LrOpt = None,
    batch_size: BatchOpt = 32,
    max_length: MaxLenOpt = 128,
    seed: SeedOpt = 42,
    patience: PatienceOpt = None,
    select_on: SelectOnOpt = "auto",
    min_steps: Annotated[int, typer.Option("--min-steps", help=(
        "Keep no epoch that ends before N steps (the last one always counts): on a tiny dev set an early epoch, "
        "before ω has moved, often looks best."))] = 0,
    head_lr: Annotated[Optional[float], typer.Option("--head-lr", help="The head's learning rate (default: --lr)."
                                                     )] = None,
    max_train_samples: MaxTrainOpt = None,
    few_shot: FewShotOpt = None,
    max_dev_samples: MaxDevOpt = None,
    max_steps: MaxStepsOpt = None,
    eval_batch_size: EvalBatchOpt = 128,
    group_by_length: GroupByLengthOpt = False,
    gradient_checkpointing: GradCheckpointOpt = False,
    precision: PrecisionOpt = "no",
    model: ModelOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
    combiner_options: dict | None = None,  # the method's own flags, added from the combiner table
) -> None:
    """Compose source adapters for a target task: learn only ω (or a baseline combiner) and a new head."""
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.selection import shelf_transfer as run
    from scalearn_cli.stages.transfer import TransferOptions

    combiner = get_combiner(method)  # the library owns each method's defaults
    if variant is not None and not combiner.variants:  # never silently ignored
        having = [name for name in combiner_names() if get_combiner(name).variants]
        raise UsageError(f"--variant applies to --method {' or '.join(having)}, not {method}; drop it")
    data = _data(task, data_dir, data_file, text_fields, label_field, problem_type, max_train_samples, few_shot,
                 max_dev_samples, (prompt_field, prompt_template, answer_field, choice_fields),
                 (label_separator, threshold))
    config = _config(epochs, lr, batch_size, max_length, seed,
                     combiner.default_patience if patience is None else patience, max_steps, precision,
                     eval_batch_size, group_by_length, gradient_checkpointing, select_on)
    config = replace(config, min_steps=min_steps, head_lr=head_lr)
    options = TransferOptions(
        sources=tuple(source or ()), out=out, method=method, variant=variant, train=config, data=data,
        options=method_options(method, combiner_options or {}),
        resolver=resolver(registry, endpoint),
        overwrite=overwrite, sparsity=sparsity, pooling=pooling, model=model,
    )
    with _summary_says_it():
        meta = run(options, tuple(shelf or ()), shelf_filter(shelf_family, shelf_kind, shelf_include, shelf_exclude),
                   select_options(select, select_steps, select_epochs, select_sparsity), _progress(f"{method} {task}"))
    _report(meta, out, as_json)
