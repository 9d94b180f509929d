"""Rich tables shared by the commands."""

from __future__ import annotations

from rich.table import Table


def metrics_table(title: str, metrics: dict[str, dict[str, float]]) -> Table:
    """split -> metric -> value as a table (loss last)."""
    names = sorted({n for values in metrics.values() for n in values}, key=lambda n: (n == "loss", n))
    table = Table(title=title, title_justify="left")
    table.add_column("split")
    for name in names:
        table.add_column(name, justify="right")
    for split, values in metrics.items():
        table.add_row(split, *(f"{values[n]:.2f}" if n in values else "-" for n in names))
    return table
