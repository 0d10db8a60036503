"""Every benchmark network with and without another process holding a core.

From the repository root, ``python -m benchmarks.loaded_table`` prints, for the seed, small
and medium networks (``gradient_check_n``) and the wide and mnist-size ones
(``check_gradients``), the median time of single calls without and with a CPU hog (a Python
busy loop, killed after each measurement and ending by itself after 120 s in any case) and
the slowdown (the issue's target: at most 3x). Prefix ``NUMBA_THREADING_LAYER=omp`` (or
``workqueue``, ``tbb``) to measure another threading layer.
:mod:`benchmarks.test_bench_loaded` asserts the speed-up over the seed's loop under load.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import timeit

import numba

import gradcheck_fast as gc
from gradcheck_fast.networks import example

_HOG = "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end:\n    pass\n"

#: Single calls per median, by network.
REPEATS = {"seed": 30, "small": 30, "medium": 15, "wide": 7, "mnist": 5}


def _call(name: str):
    X, Y, parameters, gradients = example(name)
    if name in ("seed", "small", "medium"):
        return lambda: gc.gradient_check_n(parameters, gradients, X, Y, verbose=False)
    return lambda: gc.check_gradients(parameters, gradients, X, Y)


def _median(call, repeat: int) -> float:
    return statistics.median(timeit.repeat(call, number=1, repeat=repeat))


def main() -> None:
    calls = {name: _call(name) for name in REPEATS}
    for call in calls.values():
        call()  # compile or load the kernels first
    print(f"threading layer {numba.threading_layer()}, {numba.get_num_threads()} threads")
    for name, call in calls.items():
        unloaded = _median(call, REPEATS[name])
        hog = subprocess.Popen([sys.executable, "-c", _HOG])
        time.sleep(0.3)  # running and scheduled before the timing starts
        try:
            loaded = _median(call, REPEATS[name])
        finally:
            hog.kill()
            hog.wait()
        print(f"{name:7s} unloaded {unloaded * 1e3:9.3f} ms  with a core taken "
              f"{loaded * 1e3:9.3f} ms  slowdown {loaded / unloaded:5.2f}x", flush=True)


if __name__ == "__main__":
    main()
