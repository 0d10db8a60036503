"""Cold start with an empty numba cache, each in a fresh process (issue 10's targets): the demo
``python -m gradcheck_fast`` <= 10 s in all, and the first ``check_gradients`` of the seed,
small, medium and mnist-size networks in one process <= 20 s together.

Each measurement compiles the package from scratch (seconds to tens of seconds): one round.
With ``--benchmark-disable`` (CI) each still runs once, so that it cannot rot, untimed.
"""

from __future__ import annotations

from benchmarks.cold_start import NETWORKS, demo_seconds, first_checks

TARGETS = {"demo": 10.0, "first_checks": 20.0}


def test_cold_demo(benchmark):
    benchmark.group = "cold start, empty numba cache"
    benchmark.name = "python -m gradcheck_fast"
    seconds = benchmark.pedantic(demo_seconds, rounds=1, iterations=1)
    if benchmark.disabled:
        return
    print(f"\ndemo, empty cache: {seconds:.1f} s (target {TARGETS['demo']:.0f} s)")
    assert seconds <= TARGETS["demo"]


def test_cold_first_checks(benchmark):
    benchmark.group = "cold start, empty numba cache"
    benchmark.name = "first check_gradients: " + ", ".join(NETWORKS)
    phases = benchmark.pedantic(first_checks, rounds=1, iterations=1)
    assert set(NETWORKS) <= phases.keys()
    if benchmark.disabled:
        return
    total = sum(phases[name] for name in NETWORKS)
    benchmark.extra_info.update(phases)
    print("\nfirst checks, empty cache: "
          + " + ".join(f"{name} {phases[name]:.2f}" for name in NETWORKS)
          + f" = {total:.1f} s (target {TARGETS['first_checks']:.0f} s)")
    assert total <= TARGETS["first_checks"]
