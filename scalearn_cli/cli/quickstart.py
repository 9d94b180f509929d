"""``scalearn quickstart``: the whole workflow offline on the embedded defaults, in a few minutes on a CPU.

Writes the synthetic demo tasks, puts three frozen sources on a shelf (the target's few-shot LoRA, a zoo LoRA
pulled from the local registry, a LoRA saved by plain PEFT), composes them for the few-shot target with
ScaLearn and the baselines, shows the learned ω and the parity of a folded export, and prints what to run next.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated, Any

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
    """Run the offline demo: build a shelf of sources, compose them for a few-shot target, compare, export."""
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.quickstart import run_quickstart

    result = run_quickstart(workdir, epochs=epochs, few_shot=few_shot, registry=registry, log=_log(as_json))
    if as_json:
        print_json(result)
        return
    render(result)


def render(result: dict[str, Any]) -> None:
    """The closing summary: shelf, comparison table, ω shares, export parity, next commands (one 80-column screen)."""
    from rich.table import Table

    workdir, target = Path(result["workdir"]), result["target"]
    say = lambda text: console.print(text, highlight=False, soft_wrap=True)  # noqa: E731 (lines fit 80 columns)
    say(f"[bold]shelf[/]: frozen sources ({target}'s own full-data adapter is not on it)")
    for i, s in enumerate(result["sources"]):
        score = "" if s["score"] is None else f" ({s['score']:.1f} {s['metric'][:3]} on it)"
        say(f"  #{i} {s['task']}{score}: {s['origin']}\n     {_short(s['ref'], workdir)}")
    say(f"[bold]few-shot transfer to {target}[/] ({result['few_shot']} examples; test: held-out split)")
    table = Table()
    for col in ("method", "N", "params", "test"):
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    for row in result["rows"]:
        table.add_row(row["method"], str(row["n_sources"]), f"{row['parameters']:,}",
                      f"{row['score']:.1f} {row['metric'][:3]}")
    console.print(table)
    say(f"params: trained besides the {result['rows'][0]['head_parameters']:,}-parameter head every row trains")
    for note in result.get("notes", ()):
        say(note)
    omega = result["omega"]
    say(f"ω of {omega['variant']}, share of Σ|ω| (scalearn inspect {_short(omega['composition'], workdir)}):")
    for s in omega["sources"]:
        say(f"  #{s['index']} {s['task']:<16} {100 * s['share']:5.1f}%   mean ω {s['mean_omega']:.3f}")
    learned = omega.get("learned")
    if learned and not omega.get("warning"):  # whether the shares were learned at all (as ``scalearn inspect``)
        say(f"  kept epoch {learned['kept_epoch']} of {learned['epochs_run']} ({learned['steps']} steps), ω "
            f"{100 * learned['mean_relative_change']:.1f}% from its start (2/N) on average")
    if omega.get("warning"):
        say("\n".join(textwrap.wrap(f"note: {omega['warning']}", 76, initial_indent="  ", subsequent_indent="    ")))
    say(f"  heatmap: {_short(omega['plot'], workdir)}" if omega["plot"]
        else "  (pip install matplotlib, then scalearn inspect ... --plot omega.png)")
    export = result["export"]
    verdict = {True: "ok", False: "FAILED", None: "approximate"}[export["ok"]]
    say(f"export --format merged, verify: max |Δlogit| = {export['max_abs_diff']:.2g} on {export['samples']} "
        f"examples, {verdict}\n  -> {_short(export['out'], workdir)}")
    say("[bold]next[/]:")
    for line in result["next"]:  # commands wrapped with shell continuations; "#" lines are short
        say("  " + (line if line.startswith("#") else " \\\n      ".join(_wrap(line, 72))))


def _wrap(command: str, width: int) -> list[str]:
    """``command`` in lines of at most ``width`` characters, never splitting an option from its value."""
    words, groups = command.split(), []
    while words:
        take = 2 if words[0].startswith("-") and len(words) > 1 and not words[1].startswith("-") else 1
        groups.append(" ".join(words[:take]))
        words = words[take:]
    lines = [groups[0]]
    for group in groups[1:]:
        if len(lines[-1]) + 1 + len(group) > width:
            lines.append(group)
        else:
            lines[-1] += " " + group
    return lines


def _short(path: str, workdir: Path) -> str:
    """``path`` under ``workdir`` as ``workdir/...`` (as the user typed it); ``org/name@commit`` with 12 hex digits."""
    if "@" in path and not Path(path).exists():
        name, _, revision = path.rpartition("@")
        return f"{name}@{revision[:12]}"
    try:
        return str(workdir / Path(path).resolve().relative_to(workdir.resolve()))
    except ValueError:
        return path


def _log(quiet: bool):
    def log(message: str) -> None:
        if not quiet:
            err_console.print(f"[bold cyan]>[/] {message}", highlight=False)

    return log
