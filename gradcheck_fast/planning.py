"""What a check will cost before it runs, and the most thorough check that fits a budget.

The time model counts the work of each mode and converts it with rates measured on the
development machine (2 cores, AVX-512, numba 0.68, OpenBLAS on one thread, see the README).
It is an estimate, good to a small factor: the benchmarks compare it with measured times.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from ._threads import num_threads
from .activations import REGISTRY
from .engines import choose_engine, prepare_engine
from .engines.costmodel import (
    BLAS_S_PER_MAC,
    ELEMENT_S,
    EXACT_S_PER_FLOP,
    exact_layer_seconds,
    forward_seconds,
    on_threads,
    prepare_seconds,
    sweep_check_seconds,
)
from .engines.incremental import slow_fractions
from .engines.layer_sweep import explicit_parameters, matrix_pays
from .noise import N_POINTS
from .report.html import estimate_html
from .truncation import RICHARDSON_FACTOR, SMALLER_STEPS, TRUNCATION_STEP

#: Seconds per parameter of validating and packing the inputs (used when they were not timed;
#: measured 1.7 ns on 4096-4096-4096-10, 5.6 ns on the mnist-size network).
PYTHON_S_PER_PARAM = 2.5e-9

#: Seconds per checked coordinate of building the report (its summary in chunks, one
#: thread; measured 6.8-8.5 ns from the mnist-size network to 4096-4096-4096-10 before clean
#: chunks took one scan, ~6.5 ns at mnist size since: not re-fitted, the full-check estimates
#: stayed within 1.01-1.36x).
REPORT_S_PER_COORDINATE = 7.5e-9

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

#: The fewest coordinates per block a budget's sampled check takes (below that, the
#: directional probes say more per second: every coordinate of a block enters each probe).
MIN_PER_BLOCK = 16


@dataclass(frozen=True)
class ModeCost:
    """The expected cost of one mode.

    ``seconds`` is the whole call's; ``setup`` the part of it spent before the first
    coordinate or probe (validation, the unperturbed forward pass, the engine's preparation).
    """

    mode: str
    evaluations: int  # costs J(theta +- ...) evaluated
    coordinates: int  # coordinates checked one by one (0 for directional)
    seconds: float
    setup: float = 0.0


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
                         f"{m.coordinates:>10,} coordinates  ~{m.seconds:.3g} s "
                         f"(set-up {m.setup:.3g} s)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        modes = ", ".join(f"{m.mode} ~{m.seconds:.3g} s"
                          for m in (self.full, self.sampled, self.directional))
        return f"<CostEstimate for {self.n_params} parameters ({self.engine} engine): {modes}>"

    def _repr_html_(self) -> str:
        return estimate_html(self)


@dataclass(frozen=True)
class SetUp:
    """What a full or sampled check pays before its first coordinate, and what it hands on.

    Attributes
    ----------
    engine : the engine that will run ("exact" also after a non-finite forward pass).
    prepared : the incremental engine's state (:func:`gradcheck_fast.engines.prepare_engine`),
        or None when not prepared (yet).
    seconds : the forward pass and preparation: measured when ``measured``, else modelled.
    measured : whether ``seconds`` was timed.
    slow : per step, per layer the share of samples on the explicit path
        (:func:`~gradcheck_fast.engines.incremental.slow_fractions`), or None (not known: fast
        path only).
    explicit : per step, per layer the share of parameters the layer sweep leaves to the
        per-coordinate path (counted on the prepared state), or None (not known: none).
    """

    engine: str
    prepared: object | None
    seconds: float
    measured: bool
    slow: tuple | None = None
    explicit: tuple | None = None


def thread_speed(n_threads: int) -> float:
    return 1.0 + THREAD_GAIN * (n_threads - 1)


def _steps(options) -> tuple[float, ...]:
    """The steps the engine runs: a second one at 2 eps for Richardson, eps/2 and eps/4 for a
    large central difference's truncation bound (see
    :func:`gradcheck_fast.checker.numerical_gradient`)."""
    h = options.epsilon
    if options.method == "richardson":
        return (h, RICHARDSON_FACTOR * h)
    if h > TRUNCATION_STEP:
        return (h,) + tuple(f * h for f in SMALLER_STEPS)
    return (h,)


def _exact_setup_seconds(sizes, m: int) -> float:
    """The exact engine's forward pass and the ECnoise line (:data:`noise.N_POINTS` costs)."""
    pairs = sum(int(a) * int(b) for a, b in zip(sizes[:-1], sizes[1:]))
    return (1 + N_POINTS) * m * pairs * EXACT_S_PER_FLOP


def coordinate_setup(inputs, options, prepare: bool) -> SetUp:
    """The set-up of a full or sampled check: with ``prepare``, the incremental engine is
    prepared here, timed, and its state kept for the engine; otherwise it is modelled."""
    layout, m = inputs.layout, inputs.m
    sizes = layout.sizes
    engine = choose_engine(options.engine, layout.n_params * m)
    if engine == "exact":
        return SetUp("exact", None, _exact_setup_seconds(sizes, m), False)
    n_threads = options.n_threads or num_threads()
    hidden = inputs.model.hidden_for(layout.n_layers)
    if not prepare:
        return SetUp(engine, None, prepare_seconds(sizes, m, hidden, thread_speed(n_threads)),
                     False)
    started = time.perf_counter()
    engine, prepared = prepare_engine(layout, inputs.theta, inputs.X, inputs.Y, engine,
                                      inputs.model)
    seconds = time.perf_counter() - started
    if prepared is None:  # a non-finite forward pass: the exact engine runs
        return SetUp("exact", None, seconds + _exact_setup_seconds(sizes, m), True)
    slow = None
    if len(sizes) > 3:
        # Deep networks: how many samples the explicit path will take, per step.
        slow = tuple(slow_fractions(prepared, sizes, m, h) for h in _steps(options))
    explicit = tuple(_explicit_fractions(layout, inputs.theta, h, prepared, inputs.model)
                     for h in _steps(options))
    return SetUp("incremental", prepared, seconds, True, slow, explicit)


def _explicit_fractions(layout, theta, epsilon: float, prepared, model) -> np.ndarray:
    """Per layer l (index 1..L), the share of its parameters the layer sweep leaves to the
    per-coordinate path at step epsilon (counted exactly, without the sweep's sums)."""
    explicit = explicit_parameters(layout, theta, epsilon, prepared, model)  # ascending
    per_block = np.diff(np.searchsorted(explicit, layout.offsets))
    per_layer = np.zeros(layout.n_layers + 1)
    for name, count in zip(layout.names, per_block):
        per_layer[int(name[1:])] += count
    sizes = layout.sizes
    for l in range(1, layout.n_layers + 1):
        per_layer[l] /= int(sizes[l]) * (int(sizes[l - 1]) + 1)
    return per_layer


def _per_layer_counts(layout, n_per_block: int | None) -> np.ndarray:
    """Coordinates checked per layer (index 1..L): every one, or ``n_per_block`` of each
    block (all of a smaller block), as :func:`gradcheck_fast.modes.sample_indices` draws."""
    counts = np.zeros(layout.n_layers + 1)
    for name, shape in zip(layout.names, layout.shapes):
        size = int(np.prod(shape))
        counts[int(name[1:])] += size if n_per_block is None else min(size, n_per_block)
    return counts


def _coordinates_seconds(inputs, options, setup: SetUp, n_per_block: int | None,
                         spent_s: float | None) -> tuple[int, float]:
    """The coordinates a full check (``n_per_block`` None) or a sampled one checks, and the
    seconds after the set-up: the engine's loops for every step, and the report."""
    sizes, m = inputs.layout.sizes, inputs.m
    counts = _per_layer_counts(inputs.layout, n_per_block)
    full = n_per_block is None
    speed = thread_speed(options.n_threads or num_threads())
    total = 0.0
    for k, _ in enumerate(_steps(options)):
        if setup.engine == "exact":
            # Every perturbation recomputes one row and the layers above it for the changed
            # samples (at most m, about half of them with ReLUs).
            loop = float(counts @ exact_layer_seconds(sizes, m)) / 2
        else:
            slow = None if setup.slow is None else setup.slow[k]
            explicit = None if setup.explicit is None else setup.explicit[k]
            loop = sweep_check_seconds(sizes, m, counts, full, explicit, slow,
                                       matrix=full and matrix_pays(inputs.layout.size_tuple, m))
        total += on_threads(loop, speed)
    n = int(counts.sum())
    return n, total + on_threads(REPORT_S_PER_COORDINATE * n, speed) + CALL_S


def _validation_seconds(inputs, spent_s: float | None) -> float:
    """The validation (as timed by the caller, else modelled)."""
    return PYTHON_S_PER_PARAM * inputs.layout.n_params if spent_s is None else spent_s


def _coordinate_mode(inputs, options, setup: SetUp, spent_s: float | None,
                     n_per_block: int | None) -> ModeCost:
    """The cost of a full check (``n_per_block`` None) or a sampled one."""
    n, seconds = _coordinates_seconds(inputs, options, setup, n_per_block, spent_s)
    passes = len(_steps(options))
    setup_s = _validation_seconds(inputs, spent_s) + setup.seconds
    return ModeCost("full" if n_per_block is None else "sampled", 2 * passes * n, n,
                    setup_s + seconds, setup_s)


def _directional_parts(inputs, options) -> tuple[float, float]:
    """Seconds of the directional probes' set-up (forward pass, activation complements,
    output coefficients, per-block NumPy calls) and per probe of every block: the change of
    the perturbed layer and its propagation (BLAS products over the directions: the plus
    step's, and the minus step's difference once a curved layer has been crossed), for each
    step (a large one also at eps/2 and eps/4, which bound the truncation)."""
    sizes, m = [int(s) for s in inputs.layout.sizes], inputs.m
    L = len(sizes) - 1
    curved = [REGISTRY[name].curved for name in inputs.model.hidden_for(L)]
    setup = (forward_seconds(sizes, m) + 2 * m * sum(sizes[1:]) * ELEMENT_S
             + len(inputs.layout.names) * DIRECTIONAL_BLOCK_S)
    macs = elements = 0
    for l in range(1, L + 1):
        # The W_l and b_l blocks: each carries its change through the layers after l.
        for q in range(l, L):
            products = 2 if any(curved[l - 1 : q]) else 1
            macs += 2 * products * m * sizes[q] * sizes[q + 1]
        macs += 2 * sizes[l] * sizes[l - 1]  # a^T G b and its bound's |a|^T |G| |b|
        elements += 2 * m * sum(sizes[l:])  # W_l and b_l blocks
    differences = len(_steps(replace(options, method="central")))
    return setup, differences * (macs * BLAS_S_PER_MAC + elements * DIRECTIONAL_S_PER_ELEMENT)


def _directional_mode(inputs, options, spent_s: float | None, n_directions: int) -> ModeCost:
    """The cost of the directional probes, ``n_directions`` per block."""
    forward, per_probe = _directional_parts(inputs, options)
    setup_s = _validation_seconds(inputs, spent_s) + forward
    differences = len(_steps(replace(options, method="central")))
    return ModeCost("directional", 2 * differences * n_directions * len(inputs.layout.names),
                    0, setup_s + n_directions * per_probe + CALL_S, setup_s)


def estimate(inputs, options, setup: SetUp | None = None,
             spent_s: float | None = None) -> CostEstimate:
    """The expected cost of each mode for validated inputs and options.

    ``setup``: the full and sampled checks' set-up, if known; otherwise the incremental
    engine is prepared and timed for deep networks (the explicit path's share depends on the
    data) and modelled for others. ``spent_s``: the seconds already spent validating, if
    timed.
    """
    if setup is None:
        setup = coordinate_setup(inputs, options, prepare=len(inputs.layout.sizes) > 3)
    return CostEstimate(
        _coordinate_mode(inputs, options, setup, spent_s, None),
        _coordinate_mode(inputs, options, setup, spent_s, options.n_per_block),
        _directional_mode(inputs, options, spent_s, options.n_directions),
        inputs.layout.n_params, setup.engine)


def _most_that_fit(seconds, low: int, high: int, available: float) -> int | None:
    """The largest n in [low, high] with ``seconds(n) <= available`` (``seconds`` grows with
    n), or None if not even ``low`` fits."""
    best = None
    while low <= high:
        mid = (low + high) // 2
        if seconds(mid) <= available:
            best, low = mid, mid + 1
        else:
            high = mid - 1
    return best


def _probes_options(options, k: int, over: str):
    """The options of ``k`` directional probes per block, and the plan's note ``over`` with,
    for Richardson, why the probes take the central difference: they form their steps
    exactly and take central differences (with a large step's truncation bound);
    extrapolation is for the coordinate-wise checks."""
    if options.method != "central":
        over += (f"; method={options.method!r} applies to coordinates, the probes take the "
                 f"central difference at epsilon={options.epsilon:g}")
    return replace(options, mode="directional", n_directions=k, method="central"), over


def plan(inputs, options, spent_s: float | None = None):
    """The most thorough check that fits ``options.budget_s``: full, else sampled with the
    most coordinates per block that fit (at least MIN_PER_BLOCK, at most
    ``options.n_per_block``), else directional with the most probes per block that fit (at
    least 1, at most ``options.n_directions``); if nothing fits, whichever of the two
    smallest is cheaper from here on.

    The budget is for the work after validation (``spent_s``, as timed by the caller: done
    and unavoidable before any plan): the forward pass and the engine's preparation included.
    The incremental engine is prepared here, once, when a sampled check could fit by the
    modelled preparation, and timed; its state goes to the engine, which does not prepare
    again, and the time it took counts against the budget (spent all the same if the probes
    are run after all).

    Returns
    -------
    options : the options to run (mode, n_per_block / n_directions and engine resolved)
    note : what was chosen; its expected time, with the set-up (validation, preparation or
        forward pass) stated; the budget
    prepared : the incremental engine's state, or None
    """
    budget = options.budget_s
    validation = _validation_seconds(inputs, spent_s)
    low, high = MIN_PER_BLOCK, max(MIN_PER_BLOCK, int(options.n_per_block))
    setup = coordinate_setup(inputs, options, prepare=False)

    def coordinates(n):  # seconds after the set-up (n None: every coordinate)
        return _coordinates_seconds(inputs, options, setup, n, spent_s)[1]

    # Prepare only if the smallest sampled check could fit by the model (fast path only: the
    # explicit path's share is known only once prepared); else the probes run, which need no
    # preparation.
    if setup.engine == "incremental" and setup.seconds + coordinates(low) <= budget:
        setup = coordinate_setup(inputs, options, prepare=True)
    available = budget - setup.seconds
    how = "measured" if setup.measured else "modelled"
    preparation = (f"the {setup.engine} engine's preparation {setup.seconds:.3g} s ({how}) "
                   f"and validation {validation:.3g} s")
    full = coordinates(None)
    chosen = None
    if full <= available:
        chosen, n, text = replace(options, mode="full"), None, "full check"
    else:
        n = _most_that_fit(coordinates, low, high, available)
        if n is not None:
            chosen = replace(options, mode="sampled", n_per_block=n)
            text = (f"a full check would take ~{validation + setup.seconds + full:.3g} s; "
                    f"sampled {n} coordinates per block instead")
    if chosen is not None:
        work = coordinates(n)
        return replace(chosen, engine=setup.engine), (
            f"budget {budget:g} s: {text} (expected {validation + setup.seconds + work:.3g} s: "
            f"set-up {validation + setup.seconds:.3g} s, {preparation}; then "
            f"{work:.3g} s)"), setup.prepared

    # A preparation done is spent whichever mode runs now.
    sunk = setup.seconds if setup.measured else 0.0
    forward, per_probe = _directional_parts(inputs, options)

    def probes(k):  # seconds from here on
        return forward + k * per_probe + CALL_S

    k = _most_that_fit(probes, 1, int(options.n_directions), budget - sunk)
    over = ""
    if k is None:
        over = "; over budget: nothing cheaper checks every block"
        # Once prepared, the smallest sampled check may cost less from here on.
        if setup.prepared is not None and coordinates(low) < probes(1):
            return replace(options, mode="sampled", n_per_block=low, engine=setup.engine), (
                f"budget {budget:g} s: sampled {low} coordinates per block (expected "
                f"{validation + setup.seconds + coordinates(low):.3g} s: set-up "
                f"{validation + setup.seconds:.3g} s, {preparation}; then "
                f"{coordinates(low):.3g} s{over})"), setup.prepared
        k = 1
    unused = f", the unused preparation {sunk:.3g} s" if sunk else ""
    smallest = validation + setup.seconds + coordinates(low)
    chosen, over = _probes_options(options, k, over)
    return chosen, (
        f"budget {budget:g} s: full ~{validation + setup.seconds + full:.3g} s and sampled "
        f"({low} per block) ~{smallest:.3g} s do not fit; directional with {k} "
        f"probe{'s' if k > 1 else ''} per block (expected "
        f"{validation + sunk + probes(k):.3g} s: set-up "
        f"{validation + sunk + forward:.3g} s, validation {validation:.3g} s{unused} and the "
        f"forward pass ~{forward:.3g} s; then {probes(k) - forward:.3g} s{over})"), None



# ---------------------------------------------------------------------------------------------
# A user's cost (check, check_layer): evaluations x one evaluation's measured time / threads
# ---------------------------------------------------------------------------------------------
#: Evaluations of a user's cost outside the coordinates and probes: the first (it compiles an
#: njit cost and is checked), one timed, and the ECnoise line (:data:`noise.N_POINTS`).
COST_SETUP_EVALUATIONS = 2 + N_POINTS


@dataclass(frozen=True)
class CostModel:
    """What the time model of a user's cost needs: ``seconds`` of one evaluation (measured,
    compiled), ``threads`` the evaluations of the coordinate loop run on (1 for a Python
    cost; the directional probes run one at a time), ``spent_s`` the validation (timed)."""

    layout: object
    seconds: float
    threads: int
    spent_s: float

    def setup(self) -> float:
        """Seconds before the first coordinate or probe: validation and the set-up
        evaluations (the first one's compilation is not counted: it is paid once)."""
        return self.spent_s + COST_SETUP_EVALUATIONS * self.seconds

    def coordinates(self, options, n_per_block: int | None) -> tuple[int, int, float]:
        """(coordinates, evaluations, seconds after the set-up) of a full check
        (``n_per_block`` None) or a sampled one, every step of ``options.method``."""
        sizes = [int(np.prod(shape)) for shape in self.layout.shapes]
        n = sum(sizes) if n_per_block is None else sum(min(s, n_per_block) for s in sizes)
        evaluations = 2 * len(_steps(options)) * n
        return n, evaluations, (evaluations * self.seconds / self.threads
                                + REPORT_S_PER_COORDINATE * n + CALL_S)

    def probes(self, options, k: int) -> tuple[int, float]:
        """(evaluations, seconds after the set-up) of ``k`` directional probes per block."""
        blocks = len(self.layout.names)
        evaluations = 2 * len(_steps(replace(options, method="central"))) * k * blocks
        return evaluations, evaluations * self.seconds + blocks * DIRECTIONAL_BLOCK_S + CALL_S


def cost_estimate(model: CostModel, options, engine: str) -> CostEstimate:
    """The expected cost of each mode of the check of a user's cost."""
    setup = model.setup()
    n, full_evaluations, full = model.coordinates(options, None)
    s, sampled_evaluations, sampled = model.coordinates(options, options.n_per_block)
    probe_evaluations, probes = model.probes(options, options.n_directions)
    return CostEstimate(ModeCost("full", full_evaluations, n, setup + full, setup),
                        ModeCost("sampled", sampled_evaluations, s, setup + sampled, setup),
                        ModeCost("directional", probe_evaluations, 0, setup + probes, setup),
                        model.layout.n_params, engine)


def cost_plan(model: CostModel, options) -> tuple[object, str]:
    """The most thorough check of a user's cost that fits ``options.budget_s`` (as
    :func:`plan` for the built-in network): full, else sampled with the most coordinates per
    block that fit (from MIN_PER_BLOCK up to ``options.n_per_block``), else directional with
    the most probes that fit (at least 1). Returns the options to run and the note saying
    what was chosen, the expected time and one evaluation's."""
    budget = options.budget_s
    setup = model.setup()
    available = budget - setup
    per_evaluation = (f"one evaluation {model.seconds:.3g} s on {model.threads} thread"
                      f"{'s' if model.threads > 1 else ''}")
    full = model.coordinates(options, None)
    if full[2] <= available:
        return replace(options, mode="full"), (
            f"budget {budget:g} s: full check, {full[1]:,} evaluations (expected "
            f"{setup + full[2]:.3g} s: set-up {setup:.3g} s; {per_evaluation})")
    low, high = MIN_PER_BLOCK, max(MIN_PER_BLOCK, int(options.n_per_block))
    n = _most_that_fit(lambda n: model.coordinates(options, n)[2], low, high, available)
    if n is not None:
        _, evaluations, work = model.coordinates(options, n)
        return replace(options, mode="sampled", n_per_block=n), (
            f"budget {budget:g} s: a full check would take ~{setup + full[2]:.3g} s; sampled "
            f"{n} coordinates per block instead, {evaluations:,} evaluations (expected "
            f"{setup + work:.3g} s; {per_evaluation})")
    k = _most_that_fit(lambda k: model.probes(options, k)[1], 1, int(options.n_directions),
                       available)
    over = "" if k is not None else "; over budget: nothing cheaper checks every block"
    k = k or 1
    evaluations, work = model.probes(options, k)
    chosen, over = _probes_options(options, k, over)
    return chosen, (
        f"budget {budget:g} s: full ~{setup + full[2]:.3g} s and sampled ({low} per block) "
        f"~{setup + model.coordinates(options, low)[2]:.3g} s do not fit; directional with "
        f"{k} probe{'s' if k > 1 else ''} per block, {evaluations:,} evaluations (expected "
        f"{setup + work:.3g} s; {per_evaluation}{over})")
