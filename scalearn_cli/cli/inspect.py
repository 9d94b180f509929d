"""``scalearn inspect``: ω per site and source of a composition, as a table, JSON or a heatmap."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scalearn_cli.cli.common import CompositionArg, JsonOpt, console, print_json, shown


def inspect(
    composition: CompositionArg,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a heatmap (sites × sources) to FILE.png.")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Show ω per site and source, and each source's share of Σ|ω|."""
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.inspection import omega_table
    from scalearn_cli.inspection import plot as draw

    table = omega_table(composition)
    if plot is not None:
        # lazy: keeps torch out of `scalearn --help`
        from scalearn_cli.artifacts.outputs import check_out_file

        table["plot"] = str(draw(table, check_out_file(plot, "--plot", [composition])))
    if as_json:
        print_json(table)
        return
    _print_table(table)


def _print_table(table: dict) -> None:
    from rich.table import Table

    sources = Table(title=f"{table['variant'] or table['method']} on {table['task']}: sources", title_justify="left")
    for name in ("#", "source", "task", "share"):
        sources.add_column(name, justify="right" if name in ("#", "share") else "left")
    for s in table["sources"]:
        sources.add_row(str(s["index"]), shown(s["ref"]), shown(s["task"]), f"{100 * s['share']:.1f}%")
    console.print(sources)
    console.print(f"share = {table['share_of']}")
    rows = Table(title="ω per site" + (" (mean / L2 norm)" if table["vector"] else ""), title_justify="left")
    rows.add_column("site", no_wrap=True)
    for s in table["sources"]:
        rows.add_column(f"#{s['index']}", justify="right")
    for row in table["rows"]:
        cells = [f"{c['mean']:.3f} / {c['norm']:.2f}" if "mean" in c else f"{c['value']:.3f}" for c in row["omega"]]
        rows.add_row(row["key"].removeprefix("encoder."), *cells)
    console.print(rows)
    if table.get("learned"):
        # lazy: keeps torch out of `scalearn --help`
        from scalearn_cli.inspection import learned_line

        console.print(learned_line(table["learned"]))
    if table.get("warning"):
        console.print(f"[bold yellow]Warning:[/] {table['warning']}")
    if "plot" in table:
        console.print(f"heatmap written to [bold]{table['plot']}[/]")
    if "shelf" in table:
        shelf = table["shelf"]
        console.print(f"shelf: {', '.join(shelf['shelves'])}: {len(shelf['from_shelf'])} sources "
                      f"({len(shelf['skipped'])} skipped)")
    if "selection" in table:
        chosen = table["selection"]
        console.print(f"selection: {chosen['k']} of {chosen['n_candidates']} by {chosen['criterion']}; "
                      f"λ {chosen['sparsity']:g}, cost {chosen['steps']} steps, {chosen['seconds']:.1f} s")
        top = sorted(chosen["scores"], key=lambda s: s["rank"])[:chosen["k"]]
        console.print("  " + ", ".join(f"{s['ref']} ({100 * s['share']:.1f}%)" for s in top))
