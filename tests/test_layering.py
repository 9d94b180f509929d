"""The package's import graph flows one way: the layering docs/architecture.md lists, no cycles, imports at the top.

Every module of ``scalearn_cli`` is parsed with ``ast`` (never imported); its imports of the package's own modules,
at module level and inside functions, are the graph's edges.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "scalearn_cli"
DOC = ROOT / "docs" / "architecture.md"


@dataclass(frozen=True)
class Edge:
    source: str  # the importing module, relative to the package ("data.splits"; "__init__" is the package root)
    target: str  # the imported module
    line: int


def layer_table() -> dict[str, tuple[int, str]]:
    """Name -> (layer number, layer name), from the numbered list of the doc's "Layering" section."""
    section = DOC.read_text(encoding="utf-8").split("\n## Layering\n", 1)[1].split("\n## ", 1)[0]
    items = re.findall(r"^(\d+)\. \*\*(\w+)\*\*:(.*(?:\n   .*)*)", section, flags=re.MULTILINE)
    table = {name: (int(number), layer) for number, layer, names in items for name in re.findall(r"`([\w.]+)`", names)}
    assert table, f"no layer list under '## Layering' in {DOC}"
    return table


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name relative to the package; the root is ``__init__``."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _own(dotted: str, known: dict[str, Path]) -> str | None:
    """The package module ``dotted`` (an absolute import path) names, or None for another package's."""
    if dotted != "scalearn_cli" and not dotted.startswith("scalearn_cli."):
        return None
    name = dotted.removeprefix("scalearn_cli").lstrip(".") or "__init__"
    while name not in known and "." in name:  # ``pkg.module.attribute`` -> ``pkg.module``
        name = name.rpartition(".")[0]
    return name if name in known else "__init__"


def _targets(node: ast.Import | ast.ImportFrom, module: str, path: Path, known: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: resolve against the importing module's package
            package = [] if module == "__init__" else module.split(".")[: None if path.name == "__init__.py" else -1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(["scalearn_cli", *package, *([base] if base else [])])
        names = [f"{base}.{alias.name}" for alias in node.names]
    return {t for t in (_own(name, known) for name in names) if t is not None and t != module}


def _lazy_reason(lines: list[str], node: ast.stmt, imports: set[int]) -> bool:
    """Whether the import carries ``# lazy:``, or a ``# lazy:`` comment line opens the run of imports it is in."""
    if any("# lazy:" in lines[i - 1] for i in range(node.lineno, (node.end_lineno or node.lineno) + 1)):
        return True
    above = node.lineno - 1
    while above in imports:
        above -= 1
    return lines[above - 1].strip().startswith("# lazy:") if above >= 1 else False


def edges() -> tuple[list[Edge], list[str]]:
    """(every import edge between the package's modules, every function-level own import without a reason)."""
    known, found, unexplained = modules(), [], []
    for module, path in known.items():
        text = path.read_text(encoding="utf-8")
        tree, lines = ast.parse(text), text.splitlines()
        imports = {i for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                   for i in range(n.lineno, (n.end_lineno or n.lineno) + 1)}

        def visit(node: ast.AST, in_function: bool) -> None:
            for child in ast.iter_child_nodes(node):
                inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    targets = _targets(child, module, path, known)
                    found.extend(Edge(module, t, child.lineno) for t in sorted(targets))
                    if targets and in_function and not _lazy_reason(lines, child, imports):
                        unexplained.append(f"{path.relative_to(ROOT)}:{child.lineno} imports "
                                           f"{', '.join(sorted(targets))} inside a function")
                visit(child, inner)

        visit(tree, False)
    return found, unexplained


def layer_of(module: str, table: dict[str, tuple[int, str]]) -> tuple[int, str] | None:
    """The layer of the longest listed name that is ``module`` or a package above it."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in table:
            return table[".".join(parts[:end])]
    return None


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_every_module_is_in_a_layer() -> None:
    table = layer_table()
    unlisted = [m for m in modules() if layer_of(m, table) is None]
    assert not unlisted, f"modules in no layer of {DOC.name}'s Layering list (add them): {', '.join(unlisted)}"
    stale = [name for name in table if name not in modules()]
    assert not stale, f"{DOC.name}'s Layering list names modules that do not exist: {', '.join(stale)}"


def test_no_import_against_the_layering() -> None:
    table = layer_table()
    upward = []
    for edge in edges()[0]:
        source, target = layer_of(edge.source, table), layer_of(edge.target, table)
        if source and target and target[0] > source[0]:
            upward.append(f"{edge.source} ({source[1]}) imports {edge.target} ({target[1]}) at line {edge.line}")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for edge in edges()[0]:
        graph.setdefault(edge.source, set()).add(edge.target)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_function_level_imports_say_why() -> None:
    unexplained = edges()[1]
    assert not unexplained, ("move these imports to the module's top, or say why they are lazy with a "
                             "'# lazy: <why>' comment:\n" + "\n".join(unexplained))


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
])
def test_the_cycle_finder_reports_a_cycle(graph: dict[str, set[str]], cycle: list[str] | None) -> None:
    assert find_cycle(graph) == cycle


@pytest.mark.parametrize("source, explained", [
    ("def f():\n    from scalearn_cli import errors  # lazy: why\n", True),
    ("def f():\n    # lazy: why\n    import os\n    from scalearn_cli import errors\n", True),
    ("def f():\n    # lazy: why\n\n    from scalearn_cli import errors\n", False),
    ("def f():\n    x = 1\n    from scalearn_cli import errors\n", False),
])
def test_a_lazy_reason_sits_on_the_line_or_above_the_group(source: str, explained: bool) -> None:
    tree, lines = ast.parse(source), source.splitlines()
    imports = {n.lineno for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))}
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert _lazy_reason(lines, node, imports) is explained
