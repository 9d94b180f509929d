"""``scalearn eval``: score a source, composition or export on a task with the paper's metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scalearn_cli.cli.common import (
    BatchOpt, DataDirOpt, DataFileOpt, EndpointOpt, JsonOpt, RegistryOpt, console, print_json, resolver,
)
from scalearn_cli.cli.tables import metrics_table


def evaluate(
    adapter_dir: Annotated[Path, typer.Argument(help="A source or composition folder.")],
    task: Annotated[Optional[str], typer.Option(
        "--task", "-t", help="Task (default: the adapter's own); another task must have the same labels.")] = None,
    split: Annotated[str, typer.Option(help="test (the official validation split) or dev (10% of train).")] = "test",
    data_dir: DataDirOpt = None,
    data_file: DataFileOpt = None,
    batch_size: BatchOpt = 64,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="(default: as trained)")] = None,
    registry: RegistryOpt = None,
    endpoint: EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score an adapter or composition on a task with the paper's metrics."""
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.stages.common import DataOptions
    from scalearn_cli.stages.evaluate import evaluate_folder

    data = None
    if task or data_dir or data_file:
        data = DataOptions(task=task or "", data_dir=data_dir, data_file=data_file)
    result = evaluate_folder(adapter_dir, data, split, batch_size, max_length, resolver(registry, endpoint))
    if as_json:
        print_json(result)
        return
    other = f", adapter trained on {result['trained_on']}" if result["task"] != result["trained_on"] else ""
    console.print(metrics_table(f"{result['task']} ({result['examples']} examples{other})", {split: result["metrics"]}))
