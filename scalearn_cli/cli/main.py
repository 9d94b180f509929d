"""The root ``scalearn`` app: logging set up once, every command mounted here, errors mapped by one table."""

from __future__ import annotations

import functools
import logging
import os
from typing import Annotated, Any, Callable

import typer

from scalearn_cli import __version__
from scalearn_cli.cli import quickstart, registry, shelf, tasks, tools, train, zoo

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
    # huggingface_hub, transformers and datasets set their loggers' level when first imported, for most commands
    # after this callback: without these their warnings (e.g. a Hub answering 5xx) would print before the one line
    for library in ("HF_HUB", "TRANSFORMERS", "DATASETS"):
        os.environ.setdefault(f"{library}_VERBOSITY", "warning" if verbose else "error")
    for noisy in ("transformers", "datasets", "accelerate", "huggingface_hub", "peft"):
        logging.getLogger(noisy).setLevel(logging.ERROR if not verbose else logging.WARNING)


# ---- one error table: exception type -> (exit code, the one line shown); tracebacks only with SCALEARN_DEBUG=1
def _domain(exc: BaseException) -> tuple[int, str]:
    return getattr(exc, "exit_code", 1), str(exc)


def _interrupted(exc: BaseException) -> tuple[int, str]:
    return 130, "nothing was written (outputs are staged, then renamed)."


def _unexpected(exc: BaseException) -> tuple[int, str]:  # library errors we did not anticipate
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return 1, f"{type(exc).__name__}: {first} (set SCALEARN_DEBUG=1 for the traceback)"


def _error_table() -> tuple[tuple[type[BaseException], Callable[[BaseException], tuple[int, str]]], ...]:
    from scalearn_cli.errors import ScaLearnError

    return ((ScaLearnError, _domain), (KeyboardInterrupt, _interrupted),
            ((OSError, ValueError, RuntimeError), _unexpected))


def _debug() -> bool:
    return os.environ.get("SCALEARN_DEBUG", "") not in ("", "0")


def guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with every error of the table turned into one line on stderr and its exit code."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except BaseException as exc:
            for types, render in _error_table():
                if isinstance(exc, types):
                    interrupted = isinstance(exc, KeyboardInterrupt)
                    if _debug() and not interrupted:
                        raise
                    from rich.markup import escape

                    from scalearn_cli.cli.common import err_console

                    code, line = render(exc)
                    label = "Interrupted:" if interrupted else "Error:"
                    err_console.print(f"[bold red]{label}[/] {escape(line)}", highlight=False, soft_wrap=True)
                    raise typer.Exit(code) from None
            raise

    return run


#: every command: (group or None for the root, name, function); one line each
COMMANDS: tuple[tuple[typer.Typer | None, str, Callable[..., Any]], ...] = (
    (None, "train-source", train.train_source),
    (None, "transfer", train.transfer),
    (None, "eval", train.evaluate),
    (None, "tasks", tasks.tasks),
    (None, "push", registry.push),
    (None, "pull", registry.pull),
    (None, "list", registry.list_adapters),
    (None, "quickstart", quickstart.quickstart),
    (zoo.zoo_app, "list", zoo.zoo_list),
    (zoo.zoo_app, "build", zoo.zoo_build),
    (None, "export", tools.export),
    (None, "verify", tools.verify),
    (None, "inspect", tools.inspect),
    (None, "prune", tools.prune),
    (None, "select", shelf.select),
)

for _group, _name, _command in COMMANDS:
    (_group or app).command(_name)(guarded(_command))
app.add_typer(zoo.zoo_app, name="zoo")


def main() -> None:
    """Console-script entry point."""
    import warnings

    # the CLI draws its own progress; library bars would interleave with it
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    app()
