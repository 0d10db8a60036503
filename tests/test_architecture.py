"""The package's structure: data flows one way, so no module imports (at its top or inside a
function) a module that imports it back, directly or through others."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import gradcheck_fast
from gradcheck_fast import checker, options

PACKAGE = Path(gradcheck_fast.__file__).parent


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports, anywhere in it (``from . import x``,
    ``from .x import y``, ``from gradcheck_fast.x import y``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1 and module:
                found.add(module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif module.startswith("gradcheck_fast."):
                found.add(module.split(".")[1])
    return found


def _graph() -> dict[str, set[str]]:
    modules = {path.stem: path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    return {name: _imports(path) & modules.keys() for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = _graph()
    assert {"checker", "planning", "options", "engine"} <= graph.keys()
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_options_sits_below_the_entry_points():
    # The room every entry point builds its options in imports none of them.
    assert _imports(PACKAGE / "options.py").isdisjoint(
        {"checker", "planning", "api", "custom", "sweep", "engine", "report", "modes"})


def test_check_gradients_states_the_defaults_defined_once():
    signature = inspect.signature(checker.check_gradients)
    for name, default in options.DEFAULTS.items():
        assert signature.parameters[name].default == default, name
