"""The CLI's face: --help, --version, the tasks table, option help that keeps its defaults, and docs/cli.md
naming every command and long option."""

from __future__ import annotations

from pathlib import Path

from helpers import invoke, ok, ok_json

from scalearn_cli.cli.main import app


def test_help_version_and_tasks() -> None:
    from scalearn_cli import __version__
    from scalearn_cli.tasks import TASKS

    helped = ok(invoke("--help")).stdout
    for command in ("train-source", "transfer", "eval", "tasks", "push", "pull", "list", "zoo"):
        assert command in helped
    assert ok(invoke("--version")).stdout.strip() == f"scalearn {__version__}"
    rows = ok_json(invoke("tasks", "--json"))
    names = [r["name"] for r in rows]
    assert names == list(TASKS) and {"rte", "sst2", "cola", "stsb", "demo-sentiment"} <= set(names)
    assert next(r for r in rows if r["name"] == "stsb")["problem_type"] == "regression"


def test_option_help_keeps_its_default_text() -> None:
    """Rich markup must not swallow the defaults written into option help (it ate "[default: ...]")."""
    helped = " ".join(ok(invoke("transfer", "--help", env={"COLUMNS": "300"})).stdout.split())
    assert "(default: the paper's for the method)" in helped
    assert "(default: the one the sources' heads were trained with)" in helped


def test_command_reference_names_every_command_and_option() -> None:
    """docs/cli.md keeps step with the CLI: every command, and every long option of each, appears in it."""
    import re

    import typer

    reference = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()

    def leaves(command, path: tuple[str, ...]):
        if hasattr(command, "commands"):  # a group: its visible subcommands
            for name, sub in command.commands.items():
                if not sub.hidden:
                    yield from leaves(sub, (*path, name))
        else:
            yield " ".join(path), command

    found = list(leaves(typer.main.get_command(app), ()))
    assert {"train-source", "transfer", "eval", "export", "zoo list", "zoo build"} <= {name for name, _ in found}
    missing = [f"scalearn {name}" for name, _ in found if f"`scalearn {name}" not in reference]
    missing += [f"scalearn {name} {opt}" for name, command in found for param in command.params for opt in param.opts
                if opt.startswith("--") and opt != "--help" and not re.search(re.escape(opt) + r"(?![\w-])", reference)]
    assert not missing, f"docs/cli.md does not mention: {missing}"
