"""Full checks of large networks: the incremental engine against the seed's loop.

The seed's loop is far too slow to run whole here (hours on the mnist-size network), so it is
timed on a fixed random sample of coordinates in the same run
(:func:`gradcheck_fast.reference.gradapprox_n`: exactly the loop's work per coordinate, which is
the same for every coordinate: a copy of theta and two full forward passes) and extrapolated to
all P coordinates. Throughput is reported as parameters checked per second.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.conftest import best_time
from gradcheck_fast import check_gradients, reference
from gradcheck_fast.networks import example

#: name: (minimum speed-up over the extrapolated reference loop, coordinates sampled for it)
TARGETS = {"medium": (50.0, 400), "wide": (100.0, 60), "mnist": (150.0, 30)}


def _sample(n_params: int, n: int) -> np.ndarray:
    return np.sort(np.random.default_rng(12345).choice(n_params, size=n, replace=False))


@pytest.mark.parametrize("name", list(TARGETS))
def test_full_check(benchmark, name):
    X, Y, parameters, gradients = example(name)
    target, n_sample = TARGETS[name]
    check_gradients(parameters, gradients, X, Y)  # compile or load the kernels
    benchmark.group = "full check of a large network"
    benchmark.name = f"check_gradients[{name}]"
    report = benchmark.pedantic(check_gradients, args=(parameters, gradients, X, Y),
                                rounds=5 if name == "mnist" else 10, warmup_rounds=1)
    assert report.passed and report.failed_blocks == []

    # The sampled coordinates agree with the seed's loop within its rounding noise (~u J / eps).
    indices = _sample(report.n_params, n_sample)
    flat = np.concatenate([report.gradapprox[k].ravel() for k in report.layout.grad_names])
    slow = reference.gradapprox_n(parameters, X, Y, indices=indices)
    assert np.all(np.abs(slow - flat[indices]) <= 64 * 2.0**-53 * report.cost / 1e-7 + 1e-12)
    if benchmark.disabled:
        return

    per_coordinate = best_time(lambda: reference.gradapprox_n(parameters, X, Y, indices=indices),
                               repeat=3) / n_sample
    reference_full = per_coordinate * report.n_params
    fast = benchmark.stats.stats.min
    speedup = reference_full / fast
    benchmark.extra_info.update(reference_full_s=reference_full, speedup=speedup,
                                params_per_s=report.n_params / fast)
    print(f"\n{name}: {report.n_params} parameters, check {fast:.3f} s "
          f"({report.n_params / fast:,.0f} params/s); reference loop ~{reference_full:.1f} s "
          f"(extrapolated from {n_sample} coordinates); speed-up {speedup:.0f}x")
    assert speedup >= target, f"{name}: {speedup:.1f}x < target {target}x"
