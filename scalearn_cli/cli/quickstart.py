"""``scalearn quickstart``: the zoo's shipped shelf composed for a few-shot target, offline, in minutes on a CPU.

Puts every LoRA source the zoo ships on a shelf (by id and commit, sha256-verified; the target's own left out),
composes it for the cr reviews that ship beside the catalog with the average and ScaLearn++, shows which sources
ω leaned on (by source and by family) and how far it moved, checks the parity of a folded export, and prints what
to run next.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from scalearn_cli.cli.common import JsonOpt, RegistryOpt, console, err_console, print_json

Say = Callable[[str], None]
TOP = 6  # sources listed by ω share (all of them in --json)


def quickstart(
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the outputs go.")] = Path("scalearn-quickstart"),
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs of each composition.")] = 10,
    few_shot: Annotated[Optional[int], typer.Option(
        "--few-shot", help="Use K of the target's shipped train rows (default: all of them).")] = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Zoo catalog whose shelf is composed: base model id or catalog name "
                              "(default: embedded MiniLM-L6).")] = None,
    registry: RegistryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the offline demo: compose the zoo's shipped shelf for a few-shot target, show ω, export."""
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.quickstart import run_quickstart

    result = run_quickstart(workdir, epochs=epochs, few_shot=few_shot, model=model, registry=registry,
                            log=_log(as_json))
    if as_json:
        print_json(result)
        return
    render(result)


def render(result: dict[str, Any]) -> None:
    """The closing summary: shelf, comparison table, ω by source and family, export parity, next commands (one
    80-column screen)."""
    workdir, target, sources = Path(result["workdir"]), result["target"], result["sources"]
    say = lambda text: console.print(text, highlight=False, soft_wrap=True)  # noqa: E731 (lines fit 80 columns)
    say(f"[bold]shelf[/]: {len(sources)} shipped LoRA sources (by id and commit, sha256-verified), by family:")
    families: dict[str, list[str]] = {}
    for s in sources:
        families.setdefault(s["family"], []).append(s["task"])
    _wrapped(say, "; ".join(f"{f} {', '.join(tasks)}" for f, tasks in families.items()))
    rows = [r for r in result["rows"] if r["combiner"]]
    say(f"[bold]transfer to {target}[/] ({rows[0]['train_examples']} train rows, {rows[0]['dev_examples']} dev; "
        f"test: {rows[0]['test_examples']} rows)")
    _table(result["rows"])
    say(f"params: trained besides the {rows[0]['head_parameters']:,}-parameter head each composition trains")
    by = {r["combiner"]: r for r in rows}
    if {"average", "scalearn"} <= set(by):  # the one comparison that says whether learning ω paid off here
        gain, n = by["scalearn"]["score"] - by["average"]["score"], by["scalearn"]["test_examples"]
        say(f"{by['scalearn']['method']} − average: {gain:+.1f} points ({gain * n / 100:+.0f} of {n} test rows, one "
            "seed)")
    for own in (r for r in result["rows"] if not r["combiner"]):
        rows_said = f"all {own['train_examples']:,} of its train rows" if own["train_examples"] else "its train rows"
        _wrapped(say, f"{own['method']}: left off the shelf; trained by the zoo on {rows_said}", indent="")
    _omega(say, result["omega"], workdir, len(sources))
    export = result["export"]
    verdict = {True: "ok", False: "FAILED", None: "approximate"}[export["ok"]]
    say(f"export --format merged, verify: max |Δlogit| = {export['max_abs_diff']:.2g} on {export['samples']} "
        f"examples, {verdict}\n  -> {_short(export['out'], workdir)}")
    say("[bold]next[/]:")
    for line in result["next"]:  # commands wrapped with shell continuations; "#" lines are short
        say("  " + (line if line.startswith("#") else " \\\n      ".join(_wrap(line, 72))))


def _table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table()
    for col in ("method", "N", "kept", "params", "test"):
        table.add_column(col, justify="left" if col == "method" else "right", no_wrap=True)
    for row in rows:
        kept = f"{row['kept_epoch']}/{row['epochs_run']}" if row.get("kept_epoch") else "-"
        params = "-" if row["parameters"] is None else f"{row['parameters']:,}"
        table.add_row(row["method"], str(row["n_sources"]), kept, params, f"{row['score']:.1f} {row['metric'][:3]}")
    console.print(table)


def _omega(say: Say, omega: dict[str, Any], workdir: Path, n: int) -> None:
    """The top sources by ω share with their family, the families' mean shares, and whether ω was learned."""
    say(f"ω of {omega['variant']}: share of Σ|ω| (uniform {100 / n:.1f}%), top {min(TOP, n)} of {n}\n"
        f"  (scalearn inspect {_short(omega['composition'], workdir)}):")
    top = omega["sources"][:TOP]
    width = max([20, *(len(s["task"]) for s in top)])  # columns line up under the longest task name
    for s in top:
        say(f"  {s['task']:<{width}} {s['family']:<14} {100 * s['share']:5.1f}%   mean ω {s['mean_omega']:.3f}")
    _wrapped(say, "by family, mean share per source: " + ", ".join(
        f"{f['family']} {100 * f['mean_share']:.1f}% ({f['sources']})" for f in omega["families"]))
    learned = omega.get("learned")
    if learned:  # the transfer report's figures (as ``scalearn inspect``)
        _wrapped(say, f"kept epoch {learned['kept_epoch']} of {learned['epochs_run']} ({learned['steps']} steps in "
                      f"all); ω moved {100 * learned['mean_relative_change']:.1f}% from its start (2/N) on average; "
                      f"source shares {100 * learned['smallest_share']:.1f}–{100 * learned['largest_share']:.1f}%")
    for note in (omega.get("warning"), omega.get("weighed")):
        if note:
            _wrapped(say, f"note: {note}")
    say(f"  heatmap: {_short(omega['plot'], workdir)}" if omega["plot"]
        else "  (pip install matplotlib, then scalearn inspect ... --plot omega.png)")


def _wrapped(say: Say, text: str, indent: str = "  ") -> None:
    say("\n".join(textwrap.wrap(text, 78 - len(indent), initial_indent=indent, subsequent_indent=indent + "  ")))


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
