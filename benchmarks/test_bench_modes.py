"""Checks of a network too big to check every coordinate: 1024-1024-512-10, m = 64
(1,579,530 parameters), for the seed's architecture and a tanh/softmax/L2 model. Targets: the
directional mode with 8 probes per block within 0.1 s, the sampled mode with 1,000 coordinates
per block within 1 s (after warm-up), and the cost estimate within a factor 2 of the measured
time."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck_fast import MLP, check_gradients, estimate_cost, reference
from gradcheck_fast.networks import random_mlp

SIZES, M = (1024, 1024, 512, 10), 64
TARGETS = {"directional": 0.1, "sampled": 1.0}
MODELS = {"seed": MLP(), "tanh-softmax-l2": MLP(hidden="tanh", output="softmax", l2=0.01)}


@pytest.fixture(scope="module")
def huge():
    return random_mlp(SIZES, M, seed=0)


def _inputs(huge, model):
    """The network's data and the reference's (right) gradients for ``model``."""
    X, Y, parameters, gradients = huge
    if model == MLP():
        return X, Y, parameters, gradients
    if model.output == "softmax":
        Y = np.eye(SIZES[-1])[:, np.argmax(Y, axis=0)]
    _, cache = reference.forward_mlp(X, Y, parameters, model)
    return X, Y, parameters, reference.backward_mlp(X, Y, cache, model)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("mode", list(TARGETS))
def test_mode_on_a_1_58m_parameter_network(benchmark, huge, mode, model):
    X, Y, parameters, gradients = _inputs(huge, MODELS[model])
    options = {"mode": mode, "n_per_block": 1000, "n_directions": 8, "model": MODELS[model]}
    check_gradients(parameters, gradients, X, Y, **options)  # warm-up: kernels, caches
    benchmark.group = "modes on 1024-1024-512-10 (1.58 M parameters)"
    benchmark.name = f"check_gradients[{mode}, {model}]"
    report = benchmark.pedantic(check_gradients, args=(parameters, gradients, X, Y),
                                kwargs=options, rounds=5, warmup_rounds=1)
    assert report.n_params == 1_579_530 and report.passed and report.mode == mode
    if benchmark.disabled:
        return
    best = benchmark.stats.stats.min
    expected = estimate_cost(parameters, gradients, X, Y, **options)[mode].seconds
    benchmark.extra_info.update(estimate_s=expected)
    print(f"\n{mode}, {model}: {best * 1e3:.1f} ms (target {TARGETS[mode] * 1e3:.0f} ms), "
          f"estimated {expected * 1e3:.1f} ms")
    assert best <= TARGETS[mode]
    assert best / 2 <= expected <= best * 2
