"""What a combiner's options are, declared as data: name, type, default, help and check, with the CLI flag.

As PEFT's ``LoraConfig`` fields carry their own help, each :class:`Option` carries what ``scalearn transfer
--help`` shows and what every caller (CLI, library, bench) is checked against, so a new combiner's options need
no edit of the CLI. Torch-free: the CLI reads these before any model code is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from scalearn_cli.errors import UsageError

#: a check returns None when the value is fine, else what the value must be ("a whole number >= 1")
Check = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Option:
    """One combiner option: ``name`` is its key in ``CombinerSpec.options``, ``flag`` the CLI's long option."""

    name: str
    type: type
    default: Any
    help: str
    flag: str
    check: Check | None = None

    def validate(self, value: Any) -> Any:
        """``value`` (the default when None), or a one-line UsageError naming the flag."""
        if value is None:
            return self.default
        problem = self.check(value) if self.check else None
        if problem:
            raise UsageError(f"{self.flag} must be {problem}, got {value}")
        return value


def whole(minimum: int = 1) -> Check:
    """A whole number >= ``minimum`` (booleans and strings are not)."""

    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        return None if ok else f"a whole number >= {minimum}"

    return check


def fraction(value: Any) -> str | None:
    """A number in (0, 1]."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1
    return None if ok else "a number in (0, 1]"


def positive(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return None if ok else "a number > 0"


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"one of {', '.join(choices)}"

    return check


def numbers(value: Any) -> str | None:
    """Comma-separated numbers, one per source (``"0.5,0.3,0.2"``), or a list of them."""
    try:
        parse_numbers(value)
    except (TypeError, ValueError):
        return "comma-separated numbers, one per source (e.g. 0.5,0.5)"
    return None


def indices(value: Any) -> str | None:
    """Comma-separated 0-based source positions (``"0,2"``), or a list of them."""
    try:
        found = [int(v) for v in (value.split(",") if isinstance(value, str) and value else value or [])]
    except (TypeError, ValueError):
        found = [-1]
    return None if not found or min(found) >= 0 else "comma-separated source positions from 0 (e.g. 0,2)"


def parse_numbers(value: Any) -> list[float]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [float(v) for v in items]


def validate(options: tuple[Option, ...], given: dict[str, Any] | None, method: str) -> dict[str, Any]:
    """The declared options with defaults filled in and each value checked.

    Keys outside the declaration (what a combiner recorded itself, e.g. AdapterSoup's ``selected``, a merge's
    ``seed``) pass through: they come from a saved composition or the library, never from the CLI, whose flags
    are exactly the declared ones.
    """
    given = dict(given or {})
    out = {key: value for key, value in given.items() if key not in {o.name for o in options}}
    for option in options:
        value = option.validate(given.get(option.name))
        if value is not None:
            out[option.name] = value
    return out

