"""``scalearn tasks``: the built-in task table."""

from __future__ import annotations

from scalearn_cli.cli.common import JsonOpt, console, print_json


def tasks(as_json: JsonOpt = False) -> None:
    """List the known tasks: dataset, text fields, labels, problem type and the paper's metrics."""
    from rich.table import Table

    from scalearn_cli.tasks import TASKS, task_to_dict

    rows = [task_to_dict(spec) for spec in TASKS.values()]
    if as_json:
        print_json(rows)
        return
    table = Table(title="tasks (`--task custom` for your own CSV/JSONL)", title_justify="left")
    for col in ("task", "dataset", "text", "labels", "problem", "metrics"):
        table.add_column(col)
    for spec in TASKS.values():
        table.add_row(
            spec.name,
            f"{spec.hub_id or '(local)'}{'/' + spec.hub_config if spec.hub_config else ''}",
            " | ".join("+".join(seg) for seg in spec.text_fields),
            ", ".join(spec.label_names) if spec.label_names else "float",
            spec.problem_type,
            ", ".join(spec.metrics),
        )
    console.print(table)


