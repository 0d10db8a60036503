"""Shared set-up of the benchmarks: networks, warm JIT, BLAS threads, timing helpers."""

from __future__ import annotations

import timeit

import pytest

from gradcheck_fast import gradient_check_n, reference
from gradcheck_fast.networks import NAMED_SIZES, random_mlp


def network(name: str):
    """(X, Y, parameters, gradients) of a named network; 'seed' is the published case with the
    seed's faulty backward pass, the others are seeded random MLPs with correct gradients."""
    if name == "seed":
        X, Y, parameters = reference.seed_case()
        _, cache = reference.forward_propagation_n(X, Y, parameters)
        return X, Y, parameters, reference.backward_propagation_n_faulty(X, Y, cache)
    sizes, m = NAMED_SIZES[name]
    return random_mlp(sizes, m, seed=0)


def best_time(call, repeat: int) -> float:
    """The fastest of ``repeat`` single calls (the least disturbed by a busy machine)."""
    return min(timeit.repeat(call, number=1, repeat=repeat))


@pytest.fixture(scope="session", autouse=True)
def warm_jit():
    """Compile (or load from the cache) every kernel before anything is timed."""
    X, Y, parameters, gradients = network("small")
    gradient_check_n(parameters, gradients, X, Y, verbose=False)
    X, Y, parameters, gradients = network("seed")
    gradient_check_n(parameters, gradients, X, Y, verbose=False)
