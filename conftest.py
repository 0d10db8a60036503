"""Root conftest: `pytest` runs the tests; `pytest --benchmark-only` runs the benchmarks.

The benchmarks in benchmarks/ are long and are left out of the plain test run. They are collected
when pytest is asked for them: with --benchmark-only (the usage the README documents), or when
benchmarks/ is named on the command line (CI runs `pytest benchmarks --benchmark-disable` once
so that they cannot rot).
"""

from pathlib import Path

_BENCHMARKS = Path(__file__).parent / "benchmarks"


def _named_on_command_line(config) -> bool:
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        if path == _BENCHMARKS or _BENCHMARKS in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path, config):
    if collection_path == _BENCHMARKS:
        wanted = config.getoption("benchmark_only", False) or _named_on_command_line(config)
        return None if wanted else True
    return None
