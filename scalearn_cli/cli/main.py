"""The root ``scalearn`` app: logging set up once, every command mounted here, errors mapped by one table."""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
from typing import Annotated, Any, Callable

import typer

from scalearn_cli import __version__
from scalearn_cli.cli import (
    evaluate, export, inspect, prune, quickstart, record, registry, shelf, tasks, train, zoo,
)
from scalearn_cli.cli.common import err_console
from scalearn_cli.errors import ScaLearnError, printable, strip_ansi

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
    allow_base_change: Annotated[
        bool, typer.Option("--allow-base-change", help="Use a base model whose weights changed since the adapters "
                                                        "were trained (a warning instead of a refusal).")
    ] = False,
) -> None:
    """Parameter-efficient task transfer with ScaLearn (arXiv 2310.01217)."""
    import sys

    from rich.logging import RichHandler

    handler = RichHandler(console=err_console, show_time=False, show_path=False)
    handler.addFilter(_escape_record)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(message)s", handlers=[handler], force=True,
    )
    if allow_base_change or "scalearn_cli.backbone" in sys.modules:  # the flag is process state: reset it too
        # lazy: backbone imports torch; reset only where it is loaded or the flag is given
        from scalearn_cli.backbone import allow_base_change as allow

        allow(allow_base_change)
    # huggingface_hub, transformers and datasets set their loggers' level when first imported, for most commands
    # after this callback: without these their warnings (e.g. a Hub answering 5xx) would print before the one line
    for library in ("HF_HUB", "TRANSFORMERS", "DATASETS"):
        os.environ.setdefault(f"{library}_VERBOSITY", "warning" if verbose else "error")
    for noisy in ("transformers", "datasets", "accelerate", "huggingface_hub", "peft"):
        logging.getLogger(noisy).setLevel(logging.ERROR if not verbose else logging.WARNING)


def _escape_record(entry: logging.LogRecord) -> bool:
    """Log lines quote untrusted text too (file and weight names): their control characters are escaped."""
    entry.msg, entry.args = printable(entry.getMessage()), None
    return True


# ---- one error table: exception type -> (exit code, the one line shown); tracebacks only with SCALEARN_DEBUG=1
def _domain(exc: BaseException) -> tuple[int, str]:
    return getattr(exc, "exit_code", 1), str(exc)


def _interrupted(exc: BaseException) -> tuple[int, str]:
    return 130, "nothing was written (outputs are staged, then renamed)."


#: what to do about an OS error on a path, by errno: the path is named, never a bare "OSError"
_OS_ADVICE = {
    errno.ENOTDIR: "a folder was expected there but a file is in the way; check the path (and SCALEARN_REGISTRY)",
    errno.EISDIR: "a file was expected there but it is a folder; check the path",
    errno.ENOENT: "it does not exist; check the path",
    errno.EACCES: "permission denied; choose a path you can write, or fix its permissions",
    errno.EPERM: "permission denied; choose a path you can write, or fix its permissions",
    errno.EBUSY: "it is busy (a mount point, or the working directory); choose another path",
    errno.ENOSPC: "the disk is full; free space or choose another path",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.ELOOP: "it is a loop of symbolic links; pass a plain path",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
    errno.EXDEV: "it is on another file system than its temporary copy; choose a path on one disk",
}


def _os_error(exc: BaseException) -> tuple[int, str]:
    assert isinstance(exc, OSError)
    where = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    advice = _OS_ADVICE.get(exc.errno or -1)
    if not where or advice is None:
        return _unexpected(exc)
    return 1, f"{where}: {exc.strerror or type(exc).__name__}: {advice}"


def _overflow(exc: BaseException) -> tuple[int, str]:
    return 2, f"a number is out of range ({_first_line(exc)}); pass a smaller value (seeds: 0 to 4294967295)"


def _first_line(exc: BaseException) -> str:
    text = strip_ansi(str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unexpected(exc: BaseException) -> tuple[int, str]:  # library errors we did not anticipate
    return 1, f"{type(exc).__name__}: {_first_line(exc)} (set SCALEARN_DEBUG=1 for the traceback)"


def _error_table() -> tuple[tuple[type[BaseException] | tuple[type[BaseException], ...],
                                  Callable[[BaseException], tuple[int, str]]], ...]:
    return ((ScaLearnError, _domain), (KeyboardInterrupt, _interrupted), (OverflowError, _overflow),
            (OSError, _os_error), ((ValueError, RuntimeError, re.error, LookupError, TypeError), _unexpected))


def render_error(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, the one line shown) for ``exc``, or None when no entry of the table catches it.

    The line is printed as text, never as markup, with every control character escaped (an ANSI sequence in a
    file name shows as ``\x1b[2J``): it may quote file, weight or config names of a downloaded adapter. Messages
    of other libraries lose their own colour codes first (``_first_line``).
    """
    for types, render in _error_table():
        if isinstance(exc, types):
            code, line = render(exc)
            return code, printable(line)
    return None


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
            rendered = render_error(exc)
            interrupted = isinstance(exc, KeyboardInterrupt)
            if rendered is None or (_debug() and not interrupted):
                raise
            from rich.markup import escape

            code, line = rendered
            label = "Interrupted:" if interrupted else "Error:"
            err_console.print(f"[bold red]{label}[/] {escape(line)}", highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None

    return run


#: every command: (group or None for the root, name, function); one line each
COMMANDS: tuple[tuple[typer.Typer | None, str, Callable[..., Any]], ...] = (
    (None, "train-source", train.train_source),
    (None, "transfer", train.transfer),
    (None, "eval", evaluate.evaluate),
    (None, "tasks", tasks.tasks),
    (None, "push", registry.push),
    (None, "pull", registry.pull),
    (None, "list", registry.list_adapters),
    (None, "quickstart", quickstart.quickstart),
    (zoo.zoo_app, "list", zoo.zoo_list),
    (zoo.zoo_app, "build", zoo.zoo_build),
    (None, "export", export.export),
    (None, "verify", export.verify),
    (None, "inspect", inspect.inspect),
    (None, "prune", prune.prune),
    (None, "select", shelf.select),
    (None, "record", record.record),
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
