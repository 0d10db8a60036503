"""Bring your own cost: the check for any model written as ``cost(theta, *args) -> float``."""

from __future__ import annotations

import time
import warnings
from dataclasses import replace

import numpy as np

from ._threads import n_threads_set
from .engines import Costs, all_indices, blackbox
from .layout import Layout
from .modes import Probes, sample_indices
from .noise import SIGMA_FACTOR
from .options import LowPrecisionWarning
from .report import GradientCheckReport, build_directional_report, build_report
from .report.diagnosis import _U, allowance
from .truncation import (
    SMALLER_STEPS,
    TRUNCATION_STEP,
    propagated_rounding,
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

#: Sums of the absolute coefficients of the J values in h * Q_far, h * Q_near (small steps)
#: and h * K_far, h * K_near (large steps).
_KINK_WEIGHTS = {"Q": (8.0, 16.0), "K": (130.0, 260.0)}


def _needs_excuse(costs: Costs, grad, sigma: float, theta, options) -> np.ndarray:
    """Indices of the finite elements that fail the elementwise test (with the truncation
    bound of a large step, so that only a disagreement the smooth series cannot explain
    asks for a kink)."""
    tolerance, noise = allowance(costs, theta, epsilon=options.epsilon,
                                 rtol=options.rtol, atol=options.atol)
    finite = np.isfinite(costs.J_plus) & np.isfinite(costs.J_minus)
    return np.flatnonzero(finite & ~(np.abs(grad - costs.gradapprox) <= tolerance + noise))


def _kink_statistics(evaluate, J, indices, central, h, large: bool):
    """(S_far, S_near): Q_far, Q_near for a small step, K_far, K_near for a large one (see the
    comment above), for the coordinates ``indices``; the J values come from ``central`` where
    the check took them already, else from ``evaluate(step, indices)``."""
    fractions = (1.0, 0.5, 0.25, 0.125) if large else (1.0, 0.5, 0.25)
    G = {}
    for f in fractions:
        plus, minus = ((central[f][0][indices], central[f][1][indices]) if f in central
                       else evaluate(f * h, indices))
        with np.errstate(invalid="ignore", over="ignore"):
            G[f] = (plus + minus - 2.0 * J) / (f * h)
        G[f, "largest"] = np.maximum(np.abs(plus), np.abs(minus))
    with np.errstate(invalid="ignore", over="ignore"):
        Q = {f: G[f / 2] - G[f] / 2.0 for f in fractions[:-1]}
        if not large:
            statistics = (Q[1.0], Q[0.5])
        else:
            statistics = (Q[1.0] - 8.0 * Q[0.5], Q[0.5] - 8.0 * Q[0.25])
    largest = np.max([G[f, "largest"] for f in fractions] + [np.full(indices.size, abs(J))],
                     axis=0)
    return statistics, largest


def _kink_verdicts(evaluate, theta, J, indices, grad, costs, central, sigma, float32,
                   options) -> tuple[np.ndarray, np.ndarray]:
    """For the failing coordinates ``indices``: which a kink of the cost within the step
    explains (reported as kinks), and which it might (unverified); the rest stay wrong (see
    the comment above). ``evaluate(step, indices)`` gives the cost's J(theta +- step e_i) for
    those coordinates (the engine's parallel loop: a wrong block may fail in every element)."""
    h = options.epsilon
    large = h > TRUNCATION_STEP
    (s_far, s_near), largest = _kink_statistics(evaluate, J, indices, central, h, large)
    # The rounding of one J value: ECnoise (times the report's safety factor), the final sum
    # of a float64 cost (2 ulps), a float32 cost's spacing, and what an ulp of theta_i in the
    # step taken moves J by.
    rounding = SIGMA_FACTOR * sigma + 4.0 * _U * largest
    if float32:
        rounding = rounding + np.spacing(largest.astype(np.float32)).astype(np.float64)
    rounding = rounding + np.abs(costs.gradapprox[indices]) * np.spacing(
        np.abs(theta[indices]) + h)
    w_far, w_near = _KINK_WEIGHTS["K" if large else "Q"]
    explains = KINK_EXPLAINS_K if large else KINK_EXPLAINS_Q
    beyond = (np.abs(s_far) > w_far * rounding / h) | (np.abs(s_near) > w_near * rounding / h)
    size = np.maximum(np.abs(s_far), np.abs(s_near))
    tolerance, noise = allowance(costs, theta, epsilon=h, rtol=options.rtol,
                                 atol=options.atol)
    error = np.abs(grad[indices] - costs.gradapprox[indices])
    allowed = tolerance[indices] + noise[indices]
    kink = beyond & (error <= explains * size + allowed)
    hidden = w_near * rounding / h  # the largest statistic its rounding could hide
    maybe = ~kink & (error <= KINK_MARGIN * explains * (size + hidden) + allowed)
    return kink, maybe


def low_precision_warning(names, options) -> tuple[str, ...]:
    note = (f"{', '.join(names)} in float32/float16: compared in float64 with "
            f"rtol={options.rtol:g}, atol={options.atol:g} to allow for a float32 gradient")
    # low_precision_warning <- run_cost_check <- api.check <- the caller
    warnings.warn(note, LowPrecisionWarning, stacklevel=4)
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
                sigma: float, options) -> dict:
    """Directional probes of a custom cost: per block, ``options.n_directions`` seeded unit
    directions v (zero outside the block), ``(J(theta + eps v) - J(theta - eps v)) / 2 eps``
    against the gradient along the steps really taken, ``grad . (fl(theta + eps v) -
    fl(theta - eps v)) / 2 eps`` (the step's rounding is not left to excuse). Noise: the
    cost's ECnoise (:data:`~gradcheck_fast.noise.SIGMA_FACTOR` sigma per J) and the final
    sums' ulps; for a step above the truncation step, the truncation bound from the same
    directions at eps/2 and eps/4, as in the full check."""
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
        differences, noises, analytic = {}, {}, None
        for f in steps:
            values = np.empty((k, 2))
            taken = np.empty(k)
            for p in range(k):
                step = _probe_steps(theta[start:stop], v[p], f * h, plus[start:stop],
                                    minus[start:stop])
                values[p] = [blackbox.scalar(cost(point, *args)) for point in (plus, minus)]
                taken[p] = G @ step / (2 * f * h)
            with np.errstate(invalid="ignore", over="ignore"):
                differences[f] = (values[:, 0] - values[:, 1]) / (2 * f * h)
                noises[f] = ((SIGMA_FACTOR * sigma + 4.0 * _U * np.abs(values).max(axis=1))
                             / (f * h))
            if f == 1.0:
                analytic = taken
        plus[start:stop], minus[start:stop] = theta[start:stop] + 0.0, theta[start:stop]
        noise = noises[1.0]
        if len(steps) > 1:
            half, quarter = differences[0.5], differences[0.25]
            rounding = noise + 2.0 * noises[0.5] + noises[0.25]
            noise = (noise + propagated_rounding(noise, noises[0.5], noises[0.25])
                     + truncation_bound(differences[1.0], half, quarter,
                                        options.atol + options.rtol * np.abs(differences[1.0]),
                                        rounding))
        probes["d" + name] = Probes(analytic=analytic, numerical=differences[1.0], noise=noise,
                                    kinks=np.zeros(k, dtype=np.int64), rank_one=False, size=n,
                                    grad_norm=float(np.linalg.norm(G)))
    return probes


def run_cost_check(cost, theta: np.ndarray, grad: np.ndarray, args: tuple, layout: Layout,
                   options, low_precision: tuple[str, ...]) -> GradientCheckReport:
    """The check of :func:`gradcheck_fast.api.check` on validated inputs: ``theta`` and
    ``grad`` flat float64 (theta finite), ``layout`` of theta's size, ``options`` resolved
    (mode "full"; "sampled": ``options.n_per_block`` coordinates of each block drawn with
    ``options.seed``, :func:`gradcheck_fast.modes.sample_indices`; "directional":
    :func:`cost_probes`); ``low_precision`` names the arguments that came in
    float32/float16."""
    if options.mode == "directional":
        if options.method != "central":
            raise ValueError("method='richardson' applies to mode='full' and mode='sampled'")
        J = blackbox.first_value(cost, theta, args)
        with n_threads_set(options.n_threads):
            probes = cost_probes(cost, theta, grad, args, layout,
                                 blackbox.cost_noise(cost, theta, args), options)
        notes = low_precision_warning(low_precision, options) if low_precision else ()
        return build_directional_report(layout, grad, probes, cost=J, epsilon=options.epsilon,
                                        threshold=options.threshold, rtol=options.rtol,
                                        atol=options.atol, probability=options.probability,
                                        notes=notes)
    sampled = options.mode == "sampled"
    indices = (sample_indices(layout, options.n_per_block, options.seed) if sampled
               else all_indices(theta.size))
    J = blackbox.first_value(cost, theta, args)
    njit = blackbox.is_njit(cost)
    timed = time.perf_counter()
    cost(theta.copy(), *args)  # compiled by now: one evaluation's time, for threads and pieces
    seconds = time.perf_counter() - timed
    P = indices.size
    started = time.perf_counter()
    with n_threads_set(options.n_threads):
        central = {1.0: blackbox.central(cost, theta, args, options.epsilon, njit, seconds,
                                         options.progress, indices)}
        if options.epsilon > TRUNCATION_STEP:
            # As check_gradients does: the steps eps/2 and eps/4 bound the truncation error
            # (and their J+- serve the kink test).
            for f in SMALLER_STEPS:
                central[f] = blackbox.central(cost, theta, args, f * options.epsilon, njit,
                                              seconds, options.progress, indices)
    elapsed = time.perf_counter() - started
    J_plus, J_minus, _ = central[1.0]
    # A cost computed in lower precision (float32 inside) is quantised far above float64's
    # rounding: its spacing, seen in J and J+-, bounds how far J+- can be off.
    values = np.concatenate(([J], J_plus, J_minus))
    float32 = bool(np.all(values.astype(np.float32) == values))
    notes = ()
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
    if options.epsilon > TRUNCATION_STEP:
        first = with_truncation(first, *(costs[f] for f in SMALLER_STEPS), options.atol,
                                options.rtol)
    candidates = _needs_excuse(first, grad_at, sigma, at, options)
    if candidates.size:
        def evaluate(step, slots):
            return blackbox.central(cost, theta, args, step, njit, seconds, False,
                                    indices[slots])[:2]

        with n_threads_set(options.n_threads):
            kink, maybe = _kink_verdicts(evaluate, at, J, candidates, grad_at, first, central,
                                         sigma, float32, options)
        kinks = np.zeros(P, dtype=np.int64)
        kinks[candidates[kink]] = 1
        # Where a kink might explain the disagreement, no bound on the element's error can be
        # claimed: an infinite truncation bound makes it unverified (never wrong, never ok).
        truncation = (np.zeros(P) if first.truncation is None else first.truncation.copy())
        truncation[candidates[maybe]] = np.inf
        first = replace(first, kinks=kinks, truncation=truncation)
    if low_precision:
        notes += low_precision_warning(low_precision, options)
    if not njit:
        notes += (f"cost is a plain Python callable: its {2 * P} evaluations ran one at a time "
                 f"in {elapsed:.3g} s; decorated with @numba.njit they would run compiled and "
                 f"in parallel",)
    return build_report(layout, theta, grad, first, epsilon=options.epsilon,
                        threshold=options.threshold, rtol=options.rtol, atol=options.atol,
                        notes=notes, mode=options.mode)
