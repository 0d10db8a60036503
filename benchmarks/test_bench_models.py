"""Every member of the MLP family at the mnist size (784-256-128-10, m = 64): a full check
against the seed's architecture on the same network and data. Target: within 2x of the seed's
time."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck_fast import MLP, activations, check_gradients, losses, reference
from gradcheck_fast.networks import example

#: Every registry activation (hidden) and output, and some mixtures.
MODELS = [MLP(hidden=name) for name in activations.REGISTRY if name != "relu"] + [
    MLP(output=name) for name in losses.REGISTRY if name != "sigmoid"] + [
    MLP(hidden="linear", output="linear", l2=0.01),
    MLP(hidden="leaky_relu", output="softmax", l2=0.1),
    MLP(hidden=["relu", "leaky_relu"], output="sigmoid", l2=0.05),
    MLP(hidden="sigmoid", output="softmax", l2=0.1),
    MLP(hidden=["tanh", "relu"], output="linear"),
]


@pytest.fixture(scope="module")
def mnist():
    X, Y, parameters, gradients = example("mnist")
    labels = np.argmax(Y + np.random.default_rng(0).random(Y.shape), axis=0)
    check_gradients(parameters, gradients, X, Y)
    seed = min(_time(lambda: check_gradients(parameters, gradients, X, Y)) for _ in range(3))
    return X, Y, labels, parameters, seed


def _time(call):
    import time

    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@pytest.mark.parametrize("model", MODELS, ids=repr)
def test_model_at_mnist_size(benchmark, mnist, model):
    X, Y, labels, parameters, seed_time = mnist
    Yd = labels if model.loss.class_labels else Y
    _, cache = reference.forward_mlp(X, Yd, parameters, model)
    gradients = reference.backward_mlp(X, Yd, cache, model)
    check_gradients(parameters, gradients, X, Yd, model=model)  # compile or load the kernels
    benchmark.group = "the MLP family at mnist size"
    benchmark.name = repr(model)
    report = benchmark.pedantic(check_gradients, args=(parameters, gradients, X, Yd),
                                kwargs={"model": model}, rounds=3, warmup_rounds=0)
    assert report.passed and report.engine == "incremental"
    if benchmark.disabled:
        return
    ratio = benchmark.stats.stats.min / seed_time
    benchmark.extra_info.update(seed_s=seed_time, ratio_to_seed=ratio)
    print(f"\n{model!r}: {benchmark.stats.stats.min:.3f} s, {ratio:.2f}x the seed's "
          f"{seed_time:.3f} s")
    assert ratio <= 2.0
