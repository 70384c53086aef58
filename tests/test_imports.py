"""The package's import graph has no loops: every import, including those inside functions and under
TYPE_CHECKING, points one way. (A package's `__init__` that re-exports its modules, as `edgemlic.runtime`
does for the embedding API, is not counted as imported by them.)"""

from __future__ import annotations

import ast
from pathlib import Path

import edgemlic

PACKAGE = Path(edgemlic.__file__).parent


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    modules = module_names()

    def owner(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {owner(a.name) for a in node.names if a.name.startswith("edgemlic")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edgemlic"):
                targets |= {owner(f"{node.module}.{a.name}") for a in node.names}
        graph[name] = targets - {name}
    return graph


def loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_loops() -> None:
    graph = import_graph()
    expected = {"edgemlic.train.config", "edgemlic.train.launch", "edgemlic.cli.app"}
    assert expected <= graph["edgemlic.cli.train"]
    assert loops(graph) == []


def test_a_loop_is_found() -> None:
    assert loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
