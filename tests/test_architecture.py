"""The package's structure: data flows one way, so no module imports (at its top or inside a
function) a module that imports it back, directly or through others."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import gradcheck_fast
from gradcheck_fast import checker, options

PACKAGE = Path(gradcheck_fast.__file__).parent


def _module_name(path: Path) -> str:
    """``'checker'``, ``'report.types'``; a subpackage's ``__init__`` is the package itself."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    """Every module of the package, subpackages included (the root ``__init__`` aside: it
    only re-exports, and nothing inside the package imports it)."""
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))
            if path != PACKAGE / "__init__.py"}


def _imports(path: Path, known: set[str] | None = None) -> set[str]:
    """The package modules ``path`` imports, anywhere in it (``from . import x``,
    ``from .x import y``, ``from ..x import y`` in a subpackage, ``from gradcheck_fast.x import
    y``), as dotted names relative to the package. Importing ``a.b`` runs ``a`` first (its
    ``__init__``), so it counts as importing both. ``known``: the package's modules (default
    all), which tell a submodule (``from .report import types``) from a name in a module.
    Inside a package, a sibling import does not count the package: its ``__init__`` is
    already running (or has run) by then."""
    known = _modules().keys() if known is None else known
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()

    def add(dotted: str):
        parts = dotted.split(".")
        prefixes = (".".join(parts[:k]) for k in range(1, len(parts) + 1))
        found.update(p for p in prefixes if not name.startswith(p + "."))

    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        module = node.module or ""
        if node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join([*base, *module.split(".")] if module else base)
        elif module == "gradcheck_fast" or module.startswith("gradcheck_fast."):
            target = module.removeprefix("gradcheck_fast").lstrip(".")
        else:
            continue
        if target:
            add(target)
        for alias in node.names:  # a submodule named in the import list
            sub = f"{target}.{alias.name}" if target else alias.name
            if sub in known:
                add(sub)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules.keys()) & modules.keys() - {name}
            for name, path in modules.items()}


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


def test_the_import_graph_sees_into_subpackages():
    # The cycle test is only as good as the graph: subpackage modules are nodes, and their
    # relative imports (one dot: a sibling, two dots: the package above) resolve.
    graph = _graph()
    assert {"report", "report.types", "report.diagnosis", "report.formatting",
            "report.build"} <= graph.keys()
    assert {"report.types", "report.diagnosis", "modes", "options", "layout"} <= graph[
        "report.build"]
    assert "report" in graph["checker"]  # from .report import ...
    # A module inside a subpackage importing a module above it, which imports the subpackage
    # back, is a cycle the finder must see.
    looped = {**graph, "report.formatting": graph["report.formatting"] | {"checker"}}
    assert _cycle(looped) is not None


def test_the_report_rooms_import_one_way():
    # formatting and diagnosis read plain data and import nothing of the report; the types
    # use them; only the builder assembles (and knows the modes' probes at run time).
    graph = _graph()
    report_rooms = {name for name in graph if name.startswith("report")}
    assert graph["report.formatting"] == set()
    assert graph["report.diagnosis"] & report_rooms == set()
    assert graph["report.types"] & report_rooms == {"report.diagnosis", "report.formatting"}
    assert graph["report.build"] & report_rooms == {"report.diagnosis", "report.types"}


def test_options_sits_below_the_entry_points():
    # The room every entry point builds its options in imports none of them.
    assert _imports(PACKAGE / "options.py").isdisjoint(
        {"checker", "planning", "api", "custom", "sweep", "engine", "report", "modes"})


def test_check_gradients_states_the_defaults_defined_once():
    signature = inspect.signature(checker.check_gradients)
    for name, default in options.DEFAULTS.items():
        assert signature.parameters[name].default == default, name
