"""Budget against elapsed time of ``check_gradients(..., budget_s=B)``, with the set-up measured
on its own: ``python -m benchmarks.budget_table`` from the repository root prints the table
(the README's figures; it includes the 4096-4096-4096-10 network, 33.6 M parameters, ~1 GB,
a minute or two). :mod:`benchmarks.test_bench_budget` asserts the same bound on smaller
networks.

The bound: elapsed <= 1.5 B + set-up, where the set-up is what every check of the chosen kind
pays before its first coordinate or probe: the validation, and the incremental engine's
preparation (when the plan prepared the network) or else the forward pass.
"""

from __future__ import annotations

import sys
import timeit

from gradcheck_fast import check_gradients, delta
from gradcheck_fast._threads import single_blas_thread
from gradcheck_fast.checker import prepare_inputs
from gradcheck_fast.engine import prepare_engine
from gradcheck_fast.networks import random_mlp

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


def figures(network, budget: float, rounds: int = 3) -> dict:
    """Run the budgeted check ``rounds`` times (after one untimed run) on ``network`` =
    ``(X, Y, parameters, gradients)``; the fastest run, its set-up measured separately (best
    of ``rounds``), the mode chosen and the plan's note."""
    X, Y, parameters, gradients = network
    report = check_gradients(parameters, gradients, X, Y, budget_s=budget)  # warm: kernels
    elapsed = _best(lambda: check_gradients(parameters, gradients, X, Y, budget_s=budget),
                    rounds)
    note = next(n for n in report.notes if n.startswith("budget"))
    validation = _best(lambda: prepare_inputs(parameters, gradients, X, Y), rounds)
    inputs = prepare_inputs(parameters, gradients, X, Y)
    args = (inputs.layout, inputs.theta, inputs.X, inputs.Y)
    prepared = "(measured)" in note or "unused preparation" in note
    if prepared:
        work = _best(lambda: prepare_engine(*args, "auto", inputs.model), rounds)
    else:
        def forward():
            with single_blas_thread():
                delta.forward(*args, inputs.model)

        work = _best(forward, rounds)
    setup = validation + work
    return {"mode": report.mode, "elapsed_s": elapsed, "budget_s": budget,
            "validation_s": validation, "setup_s": setup, "prepared": prepared,
            "bound_s": 1.5 * budget + setup, "note": note}


def main(argv: list[str]) -> None:
    rounds = int(argv[0]) if argv else 3
    print(f"{'network':<24} {'m':>4} {'budget':>7} {'mode':<12} {'elapsed':>8} "
          f"{'set-up':>7} {'1.5B+set-up':>11}  within")
    for sizes, m, budgets in TABLE:
        network = random_mlp(sizes, m, seed=0)
        for budget in budgets:
            f = figures(network, budget, rounds)
            print(f"{'-'.join(map(str, sizes)):<24} {m:>4} {budget:>7g} {f['mode']:<12} "
                  f"{f['elapsed_s']:>8.3f} {f['setup_s']:>7.3f} {f['bound_s']:>11.3f}  "
                  f"{f['elapsed_s'] <= f['bound_s']}", flush=True)
            print(f"    {f['note']}", flush=True)
        del network


if __name__ == "__main__":
    main(sys.argv[1:])
