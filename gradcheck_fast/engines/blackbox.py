"""The black-box engine: J(theta +- eps e_i) of a user's ``cost(theta, *args) -> float``, each
evaluation an item of one parallel loop (an njit cost) or a Python loop (any callable)."""

from __future__ import annotations

import numba
import numpy as np
from numba import prange
from numba.core.errors import NumbaError

from .._jit import jit
from .._schedule import claim
from .._threads import num_threads
from ..noise import N_POINTS, ecnoise_step, sigma_from_values
from ._common import Costs, all_indices, full_cost_noise, run_kernel

#: What a kink is for a user's cost, as the report says it.
KINK = "a kink of the cost (a ReLU kink or other non-smooth point)"


# The work is cut into evaluations, not coordinates: item k is J(theta + eps e_i) for k = 2i
# and J(theta - eps e_i) for k = 2i + 1. A cost that takes seconds per evaluation still keeps
# every thread busy (two threads share even a single coordinate), and a piece of the range, the
# unit Ctrl-C waits for, holds one evaluation per thread.
#
# The kernels take the user's njit function as an argument: numba compiles them anew for
# each distinct cost function (about half a second) and cannot cache that on disk.
@jit(cache=False)
def _user_costs_into(local, lo, hi, request, cost, args, J):
    """For lo <= k < hi: J at theta with theta[i] + epsilon (k even) or - epsilon (k odd),
    i = idx[k // 2] (``request``: idx, theta, epsilon), into ``J[k % 2, k // 2]`` (J+ in row 0,
    J- in row 1), on ``local``, a private copy of theta that each evaluation perturbs and
    restores (the caller's theta is never written)."""
    idx, theta, epsilon = request
    for k in range(lo, hi):
        i = idx[k // 2]
        t = theta[i]
        local[i] = t + epsilon if k % 2 == 0 else t - epsilon
        J[k % 2, k // 2] = cost(local, *args)
        local[i] = t


@jit(cache=False)
def _user_costs_range(lo, hi, request, scratch, cost, args, J):
    """:func:`_user_costs_into` on one thread, on ``scratch[0]`` (see :func:`central`)."""
    _user_costs_into(scratch[0], lo, hi, request, cost, args, J)


@jit(parallel=True, cache=False)
def _user_costs_parallel(start, stop, n_chunks, n_workers, schedule, request, scratch, cost,
                         args, J):
    """:func:`_user_costs_into` over chunks claimed by ``n_workers`` threads (see
    :mod:`gradcheck_fast._schedule`); worker w perturbs its own copy of theta,
    ``scratch[w]``, and each evaluation writes only its own slot."""
    n = stop - start
    for w in prange(n_workers):
        worker = np.int64(w)
        local = scratch[worker]
        ch = claim(schedule, worker, n_chunks)
        while ch < n_chunks:
            _user_costs_into(local, start + ch * n // n_chunks,
                             start + (ch + 1) * n // n_chunks, request, cost, args, J)
            ch = claim(schedule, worker, n_chunks)


def _python_costs_range(lo, hi, request, scratch, cost, args, J):
    """:func:`_user_costs_range` for any callable, in Python (its values checked to be real
    scalars). A cost with an ``at(i, value, *args)`` method (a dict of parameters,
    :class:`gradcheck_fast.parameters.DictCost`) sets the one coordinate itself."""
    idx, theta, epsilon = request
    at = getattr(cost, "at", None)
    local = scratch[0]
    for k in range(lo, hi):
        i = idx[k // 2]
        t = theta[i]
        value = t + epsilon if k % 2 == 0 else t - epsilon
        if at is not None:
            J[k % 2, k // 2] = scalar(at(int(i), value, *args))
            continue
        local[i] = value
        J[k % 2, k // 2] = scalar(cost(local, *args))
        local[i] = t


def scalar(value) -> float:
    array = np.asarray(value)
    if array.ndim != 0 or array.dtype.kind not in "biuf":
        shape = f" of shape {array.shape}" if array.ndim else ""
        raise TypeError(f"cost must return a real scalar (a float); got "
                        f"{type(value).__name__}{shape}")
    return float(array)


def is_njit(cost) -> bool:
    return isinstance(cost, numba.core.dispatcher.Dispatcher)


def _type_name(value) -> str:
    try:
        return str(numba.typeof(value))
    except Exception:  # numba cannot type it: that is the reason the compile failed
        return f"{type(value).__name__} (no numba type)"


def first_value(cost, theta, args) -> float:
    """cost(theta, *args) once, in Python: compiles an njit cost, checks what it returns, and
    that it leaves theta alone (the check perturbs private copies of theta that must stay
    exactly theta between evaluations)."""
    probe = theta.copy()
    try:
        value = cost(probe, *args)
    except (NumbaError, ValueError, TypeError) as exc:
        if not is_njit(cost):
            raise
        summary = str(exc).strip().splitlines()
        reason = next((line for line in summary if line.strip()), "")
        types = "".join(", " + _type_name(a) for a in args)
        raise TypeError(f"cost could not be compiled by numba for (theta: float64[:]{types}): "
                        f"{reason}") from exc
    if not np.array_equal(probe, theta):
        raise ValueError("cost modified theta: it must not write into its first argument "
                         "(copy it first if it needs scratch space)")
    value = scalar(value)
    if not np.isfinite(value):
        raise ValueError(f"cost(theta, *args) is {value} at the given theta: the check needs a "
                         f"finite cost there")
    return value


def _half(k: int) -> int:
    """Parameters done with the first k evaluations (two per parameter)."""
    return k // 2


def central(cost, theta, args, epsilon, njit, seconds, progress, indices=None):
    """J+- and the central differences for the coordinates ``indices`` (default every one), in
    parallel for an njit cost (``seconds``: the time of one evaluation)."""
    if indices is None:
        indices = all_indices(theta.size)
    P = indices.size
    J = np.empty((2, P))
    J_plus, J_minus = J
    # One copy of theta per thread for the whole call, each evaluation perturbing and
    # restoring one element of it: a copy per chunk or piece cost more than the evaluations
    # themselves for a large model (a 2 M-parameter theta is 16 MB, a fresh one mostly page
    # faults, and each chunk held about one evaluation).
    scratch = np.empty((num_threads() if njit else 1, theta.size))
    scratch[:] = theta
    kernel_args = ((indices, theta, epsilon), scratch, cost, args, J)
    if njit:
        run_kernel(_user_costs_range, _user_costs_parallel, 2 * P, seconds, kernel_args,
                    progress, params_before=_half)
    else:
        run_kernel(_python_costs_range, None, 2 * P, seconds, kernel_args, progress,
                    params_before=_half)
    return J_plus, J_minus, difference(J_plus, J_minus, epsilon)


def difference(J_plus: np.ndarray, J_minus: np.ndarray, epsilon: float) -> np.ndarray:
    """The central difference ``(J_plus - J_minus) / (2 epsilon)`` (the seed's gradapprox)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return (J_plus - J_minus) / (2 * epsilon)


def costs(J, J_plus, J_minus, gradapprox, float32: bool, engine: str, theta: np.ndarray,
          epsilon: float, sigma: float, indices: np.ndarray | None = None) -> Costs:
    """The report's view of one central difference (step epsilon) of the user's cost at the
    coordinates ``indices`` (default all; ``theta``: their values); sigma: the cost's ECnoise
    estimate (:func:`cost_noise`)."""
    P = gradapprox.size
    with np.errstate(invalid="ignore", over="ignore"):
        dJ_plus, dJ_minus = J_plus - J, J_minus - J
    resolution = np.zeros(P)
    if float32:
        resolution = 2 * (np.spacing(np.abs(J_plus).astype(np.float32))
                          + np.spacing(np.abs(J_minus).astype(np.float32))).astype(np.float64)
    # One sample's loss: the final sum's rounding is that of m = 1.
    noise = full_cost_noise(J_plus, J_minus, resolution, gradapprox, theta, epsilon, 1, sigma)
    return Costs(J, J_plus, J_minus, dJ_plus, dJ_minus, gradapprox, resolution,
                 np.zeros(P, dtype=np.int64), engine,
                 all_indices(P) if indices is None else indices, noise,
                 kink=KINK)


def cost_noise(cost, theta, args) -> float:
    """ECnoise of the user's cost; a line along which the cost does not move at all (its
    resolution is coarser than the step) is lengthened before giving up."""
    step = ecnoise_step(theta)
    for grow in (1.0, 1e3, 1e6):
        values = [scalar(cost(theta + t * grow * step, *args)) for t in range(N_POINTS)]
        if len(set(values)) > 1:
            return sigma_from_values(values)
    return 0.0
