"""Checks of a network too big to check every coordinate: 1024-1024-512-10, m = 64
(1,579,530 parameters). Targets: the directional mode with 8 probes per block within 0.1 s,
the sampled mode with 1,000 coordinates per block within 1 s (after warm-up), and the cost
estimate within a factor 3 of the measured time."""

from __future__ import annotations

import pytest

from gradcheck_fast import check_gradients, estimate_cost
from gradcheck_fast.networks import random_mlp

SIZES, M = (1024, 1024, 512, 10), 64
TARGETS = {"directional": 0.1, "sampled": 1.0}


@pytest.fixture(scope="module")
def huge():
    return random_mlp(SIZES, M, seed=0)


@pytest.mark.parametrize("mode", list(TARGETS))
def test_mode_on_a_1_58m_parameter_network(benchmark, huge, mode):
    X, Y, parameters, gradients = huge
    options = {"mode": mode, "n_per_block": 1000, "n_directions": 8}
    check_gradients(parameters, gradients, X, Y, **options)  # warm-up: kernels, caches
    benchmark.group = "modes on 1024-1024-512-10 (1.58 M parameters)"
    benchmark.name = f"check_gradients[{mode}]"
    report = benchmark.pedantic(check_gradients, args=(parameters, gradients, X, Y),
                                kwargs=options, rounds=5, warmup_rounds=1)
    assert report.n_params == 1_579_530 and report.passed and report.mode == mode
    if benchmark.disabled:
        return
    best = benchmark.stats.stats.min
    expected = estimate_cost(parameters, gradients, X, Y, **options)[mode].seconds
    benchmark.extra_info.update(estimate_s=expected)
    print(f"\n{mode}: {best * 1e3:.1f} ms (target {TARGETS[mode] * 1e3:.0f} ms), "
          f"estimated {expected * 1e3:.1f} ms")
    assert best <= TARGETS[mode]
    assert best / 3 <= expected <= best * 3
