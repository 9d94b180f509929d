"""The root ``scalearn`` app: logging set up once, command groups mounted, errors mapped in cli/common.py."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from scalearn_cli import __version__

app = typer.Typer(
    name="scalearn",
    help="Parameter-efficient task transfer with ScaLearn: train, share and compose adapters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"scalearn {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details (INFO).")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Parameter-efficient task transfer with ScaLearn (arXiv 2310.01217)."""
    from rich.logging import RichHandler

    from scalearn_cli.cli.common import err_console

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_time=False, show_path=False)],
        force=True,
    )
    for noisy in ("transformers", "datasets", "accelerate", "huggingface_hub", "peft"):
        logging.getLogger(noisy).setLevel(logging.ERROR if not verbose else logging.WARNING)


def _mount() -> None:
    from scalearn_cli.cli import train

    train.register(app)
    for name in ("tasks", "registry", "quickstart", "zoo", "tools"):
        try:
            module = __import__(f"scalearn_cli.cli.{name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"scalearn_cli.cli.{name}":
                raise
            continue
        module.register(app)


_mount()


def main() -> None:
    """Console-script entry point."""
    import os
    import warnings

    # the CLI draws its own progress; library bars would interleave with it
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    app()
