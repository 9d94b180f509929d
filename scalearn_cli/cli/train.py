"""``scalearn train-source``, ``scalearn transfer`` and ``scalearn eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scalearn_cli.cli.common import (
    BatchOpt, DataDirOpt, DataFileOpt, EpochsOpt, FewShotOpt, JsonOpt, LabelFieldOpt, LrOpt, MaxLenOpt, MaxStepsOpt,
    MaxTrainOpt, ModelOpt, OutOpt, OverwriteOpt, PatienceOpt, PrecisionOpt, ProblemOpt, RegistryOpt, SeedOpt,
    TaskOpt, TextFieldsOpt, console, handle_errors, print_json, split_csv,
)

#: LoRA default lr (not in the paper, which trains Pfeiffer adapters at 3e-4): 5e-4, as LoRA's GLUE setup
SOURCE_LR = {"lora": 5e-4, "bottleneck": 3e-4}


def _data(task, data_dir, data_file, text_fields, label_field, problem_type, max_train_samples, few_shot):
    from scalearn_cli.experiment import DataOptions

    return DataOptions(
        task=task, data_dir=data_dir, data_file=data_file, text_fields=split_csv(text_fields),
        label_field=label_field, problem_type=problem_type, max_train_samples=max_train_samples, few_shot=few_shot,
    )


def _config(epochs, lr, batch_size, max_length, seed, patience, max_steps, precision):
    from scalearn_cli.train import TrainConfig

    return TrainConfig(
        epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length, seed=seed,
        patience=patience or None, max_steps=max_steps, precision=precision,
    )


def _report(meta: dict, out: Path, as_json: bool) -> None:
    summary = {
        "out": str(out), "kind": meta["kind"], "task": meta["task"]["name"], "adapter": meta["adapter"],
        "metrics": meta["metrics"], "best_epoch": meta["training"]["best_epoch"],
        "examples_per_second": meta["training"]["examples_per_second"],
    }
    if as_json:
        print_json(summary)
        return
    from scalearn_cli.cli.tables import metrics_table

    console.print(metrics_table(f"{meta['task']['name']}: {out}", meta["metrics"]))
    what = "transfer parameters (ω / fusion; head excluded)" if meta["kind"] == "composition" else "adapter parameters"
    console.print(f"{meta['adapter']['parameters']:,} trained {what}; saved to [bold]{out}[/]")


def register(app: typer.Typer) -> None:
    """Mount the training and evaluation commands on the root app."""

    @app.command("train-source")
    @handle_errors
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
        lora_r: Annotated[int, typer.Option("--lora-r", help="LoRA rank.")] = 8,
        lora_alpha: Annotated[int, typer.Option("--lora-alpha", help="LoRA alpha (scaling = alpha / r).")] = 16,
        lora_targets: Annotated[str, typer.Option("--lora-targets", help="Comma-separated module names.")] = "query,value",
        reduction_factor: Annotated[int, typer.Option("--reduction-factor", help="Bottleneck: hidden / size.")] = 16,
        pooling: Annotated[str, typer.Option(
            help="How the head reads the sequence: first (token, the paper's) or mean (over tokens, as sentence-transformers pool).")
        ] = "first",
        epochs: EpochsOpt = 30,
        lr: LrOpt = None,
        batch_size: BatchOpt = 32,
        max_length: MaxLenOpt = 128,
        seed: SeedOpt = 42,
        patience: PatienceOpt = 5,
        max_train_samples: MaxTrainOpt = None,
        few_shot: FewShotOpt = None,
        max_steps: MaxStepsOpt = None,
        precision: PrecisionOpt = "no",
        overwrite: OverwriteOpt = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Train a source adapter (LoRA or bottleneck) and its head on a task, on a frozen encoder."""
        from scalearn_cli.cli.progress import RichProgress
        from scalearn_cli.sources import bottleneck, lora
        from scalearn_cli.sources.pipeline import train_source as run

        settings = (
            lora.LoraSettings(r=lora_r, alpha=lora_alpha, target_modules=split_csv(lora_targets))
            if adapter == "lora"
            else bottleneck.BottleneckSettings(reduction_factor=reduction_factor)
        )
        config = _config(epochs, lr or SOURCE_LR.get(adapter, 3e-4), batch_size, max_length, seed, patience,
                         max_steps, precision)
        data = _data(task, data_dir, data_file, text_fields, label_field, problem_type, max_train_samples, few_shot)
        meta = run(data, out, adapter, settings, config, model, overwrite, RichProgress(f"{adapter} {task}"),
                   pooling=pooling)
        _report(meta, out, as_json)

    @app.command("transfer")
    @handle_errors
    def transfer(
        task: TaskOpt,
        out: OutOpt,
        source: Annotated[
            Optional[list[str]],
            typer.Option("--source", "-s", help="A source adapter folder or registry id org/name[@rev]; repeat."),
        ] = None,  # None, not required: "no sources" gets the library's one-line error
        variant: Annotated[
            str, typer.Option(help="scalearn, scalearn-uniform, scalearn++ or scalearn-uniform++ (--method scalearn).")
        ] = "scalearn",
        method: Annotated[str, typer.Option(help="scalearn, adapterfusion or average (fixed 1/N, head only).")] = "scalearn",
        sparsity: Annotated[float, typer.Option(help="Group-lasso strength λ on per-source ω (helps `prune`).")] = 0.0,
        pooling: Annotated[Optional[str], typer.Option(
            help="Head pooling, first or mean (default: the one the sources' heads were trained with).")
        ] = None,
        registry: RegistryOpt = None,
        data_dir: DataDirOpt = None,
        data_file: DataFileOpt = None,
        text_fields: TextFieldsOpt = None,
        label_field: LabelFieldOpt = "label",
        problem_type: ProblemOpt = "classification",
        epochs: EpochsOpt = 30,
        lr: LrOpt = None,
        batch_size: BatchOpt = 32,
        max_length: MaxLenOpt = 128,
        seed: SeedOpt = 42,
        patience: PatienceOpt = None,
        max_train_samples: MaxTrainOpt = None,
        few_shot: FewShotOpt = None,
        max_steps: MaxStepsOpt = None,
        precision: PrecisionOpt = "no",
        model: ModelOpt = None,
        overwrite: OverwriteOpt = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Compose source adapters for a target task: learn only ω (or a baseline combiner) and a new head."""
        from scalearn_cli.cli.progress import RichProgress
        from scalearn_cli.errors import UsageError
        from scalearn_cli.transfer import DEFAULT_LR, DEFAULT_PATIENCE
        from scalearn_cli.transfer import transfer as run

        if model is not None:
            raise UsageError("transfer takes the base model from its sources; drop --model")
        if method not in DEFAULT_LR:
            raise UsageError(f"--method must be one of {', '.join(DEFAULT_LR)}, got '{method}'")
        config = _config(epochs, lr or DEFAULT_LR[method], batch_size, max_length, seed,
                         DEFAULT_PATIENCE[method] if patience is None else patience, max_steps, precision)
        data = _data(task, data_dir, data_file, text_fields, label_field, problem_type, max_train_samples, few_shot)
        meta = run(source or [], data, out, method, variant, config, registry, overwrite, sparsity,
                   RichProgress(f"{method} {task}"), pooling=pooling)
        _report(meta, out, as_json)

    @app.command("eval")
    @handle_errors
    def evaluate(
        adapter_dir: Annotated[Path, typer.Argument(help="A source or composition folder.")],
        task: Annotated[Optional[str], typer.Option("--task", "-t", help="Task (default: the adapter's own).")] = None,
        split: Annotated[str, typer.Option(help="test (the official validation split) or dev (10% of train).")] = "test",
        data_dir: DataDirOpt = None,
        data_file: DataFileOpt = None,
        batch_size: BatchOpt = 64,
        max_length: Annotated[Optional[int], typer.Option("--max-length", help="(default: as trained)")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Score an adapter or composition on a task with the paper's metrics."""
        from scalearn_cli.evaluation import evaluate_folder
        from scalearn_cli.experiment import DataOptions

        data = None
        if task or data_dir or data_file:
            data = DataOptions(task=task or "", data_dir=data_dir, data_file=data_file)
        result = evaluate_folder(adapter_dir, data, split, batch_size, max_length)
        if as_json:
            print_json(result)
            return
        from scalearn_cli.cli.tables import metrics_table

        console.print(metrics_table(f"{result['task']} ({result['examples']} examples)", {split: result["metrics"]}))
