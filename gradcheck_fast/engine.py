"""The parallel engine: J(theta + eps*e_i) and J(theta - eps*e_i) for every parameter index i."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

from ._jit import jit
from .mlp import _costs_along, _forward, _perturbed_cost
from .noise import N_POINTS, ecnoise_step, sigma_from_values

#: Chunks of the index range per thread: costs differ between layers, so several chunks per
#: thread keep the threads balanced; each chunk allocates its scratch once.
_CHUNKS_PER_THREAD = 8

#: Below this much work (parameters x samples) one thread is faster than waking the others.
_SERIAL_WORK = 4096


@jit
def _costs_range(lo, hi, theta, sizes, w_off, b_off, act_off, Y, Z, A, lp, ell, epsilon,
                 J_plus, J_minus, resolution):
    """Fill J_plus[i], J_minus[i] and resolution[i] (the summed rounding bounds of the losses
    the two perturbations changed, over m) for lo <= i < hi, with scratch of its own."""
    m = Y.shape[1]
    max_width = 0
    for l in range(1, sizes.shape[0]):
        max_width = max(max_width, sizes[l])
    zrow = np.empty(m)
    s_new = np.empty(m)
    changed = np.empty(m, dtype=np.int64)
    cur = np.empty(max_width * m)
    nxt = np.empty(max_width * m)
    for i in range(lo, hi):
        t = theta[i]
        # theta[i] + epsilon exactly as the seed forms thetaplus[i] + epsilon.
        J_plus[i], r_plus = _perturbed_cost(i, t + epsilon, theta, sizes, w_off, b_off, act_off,
                                            Y, Z, A, lp, ell, zrow, changed, cur, nxt, s_new)
        J_minus[i], r_minus = _perturbed_cost(i, t - epsilon, theta, sizes, w_off, b_off,
                                              act_off, Y, Z, A, lp, ell, zrow, changed, cur,
                                              nxt, s_new)
        resolution[i] = (r_plus + r_minus) / m


@jit(parallel=True)
def _costs_parallel(start, stop, n_chunks, theta, sizes, w_off, b_off, act_off, Y, Z, A, lp,
                    ell, epsilon, J_plus, J_minus, resolution):
    """:func:`_costs_range` over ``n_chunks`` chunks of [start, stop) in parallel.

    Each index writes only its own slots and each chunk has its own scratch, so the result
    does not depend on which thread runs which chunk: bitwise the same for any thread count.
    """
    n = stop - start
    for ch in prange(n_chunks):
        _costs_range(start + ch * n // n_chunks, start + (ch + 1) * n // n_chunks, theta, sizes,
                     w_off, b_off, act_off, Y, Z, A, lp, ell, epsilon, J_plus, J_minus,
                     resolution)


@dataclass(frozen=True)
class Costs:
    """What a central-difference check is built from (flat arrays in layout order).

    Attributes
    ----------
    J : the unperturbed cost.
    J_plus, J_minus : J(theta + epsilon e_i) and J(theta - epsilon e_i).
    resolution : per index, a bound on the rounding error of the per-sample losses that differ
        between J_plus and J_minus (their sum over both, divided by m).
    """

    J: float
    J_plus: np.ndarray
    J_minus: np.ndarray
    resolution: np.ndarray


@contextlib.contextmanager
def n_threads_set(n_threads: int | None):
    """Run the body with ``numba.set_num_threads(n_threads)``; restore the old value after."""
    if n_threads is None:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def mlp_costs(net, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, epsilon: float) -> Costs:
    """Unperturbed cost and both perturbed costs for every index of the MLP ``net``.

    ``net`` is an :class:`~gradcheck_fast.layout.MLPLayout`; theta, X, Y are clean float64
    C-contiguous arrays (validation happens before this).
    """
    m = X.shape[1]
    act_off = net.activation_offsets(m)
    n_act = int(act_off[-1])
    Z = np.empty(n_act)
    A = np.empty(n_act)
    lp = np.empty(net.sizes[-1] * m)
    ell = np.empty(m)
    J = _forward(theta, net.sizes, net.w_off, net.b_off, act_off, X, Y, Z, A, lp, ell)
    P = theta.shape[0]
    J_plus = np.empty(P)
    J_minus = np.empty(P)
    resolution = np.empty(P)
    args = (theta, net.sizes, net.w_off, net.b_off, act_off, Y, Z, A, lp, ell, epsilon,
            J_plus, J_minus, resolution)
    n_threads = 1 if P * m < _SERIAL_WORK else numba.get_num_threads()
    if n_threads == 1:
        _costs_range(0, P, *args)
    else:
        _costs_parallel(0, P, min(P, _CHUNKS_PER_THREAD * n_threads), *args)
    return Costs(J=J, J_plus=J_plus, J_minus=J_minus, resolution=resolution)


def mlp_cost_noise(net, theta: np.ndarray, X: np.ndarray, Y: np.ndarray) -> float:
    """The ECnoise estimate of the rounding noise of the MLP's J near theta (see
    :mod:`gradcheck_fast.noise`)."""
    values = _costs_along(theta, ecnoise_step(theta), N_POINTS, net.sizes, net.w_off,
                          net.b_off, net.activation_offsets(X.shape[1]), X, Y)
    return sigma_from_values(values)
