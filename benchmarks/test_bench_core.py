"""The fast gradient_check_n against the seed's reference loop, end to end.

One group per network; in each group pytest-benchmark prints the reference and the fast call
side by side, the parenthesised factors being the ratios. The speed-up targets (>= 100x on the
seed network and on the small one, issue 10) are asserted in the same run: the fast test
also times the reference loop (best of several single calls, the measure least disturbed by a
busy machine) and compares it with the best of its own rounds.
"""

from __future__ import annotations

import pytest

from benchmarks.conftest import best_time
from gradcheck_fast import gradient_check_n, reference
from gradcheck_fast.networks import example

#: Minimum speed-up of the fast call over the reference loop, per network (None: no target).
TARGETS = {"seed": 100.0, "small": 100.0, "medium": None}

#: Single reference calls timed for the ratio (the slower the network, the fewer).
REFERENCE_REPEATS = {"seed": 30, "small": 15, "medium": 3}


@pytest.mark.parametrize("name", list(TARGETS))
def test_reference(benchmark, name):
    X, Y, parameters, gradients = example(name)
    benchmark.group = f"gradient_check_n: {name}"
    benchmark.name = f"reference[{name}]"
    difference = benchmark(reference.gradient_check_n, parameters, gradients, X, Y, verbose=False)
    assert difference == reference.gradient_check_n(parameters, gradients, X, Y, verbose=False)


@pytest.mark.parametrize("name", list(TARGETS))
def test_fast(benchmark, name):
    X, Y, parameters, gradients = example(name)
    benchmark.group = f"gradient_check_n: {name}"
    benchmark.name = f"fast[{name}]"
    expected = reference.gradient_check_n(parameters, gradients, X, Y, verbose=False)
    difference = benchmark(gradient_check_n, parameters, gradients, X, Y, verbose=False)
    # Same answer as the seed's loop (rounding aside), so the timing compares like with like.
    assert abs(difference - expected) <= 1e-6 * max(1.0, abs(expected)) or expected < 2e-7
    if benchmark.disabled or TARGETS[name] is None:
        return
    reference_time = best_time(
        lambda: reference.gradient_check_n(parameters, gradients, X, Y, verbose=False),
        REFERENCE_REPEATS[name],
    )
    speedup = reference_time / benchmark.stats.stats.min
    benchmark.extra_info["reference_s"] = reference_time
    benchmark.extra_info["speedup"] = speedup
    print(f"\n{name}: reference {reference_time * 1e3:.3f} ms, "
          f"fast {benchmark.stats.stats.min * 1e6:.1f} us, speed-up {speedup:.0f}x")
    assert speedup >= TARGETS[name], f"{name}: {speedup:.1f}x < target {TARGETS[name]}x"
