"""Root conftest: `pytest` runs the tests; `pytest --benchmark-only` runs the benchmarks.

benchmarks/ is in testpaths so that `pytest --benchmark-only` from the root finds it (the
usage the README documents), but its benchmarks are long, so the plain test run deselects
them. They run when pytest is asked for them: with --benchmark-only, or when benchmarks/ is
named on the command line (CI runs `pytest benchmarks --benchmark-disable` once so that they
cannot rot).
"""

from pathlib import Path

_BENCHMARKS = Path(__file__).parent / "benchmarks"


def _named_on_command_line(config) -> bool:
    # invocation_params.args: what was typed, not testpaths (which lists benchmarks/ too).
    for arg in config.invocation_params.args:
        if arg.startswith("-"):
            continue
        path = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if path == _BENCHMARKS or _BENCHMARKS in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config, items):
    if config.getoption("benchmark_only", False) or _named_on_command_line(config):
        return
    benchmarks = [item for item in items if _BENCHMARKS in Path(item.path).parents]
    if benchmarks:
        config.hook.pytest_deselected(items=benchmarks)
        items[:] = [item for item in items if item not in benchmarks]
