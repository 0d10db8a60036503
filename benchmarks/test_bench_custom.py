"""A user's own cost: the medium MLP (64-32-16-1, m = 128) written as an njit function of a
flat theta, checked with gradcheck_fast.check, against the seed's loop on the same network.

The target of the "any network" issue is 20x. A cost given as a black box needs one full
evaluation per perturbation, 2 P = 5250 of them here, each ~0.66 MFLOP; the seed's loop spends
~64 us per evaluation (BLAS plus Python overhead), so 20x would leave 3.2 us per evaluation:
~200 GFLOP/s on this 2-core machine. The benchmark asserts the target and is marked as an
expected failure (strict: it reports loudly if it ever passes) until the check of a user's cost
can use more than a black box.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.conftest import best_time
from gradcheck_fast import check, dictionary_to_vector, gradients_to_vector, reference
from gradcheck_fast.networks import example
from tests.test_custom import mlp_cost

TARGET = 20.0


@pytest.mark.xfail(strict=True, reason="a black-box cost needs 2P full evaluations: 20x would "
                   "need ~200 GFLOP/s on 2 cores (see the module docstring)")
def test_custom_njit_cost(benchmark):
    X, Y, parameters, gradients = example("medium")
    theta = dictionary_to_vector(parameters)[0]
    grad = gradients_to_vector(gradients)
    sizes = np.array([64, 32, 16, 1])
    args = (X, Y, sizes)
    check(mlp_cost, theta, grad, args)  # compile the parallel loop for this cost
    benchmark.group = "a user's njit cost (medium MLP)"
    benchmark.name = "check[medium as njit cost]"
    report = benchmark.pedantic(check, args=(mlp_cost, theta, grad, args), rounds=5,
                                warmup_rounds=1)
    assert report.passed and report.engine == "numba"
    if benchmark.disabled:
        pytest.xfail("timing disabled: the speed-up target cannot be measured")
    slow = best_time(lambda: reference.gradient_check_n(parameters, gradients, X, Y,
                                                        verbose=False), repeat=3)
    one = best_time(lambda: mlp_cost(theta.ravel(), X, Y, sizes), repeat=200)
    ratio = slow / benchmark.stats.stats.min
    benchmark.extra_info.update(reference_s=slow, speedup=ratio, cost_eval_s=one)
    print(f"\nmedium as an njit cost: check {benchmark.stats.stats.min * 1e3:.1f} ms, seed's loop "
          f"{slow * 1e3:.0f} ms: {ratio:.1f}x; one evaluation of the cost {one * 1e6:.1f} us "
          f"(the loop does {2 * theta.size} of them)")
    assert ratio >= TARGET
