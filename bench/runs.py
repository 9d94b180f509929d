"""Which committed doc is made from which runs: ``bench/runs.json``, read by ``report --all`` and ``report --list``.

Each doc under docs/ names its run (``bench/results/<run>/``) and the runs compared beside it; each run has a one-line
description. A run's plan and options are its own ``config.json`` (``python -m bench run --from-config`` resumes
it), so adding a doc is adding an entry here, and adding a run to a doc is adding its name to ``compare`` (its rows
side by side with the doc's, a protocol check) or to ``extend`` (its rows in the doc's own tables: more methods or
targets run later over the same sources and protocol).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUNS_FILE = Path(__file__).with_name("runs.json")


@dataclass(frozen=True)
class Doc:
    """One generated doc: ``docs/<name>`` from ``run``'s results (and ``extend``'s, in the same tables) with
    ``compare``'s rows beside them."""

    name: str
    run: str
    compare: tuple[str, ...]
    about: str
    generator: str | None = None  # a bench module whose render(out) makes the doc (default: report.py's)
    rows: str | None = None  # the command that computes the run's rows (default: run --from-config)
    extend: tuple[str, ...] = ()  # runs whose rows join the doc's own tables (same sources and protocol)


def load(path: Path = RUNS_FILE) -> tuple[list[Doc], dict[str, str]]:
    """The docs in file order and each run's description; a doc naming an undescribed run is an error."""
    data = json.loads(path.read_text())
    docs = [Doc(name, entry["run"], tuple(entry.get("compare", [])), entry.get("about", ""), entry.get("generator"),
                entry.get("rows"), tuple(entry.get("extend", [])))
            for name, entry in data["docs"].items()]
    runs = data.get("runs", {})
    unknown = sorted({r for d in docs for r in (d.run, *d.compare, *d.extend)} - set(runs))
    if unknown:
        raise SystemExit(f"{path}: run(s) {', '.join(unknown)} named by a doc but not described under \"runs\": "
                         "add a line for each")
    return docs, runs


def docs(path: Path = RUNS_FILE) -> dict[str, Any]:
    """``{doc name: (run, [compared runs], [extending runs])}``, or the generator's ``render`` for a doc with its own
    report: what ``report --all`` regenerates."""
    return {d.name: importlib.import_module(d.generator).render if d.generator
            else (d.run, list(d.compare), list(d.extend)) for d in load(path)[0]}


def report_command(doc: Doc) -> str:
    """The one-doc command equivalent to what ``report --all`` does for ``doc``."""
    if doc.generator:
        return f"python -m bench report --all  (docs/{doc.name} by {doc.generator}.render)"
    return " ".join([f"python -m bench report --run {doc.run} --out docs/{doc.name}",
                     *(f"--compare-run {other}" for other in doc.compare),
                     *(f"--extend-run {other}" for other in doc.extend)])


def rows_command(doc: Doc) -> str:
    """The command that computes (and resumes) the rows of ``doc``'s run."""
    if doc.rows:
        return doc.rows
    return (f"python -m bench run --from-config bench/results/{doc.run}/config.json  (resumes the missing rows; "
            f"on a GPU machine: python -m bench device --run {doc.run})")


def listing(path: Path = RUNS_FILE) -> list[str]:
    """Doc → runs → commands, for ``report --list``."""
    docs_, runs = load(path)
    out = []
    for doc in docs_:
        out += [f"docs/{doc.name}: {doc.about}",
                f"  run       {doc.run}: {runs[doc.run]}"]
        out += [f"  compared  {other}: {runs[other]}" for other in doc.compare]
        out += [f"  extended  {other}: {runs[other]}" for other in doc.extend]
        out += [f"  doc       {report_command(doc)}", f"  rows      {rows_command(doc)}", ""]
    return out + ["every doc: python -m bench report --all   (--check: fail where a doc is not what its results make)"]
