"""What every command shares: option types (one help text each), the resolver they configure, output helpers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from scalearn_cli.errors import printable

console = Console()
err_console = Console(stderr=True)

# --- shared option types (one help text each) -------------------------------------------------------------
TaskOpt = Annotated[str, typer.Option("--task", "-t", help="Task name (see `scalearn tasks`), or 'custom'.")]
DataDirOpt = Annotated[
    Optional[Path],
    typer.Option("--data-dir", help="Folder with {train,validation,test}.{jsonl,csv,tsv} in the task's schema."),
]
DataFileOpt = Annotated[
    Optional[Path], typer.Option("--data-file", help="One CSV/JSONL/TSV file for --task custom (split 80/10/10).")
]
TextFieldsOpt = Annotated[
    Optional[str], typer.Option("--text-fields", help="--task custom: comma-separated text columns (1 or 2).")
]
LabelFieldOpt = Annotated[str, typer.Option("--label-field", help="--task custom: the label column.")]
ProblemOpt = Annotated[
    str, typer.Option("--problem-type", help="--task custom: classification, regression, multi_label_classification "
                                             "(a list of labels per row) or generation (decoder LMs: prompt -> "
                                             "answer).")
]
LabelSeparatorOpt = Annotated[
    Optional[str], typer.Option("--label-separator", help="--task custom, multi-label: the string joining a row's "
                                                          "labels (e.g. ','), when they are not a JSON list.")
]
ThresholdOpt = Annotated[
    Optional[str], typer.Option("--label-threshold", help="Multi-label: predict a label when its probability exceeds "
                                                          "this (default 0.5), or 'tune' (one threshold per label, "
                                                          "on dev).")
]
PromptFieldOpt = Annotated[
    Optional[str], typer.Option("--prompt-field", help="Generation: the column holding each row's prompt.")
]
PromptTemplateOpt = Annotated[
    Optional[str], typer.Option("--prompt-template", help="Generation: the prompt as a template of {column} "
                                                          "placeholders, e.g. 'Q: {question} A:'.")
]
AnswerFieldOpt = Annotated[
    Optional[str], typer.Option("--answer-field", help="Generation: the column holding each row's answer.")
]
ChoiceFieldsOpt = Annotated[
    Optional[str], typer.Option("--choice-fields", help="Generation: comma-separated candidate-answer columns; "
                                                        "scored by log-likelihood (accuracy), else exact match.")
]
ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="Base encoder: hub id or local folder (default: the embedded MiniLM-L6)."),
]
EpochsOpt = Annotated[int, typer.Option("--epochs", help="Maximum training epochs.")]
LrOpt = Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default: the paper's for the method).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Training batch size.")]
MaxLenOpt = Annotated[int, typer.Option("--max-length", help="Maximum tokens per example.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (same seed, same result).")]
PatienceOpt = Annotated[
    Optional[int],
    typer.Option("--patience", help="Early stopping after N epochs without a dev gain (see --select-on); 0 disables."),
]
SelectOnOpt = Annotated[
    str,
    typer.Option("--select-on", help="Keep the epoch with the lowest dev 'loss' or the best dev 'metric' (the task's "
                                     "main one, as the paper's few-shot runs); 'auto': metric with --few-shot (not "
                                     "for generation), loss otherwise. --patience watches the same."),
]
MaxTrainOpt = Annotated[
    Optional[int], typer.Option("--max-train-samples", help="Cap the training split (seeded sample).")
]
MaxDevOpt = Annotated[
    Optional[int], typer.Option("--max-dev-samples", help="Cap the dev split (default: 10% of the train pool).")
]
EvalBatchOpt = Annotated[int, typer.Option("--eval-batch-size", help="Dev/test batch size (length-sorted).")]
GroupByLengthOpt = Annotated[
    bool, typer.Option("--group-by-length", help="Training batches of similar lengths (less padding).")
]
GradCheckpointOpt = Annotated[
    bool, typer.Option("--gradient-checkpointing", help="Recompute activations in backward (less memory, slower).")
]
FewShotOpt = Annotated[Optional[int], typer.Option("--few-shot", help="Train on K examples only (seeded).")]
MaxStepsOpt = Annotated[Optional[int], typer.Option("--max-steps", help="Stop after N steps (overrides --epochs).")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="no, fp16 or bf16 (GPU only; CPU runs fp32).")]
CompositionArg = Annotated[Path, typer.Argument(help="A composition folder written by `scalearn transfer`.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (written atomically).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")]
RegistryOpt = Annotated[
    Optional[str],
    typer.Option("--registry", help="'local' (default), 'local:/path' or 'hub' (HF_ENDPOINT).",
                 envvar="SCALEARN_REGISTRY_KIND"),
]
EndpointOpt = Annotated[
    Optional[str],
    typer.Option("--endpoint", help="Hub endpoint (default: $HF_ENDPOINT or huggingface.co); sources recorded on "
                                    "another endpoint are refused unless named here."),
]


def resolver(registry: str | None, endpoint: str | None):  # -> scalearn_cli.resolve.Resolver
    """The library's one resolver, configured by the shared --registry/--endpoint options."""
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.resolve import Resolver

    return Resolver(registry, endpoint)


def shown(value: Any):  # -> rich.text.Text
    """``value`` as a table cell or line that is never read as markup, its control characters escaped: registry
    metadata, source names and file names come from files others wrote."""
    from rich.text import Text

    return Text(printable(value))


def print_json(data: Any) -> None:
    """JSON on stdout (sorted keys), nothing else there."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def split_csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()
