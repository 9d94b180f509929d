"""``scalearn prune``: drop the sources with the least ω and re-learn ω over the rest."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from scalearn_cli.cli.common import (
    CompositionArg, EndpointOpt, JsonOpt, OutOpt, OverwriteOpt, RegistryOpt, console, print_json, resolver,
)


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
    # lazy: keeps torch out of `scalearn --help`
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
