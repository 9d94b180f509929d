"""``scalearn export``, ``verify``, ``inspect`` and ``prune``: what to do with a trained composition."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scalearn_cli.cli.common import (
    DataDirOpt, DataFileOpt, EndpointOpt, JsonOpt, OutOpt, OverwriteOpt, RegistryOpt, console, print_json, resolver,
    shown,
)

CompositionArg = Annotated[Path, typer.Argument(help="A composition folder written by `scalearn transfer`.")]


def export(
    composition: CompositionArg,
    out: OutOpt,
    format: Annotated[
        str, typer.Option("--format", "-f", help="peft-lora (exact, rank Σr), merged (into the base weights) "
                                                 "or svd (rank --rank, approximate).")
    ] = "peft-lora",
    rank: Annotated[Optional[int], typer.Option("--rank", "-r", help="--format svd: rank per site.")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="float32, float16 or bfloat16 (folding runs in fp32).")]
    = "float32",
    overwrite: OverwriteOpt = False,
    registry: RegistryOpt = None,
    endpoint: EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fold a composition of LoRA sources into one PEFT LoRA, the base weights, or a rank-R LoRA."""
    from scalearn_cli.export import export as run

    result = run(composition, out, format, rank, dtype, overwrite, resolver(registry, endpoint))
    if as_json:
        print_json(result)
        return
    console.print(f"exported [bold]{composition}[/] as {result['format']} ({result['dtype']}) to [bold]{out}[/]: "
                  f"{result['sites']} sites, rank {result['rank']} (sources Σr = {result['source_rank']})")
    if "svd_error" in result:
        console.print(f"relative Frobenius error of the rank-{rank} fit: {result['svd_error']['overall']:.4g} "
                      f"overall, worst site {max(result['svd_error']['per_site'].values()):.4g}")
    console.print(f"check it with: scalearn verify {out} --against {composition}")


def verify(
    export_dir: Annotated[Path, typer.Argument(help="A folder written by `scalearn export`.")],
    against: Annotated[Path, typer.Option("--against", help="The composition it was exported from.")],
    data_dir: DataDirOpt = None,
    data_file: DataFileOpt = None,
    samples: Annotated[int, typer.Option("--samples", "-n", help="Examples in the parity batch.")] = 64,
    registry: RegistryOpt = None,
    endpoint: EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Logit parity of an export against its composition (exit 1 if an exact export is off by > 1e-5)."""
    from scalearn_cli.export import verify as run

    result = run(export_dir, against, samples, data_dir, data_file, resolver(registry, endpoint))
    if as_json:
        print_json(result)
    else:
        verdict = {True: "[green]ok[/]", False: "[bold red]FAILED[/]", None: "approximate export, no tolerance"}
        console.print(f"max |Δlogit| = {result['max_abs_diff']:.3g} over {result['samples']} samples "
                      f"({result['data']}); {verdict[result['ok']]}")
        if not result["same_composition"]:
            console.print("[yellow]note:[/] the export records a different composition than --against")
    if result["ok"] is False:
        raise typer.Exit(1)


def inspect(
    composition: CompositionArg,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a heatmap (sites × sources) to FILE.png.")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Show ω per site and source, and each source's share of Σ|ω|."""
    from scalearn_cli.inspection import omega_table
    from scalearn_cli.inspection import plot as draw

    table = omega_table(composition)
    if plot is not None:
        from scalearn_cli.artifacts.outputs import check_out_file

        table["plot"] = str(draw(table, check_out_file(plot, "--plot", [composition])))
    if as_json:
        print_json(table)
        return
    _print_table(table)


def prune(
    composition: CompositionArg,
    out: OutOpt,
    keep: Annotated[Optional[int], typer.Option("--keep", "-k", help="Keep the K sources with most ω.")] = None,
    threshold: Annotated[
        Optional[float], typer.Option("--threshold", help="Keep sources whose share of Σ|ω| is >= T (0..1).")
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs of the brief re-training.")] = 3,
    overwrite: OverwriteOpt = False,
    registry: RegistryOpt = None,
    endpoint: EndpointOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Drop the sources with the least ω, re-learn ω over the rest briefly, and compare scores."""
    from scalearn_cli.cli.progress import RichProgress
    from scalearn_cli.prune import prune as run

    result = run(composition, out, keep, threshold, epochs, overwrite, RichProgress("prune"),
                 resolver(registry, endpoint))
    if as_json:
        print_json(result)
        return
    score, n = result["score"], result["n_sources"]
    console.print(f"kept {n['after']} of {n['before']} sources: " + ", ".join(s["ref"] for s in result["kept"]))
    console.print(f"{result['metric']}: {_fmt(score['before'])} -> {_fmt(score['after'])} (test)")
    if "lora_rank" in result:
        console.print(f"peft-lora export rank: {result['lora_rank']['before']} -> {result['lora_rank']['after']}")
    console.print(f"saved to [bold]{out}[/]")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


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
