"""Bring your own cost: the check for any model written as ``cost(theta, *args) -> float``."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any

import numba
import numpy as np
from numba import prange
from numba.core.errors import NumbaError

from ._jit import jit
from ._threads import n_threads_set
from .checker import TRUNCATION_STEP, LowPrecisionWarning, check_options
from .engine import Costs, _run_kernel
from .layout import Layout, is_shape_dict
from .noise import N_POINTS, ecnoise_step, sigma_from_values
from .report import GradientCheckReport, build_report
from .validation import float_parameter_array


# The kernels take the user's njit function as an argument: numba compiles them anew for
# each distinct cost function (about half a second) and cannot cache that on disk.
@jit(cache=False)
def _user_costs_range(lo, hi, cost, theta, args, epsilon, J_plus, J_minus, gradapprox):
    """For lo <= i < hi: J at theta with theta[i] +- epsilon, on a private copy of theta that
    is perturbed and restored (the caller's theta is never written)."""
    local = theta.copy()
    for i in range(lo, hi):
        t = theta[i]
        local[i] = t + epsilon
        J_plus[i] = cost(local, *args)
        local[i] = t - epsilon
        J_minus[i] = cost(local, *args)
        local[i] = t
        gradapprox[i] = (J_plus[i] - J_minus[i]) / (2 * epsilon)


@jit(parallel=True, cache=False)
def _user_costs_parallel(start, stop, n_chunks, cost, theta, args, epsilon, J_plus, J_minus,
                         gradapprox):
    """:func:`_user_costs_range` over ``n_chunks`` chunks in parallel; each chunk has its own
    copy of theta and each index writes only its own slots."""
    n = stop - start
    for ch in prange(n_chunks):
        _user_costs_range(start + ch * n // n_chunks, start + (ch + 1) * n // n_chunks, cost,
                          theta, args, epsilon, J_plus, J_minus, gradapprox)


def _python_costs_range(lo, hi, cost, theta, args, epsilon, J_plus, J_minus, gradapprox):
    local = theta.copy()
    for i in range(lo, hi):
        t = theta[i]
        local[i] = t + epsilon
        J_plus[i] = _scalar(cost(local, *args))
        local[i] = t - epsilon
        J_minus[i] = _scalar(cost(local, *args))
        local[i] = t
        gradapprox[i] = (J_plus[i] - J_minus[i]) / (2 * epsilon)


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


def _central(cost, theta, args, epsilon, njit, seconds, progress):
    """J+- and the central differences for every coordinate, in parallel for an njit cost."""
    P = theta.size
    J_plus, J_minus, gradapprox = np.empty((3, P))
    kernel_args = (cost, theta, args, epsilon, J_plus, J_minus, gradapprox)
    if njit:
        _run_kernel(_user_costs_range, _user_costs_parallel, P, seconds, kernel_args, progress)
    else:
        _run_kernel(_python_costs_range, None, P, seconds, kernel_args, progress)
    return J_plus, J_minus, gradapprox


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
    seconds = 2 * (time.perf_counter() - timed)
    P = theta.size
    started = time.perf_counter()
    with n_threads_set(options.n_threads):
        J_plus, J_minus, gradapprox = _central(cost, theta, args, options.epsilon, njit,
                                               seconds, options.progress)
        truncation = None
        if options.epsilon > TRUNCATION_STEP:
            # As check_gradients does: a second step 2 eps estimates the truncation error.
            _, _, double = _central(cost, theta, args, 2 * options.epsilon, njit, seconds,
                                    options.progress)
            with np.errstate(invalid="ignore"):
                truncation = np.nan_to_num(np.abs(gradapprox - double) / 3.0)
    elapsed = time.perf_counter() - started
    with np.errstate(invalid="ignore", over="ignore"):
        dJ_plus, dJ_minus = J_plus - J, J_minus - J
    # A cost computed in lower precision (float32 inside) is quantised far above float64's
    # rounding: its spacing, seen in J and J+-, bounds how far J+- can be off.
    resolution = np.zeros(P)
    notes = ()
    values = np.concatenate(([J], J_plus, J_minus))
    if np.all(values.astype(np.float32) == values):
        resolution = 2 * (np.spacing(np.abs(J_plus).astype(np.float32))
                          + np.spacing(np.abs(J_minus).astype(np.float32))).astype(np.float64)
        notes += ("cost returns float32 values: its quantisation (an ulp of float32, ~6e-8 "
                  "relative) divided by 2 epsilon is allowed for, so elements the step cannot "
                  "resolve show as unverified; a float64 cost checks far more finely",)
    costs = Costs(J, J_plus, J_minus, dJ_plus, dJ_minus, gradapprox, resolution,
                  np.zeros(P, dtype=np.int64), "numba" if njit else "python", np.arange(P),
                  truncation=truncation)
    sigma = _noise(cost, theta, args)
    if low_precision:
        notes += low_precision_warning(low_precision, options)
    if not njit:
        notes += (f"cost is a plain Python callable: its {2 * P} evaluations ran one at a time "
                 f"in {elapsed:.3g} s; decorated with @numba.njit they would run compiled and "
                 f"in parallel",)
    return build_report(layout, theta, grad, costs, sigma, m=1, epsilon=options.epsilon,
                        threshold=options.threshold, rtol=options.rtol, atol=options.atol,
                        notes=notes)
