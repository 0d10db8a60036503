"""Budget against elapsed time of ``check_gradients(..., budget_s=B)``, with the set-up measured
on its own. From the repository root, ``python -m benchmarks.budget_table [rounds [n_threads]]``
prints the table (the README's figures; it includes the 4096-4096-4096-10 network, 33.6 M
parameters, ~1 GB, a minute or two). :mod:`benchmarks.test_bench_budget` asserts the same
bound on smaller networks.

The bound: elapsed <= 1.5 B + set-up, where the set-up is what every check of the chosen kind
pays before its first coordinate or probe: the validation, and the incremental engine's
preparation (when the plan prepared the network) or else the forward pass.
"""

from __future__ import annotations

import re
import sys
import time
import timeit

from gradcheck_fast import check_gradients
from gradcheck_fast._threads import single_blas_thread
from gradcheck_fast.engines import incremental
from gradcheck_fast.networks import random_mlp
from gradcheck_fast.options import prepare_inputs

#: (layer widths, samples, budgets in seconds)
TABLE = [
    ((784, 256, 128, 10), 64, (0.05, 0.5)),
    ((1024, 1024, 512, 10), 64, (0.1, 1.0)),
    ((512, 512, 512, 512, 10), 128, (0.3,)),
    ((2048, 2048, 2048, 10), 64, (0.5, 2.0)),
    ((4096, 4096, 4096, 10), 64, (0.5, 2.0)),
]


def _best(call, rounds: int) -> float:
    return min(timeit.repeat(call, number=1, repeat=rounds))


def _seconds(pattern: str, note: str) -> float | None:
    found = re.search(pattern, note)
    return None if found is None else float(found.group(1))


def figures(network, budget: float, rounds: int = 3, n_threads: int | None = None) -> dict:
    """Run the budgeted check ``rounds`` times (after one untimed run) on ``network`` =
    ``(X, Y, parameters, gradients)``. Each run's set-up is its validation and preparation
    as the plan measured them (its note states them), or, when the probes ran without a
    preparation, its validation and a forward pass measured here; the run with the least
    time beyond its set-up is returned, with the mode chosen and the plan's note."""
    X, Y, parameters, gradients = network
    options = {"budget_s": budget, "n_threads": n_threads}
    check_gradients(parameters, gradients, X, Y, **options)  # warm: kernels, caches
    inputs = prepare_inputs(parameters, gradients, X, Y)

    def forward():
        with single_blas_thread():
            incremental.forward(inputs.layout, inputs.theta, inputs.X, inputs.Y, inputs.model)

    forward_s = _best(forward, rounds)
    runs = []
    for _ in range(rounds):
        started = time.perf_counter()
        report = check_gradients(parameters, gradients, X, Y, **options)
        elapsed = time.perf_counter() - started
        note = next(n for n in report.notes if n.startswith("budget"))
        prepared = (_seconds(r"preparation ([0-9.e+-]+) s \(measured\)", note)
                    or _seconds(r"unused preparation ([0-9.e+-]+) s", note))
        setup = _seconds(r"validation ([0-9.e+-]+) s", note) + (prepared or forward_s)
        runs.append({"mode": report.mode, "elapsed_s": elapsed, "budget_s": budget,
                     "setup_s": setup, "prepared": prepared is not None,
                     "expected_s": _seconds(r"expected ([0-9.e+-]+) s", note),
                     "bound_s": 1.5 * budget + setup, "note": note})
    return min(runs, key=lambda run: run["elapsed_s"] - run["setup_s"])


def main(argv: list[str]) -> None:
    """``[rounds [n_threads]]``: best of 3 by default, numba's thread count."""
    rounds = int(argv[0]) if argv else 3
    n_threads = int(argv[1]) if len(argv) > 1 else None
    print(f"{'network':<24} {'m':>4} {'budget':>7} {'mode':<12} {'expected':>8} "
          f"{'elapsed':>8} {'set-up':>7} {'1.5B+set-up':>11}  within")
    for sizes, m, budgets in TABLE:
        network = random_mlp(sizes, m, seed=0)
        for budget in budgets:
            f = figures(network, budget, rounds, n_threads)
            print(f"{'-'.join(map(str, sizes)):<24} {m:>4} {budget:>7g} {f['mode']:<12} "
                  f"{f['expected_s']:>8.3f} {f['elapsed_s']:>8.3f} {f['setup_s']:>7.3f} "
                  f"{f['bound_s']:>11.3f}  "
                  f"{f['elapsed_s'] <= f['bound_s']}", flush=True)
            print(f"    {f['note']}", flush=True)
        del network


if __name__ == "__main__":
    main(sys.argv[1:])
