"""Bring your own cost: the check for any model written as ``cost(theta, *args) -> float``."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from ._threads import n_threads_set, num_threads
from .distributed import Pool, run_sharded, runs_locally, shards_of
from .engines import Costs, all_indices, blackbox
from .layout import Layout
from .modes import Probes, sample_indices
from .noise import SIGMA_FACTOR
from .options import LowPrecisionWarning
from .planning import CostEstimate, CostModel, cost_estimate, cost_plan
from .report import GradientCheckReport, Hints, build_directional_report, build_report
from .report.diagnosis import _U, NO_HINTS, allowance
from .truncation import (
    RICHARDSON_FACTOR,
    SMALLER_STEPS,
    TRUNCATION_STEP,
    propagated_rounding,
    richardson,
    truncation_bound,
    with_truncation,
)

# ---------------------------------------------------------------------------------------------
# Kinks of a black-box cost
# ---------------------------------------------------------------------------------------------
# A cost with a kink (ReLU, abs, max) within the step of coordinate i: its central difference
# there is no derivative, and a correct gradient can disagree with it by up to half the slope
# jump. The built-in network's engines see ReLU crossings directly; for a black-box cost the
# kink is recognised from costs along the coordinate, only for the elements that fail the
# elementwise test (truncation bound included): a few more evaluations each, in the same
# parallel loop.
#
# With G(s) = (J(s) + J(-s) - 2 J) / s (s times a curvature estimate), compare the curvature
# at steps s and s/2:
#
#     Q(s) = G(s/2) - G(s) / 2,        Q_far = Q(h),  Q_near = Q(h/2).
#
# Q cancels the curvature f2 = J'' exactly; for a smooth cost what is left is
# -f4 s**3 / 32 - f6 s**5 / 768 + ... (fk the k-th derivative), while a kink of slope jump D
# at distance d = x s (0 <= x < 1) leaves D (1 - 3x) / 2 (x < 1/2) or -D (1 - x) / 2
# (x >= 1/2), whatever the step: Q_far and Q_near never vanish together, and the kink moves
# D(h) by D (1 - x) / 2, at most 3 max(|Q_far|, |Q_near|) over every x (KINK_EXPLAINS_Q).
#
# At a small step (epsilon <= TRUNCATION_STEP) a smooth cost's Q is ~f4 1e-21: a Q beyond its
# rounding shows a kink. At a large step it does not: f4 h**3 / 32 can explain a real mistake
# (e.g. theta**4 at theta = 0, whose central difference is exact). There the statistic is how
# far the Q's depart from the h**3 scaling of a smooth cost,
#
#     K(s) = Q(s) - 8 Q(s/2) = -15 f6 s**5 / 1024 + ...,    K_far = K(h), K_near = K(h/2)
#
# (one more step, h/8), which for a kink is still O(D): a sweep over 10**5 kink positions puts
# the kink's move of D(h) at most 10.998 max(|K_far|, |K_near|) (KINK_EXPLAINS_K = 11 with a
# little room).
#
# A failing element is a kink when (1) a statistic is beyond the rounding it can carry (the
# J values' rounding r times the sum of its coefficients, over the step: _KINK_WEIGHTS) and
# (2) a single kink of that size explains the disagreement: |analytic - numerical| <=
# KINK_EXPLAINS * max|S| + tolerance + noise. It is unverified, not wrong, when the
# disagreement is within KINK_MARGIN times what the statistics (plus what their rounding can
# hide) could explain: several kinks within one step add their moves but may partly cancel in
# the statistics, and a kink too small to show above rounding may still move D(h) beyond the
# noise bound. Beyond that it is wrong: at a smooth point the statistics are O(f4 h**3) (small
# step) or O(f6 h**5) (large step), so no mistake the step can resolve is excused.

#: A single kink within the step moves the central difference by at most this multiple of
#: max(|Q_far|, |Q_near|) (small steps) or of max(|K_far|, |K_near|) (large steps).
KINK_EXPLAINS_Q = 3.0
KINK_EXPLAINS_K = 11.0

#: Several kinks within one step, or a kink hidden in rounding: up to this multiple of what
#: the statistics explain, an element is unverified rather than wrong.
KINK_MARGIN = 2.0

#: Richardson's extrapolation moves by at most this multiple of D(2h)'s move for a kink within
#: 2h: (4 |move of D(h)| + |move of D(2h)|) / 3 with |move of D(h)| <= |move of D(2h)|.
RICHARDSON_KINK = 5.0 / 3.0

#: Sums of the absolute coefficients of the J values in h * Q_far, h * Q_near (small steps)
#: and h * K_far, h * K_near (large steps).
_KINK_WEIGHTS = {"Q": (8.0, 16.0), "K": (130.0, 260.0)}


def _needs_excuse(costs: Costs, grad, sigma: float, theta, options) -> np.ndarray:
    """Indices of the finite elements that fail the elementwise test (with the truncation
    bound of a large step, so that only a disagreement the smooth series cannot explain
    asks for a kink)."""
    tolerance, noise = allowance(costs, theta, epsilon=options.epsilon,
                                 rtol=options.rtol, atol=options.atol)
    finite = costs.finite()
    return np.flatnonzero(finite & ~(np.abs(grad - costs.gradapprox) <= tolerance + noise))


def _kink_statistics(evaluate, J, central, h, large: bool):
    """(S_far, S_near): Q_far, Q_near for a small step, K_far, K_near for a large one (see the
    comment above), for the lines (coordinates or probe directions) being looked at; the J
    values at ``f * h`` come from ``central[f]`` (J+, J- of those lines) where the check took
    them already, else from ``evaluate(f * h)``."""
    fractions = (1.0, 0.5, 0.25, 0.125) if large else (1.0, 0.5, 0.25)
    G = {}
    for f in fractions:
        plus, minus = central[f] if f in central else evaluate(f * h)
        with np.errstate(invalid="ignore", over="ignore"):
            G[f] = (plus + minus - 2.0 * J) / (f * h)
        G[f, "largest"] = np.maximum(np.abs(plus), np.abs(minus))
    with np.errstate(invalid="ignore", over="ignore"):
        Q = {f: G[f / 2] - G[f] / 2.0 for f in fractions[:-1]}
        if not large:
            statistics = (Q[1.0], Q[0.5])
        else:
            statistics = (Q[1.0] - 8.0 * Q[0.5], Q[0.5] - 8.0 * Q[0.25])
    largest = np.max([G[f, "largest"] for f in fractions] + [np.full(G[1.0].size, abs(J))],
                     axis=0)
    return statistics, largest


class Disagreement(NamedTuple):
    """The lines (coordinates or probe directions) that fail the elementwise test, as the kink
    test sees them: ``error`` ``|analytic - numerical|``, ``allowed`` the tolerance plus the
    noise bound, ``shift`` how far the rounding of the points the steps reach can move J."""

    error: np.ndarray
    allowed: np.ndarray
    shift: np.ndarray | float


def _kink_verdicts(evaluate, J: float, central: dict, lines: Disagreement, sigma: float,
                   float32: bool, h: float, spread: float = 1.0, evidence: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """For failing lines: which a kink of the cost within the step ``h`` explains (reported as
    kinks), and which it might (unverified); the rest stay wrong (see the comment above).
    ``central[f]`` holds J+- at ``f * h`` where known, ``evaluate(step)`` gives them for the
    other steps (the engine's parallel loop for coordinates: a wrong block may fail in every
    element). ``spread``: how many times the move of D(h) the checked difference can move
    (:data:`RICHARDSON_KINK` for Richardson's, whose statistics are taken at 2h).
    ``evidence``: a line is unverified only when its statistics show a kink (beyond their
    rounding), never for a kink their rounding might hide (the probes of a large block, whose
    J carries far more rounding than one element's difference: that excuse would unverify
    real mistakes)."""
    large = h > TRUNCATION_STEP
    (s_far, s_near), largest = _kink_statistics(evaluate, J, central, h, large)
    # The rounding of one J value: ECnoise (times the report's safety factor), the final sum
    # of a float64 cost (2 ulps), a float32 cost's spacing, and what the rounding of the
    # point reached moves J by.
    rounding = SIGMA_FACTOR * sigma + 4.0 * _U * largest
    if float32:
        rounding = rounding + np.spacing(largest.astype(np.float32)).astype(np.float64)
    rounding = rounding + lines.shift
    w_far, w_near = _KINK_WEIGHTS["K" if large else "Q"]
    explains = spread * (KINK_EXPLAINS_K if large else KINK_EXPLAINS_Q)
    beyond = (np.abs(s_far) > w_far * rounding / h) | (np.abs(s_near) > w_near * rounding / h)
    size = np.maximum(np.abs(s_far), np.abs(s_near))
    kink = beyond & (lines.error <= explains * size + lines.allowed)
    hidden = 0.0 if evidence else w_near * rounding / h  # the largest statistic its
    # rounding could hide
    maybe = ~kink & (lines.error <= KINK_MARGIN * explains * (size + hidden) + lines.allowed)
    if evidence:
        maybe &= beyond
    return kink, maybe


def _coordinate_kinks(first: Costs, candidates, evaluate, at, grad_at, J, central, sigma,
                      float32, options) -> Costs:
    """``first`` with the kink verdicts of the failing coordinates ``candidates`` (slots):
    kinks counted, the coordinates a kink might explain unverified (an infinite truncation
    bound: never wrong, never ok). Richardson's extrapolation reaches 2h: the statistics are
    taken at that base step, and a kink at distance d, which moves D(2h) by ``D (1 - d/2h) /
    2`` and D(h) by at most that much, moves the extrapolation by at most 5/3 of D(2h)'s
    move (:data:`RICHARDSON_KINK`)."""
    base, spread = ((RICHARDSON_FACTOR, RICHARDSON_KINK) if options.method == "richardson"
                    else (1.0, 1.0))
    h = base * options.epsilon
    tolerance, noise = allowance(first, at, epsilon=options.epsilon, rtol=options.rtol,
                                 atol=options.atol)
    lines = Disagreement(
        error=np.abs(grad_at[candidates] - first.gradapprox[candidates]),
        allowed=tolerance[candidates] + noise[candidates],
        # An ulp of theta_i in the step taken, times the slope.
        shift=np.abs(first.gradapprox[candidates]) * np.spacing(np.abs(at[candidates]) + h))
    known = {f / base: (plus[candidates], minus[candidates])
             for f, (plus, minus, _) in central.items()}
    with n_threads_set(options.n_threads):
        kink, maybe = _kink_verdicts(evaluate, J, known, lines, sigma, float32, h, spread)
    P = first.gradapprox.size
    kinks = np.zeros(P, dtype=np.int64)
    kinks[candidates[kink]] = 1
    truncation = (np.zeros(P) if first.truncation is None else first.truncation.copy())
    truncation[candidates[maybe]] = np.inf
    return replace(first, kinks=kinks, truncation=truncation)


def low_precision_warning(names, options) -> tuple[str, ...]:
    note = (f"{', '.join(names)} in float32/float16: compared in float64 with "
            f"rtol={options.rtol:g}, atol={options.atol:g} to allow for a float32 gradient")
    # low_precision_warning <- _coordinate_check or _directional_check <- run_cost_check <-
    # api._run_problem <- api.check or api.check_layer <- the caller
    warnings.warn(note, LowPrecisionWarning, stacklevel=6)
    return (note,)


def _probe_steps(theta: np.ndarray, v: np.ndarray, h: float, plus: np.ndarray,
                 minus: np.ndarray) -> np.ndarray:
    """The points theta +- h v, written into ``plus`` and ``minus``, and the step really taken
    between them, fl(theta + h v) - fl(theta - h v) (exact where theta_i dominates h v_i,
    within an ulp of the step elsewhere): the analytic side is the gradient along it."""
    hv = h * v
    np.add(theta, hv, out=plus)
    np.subtract(theta, hv, out=minus)
    return plus - minus


def cost_probes(cost, theta: np.ndarray, grad: np.ndarray, args: tuple, layout: Layout,
                J: float, sigma: float, options) -> dict:
    """Directional probes of a custom cost: per block, ``options.n_directions`` seeded unit
    directions v (zero outside the block), ``(J(theta + eps v) - J(theta - eps v)) / 2 eps``
    against the gradient along the steps really taken, ``grad . (fl(theta + eps v) -
    fl(theta - eps v)) / 2 eps`` (the step's rounding is not left to excuse). Noise: the
    cost's ECnoise (:data:`~gradcheck_fast.noise.SIGMA_FACTOR` sigma per J) and the final
    sums' ulps; for a step above the truncation step, the truncation bound from the same
    directions at eps/2 and eps/4, as in the full check. A probe that fails is looked at
    along its direction as a failing coordinate is (:func:`_kink_verdicts`): a kink of the
    cost within the step that explains it sets the probe aside as a kink, one that might
    leaves it unverified."""
    rng = np.random.default_rng(options.seed)
    h = options.epsilon
    steps = (1.0,) + (SMALLER_STEPS if h > TRUNCATION_STEP else ())
    # The points theta +- h v, v zero outside the block, differ from theta only in the block:
    # two buffers hold them, only the block rewritten per probe (full-size temporaries cost
    # more than the evaluations of a large model). Outside the block they hold what
    # theta +- h * 0 gives, bit for bit: theta - 0.0 is theta, theta + 0.0 theta with -0.0
    # made +0.0.
    plus, minus = theta + 0.0, theta.copy()
    probes = {}
    for name, start, stop in zip(layout.names, layout.offsets[:-1], layout.offsets[1:]):
        start, stop = int(start), int(stop)
        k, n = options.n_directions, stop - start
        v = rng.standard_normal((k, n))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        G = grad[start:stop]

        def along(step, which, start=start, stop=stop, v=v, G=G):
            """J(theta +- step v_p) for the probes ``which``, and the gradient along the steps
            really taken; the buffers are put back to theta +- 0 after."""
            values = np.empty((len(which), 2))
            taken = np.empty(len(which))
            for row, p in enumerate(which):
                difference = _probe_steps(theta[start:stop], v[p], step, plus[start:stop],
                                          minus[start:stop])
                values[row] = [blackbox.scalar(cost(point, *args)) for point in (plus, minus)]
                taken[row] = G @ difference / (2 * step)
            plus[start:stop], minus[start:stop] = theta[start:stop] + 0.0, theta[start:stop]
            return values, taken

        differences, noises, central = {}, {}, {}
        for f in steps:
            values, taken = along(f * h, range(k))
            central[f] = (values[:, 0], values[:, 1])
            with np.errstate(invalid="ignore", over="ignore"):
                differences[f] = (values[:, 0] - values[:, 1]) / (2 * f * h)
                noises[f] = ((SIGMA_FACTOR * sigma + 4.0 * _U * np.abs(values).max(axis=1))
                             / (f * h))
            if f == 1.0:
                analytic = taken
        noise = noises[1.0]
        numerical = differences[1.0]
        if len(steps) > 1:
            half, quarter = differences[0.5], differences[0.25]
            rounding = noise + 2.0 * noises[0.5] + noises[0.25]
            noise = (noise + propagated_rounding(noise, noises[0.5], noises[0.25])
                     + truncation_bound(numerical, half, quarter,
                                        options.atol + options.rtol * np.abs(numerical),
                                        rounding))
        kinks = np.zeros(k, dtype=np.int64)
        allowed = options.atol + options.rtol * np.abs(numerical) + noise
        with np.errstate(invalid="ignore"):
            failing = np.flatnonzero(np.isfinite(numerical)
                                     & ~(np.abs(analytic - numerical) <= allowed))
        if failing.size:
            lines = Disagreement(
                error=np.abs(analytic - numerical)[failing], allowed=allowed[failing],
                # The points' rounding: at most half an ulp of each theta_i, times its slope.
                shift=float(np.abs(G) @ np.spacing(np.abs(theta[start:stop]) + h)))
            known = {f: (J_plus[failing], J_minus[failing])
                     for f, (J_plus, J_minus) in central.items()}
            kink, maybe = _kink_verdicts(
                lambda step, failing=failing: tuple(along(step, failing)[0].T), J, known,
                lines, sigma, False, h, evidence=True)
            kinks[failing[kink]] = 1
            noise = noise.copy()
            noise[failing[maybe]] = np.inf
        probes["d" + name] = Probes(analytic=analytic, numerical=numerical, noise=noise,
                                    kinks=kinks, rank_one=False, size=n,
                                    grad_norm=float(np.linalg.norm(G)))
    return probes


class Evaluation(NamedTuple):
    """A user's cost at the point: its value ``J``, whether it is njit (evaluated in
    parallel), and ``seconds``, one compiled evaluation's time (for the threads, the pieces
    and the time model)."""

    J: float
    njit: bool
    seconds: float


def first_evaluation(cost, theta: np.ndarray, args: tuple, timed: bool = True) -> Evaluation:
    """The cost at theta, checked (:func:`blackbox.first_value`: compiled, a finite scalar,
    theta left alone), and, ``timed``, one more evaluation timed (``seconds`` NaN
    otherwise: directional probes without a budget need no time)."""
    J = blackbox.first_value(cost, theta, args)
    if not timed:
        return Evaluation(J, blackbox.is_njit(cost), math.nan)
    started = time.perf_counter()
    cost(theta.copy(), *args)
    return Evaluation(J, blackbox.is_njit(cost), time.perf_counter() - started)


def cost_model(layout: Layout, options, evaluation: Evaluation,
               spent_s: float = 0.0) -> CostModel:
    """The time model of the check of a user's cost: its evaluations on the loop's threads
    (an njit cost's), one at a time otherwise."""
    threads = (options.n_threads or num_threads()) if evaluation.njit else 1
    return CostModel(layout, evaluation.seconds, threads, spent_s)


def estimate_cost_check(cost, theta: np.ndarray, args: tuple, layout: Layout, options,
                        workers: int | None = None) -> CostEstimate:
    """:func:`gradcheck_fast.api.estimate_cost` of a user's cost: the evaluations of each
    mode times one evaluation's measured time, over the threads (``workers``: an executor's
    worker threads, which run the coordinates of any cost in parallel)."""
    evaluation = first_evaluation(cost, theta, args)
    model = cost_model(layout, options, evaluation)
    if workers is not None:
        model = replace(model, threads=workers)
    return cost_estimate(model, options, "numba" if evaluation.njit else "python")


def run_cost_check(cost, theta: np.ndarray, grad: np.ndarray, args: tuple, layout: Layout,
                   options, low_precision: tuple[str, ...], started: float | None = None,
                   hints: Hints = NO_HINTS, pool: Pool | None = None) -> GradientCheckReport:
    """The check of :func:`gradcheck_fast.api.check` on validated inputs: ``theta`` and
    ``grad`` flat float64 (theta finite), ``layout`` of theta's size, ``options`` resolved
    (mode "full"; "sampled": ``options.n_per_block`` coordinates of each block drawn with
    ``options.seed``, :func:`gradcheck_fast.modes.sample_indices`; "directional":
    :func:`cost_probes`; a budget: the mode :func:`~gradcheck_fast.planning.cost_plan`
    picks); ``low_precision`` names the arguments that came in float32/float16; ``started``:
    the ``time.perf_counter()`` at which the call began (the budget counts the validation);
    ``hints`` name mistakes in the report (:class:`~gradcheck_fast.report.Hints`); ``pool``
    runs the coordinates in shards on an executor's workers (None: here)."""
    spent = 0.0 if started is None else time.perf_counter() - started
    evaluation = first_evaluation(cost, theta, args, timed=options.budget_s is not None
                                  or options.mode != "directional")
    notes = ()
    if options.budget_s is not None:
        options, note = cost_plan(cost_model(layout, options, evaluation, spent), options)
        notes += (note,)
    if options.mode == "directional":
        if pool is not None:
            notes += ("executor: the directional probes (two evaluations each) ran locally",)
        return _directional_check(cost, theta, grad, args, layout, options, evaluation,
                                  low_precision, notes, hints)
    return _coordinate_check(cost, theta, grad, args, layout, options, evaluation,
                             low_precision, notes, hints, pool)


def _directional_check(cost, theta, grad, args, layout, options, evaluation, low_precision,
                       notes, hints):
    """The directional probes of a user's cost (:func:`cost_probes`), and their report."""
    if options.method != "central":
        raise ValueError("method='richardson' applies to mode='full' and mode='sampled'")
    with n_threads_set(options.n_threads):
        probes = cost_probes(cost, theta, grad, args, layout, evaluation.J,
                             blackbox.cost_noise(cost, theta, args), options)
    if low_precision:
        notes += low_precision_warning(low_precision, options)
    return build_directional_report(
        layout, grad, probes, cost=evaluation.J, epsilon=options.epsilon,
        threshold=options.threshold, rtol=options.rtol, atol=options.atol,
        probability=options.probability, notes=notes,
        engine="numba" if evaluation.njit else "python", kink=blackbox.KINK, hints=hints)


def _step_factors(options) -> tuple[float, ...]:
    """The steps, as multiples of epsilon, whose central differences a coordinate check
    takes: Richardson's second step, or a large step's two smaller ones (truncation bound)."""
    if options.method == "richardson":
        return (1.0, RICHARDSON_FACTOR)
    return (1.0,) + (SMALLER_STEPS if options.epsilon > TRUNCATION_STEP else ())


@dataclass
class CostShards:
    """A user's cost as the work of a shard (:mod:`gradcheck_fast.distributed`): sent once to
    each worker process and compiled there (an njit cost, and the engine's loop for it), then
    J+- of any coordinates at any steps, by the black-box engine's loop as here."""

    cost: object
    theta: np.ndarray
    args: tuple
    njit: bool
    seconds: float

    def prepare(self) -> CostShards:
        blackbox.first_value(self.cost, self.theta, self.args)
        # the loop compiled for this cost (two evaluations, their values unused)
        blackbox.central(self.cost, self.theta, self.args, 1.0, self.njit, self.seconds,
                         False, np.zeros(1, dtype=np.int64))
        return self

    def run(self, indices: np.ndarray, steps) -> list:
        return [blackbox.central(self.cost, self.theta, self.args, step, self.njit,
                                 self.seconds, False, indices)[:2] for step in steps]


def _central_values(cost, theta, args, factors, indices, evaluation, options, pool,
                    progress) -> tuple[dict, str | None]:
    """Per step factor f: J+- at ``f * epsilon`` for the coordinates ``indices`` and their
    central differences, by the black-box engine's loop here, or in shards on ``pool``'s
    workers (:mod:`gradcheck_fast.distributed`: the same loop, the same bits) when the work
    is expected to take a second or more here; and the note saying which."""
    steps = [f * options.epsilon for f in factors]
    per_index = 2 * len(steps) * evaluation.seconds
    note = None
    if pool is not None:
        threads = (options.n_threads or num_threads()) if evaluation.njit else 1
        note = runs_locally(indices.size * per_index / threads)
        if note is None:
            shards = shards_of(indices, per_index, pool.workers)
            work = CostShards(cost, theta, args, evaluation.njit, evaluation.seconds)
            run = run_sharded(pool, work, shards, (steps,), progress,
                              "the cost and its arguments")
            values = {}
            for k, (f, step) in enumerate(zip(factors, steps)):
                J_plus = np.concatenate([part[k][0] for part in run.results])
                J_minus = np.concatenate([part[k][1] for part in run.results])
                values[f] = (J_plus, J_minus, blackbox.difference(J_plus, J_minus, step))
            return values, run.note()
    with n_threads_set(options.n_threads):
        return {f: blackbox.central(cost, theta, args, step, evaluation.njit,
                                    evaluation.seconds, progress, indices)
                for f, step in zip(factors, steps)}, note


def _coordinate_check(cost, theta, grad, args, layout, options, evaluation, low_precision,
                      notes, hints, pool):
    """The full or sampled check of a user's cost: the central differences of every step
    (:func:`_step_factors`) in the black-box engine's loop, the kink verdicts of the elements
    that fail, and the report."""
    sampled = options.mode == "sampled"
    indices = (sample_indices(layout, options.n_per_block, options.seed) if sampled
               else all_indices(theta.size))
    J, njit, seconds = evaluation
    P = indices.size
    started = time.perf_counter()
    central, note = _central_values(cost, theta, args, _step_factors(options), indices,
                                    evaluation, options, pool, options.progress)
    notes += (note,) if note else ()
    elapsed = time.perf_counter() - started
    J_plus, J_minus, _ = central[1.0]
    # A cost computed in lower precision (float32 inside) is quantised far above float64's
    # rounding: its spacing, seen in J and J+-, bounds how far J+- can be off.
    values = np.concatenate(([J], J_plus, J_minus))
    float32 = bool(np.all(values.astype(np.float32) == values))
    if float32:
        notes += ("cost returns float32 values: its quantisation (an ulp of float32, ~6e-8 "
                  "relative) divided by 2 epsilon is allowed for, so elements the step cannot "
                  "resolve show as unverified; a float64 cost checks far more finely",)
    engine = "numba" if njit else "python"
    sigma = blackbox.cost_noise(cost, theta, args)
    # From here on, arrays are by slot: the coordinates ``indices`` checked.
    at, grad_at = theta[indices], grad[indices]
    costs = {f: blackbox.costs(J, *arrays, float32, engine, at, f * options.epsilon, sigma,
                               indices)
             for f, arrays in central.items()}
    first = costs[1.0]
    if options.method == "richardson":
        first = richardson(first, costs[RICHARDSON_FACTOR])
    elif options.epsilon > TRUNCATION_STEP:
        first = with_truncation(first, *(costs[f] for f in SMALLER_STEPS), options.atol,
                                options.rtol)
    candidates = _needs_excuse(first, grad_at, sigma, at, options)
    if candidates.size:
        def evaluate(step):
            values, _ = _central_values(cost, theta, args, (step / options.epsilon,),
                                        indices[candidates], evaluation, options, pool, False)
            return values[step / options.epsilon][:2]

        first = _coordinate_kinks(first, candidates, evaluate, at, grad_at, J, central, sigma,
                                  float32, options)
    if low_precision:
        notes += low_precision_warning(low_precision, options)
    if not njit:
        notes += (f"cost is a plain Python callable: its {len(central) * 2 * P} evaluations ran "
                  f"one at a time in {elapsed:.3g} s; decorated with @numba.njit they would "
                  f"run compiled and in parallel",)
    return build_report(layout, theta, grad, first, epsilon=options.epsilon,
                        threshold=options.threshold, rtol=options.rtol, atol=options.atol,
                        notes=notes, mode=options.mode, method=options.method, hints=hints)
