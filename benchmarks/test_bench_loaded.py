"""The checks on a busy machine: another process holds a core (issue 9, item 3).

A CPU hog (a Python busy loop, started and killed by the fixture, and ending by itself after
``HOG_SECONDS`` in any case) takes one core while the check is timed. Each test times the same
call without the hog first (best of several single calls) and records

- ``unloaded_s``, ``loaded_s`` and ``slowdown = loaded / unloaded`` (medians of single calls;
  the issue's target: at most 3x for every benchmark network), and
- for the small network, the seed's loop under the same load and the speed-up over it,
  asserted (>= 50x): the hog slows both sides alike, so the ratio is robust.

The slowdown is recorded but not asserted: on a machine shared with other jobs the "unloaded"
time is itself loaded by an unknown amount, which makes a bound on it noise-driven.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time
import timeit

import pytest

from gradcheck_fast import gradient_check_n, reference
from gradcheck_fast.networks import example

#: A hog never outlives this (seconds), even if the fixture cannot kill it.
HOG_SECONDS = 120

_HOG = f"""
import time
end = time.monotonic() + {HOG_SECONDS}
while time.monotonic() < end:
    pass
"""

#: Speed-up over the seed's loop under the same load (None: not a target).
TARGETS = {"small": 50.0, "medium": None, "mnist": None}

#: Single calls timed per measurement (the slower the network, the fewer).
REPEATS = {"small": 30, "medium": 15, "mnist": 3}


@pytest.fixture
def cpu_hog():
    """A context manager: a process holding one core for the duration of the block."""
    started = []

    @contextlib.contextmanager
    def hold_a_core():
        process = subprocess.Popen([sys.executable, "-c", _HOG])
        started.append(process)
        try:
            time.sleep(0.2)  # running and scheduled before the timing starts
            yield
        finally:
            process.kill()
            process.wait()

    yield hold_a_core
    for process in started:  # after a failure inside the block, too
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("name", list(TARGETS))
def test_check_with_a_core_taken(benchmark, cpu_hog, name):
    X, Y, parameters, gradients = example(name)

    def call():
        return gradient_check_n(parameters, gradients, X, Y, verbose=False)

    expected = call()  # compiled or loaded from the cache
    benchmark.group = "gradient_check_n with a core taken by another process"
    benchmark.name = f"loaded[{name}]"
    if benchmark.disabled:
        assert benchmark(call) == expected
        return
    unloaded = statistics.median(timeit.repeat(call, number=1, repeat=REPEATS[name]))
    with cpu_hog():
        difference = benchmark.pedantic(call, rounds=REPEATS[name], warmup_rounds=1)
        seed_loop = (statistics.median(timeit.repeat(lambda: reference.gradient_check_n(
            parameters, gradients, X, Y, verbose=False), number=1, repeat=5))
            if TARGETS[name] else None)
    assert difference == expected
    # The median, not the best round: a region waiting for a descheduled thread is the typical
    # call under load, which the fastest round hides.
    loaded = benchmark.stats.stats.median
    benchmark.extra_info.update(unloaded_s=unloaded, loaded_s=loaded,
                                slowdown=loaded / unloaded)
    print(f"\n{name}: unloaded {unloaded * 1e3:.3f} ms, with a core taken {loaded * 1e3:.3f} ms "
          f"(median; {loaded / unloaded:.2f}x)")
    if seed_loop is not None:
        speedup = seed_loop / loaded
        benchmark.extra_info.update(seed_loop_loaded_s=seed_loop, speedup_loaded=speedup)
        print(f"{name}: the seed's loop with a core taken {seed_loop * 1e3:.1f} ms: "
              f"{speedup:.0f}x")
        assert speedup >= TARGETS[name], f"{name}: {speedup:.1f}x < {TARGETS[name]}x under load"
