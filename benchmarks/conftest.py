"""Shared set-up of the benchmarks: warm JIT before anything is timed."""

from __future__ import annotations

import timeit

import pytest

from gradcheck_fast import gradient_check_n
from gradcheck_fast.networks import example


def best_time(call, repeat: int) -> float:
    """The fastest of ``repeat`` single calls (the least disturbed by a busy machine)."""
    return min(timeit.repeat(call, number=1, repeat=repeat))


@pytest.fixture(scope="session", autouse=True)
def warm_jit():
    """Compile (or load from the cache) every kernel before anything is timed."""
    for name in ("seed", "small"):
        X, Y, parameters, gradients = example(name)
        gradient_check_n(parameters, gradients, X, Y, verbose=False)
