"""The package's import graph is the one README's Architecture draws: every import, including those inside
functions and under TYPE_CHECKING, points down the floors below and no loop exists within a floor. (A
package's `__init__` that re-exports its modules, as `edgemlic.runtime` does for the embedding API, is not
counted as imported by them.)"""

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


FLOORS = {
    "cli": 5, "__main__": 5,
    "train": 4, "evaluate": 4, "export": 4, "parity": 4, "bench": 4, "thresholds": 4, "report": 4,
    "explain": 4, "demo": 4, "plots": 4,
    "runtime": 3, "data": 3, "checkpoint": 3, "models": 3,
    "card": 2, "images": 2, "image_files": 2, "metrics": 2, "compare": 2, "figures": 2, "artifacts": 2,
    "device": 2,
    "io": 1, "errors": 1, "checks": 1, "formatting": 1, "": 1,
}  # fmt: skip
"""README's Architecture, by the first name after `edgemlic.`; a new top-level module gets a floor here."""


def floor(module: str) -> int:
    return FLOORS[module.split(".")[1] if "." in module else ""]


def test_every_import_points_down_or_within_its_floor() -> None:
    upward = [(a, b) for a, targets in import_graph().items() for b in targets if floor(b) > floor(a)]
    assert upward == []


def test_the_import_graph_has_no_loops() -> None:
    graph = import_graph()
    expected = {"edgemlic.train.config", "edgemlic.train.launch", "edgemlic.cli.app"}
    assert expected <= graph["edgemlic.cli.train"]
    assert loops(graph) == []


def test_a_loop_is_found() -> None:
    assert loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
