"""Cold start: what a fresh install pays before its first answers, with an empty numba cache.

From the repository root, ``python -m benchmarks.cold_start`` runs, each in a fresh Python
process with its own empty ``NUMBA_CACHE_DIR``:

- the demo, ``python -m gradcheck_fast --repeat 1``, timed whole;
- one process that times the first ``check_gradients`` of the seed, small (20-10-5-1, m=32),
  medium (64-32-16-1, m=128) and mnist-size (784-256-128-10, m=64) networks in turn (each
  compiles what the earlier ones did not);

and then the same process again on the now filled cache (what every later process pays).
``benchmarks/test_bench_cold.py`` holds issue 10's targets on the same measurements; where the
compile time goes: ``python -m benchmarks.compile_profile``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

NETWORKS = ("seed", "small", "medium", "mnist")

_FIRST_CHECKS = """
import time
started = time.perf_counter()
import gradcheck_fast as gc
from gradcheck_fast.networks import example
print(f"import {time.perf_counter() - started:.3f}", flush=True)
for name in NAMES:
    X, Y, parameters, gradients = example(name)
    started = time.perf_counter()
    gc.check_gradients(parameters, gradients, X, Y)
    print(f"first {name} {time.perf_counter() - started:.3f}", flush=True)
""".replace("NAMES", repr(NETWORKS))


def _run(args, cache: str) -> tuple[float, dict[str, float]]:
    """Run ``python *args`` with ``NUMBA_CACHE_DIR=cache``: the whole process's seconds and the
    seconds it printed per phase."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    phases = {}
    for line in result.stdout.splitlines():
        words = line.split()
        if words and words[0] == "import":
            phases["import"] = float(words[1])
        elif words and words[0] == "first":
            phases[words[1]] = float(words[2])
    return elapsed, phases


def demo_seconds() -> float:
    """``python -m gradcheck_fast --repeat 1`` with an empty cache: the whole process."""
    with tempfile.TemporaryDirectory() as cache:
        return _run(["-m", "gradcheck_fast", "--repeat", "1"], cache)[0]


def first_checks(cache: str | None = None) -> dict[str, float]:
    """The first check_gradients of each network in one process (empty cache unless ``cache``
    is given): seconds per network, and the import's."""
    if cache is not None:
        return _run(["-c", _FIRST_CHECKS], cache)[1]
    with tempfile.TemporaryDirectory() as empty:
        return _run(["-c", _FIRST_CHECKS], empty)[1]


def main() -> None:
    print(f"python -m gradcheck_fast, empty cache: {demo_seconds():.1f} s")
    with tempfile.TemporaryDirectory() as cache:
        for label in ("empty cache", "cache filled"):
            phases = first_checks(cache)
            checks = sum(phases[name] for name in NETWORKS)
            parts = " + ".join(f"{phases[name]:.2f}" for name in NETWORKS)
            print(f"first checks ({', '.join(NETWORKS)}), {label}: {parts} = {checks:.1f} s "
                  f"(import {phases['import']:.2f} s)")


if __name__ == "__main__":
    main()
