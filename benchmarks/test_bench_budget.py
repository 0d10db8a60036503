"""``budget_s``: a check with budget B takes at most 1.5 B plus its set-up (validation, and the
network's preparation or forward pass, measured on their own), on networks from 0.24 M to
12.6 M parameters. The 33.6 M-parameter 4096-4096-4096-10 case takes a minute and ~1 GB:
``python -m benchmarks.budget_table`` measures it (see that module)."""

from __future__ import annotations

import functools

import pytest

from benchmarks.budget_table import figures
from gradcheck_fast import check_gradients
from gradcheck_fast.networks import random_mlp

CASES = [
    ((784, 256, 128, 10), 64, 0.05),
    ((784, 256, 128, 10), 64, 0.5),
    ((1024, 1024, 512, 10), 64, 0.1),
    ((512, 512, 512, 512, 10), 128, 0.3),
    ((2048, 2048, 2048, 10), 64, 0.5),
]


@functools.lru_cache(maxsize=1)
def _network(sizes, m):
    return random_mlp(sizes, m, seed=0)


@pytest.mark.parametrize("sizes, m, budget", CASES,
                         ids=[f"{'-'.join(map(str, s))}-B{b:g}" for s, _, b in CASES])
def test_budget_is_kept(benchmark, sizes, m, budget):
    X, Y, parameters, gradients = _network(sizes, m)
    benchmark.group = "check_gradients(budget_s=B)"
    report = benchmark.pedantic(check_gradients, args=(parameters, gradients, X, Y),
                                kwargs={"budget_s": budget}, rounds=1, warmup_rounds=1)
    assert report.passed
    if benchmark.disabled:
        return
    measured = figures((X, Y, parameters, gradients), budget, rounds=3)
    benchmark.extra_info.update({k: v for k, v in measured.items() if k != "note"})
    print(f"\n{'-'.join(map(str, sizes))} budget {budget:g} s: {measured['mode']}, "
          f"{measured['elapsed_s']:.3f} s (set-up {measured['setup_s']:.3f} s, bound "
          f"{measured['bound_s']:.3f} s)\n  {measured['note']}")
    assert measured["elapsed_s"] <= measured["bound_s"]
