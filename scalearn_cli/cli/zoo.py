"""``scalearn zoo list`` and ``scalearn zoo build``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from scalearn_cli.cli.common import JsonOpt, RegistryOpt, console, err_console, print_json, split_csv

zoo_app = typer.Typer(help="The catalog of source adapters: list it, build what is missing.", no_args_is_help=True)

ZooModelOpt = Annotated[
    Optional[str], typer.Option("--model", "-m", help="Base model id or catalog name (default: embedded MiniLM-L6).")
]


def zoo_list(
    model: ZooModelOpt = None,
    registry: RegistryOpt = None,
    published: Annotated[bool, typer.Option("--published", help="Sources others published on the Hub "
                                                                "(e.g. AdapterHub's), to pass as --source.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show the catalog's recipes, what the registry holds of them, and their test scores."""
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.registry import get_registry
    from scalearn_cli.zoo.catalog import load_catalog, load_published, status

    if published:
        _published(load_published(model), as_json)
        return

    catalog = load_catalog(model)
    rows = status(catalog, get_registry(registry))
    if as_json:
        print_json({"catalog": str(catalog.path), "base_model": catalog.base_model, "recipes": rows})
        return
    _table(f"zoo {catalog.prefix} ({catalog.base_model})", rows)


def zoo_build(
    model: ZooModelOpt = None,
    tasks: Annotated[Optional[str], typer.Option(
        "--tasks", help="Comma-separated tasks or recipe names (default: all).")] = None,
    adapter: Annotated[Optional[str], typer.Option(
        "--adapter", help="Only recipes of this kind (lora, bottleneck).")] = None,
    registry: RegistryOpt = None,
    data_root: Annotated[
        Optional[Path], typer.Option("--data-root", help="Folder with the recipes' local data (glue/<task>/, snli/).")
    ] = None,
    record: Annotated[bool, typer.Option("--record", help="Write published entries into the catalog file.")] = False,
    baselines: Annotated[bool, typer.Option(
        "--baselines", help="Only compute each recipe's majority baseline and write it into the catalog file "
                            "(train nothing).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train the catalog's missing sources and push them (already-built recipes are skipped: builds resume)."""
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.cli.progress import RichProgress
    from scalearn_cli.registry import get_registry
    from scalearn_cli.zoo.build import build, record_baselines
    from scalearn_cli.zoo.catalog import load_catalog

    catalog = load_catalog(model)
    recipes = catalog.select(list(split_csv(tasks)) or None, adapter)
    if baselines:
        done = record_baselines(catalog, recipes, data_root)
        print_json(done) if as_json else console.print(f"majority baselines of {len(done)} recipes -> {catalog.path}")
        return
    reg = get_registry(registry)
    rows = build(catalog, reg, recipes, data_root, record, log=lambda m: err_console.print(f"[cyan]>[/] {m}"),
                 progress_factory=lambda name: RichProgress(name, quiet=as_json))
    if as_json:
        print_json(rows)
        return
    _table(f"zoo build {catalog.prefix} -> {reg.location}", rows)


def _published(rows: list[dict], as_json: bool) -> None:
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title="published sources: transfer --source SOURCE (needs the Hub)", title_justify="left")
    for col in ("task", "source", "confirmed"):
        table.add_column(col, no_wrap=col == "source")
    for row in rows:
        table.add_row(row["task"] or row["name"], row["source"], "yes" if row["confirmed"] else "no")
    kinds = sorted({f"{r['kind']} ({r['format']}) on {r['base_model']}" for r in rows})
    console.print(table)
    console.print(f"{', '.join(kinds)}; 'no': the id follows the publisher's naming and is pinned when first used")


def _table(title: str, rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("recipe", "task", "family", "adapter", "state", "revision", "test", "majority", "size"):
        table.add_column(col, justify="right" if col in ("test", "majority", "size") else "left")
    for row in rows:
        table.add_row(row["name"], row["task"], row.get("family", ""), row["adapter"], row.get("action", row["state"]),
                      (row["revision"] or "")[:12], _score(row, row["metrics"]), _score(row, row.get("baseline")),
                      f"{row['bytes'] / 1e6:.1f} MB" if row.get("bytes") else "")
    console.print(table)
    shipped = sum(r["state"] == "shipped" for r in rows)
    if shipped:
        console.print(f"{shipped} shipped with scalearn: compose one as --source zoo:TASK (sha256-verified)")


def _score(row: dict, metrics: dict | None) -> str:
    """The main metric of a metrics dict (test score or majority baseline), as the task table names it."""
    if not metrics:
        return ""
    main = row.get("main_metric")
    if main in metrics:
        return f"{metrics[main]:.2f} {main}"
    return ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if k != "loss")
