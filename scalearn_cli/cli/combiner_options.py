"""``scalearn transfer``'s combiner flags, built from the combiner table (each option declared once, as data).

Only Typer's public API is used: each declared option becomes a keyword parameter annotated with
``Annotated[Optional[type], typer.Option(flag, help=...)]`` on the command's ``__signature__``; the command gets
them back as one ``{flag: value}`` dict (None: not given), so adding a combiner never edits the command.
"""

from __future__ import annotations

import functools
import inspect
from typing import Annotated, Any, Callable, Optional

import typer

from scalearn_cli.combiners import all_options

PARAMETER = "combiner_options"  # the command's parameter that receives {flag: value}


def _parameter_name(flag: str) -> str:
    return "combiner_" + flag.lstrip("-").replace("-", "_")


def with_combiner_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with every declared combiner option as a Typer option (see the module docstring)."""
    declared = all_options()
    signature = inspect.signature(command, eval_str=True)
    params = [p for p in signature.parameters.values() if p.name != PARAMETER]
    extra = []
    for option in declared:
        default = "" if option.default is None else f" (default {option.default})"
        annotation = Annotated[Optional[option.type], typer.Option(option.flag, help=option.help + default,
                                                                   show_default=False)]
        extra.append(inspect.Parameter(_parameter_name(option.flag), inspect.Parameter.KEYWORD_ONLY, default=None,
                                       annotation=annotation))

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {option.flag: kwargs.pop(_parameter_name(option.flag), None) for option in declared}
        return command(*args, **kwargs, **{PARAMETER: given})

    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]  # after *args-free keywords
    wrapper.__signature__ = signature.replace(parameters=keyword + extra)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in keyword + extra}
    del wrapper.__wrapped__  # Typer must read the signature above, not the wrapped command's
    return wrapper


def method_options(method: str, given: dict[str, Any]) -> dict[str, Any]:
    """{option name: value} for ``method`` from the flags given; a flag of another method is a one-line error."""
    from scalearn_cli.combiners import options_of, refuse_foreign_flags

    refuse_foreign_flags(method, given)
    return {o.name: given[o.flag] for o in options_of(method) if given.get(o.flag) is not None}
