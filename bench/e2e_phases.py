"""``python -m bench.e2e_phases <scalearn arguments>``: the ``scalearn`` CLI, as its console script runs it, with the
wall time split by the library functions it passes through (for ``bench/e2e.py``).

Each timed function is wrapped in place; time is counted for the innermost timed call only (training's per-epoch
dev scoring counts as evaluation, not training). Phases: ``imports`` (the CLI and library modules, before main),
``resolve_verify``, ``model_build``, ``data``, ``training``, ``eval``, ``save``, ``other`` (the rest of main).
``main_s`` is everything from this module's first line, so the caller's wall time minus it is the interpreter's
start. Each phase has its wall time and this process's CPU time; they go, as JSON, to the file named by
``$E2E_PHASES``.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # before any import: the caller's wall time minus ours is the interpreter's start

import functools  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

#: phase -> the (module, attribute) the commands call it through; a missing one fails loudly (a library rename)
PHASES = {
    "resolve_verify": [("scalearn_cli.resolve", "Resolver.source"), ("scalearn_cli.stages.transfer", "check_sources")],
    "model_build": [("scalearn_cli.backbone", "load_backbone"), ("scalearn_cli.stages.source", "load_backbone"),
                    ("scalearn_cli.stages.transfer", "inject"), ("scalearn_cli.sources.lora", "LoraKind.attach")],
    "data": [("scalearn_cli.stages.transfer", "prepare"), ("scalearn_cli.stages.source", "prepare")],
    "training": [("scalearn_cli.stages.transfer", "fit"), ("scalearn_cli.stages.source", "fit")],
    "eval": [("scalearn_cli.train", "evaluate"), ("scalearn_cli.stages.common", "evaluate"),
             ("scalearn_cli.stages.transfer", "score"), ("scalearn_cli.stages.source", "score")],
    "save": [("scalearn_cli.stages.transfer", "_save"), ("scalearn_cli.stages.source", "save_source")],
}

totals: dict[str, float] = {}  # phase -> wall seconds
cpu_totals: dict[str, float] = {}  # phase -> this process's CPU seconds (what other processes' load does not inflate)
_stack: list[list] = []  # [phase, wall clock and CPU clock when it last resumed]


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _add(phase: str, since: list, now: tuple[float, float]) -> None:
    totals[phase] = totals.get(phase, 0.0) + now[0] - since[1]
    cpu_totals[phase] = cpu_totals.get(phase, 0.0) + now[1] - since[2]


def _timed(phase: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        now = _clocks()
        if _stack:  # pause the enclosing phase
            _add(_stack[-1][0], _stack[-1], now)
        _stack.append([phase, *now])
        try:
            return fn(*args, **kwargs)
        finally:
            end = _clocks()
            _add(phase, _stack.pop(), end)
            if _stack:
                _stack[-1][1:] = end

    return wrapper


def install() -> None:
    """Wrap every function of ``PHASES`` where the commands look it up."""
    for phase, targets in PHASES.items():
        for module_name, attr in targets:
            owner = importlib.import_module(module_name)
            *path, name = attr.split(".")
            for part in path:
                owner = getattr(owner, part)
            setattr(owner, name, _timed(phase, getattr(owner, name)))


def main() -> None:
    install()
    from scalearn_cli.cli.main import main as cli_main

    started = _clocks()
    _add("imports", ["imports", _T0, 0.0], started)  # process CPU time counts from the process's start
    sys.argv = ["scalearn", *sys.argv[1:]]
    code = 0
    try:
        cli_main()
    except SystemExit as exc:  # typer ends with sys.exit
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        end = _clocks()
        rest = ["other", *started]
        _add("other", rest, end)
        for phase in [k for k in totals if k not in ("imports", "other")]:  # "other": main less its timed phases
            totals["other"] -= totals[phase]
            cpu_totals["other"] -= cpu_totals[phase]
        out = {"wall": totals, "cpu": cpu_totals, "main_s": end[0] - _T0}
        with open(os.environ["E2E_PHASES"], "w") as fh:
            json.dump(out, fh)
    sys.exit(code)


if __name__ == "__main__":
    main()
