"""What every command shares: option types, error mapping (one table), output helpers."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

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
    str, typer.Option("--problem-type", help="--task custom: classification or regression.")
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
    Optional[int], typer.Option("--patience", help="Early stopping on dev loss after N bad epochs; 0 disables.")
]
MaxTrainOpt = Annotated[
    Optional[int], typer.Option("--max-train-samples", help="Cap the training split (seeded sample).")
]
FewShotOpt = Annotated[Optional[int], typer.Option("--few-shot", help="Train on K examples only (seeded).")]
MaxStepsOpt = Annotated[Optional[int], typer.Option("--max-steps", help="Stop after N steps (overrides --epochs).")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="no, fp16 or bf16 (GPU only; CPU runs fp32).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (written atomically).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output folder.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")]
RegistryOpt = Annotated[
    Optional[str],
    typer.Option("--registry", help="'local' (default), 'local:/path' or 'hub' (HF_ENDPOINT).", envvar="SCALEARN_REGISTRY_KIND"),
]


def debug() -> bool:
    return os.environ.get("SCALEARN_DEBUG", "") not in ("", "0")


def handle_errors(func: F) -> F:
    """Map domain and library errors to one line on stderr and an exit code; tracebacks only in debug mode."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from scalearn_cli.errors import ScaLearnError

        try:
            return func(*args, **kwargs)
        except ScaLearnError as exc:
            if debug():
                raise
            err_console.print(f"[bold red]Error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]Interrupted:[/] nothing was written (outputs are staged, then renamed).")
            raise typer.Exit(130) from None
        except (OSError, ValueError, RuntimeError) as exc:  # library errors we did not anticipate
            if debug():
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            err_console.print(
                f"[bold red]Error:[/] {type(exc).__name__}: {first} (set SCALEARN_DEBUG=1 for the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    """JSON on stdout (sorted keys), nothing else there."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def split_csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()
