"""The engines: J(theta + eps e_i) and J(theta - eps e_i) for every parameter index i, in parallel.

Two engines compute them from one unperturbed forward pass:

- ``"exact"`` (:mod:`gradcheck_fast.mlp`): recomputes what a perturbation changes with the
  same floating-point operations as a full forward pass, so every J+- is *bitwise* the full
  pass's value — the seed's numbers, rounding noise included.
- ``"incremental"`` (:mod:`gradcheck_fast.delta`): propagates the change itself through the
  network, so the work per parameter no longer grows with the layers above it, and J+ - J- is
  free of the cancellation between two nearly equal costs.

``"auto"`` picks the exact engine for small work (the seed's own network and the like, where it
reproduces the seed's published numbers) or a non-finite forward pass, the incremental one
otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import prange

from . import _schedule, delta
from ._jit import jit
from ._schedule import claim, run_on, threads_for
from ._threads import n_threads_set, single_blas_thread  # noqa: F401 (re-export)
from .costmodel import (
    INCREMENTAL_S_PER_SAMPLE,
    exact_seconds,
    incremental_seconds,
)
from .mlp import _costs_along, _forward, _locate, _perturbed_cost, _regularisation
from .models import SEED_MODEL
from .noise import N_POINTS, ecnoise_step, sigma_from_values

ENGINES = ("auto", "exact", "incremental")

#: Work is counted in units of one (parameter, sample) of the incremental engine's fast path
#: (~12 ns on one thread, costmodel.INCREMENTAL_S_PER_SAMPLE); other engines convert. Below
#: this much work the check runs on one thread (see _schedule.SERIAL_SECONDS).
_SERIAL_WORK = math.ceil(_schedule.SERIAL_SECONDS / INCREMENTAL_S_PER_SAMPLE)

#: "auto" uses the exact engine up to this much work (parameters x samples): microseconds
#: either way, and on the seed's own network it reproduces the published numbers digit for digit.
_EXACT_WORK = 2048


@jit
def _costs_range(lo, hi, idx, theta, sizes, w_off, b_off, act_off, Y, Z, A, ell, J, reg,
                 epsilon, J_plus, J_minus, dJ_plus, dJ_minus, gradapprox, resolution, kinks,
                 acts, out, slope, l2):
    """Exact engine for the parameters i = idx[k], lo <= k < hi, into slot k: J_plus,
    J_minus, their changes from J, the seed's gradapprox = (J_plus - J_minus) / (2 epsilon),
    resolution (the summed rounding bounds of the losses the two perturbations changed, over
    m) and kinks (ReLU crossings).

    The data part of each J+- is bitwise a full forward pass's; the L2 term is reg (the
    unperturbed one) plus its exact change ``l2/(2m) d (2w + d)`` for a weight moved by d.
    The differences are formed here rather than in NumPy: with an overflowing cost they are
    inf - inf = NaN, which the report shows, without floating-point warnings."""
    m = Y.shape[1]
    max_width = 0
    for l in range(1, sizes.shape[0]):
        max_width = max(max_width, sizes[l])
    zrow = np.empty(m)
    s_new = np.empty(m)
    changed = np.empty(m, dtype=np.int64)
    cur = np.empty(max_width * m)
    nxt = np.empty(max_width * m)
    for k in range(lo, hi):
        i = idx[k]
        t = theta[i]
        # theta[i] + epsilon exactly as the seed forms thetaplus[i] + epsilon.
        plus, minus = t + epsilon, t - epsilon
        J_plus[k], r_plus, k_plus = _perturbed_cost(i, plus, theta, sizes, w_off, b_off,
                                                    act_off, Y, Z, A, ell, zrow, changed,
                                                    cur, nxt, s_new, acts, out, slope)
        J_minus[k], r_minus, k_minus = _perturbed_cost(i, minus, theta, sizes, w_off,
                                                       b_off, act_off, Y, Z, A, ell, zrow,
                                                       changed, cur, nxt, s_new, acts, out,
                                                       slope)
        reg_plus = reg
        reg_minus = reg
        if l2 != 0.0:
            if not _locate(i, sizes, w_off, b_off)[3]:  # a weight: biases are not regularised
                d = plus - t
                reg_plus = reg + l2 / (2.0 * m) * (d * (2.0 * t + d))
                d = minus - t
                reg_minus = reg + l2 / (2.0 * m) * (d * (2.0 * t + d))
        J_plus[k] += reg_plus
        J_minus[k] += reg_minus
        resolution[k] = (r_plus + r_minus) / m
        kinks[k] = k_plus + k_minus
        dJ_plus[k] = J_plus[k] - J
        dJ_minus[k] = J_minus[k] - J
        gradapprox[k] = (J_plus[k] - J_minus[k]) / (2 * epsilon)


@jit(parallel=True)
def _costs_parallel(start, stop, n_chunks, n_workers, schedule, idx, theta, sizes, w_off,
                    b_off, act_off, Y, Z, A, ell, J, reg, epsilon, J_plus, J_minus, dJ_plus,
                    dJ_minus, gradapprox, resolution, kinks, acts, out, slope, l2):
    """:func:`_costs_range` over ``n_chunks`` chunks of [start, stop), claimed one at a time
    by ``n_workers`` threads (see :mod:`gradcheck_fast._schedule`).

    Each index writes only its own slots and each chunk has its own scratch, so the result
    does not depend on which thread runs which chunk: bitwise the same for any thread count.
    """
    n = stop - start
    for w in prange(n_workers):
        ch = claim(schedule, w, n_chunks)
        while ch < n_chunks:
            _costs_range(start + ch * n // n_chunks, start + (ch + 1) * n // n_chunks, idx,
                         theta, sizes, w_off, b_off, act_off, Y, Z, A, ell, J, reg, epsilon,
                         J_plus, J_minus, dJ_plus, dJ_minus, gradapprox, resolution, kinks,
                         acts, out, slope, l2)
            ch = claim(schedule, w, n_chunks)


@dataclass(frozen=True)
class Costs:
    """What a central-difference check is built from (flat arrays in layout order).

    Attributes
    ----------
    J : the unperturbed cost.
    J_plus, J_minus : J(theta + epsilon e_i) and J(theta - epsilon e_i).
    dJ_plus, dJ_minus : their changes from J. The incremental engine computes these directly
        (accurate relative to the change); the exact engine by subtraction.
    gradapprox : ``(dJ_plus - dJ_minus) / (2 epsilon)``; for the exact engine this is the
        seed's ``(J_plus - J_minus) / (2 epsilon)``.
    resolution : per index, a bound on the rounding error of ``J_plus - J_minus`` from the
        loss evaluations the perturbations changed.
    kinks : per index, how many (sample, hidden unit) pairs crossed a ReLU kink in the two steps
        (a custom cost: 1 where its values show a kink that explains a failure, else 0).
    engine : "exact" or "incremental".
    indices : the parameter indices the arrays refer to, in order (all of them for a full check).
    noise_factor : how the rounding of J itself enters gradapprox relative to a central
        difference (1; 1.5 for Richardson's (4 D(h) - D(2h)) / 3).
    truncation : per index, a bound on the truncation error of gradapprox, inf where none can
        be claimed (large steps only; see :mod:`gradcheck_fast.truncation`), or None.
    """

    J: float
    J_plus: np.ndarray
    J_minus: np.ndarray
    dJ_plus: np.ndarray
    dJ_minus: np.ndarray
    gradapprox: np.ndarray
    resolution: np.ndarray
    kinks: np.ndarray
    engine: str
    indices: np.ndarray
    noise_factor: float = 1.0
    truncation: np.ndarray | None = None


#: The index range is handed to the kernels in pieces of about this much one-thread work:
#: Ctrl-C is acted on between pieces (a kernel cannot be interrupted) and a progress bar can
#: move. Each piece is one parallel region, and on a busy machine each region may wait for a
#: descheduled thread, so pieces are few: ~0.1 s of work, i.e. a prompt Ctrl-C.
_PIECE_SECONDS = 0.1

#: With a progress bar, at least this many pieces (the bar moves in steps of 1/20 at most).
_PROGRESS_PIECES = 20


def _run_kernel(serial, parallel, P: int, seconds: float, args: tuple, progress: bool,
                items_per_param: int = 1) -> None:
    """Run ``serial(lo, hi, *args)`` or ``parallel(lo, hi, n_chunks, n_workers, schedule,
    *args)`` over the items [0, P) (seconds: the expected time per item on one thread;
    ``parallel=None`` runs everything serially, e.g. a plain Python callable; the progress bar
    counts parameters, ``items_per_param`` items each).

    Small work runs on one thread in one call; larger work in pieces, returning to Python (and
    so to KeyboardInterrupt and the progress bar) between them. A parallel piece holds at
    least one item per thread, so every thread has work whatever an item costs; after a piece
    that waited for a late thread the next ones run serially (see
    :mod:`gradcheck_fast._schedule`). Which thread computes which item never changes a result:
    every item writes only its own slots.
    """
    total = P * seconds
    n_threads = 1 if parallel is None else max(1, min(threads_for(total), P))
    n_pieces = max(1, math.ceil(total / _PIECE_SECONDS))
    if progress:
        # More pieces for the bar; parallel ones no smaller than the work a region pays for.
        n_pieces = max(n_pieces, _PROGRESS_PIECES if n_threads == 1 else min(
            _PROGRESS_PIECES, math.floor(total / _schedule.SERIAL_SECONDS)))
    n_pieces = min(n_pieces, max(1, P // n_threads))
    bar = _progress_bar(P // items_per_param) if progress else None
    serial_pieces = 0  # after a region that waited for a late thread, serial pieces
    try:
        for k in range(n_pieces):
            lo, hi = k * P // n_pieces, (k + 1) * P // n_pieces
            if serial_pieces > 0:
                serial_pieces -= 1
                run_on(serial, parallel, lo, hi, 1, args, (hi - lo) * seconds)
            elif not run_on(serial, parallel, lo, hi, n_threads, args, (hi - lo) * seconds):
                serial_pieces = _schedule.PROBE_EVERY - 1
            if bar is not None:
                bar.update(hi // items_per_param - lo // items_per_param)
    finally:
        if bar is not None:
            bar.close()


def _progress_bar(total: int):
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise ImportError(
            "progress=True needs tqdm: pip install 'gradcheck-fast[progress]' (or tqdm)"
        ) from exc
    return tqdm(total=total, unit="param", desc="gradient check")


def choose_engine(engine: str, work: int) -> str:
    """The engine "auto" stands for: exact for tiny checks (parameters x samples <= 2048, by
    the network's size: a sample of a network gets the same values as the full check),
    incremental otherwise. Both handle every model of the MLP family."""
    if engine != "auto":
        return engine
    if work <= _EXACT_WORK:
        return "exact"
    return "incremental"


def prepare_engine(net, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, engine: str = "auto",
                   model=SEED_MODEL) -> tuple[str, delta.Prepared | None]:
    """The engine that will run and, for the incremental one, its prepared state
    (:func:`gradcheck_fast.delta.prepare`: the unperturbed pass and what is derived from it,
    which does not depend on the step, so one state serves every step and every set of
    indices). A non-finite forward pass gives ``("exact", None)``: the exact engine reports
    which J+- are NaN/Inf."""
    engine = choose_engine(engine, theta.shape[0] * X.shape[1])
    if engine != "incremental":
        return engine, None
    with single_blas_thread():
        prepared = delta.prepare(net, theta, X, Y, model)
    return ("incremental", prepared) if prepared is not None else ("exact", None)


def mlp_costs(net, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, epsilon: float,
              engine: str = "auto", progress: bool = False,
              indices: np.ndarray | None = None, model=SEED_MODEL,
              prepared: delta.Prepared | None = None) -> Costs:
    """Unperturbed cost and both perturbed costs for the parameters ``indices`` (default: all)
    of the MLP ``net`` computing ``model`` (a :class:`gradcheck_fast.MLP`).

    ``net`` is an :class:`~gradcheck_fast.layout.MLPLayout`; theta, X, Y are clean float64
    C-contiguous arrays (validation happens before this; Y one-hot for softmax).
    ``prepared``: the incremental engine's state from :func:`prepare_engine` for these
    inputs, if the caller has it (prepared here otherwise).
    """
    m = X.shape[1]
    if indices is None:
        indices = np.arange(theta.shape[0])
    n = indices.shape[0]
    engine = choose_engine(engine, theta.shape[0] * m)
    if engine == "incremental" and prepared is None:
        engine, prepared = prepare_engine(net, theta, X, Y, engine, model)
    if engine == "incremental":
        return _incremental(net, theta, Y, epsilon, prepared, indices, progress, model)
    act_off = net.activation_offsets(m)
    n_act = int(act_off[-1])
    Z = np.empty(n_act)
    A = np.empty(n_act)
    ell = np.empty(m)
    codes = (model.codes(net.n_layers), model.output_code, model.leaky_slope, model.l2)
    J = _forward(theta, net.sizes, net.w_off, net.b_off, act_off, X, Y, Z, A, ell, *codes)
    reg = _regularisation(theta, net.sizes, net.w_off, m, model.l2) if model.l2 else 0.0
    J_plus, J_minus, dJ_plus, dJ_minus, gradapprox, resolution = np.empty((6, n))
    kinks = np.empty(n, dtype=np.int64)
    args = (indices, theta, net.sizes, net.w_off, net.b_off, act_off, Y, Z, A, ell, J, reg,
            epsilon, J_plus, J_minus, dJ_plus, dJ_minus, gradapprox, resolution, kinks, *codes)
    _run_kernel(_costs_range, _costs_parallel, n, exact_seconds(net.size_tuple, m), args,
                progress)
    return Costs(J, J_plus, J_minus, dJ_plus, dJ_minus, gradapprox, resolution, kinks, "exact",
                 indices)


def _incremental(net, theta, Y, epsilon, prepared, indices, progress, model) -> Costs:
    m = Y.shape[1]
    n = indices.shape[0]
    dJ_plus, dJ_minus, resolution = np.empty((3, n))
    kinks = np.empty(n, dtype=np.int64)
    p = prepared
    args = (indices, theta, net.sizes, net.w_off, net.b_off, p.act_off, p.A, p.Z, Y, p.coef,
            p.sig, p.V, p.v_off, p.rho, epsilon, dJ_plus, dJ_minus, resolution, kinks,
            model.codes(net.n_layers), model.leaky_slope, model.output_code, p.C3, p.series,
            p.radius, p.s_off, p.F, p.K)
    # The time model only decides threads and pieces: when even every sample taking the
    # explicit path would stay below the serial threshold, the decision is made already and
    # the (NumPy-bound) count of slow samples is skipped.
    worst = incremental_seconds(net.sizes, m, np.ones(len(net.sizes)))
    if n * worst < _schedule.SERIAL_SECONDS:
        seconds = worst
    else:
        seconds = incremental_seconds(net.sizes, m, delta.slow_fractions(p, net.sizes, m, epsilon))
    _run_kernel(delta._deltas_range, delta._deltas_parallel, n, seconds, args, progress)
    # Divided by the steps really taken, fl(theta_i +- epsilon) - theta_i, not by 2 epsilon:
    # the changes are exact to rounding, so the step's own rounding (up to an ulp of theta_i,
    # ~1e-9 relative at epsilon = 1e-7) would otherwise be the largest error left. A step that
    # rounds to 0 gives 0 (J did not move), which the report marks as unverified.
    t = theta[indices]
    if model.l2:
        # The L2 term's change, exact: l2/(2m) d (2w + d) for a weight moved by d.
        weight = np.zeros(theta.shape[0], dtype=bool)
        for name, start, stop in zip(net.names, net.offsets[:-1], net.offsets[1:]):
            weight[start:stop] = name[0] == "W"
        is_weight = weight[indices]
        for changes, sign in ((dJ_plus, 1.0), (dJ_minus, -1.0)):
            d = (t + sign * epsilon) - t
            changes += np.where(is_weight, model.l2 / (2.0 * m) * (d * (2.0 * t + d)), 0.0)
    step = ((t + epsilon) - t) - ((t - epsilon) - t)
    with np.errstate(divide="ignore", invalid="ignore"):
        gradapprox = np.where(step > 0, (dJ_plus - dJ_minus) / step, 0.0)
    J = p.J
    return Costs(J, J + dJ_plus, J + dJ_minus, dJ_plus, dJ_minus, gradapprox, resolution, kinks,
                 "incremental", indices)


def mlp_cost_noise(net, theta: np.ndarray, X: np.ndarray, Y: np.ndarray,
                   model=SEED_MODEL) -> float:
    """The ECnoise estimate of the rounding noise of the MLP's J near theta (see
    :mod:`gradcheck_fast.noise`)."""
    codes = (model.codes(net.n_layers), model.output_code, model.leaky_slope, model.l2)
    step = ecnoise_step(theta)
    # A line that crosses a ReLU kink measures the kink, not rounding (and would inflate the
    # noise bound until real mistakes hide under it): shorter lines are tried, and if every one
    # crosses, no estimate is used (the report then relies on its rigorous rounding bounds).
    for shrink in (1.0, 1e-3, 1e-6):
        values, crossed = _costs_along(theta, shrink * step, N_POINTS, net.sizes, net.w_off,
                                       net.b_off, net.activation_offsets(X.shape[1]), X, Y,
                                       *codes)
        if not crossed:
            return sigma_from_values(values)
    return 0.0
