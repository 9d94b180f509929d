"""Render the library's training progress callbacks with rich (on stderr, so --json stdout stays clean)."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from scalearn_cli.cli.common import err_console
from scalearn_cli.train import EpochLog
from scalearn_cli.train import Progress as ProgressCallback


class RichProgress(ProgressCallback):
    """A progress bar with loss and examples/s, and one line per epoch with the dev loss and main metrics."""

    def __init__(self, label: str, quiet: bool = False) -> None:
        self.label = label
        self.quiet = quiet
        self.bar: Progress | None = None
        self.task = None

    def start(self, total_steps: int) -> None:
        if self.quiet:
            return
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  {task.fields[eps]:.1f} ex/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        )
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=total_steps, loss=float("nan"), eps=0.0)

    def step(self, loss: float, examples_per_second: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, loss=loss, eps=examples_per_second)

    def epoch_end(self, log: EpochLog) -> None:
        if self.quiet:
            return
        shown = "  ".join(f"{k} {v:.2f}" for k, v in log.dev_metrics.items())
        err_console.print(
            f"  epoch {log.epoch}: train loss {log.train_loss:.4f}  dev loss {log.dev_loss:.4f}  {shown}",
            highlight=False,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
