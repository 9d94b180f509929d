"""``scalearn transfer``'s combiner flags, built from the combiner table (each option declared once, as data).

Only Typer's public API is used: each declared option becomes a keyword parameter annotated with
``Annotated[Optional[type], typer.Option(flag, help=...)]`` on the command's ``__signature__``; the command gets
them back as one ``{flag: value}`` dict (None: not given), so adding a combiner never edits the command.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any, Callable, Optional

import typer

from scalearn_cli.combiners import all_options, options_of, refuse_foreign_flags

PARAMETER = "combiner_options"  # the command's parameter that receives {flag: value}


def _parameter_name(flag: str) -> str:
    return "combiner_" + flag.lstrip("-").replace("-", "_")


class CombinerCommand:
    """A command whose signature is read from the combiner table each time Typer builds the CLI, so a combiner
    registered at run time (a plugin, a test) brings its flags along; calls go to the wrapped command."""

    def __init__(self, command: Callable[..., Any]) -> None:
        for name in ("__module__", "__name__", "__qualname__", "__doc__"):  # Typer names the command from these
            setattr(self, name, getattr(command, name))
        self._command = command

    def _parameters(self) -> tuple[list[inspect.Parameter], list[inspect.Parameter]]:
        signature = inspect.signature(self._command, eval_str=True)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values()
               if p.name != PARAMETER]
        extra = []
        for option in all_options():
            default = "" if option.default is None else f" (default {option.default})"
            annotation = Annotated[Optional[option.type], typer.Option(option.flag, help=option.help + default,
                                                                       show_default=False)]
            extra.append(inspect.Parameter(_parameter_name(option.flag), inspect.Parameter.KEYWORD_ONLY,
                                           default=None, annotation=annotation))
        return own, extra

    @property
    def __signature__(self) -> inspect.Signature:  # read by inspect.signature (Typer)
        own, extra = self._parameters()
        return inspect.Signature(own + extra)

    @property
    def __annotations__(self) -> dict[str, Any]:  # read by typing.get_type_hints (Typer)
        own, extra = self._parameters()
        return {p.name: p.annotation for p in own + extra}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        given = {option.flag: kwargs.pop(_parameter_name(option.flag), None) for option in all_options()}
        return self._command(*args, **kwargs, **{PARAMETER: given})


def with_combiner_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with every declared combiner option as a Typer option (see the module docstring)."""
    return CombinerCommand(command)


def method_options(method: str, given: dict[str, Any]) -> dict[str, Any]:
    """{option name: value} for ``method`` from the flags given; a flag of another method is a one-line error."""
    refuse_foreign_flags(method, given)
    return {o.name: given[o.flag] for o in options_of(method) if given.get(o.flag) is not None}
