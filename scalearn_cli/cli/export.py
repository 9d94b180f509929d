"""``scalearn export`` and ``scalearn verify``: fold a composition into one adapter (or the base weights), and check
the fold's logits against the composition."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scalearn_cli.cli.common import (
    CompositionArg, DataDirOpt, DataFileOpt, EndpointOpt, JsonOpt, OutOpt, OverwriteOpt, RegistryOpt, console, print_json,
    resolver,
)


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
    # lazy: keeps torch out of `scalearn --help`
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
    # lazy: keeps torch out of `scalearn --help`
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
