"""`scalearn push`, `scalearn pull`, `scalearn list`: share adapters through a registry (local or Hub).

Each command parses its options, makes one library call and prints the result; errors are ScaLearnErrors
that the root app turns into one line and an exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from scalearn_cli.cli.common import EndpointOpt, JsonOpt, RegistryOpt, console, print_json, shown

if TYPE_CHECKING:
    from scalearn_cli.registry import RepoEntry

RepoIdArg = Annotated[str, typer.Argument(help="Repo id, e.g. my-org/rte-lora.", show_default=False)]

_METRIC_SPLITS = ("test", "validation", "eval", "dev")


def push(
    folder: Annotated[Path, typer.Argument(help="Adapter folder written by scalearn.", show_default=False)],
    repo_id: RepoIdArg,
    revision: Annotated[str | None, typer.Option("--revision", help="Branch to push to (default: main).")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Also tag the pushed commit.")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the Hub repo as private.")] = False,
    commit_message: Annotated[str | None, typer.Option("--commit-message", help="Commit message.")] = None,
    registry: RegistryOpt = None,
    endpoint: EndpointOpt = None,
) -> None:
    """Push an adapter folder; prints REPO_ID@COMMIT."""
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.registry import get_registry

    result = get_registry(registry, endpoint=endpoint).push(
        folder, repo_id, revision=revision, tag=tag, private=private, commit_message=commit_message
    )
    typer.echo(str(result))


def pull(
    ref: Annotated[str, typer.Argument(metavar="REPO_ID[@REVISION]", help="What to pull.", show_default=False)],
    local_dir: Annotated[
        Path | None, typer.Option("--local-dir", help="Copy the files here (default: the registry's snapshot).")
    ] = None,
    registry: RegistryOpt = None,
    endpoint: EndpointOpt = None,
) -> None:
    """Pull and verify an adapter; prints its local path."""
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.registry import get_registry, parse_ref

    repo_id, revision = parse_ref(ref)
    typer.echo(str(get_registry(registry, endpoint=endpoint).pull(repo_id, revision, local_dir=local_dir)))


def list_adapters(
    registry: RegistryOpt = None,
    endpoint: EndpointOpt = None,
    filter_text: Annotated[
        str | None, typer.Option("--filter", help="Keep repos whose id, task, base model or kind contain this.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List adapters with task, base model, adapter kind and metrics."""
    # lazy: keeps torch out of `scalearn --help`
    from scalearn_cli.registry import get_registry

    entries = get_registry(registry, endpoint=endpoint).list(filter_text)
    if as_json:
        print_json([{"repo_id": e.repo_id, "commit": e.commit, "metadata": e.metadata} for e in entries])
        return
    from rich.table import Table

    table = Table("Repo", "Commit", "Kind", "Task", "Base model", "Adapter", "Metrics")
    for entry in entries:
        table.add_row(*(shown(cell) for cell in _row(entry)))  # metadata of others' repos: text, escaped
    console.print(table)


def _row(entry: RepoEntry) -> list[str]:
    meta = entry.metadata
    return [
        entry.repo_id,
        entry.commit[:10],
        str(meta.get("kind", "")),
        str(_get(meta, "task", "name")),
        str(_get(meta, "base_model", "id")),
        str(_get(meta, "adapter", "kind")),
        _main_metrics(meta.get("metrics")),
    ]


def _get(meta: dict[str, Any], key: str, sub: str) -> Any:
    value = meta.get(key)
    return value.get(sub, "") if isinstance(value, dict) else (value or "")


def _main_metrics(metrics: Any) -> str:
    """The metrics of the most telling split (test, then validation...), as ``split: name=value ...``."""
    if not isinstance(metrics, dict) or not metrics:
        return ""
    split = next((s for s in _METRIC_SPLITS if isinstance(metrics.get(s), dict)), next(iter(sorted(metrics))))
    values = metrics[split]
    if not isinstance(values, dict):
        return f"{split}={values}"
    shown = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(values.items()))
    return f"{split}: {shown}"
