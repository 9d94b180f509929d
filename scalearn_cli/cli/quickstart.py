"""``scalearn quickstart``: the whole workflow offline on the embedded defaults, in a few minutes on a CPU.

Writes the synthetic demo tasks, builds their LoRA sources through the zoo into the local registry (skipping
what is already published), composes them with ScaLearn for a small-data target, evaluates everything, and
prints one results table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scalearn_cli.cli.common import JsonOpt, RegistryOpt, console, err_console, print_json


def quickstart(
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the demo data and outputs go.")] = Path(
        "scalearn-quickstart"
    ),
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs for the few-shot adapter and the transfers.")] = 10,
    few_shot: Annotated[int, typer.Option("--few-shot", help="Target training examples for the transfer.")] = 64,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the offline demo: train sources, share them, compose them with ScaLearn, evaluate."""
    from scalearn_cli.quickstart import run_quickstart

    rows = run_quickstart(workdir, epochs=epochs, few_shot=few_shot, registry=registry, log=_log(as_json))
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title="scalearn quickstart (test = the held-out validation split)", title_justify="left")
    for col in ("target", "method", "N", "train ex.", "params", "test"):
        table.add_column(col, justify="left" if col in ("target", "method") else "right", no_wrap=True)
    for row in rows:
        params = "-" if row["parameters"] is None else f"{row['parameters']:,}"
        examples = "full" if row["train_examples"] is None else str(row["train_examples"])
        table.add_row(row["task"], row["method"], str(row["n_sources"]), examples, params,
                      f"{row['score']:.1f} {row['metric'][:3]}")
    console.print(table)
    console.print(f"outputs in [bold]{workdir}[/]; try `scalearn eval {workdir}/transfer/scalearn++`")


def _log(quiet: bool):
    def log(message: str) -> None:
        if not quiet:
            err_console.print(f"[bold cyan]>[/] {message}", highlight=False)

    return log


