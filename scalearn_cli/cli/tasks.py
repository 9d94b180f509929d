"""``scalearn tasks``: the built-in task table."""

from __future__ import annotations

from scalearn_cli.cli.common import JsonOpt, console, print_json


def tasks(as_json: JsonOpt = False) -> None:
    """List the known tasks: dataset, text fields, labels, problem type and the paper's metrics."""
    from rich.table import Table

    # lazy: `scalearn --help` needs no task table
    from scalearn_cli.shelf_tasks import SHELF_NOTES, family
    from scalearn_cli.tasks import TASKS, task_to_dict

    if as_json:
        print_json([{**task_to_dict(s), "family": family(s.name), "notes": SHELF_NOTES.get(s.name)}
                    for s in TASKS.values()])
        return
    specs = sorted(TASKS.values(), key=lambda s: (family(s.name) == "other", family(s.name)))  # stable within one
    table = Table(title="tasks by family (`--task custom` for your own CSV/JSONL)", title_justify="left")
    for col in ("family", "task", "dataset", "text", "labels", "problem", "metrics"):
        table.add_column(col)
    last = None
    for spec in specs:
        fam = family(spec.name)
        labels = ", ".join(spec.label_names) if spec.label_names else "float"
        table.add_row(
            fam if fam != last else "",
            spec.name,
            f"{spec.hub_id or '(local)'}{'/' + spec.hub_config if spec.hub_config else ''}",
            " | ".join("+".join(seg) for seg in spec.text_fields),
            labels if len(labels) <= 60 else f"{len(spec.label_names or ())} labels: {labels[:50]}…",
            spec.problem_type,
            ", ".join(spec.metrics),
            end_section=False,
        )
        last = fam
    console.print(table)
    console.print("the shelf's files differ from the Hub dataset named for: "
                  + "; ".join(f"{name} ({note})" for name, note in SHELF_NOTES.items()))


