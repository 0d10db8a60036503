"""Cold start: what a fresh install pays before its first answers, with an empty numba cache.

From the repository root, ``python -m benchmarks.cold_start`` runs, each in a fresh Python
process with its own empty ``NUMBA_CACHE_DIR``:

- the demo, ``python -m gradcheck_fast --repeat 1``, timed whole;
- one process that times the first ``check_gradients`` of the seed, small (20-10-5-1, m=32),
  medium (64-32-16-1, m=128) and mnist-size (784-256-128-10, m=64) networks in turn (each
  compiles what the earlier ones did not);

and then the same process again on the now filled cache (what every later process pays).
It is a documented command, not a pytest benchmark: a cold compile takes tens of seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

_FIRST_CHECKS = """
import time
started = time.perf_counter()
import gradcheck_fast as gc
from gradcheck_fast.networks import example
print(f"import {time.perf_counter() - started:.2f} s", flush=True)
for name in ("seed", "small", "medium", "mnist"):
    X, Y, parameters, gradients = example(name)
    started = time.perf_counter()
    gc.check_gradients(parameters, gradients, X, Y)
    print(f"first check_gradients, {name}: {time.perf_counter() - started:.2f} s", flush=True)
"""


def _run(args, cache: str) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    for line in result.stdout.splitlines():
        if line.startswith(("import", "first")):
            print("   ", line)
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as demo_cache:
        demo = _run(["-m", "gradcheck_fast", "--repeat", "1"], demo_cache)
        print(f"python -m gradcheck_fast, empty cache: {demo:.1f} s")
    with tempfile.TemporaryDirectory() as cache:
        print("first checks, empty cache:")
        cold = _run(["-c", _FIRST_CHECKS], cache)
        print(f"  whole process {cold:.1f} s")
        print("first checks, cache filled:")
        warm = _run(["-c", _FIRST_CHECKS], cache)
        print(f"  whole process {warm:.1f} s")


if __name__ == "__main__":
    main()
