"""What a check will cost before it runs, and the most thorough check that fits a budget.

The time model counts the work of each mode and converts it with rates measured on the
development machine (2 cores, AVX-512, numba 0.68, OpenBLAS on one thread, see the README).
It is an estimate, good to a small factor: the benchmarks compare it with measured times.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numba

from ._schedule import SERIAL_SECONDS
from .costmodel import (
    BLAS_S_PER_FLOP,
    exact_seconds,
    incremental_seconds,
    series_seconds,
    slow_fractions,
)

#: Seconds per parameter of validating and packing the inputs.
PYTHON_S_PER_PARAM = 8e-9

#: Seconds per checked coordinate of building the report (a few dozen NumPy passes).
REPORT_S_PER_COORDINATE = 5e-8

#: Fixed cost of a call (dispatch, small allocations, building the report).
CALL_S = 4e-4

#: Fixed cost per block of the directional probes (random directions, NumPy calls).
DIRECTIONAL_BLOCK_S = 1e-4

#: Seconds per element of the (directions x units x samples) arrays of the directional
#: probes, per layer crossed: the jitted ReLU changes of both signs and a few NumPy
#: elementwise operations (the loss change, copies).
DIRECTIONAL_S_PER_ELEMENT = 4e-9

#: Parallel speed-up per extra thread (measured ~1.45 on 2 cores).
THREAD_GAIN = 0.45


@dataclass(frozen=True)
class ModeCost:
    """The expected cost of one mode."""

    mode: str
    evaluations: int  # costs J(theta +- ...) evaluated
    coordinates: int  # coordinates checked one by one (0 for directional)
    seconds: float


@dataclass(frozen=True)
class CostEstimate:
    """Expected cost of each mode for one set of inputs and options."""

    full: ModeCost
    sampled: ModeCost
    directional: ModeCost
    n_params: int
    engine: str  # the engine a full check would use

    def __getitem__(self, mode: str) -> ModeCost:
        return {"full": self.full, "sampled": self.sampled, "directional": self.directional}[mode]

    def __str__(self) -> str:
        lines = [f"expected cost for {self.n_params} parameters ({self.engine} engine):"]
        for m in (self.full, self.sampled, self.directional):
            lines.append(f"  {m.mode:<12} {m.evaluations:>12,} evaluations  "
                         f"{m.coordinates:>10,} coordinates  ~{m.seconds:.3g} s")
        return "\n".join(lines)


def _speed(n_threads: int) -> float:
    return 1.0 + THREAD_GAIN * (n_threads - 1)


def _estimate_coordinates(sizes, m: int, n: int, engine: str, n_threads: int, passes: int,
                          slow=None, hidden=()) -> float:
    """Seconds to check n coordinates with ``engine`` (``passes`` central differences) of a
    network with the hidden activations ``hidden``."""
    sizes = [int(s) for s in sizes]
    n_out = sizes[-1]
    pairs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    if engine == "exact":
        # Every perturbation recomputes one row and the layers above it for the changed
        # samples (at most m, about half of them with ReLUs).
        loop = n * exact_seconds(sizes, m) / 2
        setup = 0.0
    else:
        hidden_out = sum(sizes[1:-1]) * sizes[-1]
        setup = (2 * m * pairs + 2 * m * n_out * sum(
            a * b for a, b in zip(sizes[1:-1], sizes[2:-1] + [0]))
            + m * hidden_out) * BLAS_S_PER_FLOP + series_seconds(sizes, m, hidden)
        loop = n * incremental_seconds(sizes, m, slow)
    threads = n_threads if loop >= SERIAL_SECONDS else 1  # as the engine decides
    return passes * (setup + loop / _speed(threads))


def _estimate_directional(sizes, m: int, n_directions: int) -> float:
    """Seconds of the directional probes: per block, the change of the perturbed layer and
    its propagation (BLAS products over the k directions)."""
    sizes = [int(s) for s in sizes]
    flops = 2 * m * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))  # forward pass
    L = len(sizes) - 1
    elements = 0
    for l in range(1, L + 1):
        later = sum(sizes[q] * sizes[q + 1] for q in range(l, L))
        flops += 2 * (2 * n_directions * m * later)  # W_l and b_l blocks, plus and minus
        flops += 2 * n_directions * sizes[l] * sizes[l - 1]  # a^T G b
        elements += 2 * n_directions * m * sum(sizes[l:])  # W_l and b_l blocks
    return flops * BLAS_S_PER_FLOP + elements * DIRECTIONAL_S_PER_ELEMENT


def estimate(inputs, options) -> CostEstimate:
    """The expected cost of each mode for validated inputs and options."""
    from .engine import choose_engine
    from .modes import sample_indices

    layout = inputs.layout
    sizes, m, P = layout.sizes, inputs.m, layout.n_params
    n_threads = options.n_threads or numba.get_num_threads()
    passes = 2 if options.method == "richardson" else 1

    engine = choose_engine(options.engine, P * m)
    python = CALL_S + PYTHON_S_PER_PARAM * P
    hidden = inputs.model.hidden_for(layout.n_layers)
    slow = None
    if engine == "incremental" and len(sizes) > 3:
        # Deep networks: how many samples the explicit path will take (the set-up is cheap
        # next to any check that needs an estimate).
        from . import delta
        from ._threads import single_blas_thread

        with single_blas_thread():
            prepared = delta.prepare(layout, inputs.theta, inputs.X, inputs.Y, inputs.model)
        if prepared is not None:
            slow = slow_fractions(prepared, sizes, m, options.epsilon)
    full = ModeCost("full", 2 * passes * P, P,
                    python + REPORT_S_PER_COORDINATE * P
                    + _estimate_coordinates(sizes, m, P, engine, n_threads, passes, slow,
                                            hidden))
    n_sampled = len(sample_indices(layout, options.n_per_block, options.seed))
    sampled = ModeCost("sampled", 2 * passes * n_sampled, n_sampled,
                       python + REPORT_S_PER_COORDINATE * n_sampled
                       + _estimate_coordinates(sizes, m, n_sampled, engine, n_threads, passes,
                                               slow, hidden))
    n_blocks = len(layout.names)
    from .truncation import SMALLER_STEPS, TRUNCATION_STEP

    # A large step's probes are taken at eps/2 and eps/4 too (they bound the truncation).
    differences = 1 + len(SMALLER_STEPS) if options.epsilon > TRUNCATION_STEP else 1
    directional = ModeCost("directional", 2 * differences * options.n_directions * n_blocks, 0,
                           python + n_blocks * DIRECTIONAL_BLOCK_S
                           + differences * _estimate_directional(sizes, m, options.n_directions))
    return CostEstimate(full, sampled, directional, P, engine)


def plan(inputs, options):
    """The most thorough mode that fits ``options.budget_s``, and a note saying what was
    chosen: full, else sampled with the most coordinates per block that fit (at least 16),
    else directional (which is run even if over budget: nothing cheaper checks every block)."""
    budget = options.budget_s
    cost = estimate(inputs, options)
    if cost.full.seconds <= budget:
        chosen = replace(options, mode="full")
        return chosen, (f"budget {budget:g} s: full check (expected {cost.full.seconds:.3g} s)")
    # Sampled: the expected time grows about linearly with the coordinates per block.
    low, high = 16, max(16, int(options.n_per_block))
    best = None
    while low <= high:
        mid = (low + high) // 2
        trial = replace(options, mode="sampled", n_per_block=mid)
        seconds = estimate(inputs, trial).sampled.seconds
        if seconds <= budget:
            best, low = (trial, seconds), mid + 1
        else:
            high = mid - 1
    if best is not None:
        trial, seconds = best
        return trial, (f"budget {budget:g} s: a full check would take ~{cost.full.seconds:.3g} s; "
                       f"sampled {trial.n_per_block} coordinates per block instead "
                       f"(expected {seconds:.3g} s)")
    chosen = replace(options, mode="directional")
    over = "" if cost.directional.seconds <= budget else " (over budget: nothing cheaper)"
    return chosen, (f"budget {budget:g} s: full ~{cost.full.seconds:.3g} s and sampled "
                    f"~{cost.sampled.seconds:.3g} s do not fit; directional with "
                    f"{options.n_directions} probes per block (expected "
                    f"{cost.directional.seconds:.3g} s){over}")


def estimate_cost(parameters, gradients, X, Y, **options) -> CostEstimate:
    """The expected cost of :func:`gradcheck_fast.check_gradients` in each mode, before running.

    Takes the same arguments as ``check_gradients`` (the mode is ignored: every mode is
    estimated). Returns the number of cost evaluations and the expected seconds of the
    ``"full"``, ``"sampled"`` and ``"directional"`` modes; ``print`` shows a table.

    Examples
    --------
    >>> from gradcheck_fast import estimate_cost
    >>> from gradcheck_fast.networks import random_mlp
    >>> X, Y, parameters, gradients = random_mlp((100, 50, 1), m=32)
    >>> cost = estimate_cost(parameters, gradients, X, Y, n_per_block=100)
    >>> cost.full.evaluations, cost.sampled.coordinates, cost.directional.evaluations
    (10202, 201, 64)
    >>> cost.directional.seconds < cost.full.seconds
    True
    """
    from .checker import check_options, prepare_inputs

    inputs = prepare_inputs(parameters, gradients, X, Y, options.pop("model", None))
    defaults = dict(epsilon=None, threshold=2e-7, rtol=None, atol=None, mode="full",
                    n_per_block=1000, n_directions=8, seed=0, probability=0.999,
                    method="central", engine="auto", progress=False, n_threads=None,
                    budget_s=None)
    unknown = set(options) - set(defaults)
    if unknown:
        raise TypeError(f"estimate_cost() got an unexpected keyword argument "
                        f"{sorted(unknown)[0]!r}")
    defaults.update(options)
    return estimate(inputs, check_options(low_precision=bool(inputs.low_precision), **defaults))

