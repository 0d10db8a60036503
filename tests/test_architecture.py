"""The package's structure: data flows one way, so no module imports (at its top or inside a
function) a module that imports it back, directly or through others."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

import gradcheck_fast
from gradcheck_fast import api, options, reference

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
    assert {"checker", "planning", "options", "engines", "engines.incremental"} <= graph.keys()
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
    # formatting and diagnosis read plain data and import nothing of the report; the HTML takes
    # its sentences from formatting only; the types use them (and hand pictures to plot, which
    # reads the types' data through diagnosis and formatting); only the builder assembles (and
    # knows the modes' probes at run time).
    graph = _graph()
    report_rooms = {name for name in graph if name.startswith("report")}
    assert graph["report.formatting"] == set()
    assert graph["report.diagnosis"] & report_rooms == set()
    assert graph["report.html"] == {"report.formatting"}
    assert graph["report.types"] & report_rooms == {"report.diagnosis", "report.formatting",
                                                    "report.html", "report.plot"}
    assert graph["report.plot"] & report_rooms == {"report.diagnosis", "report.formatting"}
    assert graph["report.build"] & report_rooms == {"report.diagnosis", "report.types"}


def test_options_sits_below_the_entry_points():
    # The room every entry point builds its options in imports none of them.
    assert _imports(PACKAGE / "options.py").isdisjoint(
        {"checker", "planning", "api", "custom", "sweep", "engine", "report", "modes"})


def test_check_gradients_states_the_defaults_defined_once():
    signature = inspect.signature(api.check_gradients)
    for name, default in options.DEFAULTS.items():
        assert signature.parameters[name].default == default, name


# -- the public entry points ------------------------------------------------------------------
def _absolute_imports(source: str, module: tuple[str, ...]) -> set[tuple[str, ...]]:
    """Everything the module ``module`` (its dotted name as a tuple; a package's ``__init__``
    is named by the package) imports, as absolute dotted names, with ``from a import b``
    giving both ``a`` and ``a.b`` (b may be a submodule). Relative imports are resolved, so
    that subpackages (a ``report/`` or ``engines/`` room) are read as well as modules."""
    package = module if module[-1:] == ("__init__",) else module[:-1]
    package = tuple(part for part in package if part != "__init__")
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(tuple(alias.name.split(".")) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else ()
            target = base + tuple((node.module or "").split(".")) if node.module else base
            found.add(target)
            found.update(target + (alias.name,) for alias in node.names)
    return found


def _package_modules() -> dict[tuple[str, ...], Path]:
    """Every module of the package, subpackages included, by its dotted name."""
    root = PACKAGE.parent
    return {tuple(path.relative_to(root).with_suffix("").parts): path
            for path in sorted(PACKAGE.rglob("*.py"))}


def test_the_import_reader_resolves_relative_imports():
    room = ("gradcheck_fast", "report", "format")
    assert ("gradcheck_fast", "api") in _absolute_imports("from ...api import check", room + ("x",))
    assert ("gradcheck_fast", "api") in _absolute_imports("from ..api import check", room)
    assert ("gradcheck_fast", "api") in _absolute_imports("from .. import api", room)
    assert ("gradcheck_fast", "api") in _absolute_imports("import gradcheck_fast.api", room)
    assert ("gradcheck_fast", "api") in _absolute_imports("from gradcheck_fast import api", room)
    init = ("gradcheck_fast", "__init__")
    assert ("gradcheck_fast", "api") in _absolute_imports("from .api import check", init)
    assert ("gradcheck_fast", "api") not in _absolute_imports("from .report import api", room)


def test_no_room_imports_api():
    # Data flows one way: api imports the rooms. A room that imported api (at its top or in a
    # function) would close a cycle through the entry point that calls it.
    allowed = {("gradcheck_fast", "__init__"), ("gradcheck_fast", "__main__"),
               ("gradcheck_fast", "api")}
    modules = _package_modules()
    assert {("gradcheck_fast", "checker"), ("gradcheck_fast", "__main__")} <= modules.keys()
    importers = sorted(".".join(name) for name, path in modules.items() if name not in allowed
                       and ("gradcheck_fast", "api") in _absolute_imports(path.read_text(), name))
    assert importers == [], f"{importers} import gradcheck_fast.api"


def test_every_public_function_comes_from_api():
    # One module holds every public entry point; the package re-exports it. The seed's forward
    # and backward passes are defined in reference (the baseline) and pass through api.
    functions = [name for name in gradcheck_fast.__all__
                 if inspect.isfunction(getattr(gradcheck_fast, name))]
    assert {"check_gradients", "check", "estimate_cost", "step_sweep"} <= set(functions)
    for name in functions:
        function = getattr(gradcheck_fast, name)
        assert getattr(api, name, None) is function, name
        assert name in api.__all__, name
        home = "reference" if name.endswith("propagation_n") else "api"
        assert function.__module__ == f"gradcheck_fast.{home}", name


def _float32_case():
    X, Y, parameters = reference.seed_case()
    _, cache = reference.forward_propagation_n(X, Y, parameters)
    gradients = reference.backward_propagation_n(X, Y, cache)
    return X, Y, {k: v.astype(np.float32) for k, v in parameters.items()}, gradients


_WARNING_CALLS = {
    "check_gradients": lambda X, Y, p, g: gradcheck_fast.check_gradients(p, g, X, Y),
    "gradient_check_n": lambda X, Y, p, g: gradcheck_fast.gradient_check_n(p, g, X, Y,
                                                                           verbose=False),
    "step_sweep": lambda X, Y, p, g: gradcheck_fast.step_sweep(p, g, X, Y, steps=(1e-4,)),
    "check": lambda X, Y, p, g: gradcheck_fast.check(
        lambda theta: float(theta @ theta), p["b2"].ravel(), 2.0 * p["b2"].ravel()),
    "check directional": lambda X, Y, p, g: gradcheck_fast.check(
        lambda theta: float(theta @ theta), p["b2"].ravel(), 2.0 * p["b2"].ravel(),
        mode="directional"),
    "check of a dict": lambda X, Y, p, g: gradcheck_fast.check(
        lambda q: float(np.sum(q["b2"] ** 2)), {"b2": p["b2"]}, {"b2": 2.0 * p["b2"]}),
}


@pytest.mark.parametrize("entry", sorted(_WARNING_CALLS))
def test_low_precision_warnings_point_at_the_callers_line(entry):
    # The warning is raised a few calls below the entry point, with a stacklevel counted for
    # that depth: moving an entry point between modules must keep it pointing at the caller.
    X, Y, p32, gradients = _float32_case()
    with pytest.warns(gradcheck_fast.LowPrecisionWarning) as record:
        _WARNING_CALLS[entry](X, Y, p32, gradients)
    assert [Path(w.filename).name for w in record] == [Path(__file__).name], entry


# ---------------------------------------------------------------------------------------------
# Activation and loss knowledge lives in the registries
# ---------------------------------------------------------------------------------------------
_REGISTRY_MODULES = {"activations", "losses"}


def _knowledge_outside_the_registries(source: str) -> list[str]:
    """Comparisons that decide by an activation's or output's name (``name == "tanh"``,
    ``output in ("relu", ...)``) or by a literal kernel code (``out == 1``, ``code != 3``)."""
    from gradcheck_fast import activations, losses

    names = set(activations.REGISTRY) | set(losses.REGISTRY)
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for operand in operands:
            values = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [
                operand]
            if any(isinstance(v, ast.Constant) and v.value in names for v in values):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        coded = any(isinstance(o, ast.Name) and o.id in ("out", "code") for o in operands)
        literal = any(isinstance(o, ast.Constant) and isinstance(o.value, int)
                      and not isinstance(o.value, bool) for o in operands)
        if coded and literal:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_knowledge_finder_finds_what_the_registry_replaced():
    # The forms the package used before the registry (issue 10), one per line.
    before = ('if name == "relu": pass\nif out == 1: pass\n'
              'kinked = hidden[0] in ("relu", "leaky_relu")\nif code != 2: pass\n')
    assert len(_knowledge_outside_the_registries(before)) == 4
    assert _knowledge_outside_the_registries("if out == SOFTMAX_CE: pass\n") == []


def test_no_activation_or_loss_knowledge_outside_the_registries():
    """Engines, modes, the cost model, the reference and validation ask a registry entry
    (kink, curved, gain, class_labels, ...) instead of testing names or codes."""
    offenders = {name: found for name, path in _modules().items()
                 if name not in _REGISTRY_MODULES
                 and (found := _knowledge_outside_the_registries(path.read_text()))}
    assert offenders == {}


# ---------------------------------------------------------------------------------------------
# Kernels take a few bundles, not long argument lists
# ---------------------------------------------------------------------------------------------
#: Kernels allowed more than MAX_KERNEL_ARGS arguments: each documents every argument.
_LONG_SIGNATURES = {"moved_change", "_activation_changes", "_linear_row", "composed_terms"}

#: Issue 10: no kernel over ~10 arguments (a parallel kernel's five scheduling arguments
#: included); before, the engines' kernels took 26 to 31.
MAX_KERNEL_ARGS = 10


def _kernels():
    import importlib
    import pkgutil

    import numba

    for info in pkgutil.walk_packages(gradcheck_fast.__path__, "gradcheck_fast."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            kernel = getattr(value, "kernel", value)  # a launch wrapper's kernel
            if (isinstance(kernel, numba.core.dispatcher.Dispatcher)
                    and kernel.py_func.__module__ == info.name):
                yield name, kernel.py_func


def test_kernels_take_few_arguments_or_document_each():
    kernels = dict(_kernels())
    assert {"_costs_range", "_deltas_range", "_deltas_parallel", "_forward"} <= kernels.keys()
    for name, function in kernels.items():
        parameters = list(inspect.signature(function).parameters)
        if name in _LONG_SIGNATURES:
            doc = inspect.getdoc(function) or ""
            missing = [p for p in parameters if p not in doc]
            assert not missing, f"{name} does not document {missing}"
        else:
            assert len(parameters) <= MAX_KERNEL_ARGS, (name, len(parameters))


def _engine_name_branches(source: str) -> list[str]:
    """Comparisons of an ``.engine`` attribute with a name (``costs.engine != "incremental"``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            names = [v for o in operands
                     for v in (o.elts if isinstance(o, (ast.Tuple, ast.List, ast.Set)) else [o])
                     if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            if names and any(isinstance(o, ast.Attribute) and o.attr == "engine"
                             for o in operands):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_report_and_the_checker_do_not_branch_on_the_engine():
    """Each engine's Costs carries its own noise bound and kink wording (issue 10): the forms
    the report used before are found, and none is left."""
    before = ('if costs.engine != "incremental": pass\n'
              'kink = "a" if report.engine in ("exact", "incremental") else "b"\n')
    assert len(_engine_name_branches(before)) == 2
    modules = _modules()
    offenders = {name: found for name, path in modules.items()
                 if (name.startswith("report") or name in ("checker", "custom", "truncation"))
                 and (found := _engine_name_branches(path.read_text()))}
    assert offenders == {}


# ---------------------------------------------------------------------------------------------
# Hot loops do no reference counting
# ---------------------------------------------------------------------------------------------
def test_the_exact_engines_loop_does_no_reference_counting():
    """Defect (issue 10): numba increfed and decrefed, with atomic instructions, the ~15 arrays
    of every perturbed pass, two thirds of the seed check's time; the loop now runs in a
    function compiled without reference counting (``jit(nrt=False)``). Compiled afresh here,
    since numba cannot show the code of a kernel it loaded from its cache."""
    import numba

    from gradcheck_fast.engines import exact
    from gradcheck_fast.networks import example

    X, Y, parameters, gradients = example("seed")
    gradcheck_fast.gradient_check_n(parameters, gradients, X, Y, verbose=False, engine="exact")
    # _costs_slots's types: from the small check's launch (request, net, X, Y, codes, out),
    # with the unperturbed pass and the work space it makes.
    request, net, _, Y, codes, out = exact._costs_at_once.signatures[0]
    vector = numba.typeof(np.empty(1))
    base = numba.types.Tuple((Y, vector, vector, vector, numba.float64, numba.float64))
    scratch = numba.typeof(exact.Scratch(np.empty(1), np.empty(1, dtype=np.int64), np.empty(1),
                                         np.empty(1), np.empty(1)))
    signature = (numba.int64, numba.int64, request, net, codes, base, scratch, out)
    kernel = exact._costs_slots
    options = {k: v for k, v in kernel.targetoptions.items() if k not in ("nopython", "cache")}
    fresh = numba.njit(**options)(kernel.py_func)
    fresh.compile(signature)
    name = fresh.overloads[signature].fndesc.mangled_name
    body = fresh.inspect_llvm(signature).split(f"@{name}(", 1)[1].split("\n}\n", 1)[0]
    assert "NRT_incref" not in body and "NRT_decref" not in body
