"""Bring your own cost: the check for any model written as ``cost(theta, *args) -> float``."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numba
import numpy as np
from numba import prange
from numba.core.errors import NumbaError

from ._jit import jit
from ._schedule import claim
from ._threads import n_threads_set
from .checker import LowPrecisionWarning, check_options
from .engine import Costs, _run_kernel
from .layout import Layout, is_shape_dict
from .noise import N_POINTS, ecnoise_step, sigma_from_values
from .report import _U, SIGMA_FACTOR, GradientCheckReport, allowance, build_report
from .truncation import SMALLER_STEPS, TRUNCATION_STEP, with_truncation
from .validation import float_parameter_array


# The work is cut into evaluations, not coordinates: item k is J(theta + eps e_i) for k = 2i
# and J(theta - eps e_i) for k = 2i + 1. A cost that takes seconds per evaluation still keeps
# every thread busy (two threads share even a single coordinate), and a piece of the range, the
# unit Ctrl-C waits for, holds one evaluation per thread.
#
# The kernels take the user's njit function as an argument: numba compiles them anew for
# each distinct cost function (about half a second) and cannot cache that on disk.
@jit(cache=False)
def _user_costs_range(lo, hi, idx, cost, theta, args, epsilon, J_plus, J_minus):
    """For lo <= k < hi: J at theta with theta[i] + epsilon (k even) or - epsilon (k odd),
    i = idx[k // 2], into slot k // 2, on a private copy of theta that is perturbed and
    restored (the caller's theta is never written)."""
    local = theta.copy()
    for k in range(lo, hi):
        i = idx[k // 2]
        t = theta[i]
        if k % 2 == 0:
            local[i] = t + epsilon
            J_plus[k // 2] = cost(local, *args)
        else:
            local[i] = t - epsilon
            J_minus[k // 2] = cost(local, *args)
        local[i] = t


@jit(parallel=True, cache=False)
def _user_costs_parallel(start, stop, n_chunks, n_workers, schedule, idx, cost, theta, args,
                         epsilon, J_plus, J_minus):
    """:func:`_user_costs_range` over chunks claimed by ``n_workers`` threads (see
    :mod:`gradcheck_fast._schedule`); each chunk has its own copy of theta and each evaluation
    writes only its own slot."""
    n = stop - start
    for w in prange(n_workers):
        ch = claim(schedule, w, n_chunks)
        while ch < n_chunks:
            _user_costs_range(start + ch * n // n_chunks, start + (ch + 1) * n // n_chunks,
                              idx, cost, theta, args, epsilon, J_plus, J_minus)
            ch = claim(schedule, w, n_chunks)


def _python_costs_range(lo, hi, idx, cost, theta, args, epsilon, J_plus, J_minus):
    local = theta.copy()
    for k in range(lo, hi):
        i = idx[k // 2]
        t = theta[i]
        if k % 2 == 0:
            local[i] = t + epsilon
            J_plus[k // 2] = _scalar(cost(local, *args))
        else:
            local[i] = t - epsilon
            J_minus[k // 2] = _scalar(cost(local, *args))
        local[i] = t


def _scalar(value) -> float:
    array = np.asarray(value)
    if array.ndim != 0 or array.dtype.kind not in "biuf":
        shape = f" of shape {array.shape}" if array.ndim else ""
        raise TypeError(f"cost must return a real scalar (a float); got "
                        f"{type(value).__name__}{shape}")
    return float(array)


def _is_njit(cost) -> bool:
    return isinstance(cost, numba.core.dispatcher.Dispatcher)


def _type_name(value) -> str:
    try:
        return str(numba.typeof(value))
    except Exception:  # numba cannot type it: that is the reason the compile failed
        return f"{type(value).__name__} (no numba type)"


def _first_value(cost, theta, args) -> float:
    """cost(theta, *args) once, in Python: compiles an njit cost, checks what it returns, and
    that it leaves theta alone (the check perturbs private copies of theta that must stay
    exactly theta between evaluations)."""
    probe = theta.copy()
    try:
        value = cost(probe, *args)
    except (NumbaError, ValueError, TypeError) as exc:
        if not _is_njit(cost):
            raise
        summary = str(exc).strip().splitlines()
        reason = next((line for line in summary if line.strip()), "")
        types = "".join(", " + _type_name(a) for a in args)
        raise TypeError(f"cost could not be compiled by numba for (theta: float64[:]{types}): "
                        f"{reason}") from exc
    if not np.array_equal(probe, theta):
        raise ValueError("cost modified theta: it must not write into its first argument "
                         "(copy it first if it needs scratch space)")
    value = _scalar(value)
    if not np.isfinite(value):
        raise ValueError(f"cost(theta, *args) is {value} at the given theta: the check needs a "
                         f"finite cost there")
    return value


def _central(cost, theta, args, epsilon, njit, seconds, progress, indices=None):
    """J+- and the central differences for the coordinates ``indices`` (default every one), in
    parallel for an njit cost (``seconds``: the time of one evaluation)."""
    if indices is None:
        indices = np.arange(theta.size)
    P = indices.size
    J_plus, J_minus = np.empty((2, P))
    kernel_args = (indices, cost, theta, args, epsilon, J_plus, J_minus)
    if njit:
        _run_kernel(_user_costs_range, _user_costs_parallel, 2 * P, seconds, kernel_args,
                    progress, items_per_param=2)
    else:
        _run_kernel(_python_costs_range, None, 2 * P, seconds, kernel_args, progress,
                    items_per_param=2)
    with np.errstate(invalid="ignore", over="ignore"):
        gradapprox = (J_plus - J_minus) / (2 * epsilon)
    return J_plus, J_minus, gradapprox


def _costs(J, J_plus, J_minus, gradapprox, float32: bool, engine: str) -> Costs:
    """The report's view of one central difference of the user's cost over all coordinates."""
    P = gradapprox.size
    with np.errstate(invalid="ignore", over="ignore"):
        dJ_plus, dJ_minus = J_plus - J, J_minus - J
    resolution = np.zeros(P)
    if float32:
        resolution = 2 * (np.spacing(np.abs(J_plus).astype(np.float32))
                          + np.spacing(np.abs(J_minus).astype(np.float32))).astype(np.float64)
    return Costs(J, J_plus, J_minus, dJ_plus, dJ_minus, gradapprox, resolution,
                 np.zeros(P, dtype=np.int64), engine, np.arange(P))


# ---------------------------------------------------------------------------------------------
# Kinks of a black-box cost
# ---------------------------------------------------------------------------------------------
# A cost with a kink (ReLU, abs, max) within the step of coordinate i: its central difference
# there is no derivative, and a correct gradient can disagree with it by up to half the slope
# jump. The built-in network's engines see ReLU crossings directly; for a black-box cost the
# kink is recognised from costs along the coordinate, only for the elements that fail the
# elementwise test (4 more evaluations each; none for a large step, whose smaller steps were
# taken already for the truncation bound).
#
# With G(s) = (J(s) + J(-s) - 2 J) / s, the disagreement of the one-sided differences
# (J(s) - J) / s and (J - J(-s)) / s, i.e. s times a curvature estimate, compare the curvature
# at steps h and h/2, and at h/2 and h/4:
#
#     Q_far = G(h/2) - G(h) / 2,      Q_near = G(h/4) - G(h/2) / 2.
#
# Both cancel the curvature f2 = J'' exactly; for a smooth cost what is left is -f4 h**3 / 32
# and -f4 h**3 / 256 (f4 = J'''', rounding aside), while a kink of slope jump D at distance
# d = x h (0 <= x < 1) leaves D (1 - 3x) / 2 (x < 1/2) or -D (1 - x) / 2 (x >= 1/2) in Q_far,
# and the same at the scale h/2 in Q_near, whatever the step: each vanishes at one x, never
# both. The kink moves D(h) by D (1 - x) / 2, which over every x is at most KINK_EXPLAINS = 3
# times max(|Q_far|, |Q_near|) (the worst case is x = 0.4).
#
# An element is a kink when (1) a Q is beyond the rounding it can carry (the J values'
# rounding times the sum of the Q's coefficients) and (2) the kink it shows explains the
# disagreement: |analytic - numerical| <= KINK_MARGIN * KINK_EXPLAINS * max|Q| + tolerance +
# noise. (2) keeps real mistakes failing: at a smooth point the Q's are O(f4 h**3) (at the
# default step ~1e-21 f4, and at any step far below the truncation error f3 h**2 / 6 the
# central difference itself carries), so no mistake the step can resolve is excused.

#: A single kink within the step moves the central difference by at most this multiple of
#: max(|Q_far|, |Q_near|).
KINK_EXPLAINS = 3.0

#: Several kinks within one step add their moves but may partly cancel in the Q's: a margin.
KINK_MARGIN = 2.0

#: Sums of the absolute coefficients of the J values in h * Q_far and h * Q_near.
_Q_FAR_WEIGHT = 8.0
_Q_NEAR_WEIGHT = 16.0


def _needs_excuse(costs: Costs, grad, sigma: float, theta, options) -> np.ndarray:
    """Indices of the finite elements that fail the elementwise test (truncation aside)."""
    tolerance, noise = allowance(costs, sigma, theta, m=1, epsilon=options.epsilon,
                                 rtol=options.rtol, atol=options.atol)
    finite = np.isfinite(costs.J_plus) & np.isfinite(costs.J_minus)
    return np.flatnonzero(finite & ~(np.abs(grad - costs.gradapprox) <= tolerance + noise))


def _confirmed_kinks(evaluate, theta, J, indices, grad, costs, central, sigma, float32,
                     options) -> np.ndarray:
    """1 for each of the coordinates ``indices`` whose failure a kink of the cost within the
    step explains, else 0 (see the comment above). ``evaluate(step, indices)`` gives the
    cost's J(theta +- step e_i) for those coordinates (the engine's parallel loop: a wrong
    block may fail in every element)."""
    if indices.size == 0:
        return np.zeros(0, dtype=np.int64)
    h = options.epsilon
    pairs = {1.0: (central[1.0][0][indices], central[1.0][1][indices])}
    for f in (0.5, 0.25):  # taken already when a large step's truncation needed them
        pairs[f] = ((central[f][0][indices], central[f][1][indices]) if f in central
                    else evaluate(f * h, indices))
    with np.errstate(invalid="ignore", over="ignore"):
        G = {f: (plus + minus - 2.0 * J) / (f * h) for f, (plus, minus) in pairs.items()}
        q_far = G[0.5] - G[1.0] / 2.0
        q_near = G[0.25] - G[0.5] / 2.0
    # The rounding of one J value: ECnoise (times the report's safety factor), the final sum
    # of a float64 cost (2 ulps), a float32 cost's spacing, and what an ulp of theta_i in the
    # step taken moves J by.
    largest = np.max([np.abs(v) for pair in pairs.values() for v in pair], axis=0)
    rounding = SIGMA_FACTOR * sigma + 4.0 * _U * largest
    if float32:
        rounding = rounding + np.spacing(largest.astype(np.float32)).astype(np.float64)
    rounding = rounding + np.abs(costs.gradapprox[indices]) * np.spacing(
        np.abs(theta[indices]) + h)
    beyond = ((np.abs(q_far) > _Q_FAR_WEIGHT * rounding / h)
              | (np.abs(q_near) > _Q_NEAR_WEIGHT * rounding / h))
    tolerance, noise = allowance(costs, sigma, theta, m=1, epsilon=h, rtol=options.rtol,
                                 atol=options.atol)
    error = np.abs(grad[indices] - costs.gradapprox[indices])
    explained = error <= (KINK_MARGIN * KINK_EXPLAINS * np.maximum(np.abs(q_far), np.abs(q_near))
                          + tolerance[indices] + noise[indices])
    return (beyond & explained).astype(np.int64)


def _noise(cost, theta, args) -> float:
    """ECnoise of the user's cost; a line along which the cost does not move at all (its
    resolution is coarser than the step) is lengthened before giving up."""
    step = ecnoise_step(theta)
    for grow in (1.0, 1e3, 1e6):
        values = [_scalar(cost(theta + t * grow * step, *args)) for t in range(N_POINTS)]
        if len(set(values)) > 1:
            return sigma_from_values(values)
    return 0.0


def low_precision_warning(names, options) -> tuple[str, ...]:
    note = (f"{', '.join(names)} in float32/float16: compared in float64 with "
            f"rtol={options.rtol:g}, atol={options.atol:g} to allow for a float32 gradient")
    warnings.warn(note, LowPrecisionWarning, stacklevel=3)
    return (note,)


def _layout_for(layout, n_params: int) -> Layout:
    if layout is None:
        return Layout({"theta": (n_params,)})
    if isinstance(layout, Mapping):
        layout = Layout(layout if is_shape_dict(layout)
                        else {name: np.shape(value) for name, value in layout.items()})
    if not isinstance(layout, Layout):
        raise TypeError(f"layout must be a Layout, a dict of arrays or None; got "
                        f"{type(layout).__name__}")
    if layout.n_params != n_params:
        raise ValueError(f"layout has {layout.n_params} parameters but theta has {n_params}")
    return layout


def check(
    cost,
    theta: Any,
    grad: Any,
    args: tuple = (),
    *,
    layout: Layout | Mapping | None = None,
    epsilon: float = 1e-7,
    threshold: float = 2e-7,
    rtol: float | None = None,
    atol: float | None = None,
    n_threads: int | None = None,
    progress: bool = False,
) -> GradientCheckReport:
    """Check the gradient ``grad`` of any cost ``cost(theta, *args) -> float`` at ``theta``.

    ``cost`` is best a ``@numba.njit`` function of a flat float64 vector: the central
    differences ``(cost(theta + eps e_i) - cost(theta - eps e_i)) / 2 eps`` are then evaluated
    for all i in a parallel loop, each thread perturbing and restoring its own copy of theta.
    Compiling that loop for a new cost takes about half a second, once per cost function and
    process. A plain Python callable works too, one evaluation at a time (the report says so).

    An element that fails is looked at once more (4 evaluations): when the cost has a kink
    within its step (a ReLU, abs, max) that explains the disagreement, it is reported as a
    kink (``report.kinks``), not as wrong. With ``epsilon`` above 1e-5 the central differences
    at epsilon/2 and epsilon/4 are taken too (4 evaluations per coordinate): they bound the
    truncation error, or leave the element unverified where no bound holds.

    Parameters
    ----------
    cost : callable
        ``cost(theta, *args) -> float``; must not modify theta.
    theta, grad : array_like of float, shape (P,) or (P, 1)
        The point and the gradient to check (theta finite; NaN in grad is reported).
    args : tuple
        Further arguments of ``cost`` (data arrays, sizes, ...).
    layout : Layout or dict of arrays, optional
        Names the blocks of theta (a dict is read for its keys and shapes, in order): the
        report then has a row per block (``'dW1'`` for ``'W1'``); default one block, 'theta'.
    epsilon, threshold, rtol, atol, n_threads, progress
        As for :func:`gradcheck_fast.check_gradients`.

    Returns
    -------
    GradientCheckReport
        The same report as for the built-in network, ``engine`` being "numba" or "python".

    Raises
    ------
    TypeError
        ``cost`` not callable, failing to compile, or returning a non-scalar; arrays of the
        wrong type.
    ValueError
        A non-finite cost at theta, theta with NaN/Inf, grad of another size.

    Examples
    --------
    >>> import numba, numpy as np
    >>> @numba.njit
    ... def cost(theta, A, y):          # least squares: 1/2 ||A theta - y||^2
    ...     r = (A * theta).sum(axis=1) - y
    ...     return 0.5 * np.sum(r * r)
    >>> A = np.arange(6.0).reshape(3, 2); y = np.ones(3); theta = np.array([0.5, -1.0])
    >>> grad = A.T @ (A @ theta - y)    # the gradient worked out by hand
    >>> check(cost, theta, grad, (A, y)).passed
    True
    >>> check(cost, theta, 2 * grad, (A, y)).blocks["dtheta"].diagnosis
    'dtheta ≈ 2.00 × numerical'
    """
    if not callable(cost):
        raise TypeError(f"cost must be callable, cost(theta, *args) -> float; got "
                        f"{type(cost).__name__}")
    if not isinstance(args, tuple):
        args = tuple(args) if isinstance(args, list) else (args,)
    low_precision = tuple(name for name, value in (("theta", theta), ("grad", grad))
                          if np.asarray(value).dtype.kind == "f"
                          and np.asarray(value).dtype.itemsize < 8)
    # The shape is checked before np.ascontiguousarray, which makes a 0-d theta 1-d.
    theta = float_parameter_array(theta, "theta")
    if theta.ndim == 2 and theta.shape[1] == 1:
        theta = theta[:, 0]
    if theta.ndim != 1 or theta.size == 0:
        hint = " (a scalar): pass np.atleast_1d(theta)" if theta.ndim == 0 else ""
        raise ValueError(f"theta must be a non-empty vector, shape (P,) or (P, 1); got shape "
                         f"{theta.shape}{hint}")
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    if not np.isfinite(theta).all():
        raise ValueError(f"theta contains NaN or Inf at index {int(np.argmin(np.isfinite(theta)))}")
    grad = np.ascontiguousarray(float_parameter_array(grad, "grad"), dtype=np.float64).ravel()
    if grad.size != theta.size:
        raise ValueError(f"grad has {grad.size} elements but theta has {theta.size}")
    layout = _layout_for(layout, theta.size)
    options = check_options(epsilon=epsilon, threshold=threshold, rtol=rtol, atol=atol,
                            mode="full", n_per_block=1, n_directions=1, seed=0,
                            probability=0.5, method="central", engine="auto",
                            progress=progress, n_threads=n_threads, budget_s=None,
                            low_precision=bool(low_precision))
    J = _first_value(cost, theta, args)
    njit = _is_njit(cost)
    timed = time.perf_counter()
    cost(theta.copy(), *args)  # compiled by now: one evaluation's time, for threads and pieces
    seconds = time.perf_counter() - timed
    P = theta.size
    started = time.perf_counter()
    with n_threads_set(options.n_threads):
        central = {1.0: _central(cost, theta, args, options.epsilon, njit, seconds,
                                 options.progress)}
        if options.epsilon > TRUNCATION_STEP:
            # As check_gradients does: the steps eps/2 and eps/4 bound the truncation error
            # (and their J+- serve the kink test).
            for f in SMALLER_STEPS:
                central[f] = _central(cost, theta, args, f * options.epsilon, njit, seconds,
                                      options.progress)
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
    costs = {f: _costs(J, *arrays, float32, engine) for f, arrays in central.items()}
    sigma = _noise(cost, theta, args)
    first = costs[1.0]
    candidates = _needs_excuse(first, grad, sigma, theta, options)
    kinks = np.zeros(P, dtype=np.int64)

    def evaluate(step, indices):
        return _central(cost, theta, args, step, njit, seconds, False, indices)[:2]

    with n_threads_set(options.n_threads):
        kinks[candidates] = _confirmed_kinks(evaluate, theta, J, candidates, grad, first,
                                             central, sigma, float32, options)
    first = replace(first, kinks=kinks)
    if options.epsilon > TRUNCATION_STEP:
        first = with_truncation(first, *(costs[f] for f in SMALLER_STEPS), options.atol,
                                options.rtol)
    if low_precision:
        notes += low_precision_warning(low_precision, options)
    if not njit:
        notes += (f"cost is a plain Python callable: its {2 * P} evaluations ran one at a time "
                 f"in {elapsed:.3g} s; decorated with @numba.njit they would run compiled and "
                 f"in parallel",)
    return build_report(layout, theta, grad, first, sigma, m=1, epsilon=options.epsilon,
                        threshold=options.threshold, rtol=options.rtol, atol=options.atol,
                        notes=notes)
