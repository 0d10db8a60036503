"""The exact engine: J(theta +- eps e_i) of an MLP, each bitwise a full forward pass's, from jitted
kernels on the flat parameter vector theta.

The network is ``LINEAR -> act -> ... -> LINEAR -> output`` with the activations, output and
loss of a :class:`gradcheck_fast.MLP`, passed to the kernels as a
:class:`~gradcheck_fast.engines._common.Codes` bundle, its layout as a
:class:`~gradcheck_fast.engines._common.Network` (widths and offsets). The parameters live in
one float64 vector ``theta`` in the seed's order ``W1, b1, W2, b2, ...``, each block in C
order. Activations are kept in flat arrays too, layer ``l`` (``n_l`` rows by ``m`` samples, C
order) starting at ``act_off[l]``; layer 0 of ``A`` is ``X``.

Every pre-activation is computed by one helper, :func:`_linear_row` (a row of ``Z``, vectorised
over samples), always with the same floating-point operations in the same order: ``((0 +
w0*a0) + w1*a1) + ... + b``. This is what lets the engine recompute only what a perturbation
changes and still obtain, bitwise, the cost a full forward pass would give.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import prange

from .._jit import jit
from .._schedule import bare, claim
from ..activations import has_kink
from ..activations import value as activation
from ..losses import column_loss
from ..models import SEED_MODEL
from ..noise import N_POINTS, ecnoise_step, sigma_from_values
from ._common import (
    Codes,
    Costs,
    Network,
    full_cost_noise,
    locate,
    run_kernel,
    runs_at_once,
)
from .costmodel import exact_seconds


class Unperturbed(NamedTuple):
    """The unperturbed pass the exact engine's kernels read: labels ``Y`` (n_out, m),
    pre-activations ``Z`` and activations ``A`` (flat, by ``act_off``), the per-sample losses
    ``ell``, the cost ``J`` and its L2 term ``reg``."""

    Y: np.ndarray
    Z: np.ndarray
    A: np.ndarray
    ell: np.ndarray
    J: float
    reg: float


class Outputs(NamedTuple):
    """Per slot k (parameter ``idx[k]``): in ``values[:, k]`` the rows J+, J-, their changes
    from J, the seed's gradapprox and the rounding bound ``resolution`` (one array rather than
    six: a kernel's dispatch pays per array it is handed), in ``kinks[k]`` the kink crossings."""

    values: np.ndarray
    kinks: np.ndarray


#: The rows of :class:`Outputs` ``values``.
J_PLUS, J_MINUS, DJ_PLUS, DJ_MINUS, GRADAPPROX, RESOLUTION = range(6)


class Scratch(NamedTuple):
    """Per-chunk work space of :func:`_perturbed_cost`: ``zrow``, ``s_new`` (m floats),
    ``changed`` (m ints), ``cur``, ``nxt`` (widest layer x m floats)."""

    zrow: np.ndarray
    changed: np.ndarray
    cur: np.ndarray
    nxt: np.ndarray
    s_new: np.ndarray


#: "No unit" / "no substituted weight" for :func:`_linear_row` and
#: :func:`~gradcheck_fast.losses.column_loss`: an int64, never a literal, so that a helper
#: that is not inlined is compiled for one signature (a literal -1 is a type of its own).
_NONE = np.int64(-1)

#: Up to this many samples (or gathered samples), :func:`_linear_row` sums each value in a
#: register; beyond, it sweeps the samples in the inner loop, which vectorises.
_FEW_SAMPLES = 8


@jit(inline=True)
def _linear_row(theta, w_start, n_prev, A, a_start, m, bias, out, out_start, sub_index,
                sub_value):
    """``out[o + j] = sum_c theta[w_start + c] * A[a_start + c*m + j] + bias`` for j < m, with
    ``o = out_start``: one row of a layer's pre-activations. ``theta``: the parameters, the
    row's weights from ``w_start`` on, ``n_prev`` of them (the previous layer's width);
    ``A``: the previous layer's activations from ``a_start`` on, ``(n_prev, m)`` C order;
    ``bias``: the row's bias; ``out``: where the m values go, from ``out_start`` on. The weight
    at flat index ``sub_index`` is read as ``sub_value`` (-1: none).

    Offsets rather than slices: a slice is a new array object per call, which costs more than
    the arithmetic on small layers. Inlined: it is the engine's innermost loop (a call costs
    ~60 % more on the exact engine's checks).
    """
    if m <= _FEW_SAMPLES:
        # Each sum in a register: the same operations in the same order, without a store and
        # reload of out[j] per term (the loop below vectorises over the samples instead).
        for j in range(m):
            total = 0.0
            for c in range(n_prev):
                k = w_start + c
                w = sub_value if k == sub_index else theta[k]
                total += w * A[a_start + c * m + j]
            out[out_start + j] = total + bias
        return
    for j in range(m):
        out[out_start + j] = 0.0
    for c in range(n_prev):
        k = w_start + c
        w = sub_value if k == sub_index else theta[k]
        base = a_start + c * m
        for j in range(m):
            out[out_start + j] += w * A[base + j]
    for j in range(m):
        out[out_start + j] += bias


@jit
def _regularisation(theta, net, m, l2):
    """``l2 / (2m) * sum of the squared weights`` (biases excluded), summed in layout order."""
    if l2 == 0.0:
        return 0.0
    sizes, w_off, _, _ = net
    total = 0.0
    for l in range(1, sizes.shape[0]):
        for k in range(w_off[l], w_off[l] + sizes[l] * sizes[l - 1]):
            total += theta[k] * theta[k]
    return l2 / (2.0 * m) * total


@jit
def _forward(theta, net, X, Y, Z, A, ell, codes):
    """Full forward pass: fills Z, A and the per-sample losses ``ell``; returns the cost
    ``1/m * sum_j ell[j]`` plus the L2 term."""
    sizes, w_off, b_off, act_off = net
    acts, out, slope, l2 = codes
    n_layers = sizes.shape[0] - 1
    m = X.shape[1]
    n_x = sizes[0]
    for c in range(n_x):
        for j in range(m):
            A[c * m + j] = X[c, j]
    for l in range(1, n_layers + 1):
        n_prev = sizes[l - 1]
        for r in range(sizes[l]):
            row = act_off[l] + r * m
            _linear_row(theta, w_off[l] + r * n_prev, n_prev, A, act_off[l - 1], m,
                        theta[b_off[l] + r], Z, row, _NONE, 0.0)
            for j in range(m):
                z = Z[row + j]
                # The output layer's activations are not needed by the engines (the loss is
                # read from Z); they are kept as Z there.
                A[row + j] = activation(acts[l], z, slope) if l < n_layers else z
    zo = act_off[n_layers]
    total = 0.0
    for j in range(m):
        loss, _ = column_loss(Z, zo, m, j, Y, j, out, _NONE, 0.0)
        ell[j] = loss
        total += loss
    return (1.0 / m) * total + _regularisation(theta, net, m, l2)


@jit
def _cost(theta, net, X, Y, codes):
    """The cost J(theta) by a full forward pass (allocates its own buffers)."""
    n_act = net[3][-1]
    m = X.shape[1]
    Z = np.empty(n_act)
    A = np.empty(n_act)
    ell = np.empty(m)
    return _forward(theta, net, X, Y, Z, A, ell, codes)


@jit
def _costs_along(theta, step, n_points, net, X, Y, codes):
    """``J(theta + t * step)`` for t = 0 .. n_points - 1 (the ECnoise points), and whether some
    ReLU-type unit changes side of its kink along the way (then the differences measure the
    kink, not rounding)."""
    sizes, _, _, act_off = net
    acts = codes[0]
    n_layers = sizes.shape[0] - 1
    m = X.shape[1]
    n_act = act_off[-1]
    values = np.empty(n_points)
    shifted = np.empty_like(theta)
    Z0 = np.empty(n_act)
    Z = np.empty(n_act)
    A = np.empty(n_act)
    ell = np.empty(m)
    crossed = False
    for t in range(n_points):
        for i in range(theta.shape[0]):
            shifted[i] = theta[i] + t * step[i]
        values[t] = _forward(shifted, net, X, Y, Z if t else Z0, A, ell, codes)
        if t:
            for l in range(1, n_layers):
                if has_kink(acts[l]):
                    for k in range(act_off[l], act_off[l + 1]):
                        if (Z[k] > 0.0) != (Z0[k] > 0.0):
                            crossed = True
    return values, crossed


# Inlined once, into the loop over both steps of _costs_range: a call would pass its ~15
# arrays' reference counts back and forth twice per parameter (+20 % on the seed's check).
@jit(inline=True)
def _perturbed_cost(i, value, theta, net, base, scratch, codes):
    """The data part of J(theta with theta[i] replaced by value), reusing the unperturbed pass
    ``base`` (:class:`Unperturbed`; the L2 term's change is added by the caller), with the
    work space ``scratch`` (:class:`Scratch`).

    Layers before the perturbed one are unchanged; of the perturbed layer only row r of Z is
    recomputed; samples whose activation in that row does not change keep their loss, and the
    others are gathered and carried forward together through the later layers. Every value
    goes through the same helpers, in the same order, as in :func:`_forward`, so the result is
    bitwise the full forward pass's.

    Returns ``(J, R, crossings)``: R bounds the rounding error of the per-sample losses that
    the perturbation changed (the unchanged ones are the same numbers in J+ and J-, so their
    errors cancel in J+ - J-), see :func:`~gradcheck_fast.losses.column_loss`; crossings
    counts the (sample, hidden unit) pairs of a ReLU-type layer whose pre-activation changed
    sign: kinks, where J is not differentiable.
    """
    sizes, w_off, b_off, act_off = net
    Y, Z, A, ell, _, _ = base
    zrow, changed, cur, nxt, s_new = scratch
    acts, out, slope, _ = codes
    n_layers = sizes.shape[0] - 1
    m = Y.shape[1]
    l, r, _, is_bias = locate(i, sizes, w_off, b_off)
    n_prev = sizes[l - 1]
    bias = value if is_bias else theta[b_off[l] + r]
    _linear_row(theta, w_off[l] + r * n_prev, n_prev, A, act_off[l - 1], m, bias, zrow, 0, i,
                value)

    row_old = act_off[l] + r * m
    total = 0.0
    resolution = 0.0
    if l == n_layers:
        # Only output unit r moves: each sample's loss is recomputed with its new value.
        for j in range(m):
            if zrow[j] == Z[row_old + j]:
                total += ell[j]
                continue
            loss, err = column_loss(Z, row_old - r * m, m, j, Y, j, out, r, zrow[j])
            total += loss
            resolution += err
        return (1.0 / m) * total, resolution, 0

    # Samples whose activation of unit r changes, with the whole layer-l column gathered.
    n_l = sizes[l]
    n_changed = np.int64(0)
    crossings = 0
    kinked = has_kink(acts[l])
    for j in range(m):
        if kinked and (zrow[j] > 0.0) != (Z[row_old + j] > 0.0):
            crossings += 1
        a_new = activation(acts[l], zrow[j], slope)
        if a_new == A[row_old + j]:
            continue
        changed[n_changed] = j
        zrow[n_changed] = a_new  # zrow[j] is no longer needed once j has been visited
        n_changed += 1
    for c in range(n_l):
        start = act_off[l] + c * m
        for t in range(n_changed):
            cur[c * n_changed + t] = A[start + changed[t]]
    for t in range(n_changed):
        cur[r * n_changed + t] = zrow[t]
    # Later layers on the gathered samples only.
    for q in range(l + 1, n_layers + 1):
        nq_prev = sizes[q - 1]
        for k in range(sizes[q]):
            o = k * n_changed
            _linear_row(theta, w_off[q] + k * nq_prev, nq_prev, cur, 0, n_changed,
                        theta[b_off[q] + k], nxt, o, _NONE, 0.0)
            if q < n_layers:
                z_old = act_off[q] + k * m
                kinked = has_kink(acts[q])
                for t in range(n_changed):
                    if kinked and (nxt[o + t] > 0.0) != (Z[z_old + changed[t]] > 0.0):
                        crossings += 1
                    nxt[o + t] = activation(acts[q], nxt[o + t], slope)
        cur, nxt = nxt, cur
    # cur now holds the output pre-activations of the changed samples, (n_out, n_changed).
    zero = np.int64(0)
    for t in range(n_changed):
        loss, err = column_loss(cur, zero, n_changed, t, Y, changed[t], out, _NONE, 0.0)
        s_new[t] = loss
        resolution += err
    t = 0
    for j in range(m):
        if t < n_changed and changed[t] == j:
            total += s_new[t]
            t += 1
        else:
            total += ell[j]
    return (1.0 / m) * total, resolution, crossings


@jit
def _costs_range(lo, hi, request, net, codes, base, out):
    """Exact engine for the slots lo <= k < hi: :func:`_costs_slots` with a work space."""
    _costs_slots(lo, hi, request, net, codes, base, _scratch(net[0], base[0].shape[1]), out)


@jit(inline=True)
def _scratch(sizes, m):
    """A fresh :class:`Scratch` for m samples of the network of widths ``sizes``."""
    max_width = 0
    for l in range(1, sizes.shape[0]):
        max_width = max(max_width, sizes[l])
    return Scratch(np.empty(m), np.empty(m, dtype=np.int64), np.empty(max_width * m),
                   np.empty(max_width * m), np.empty(m))


@jit(nrt=False)
def _costs_slots(lo, hi, request, net, codes, base, scratch, out):
    """Exact engine for the slots lo <= k < hi of ``request`` (parameter ``request.idx[k]``,
    step ``request.epsilon``), into slot k of ``out`` (:class:`Outputs`): J_plus, J_minus,
    their changes from J, the seed's gradapprox = (J_plus - J_minus) / (2 epsilon), resolution
    (the summed rounding bounds of the losses the two perturbations changed, over m) and kinks
    (ReLU crossings); ``base``: the unperturbed pass (:class:`Unperturbed`); ``scratch``: the
    work space (:class:`Scratch`). Compiled without reference counting (``jit(nrt=False)``):
    the arrays of every pass were otherwise increfed and decrefed, 2/3 of the seed's check.

    The data part of each J+- is bitwise a full forward pass's; the L2 term is reg (the
    unperturbed one) plus its exact change ``l2/(2m) d (2w + d)`` for a weight moved by d.
    The differences are formed here rather than in NumPy: with an overflowing cost they are
    inf - inf = NaN, which the report shows, without floating-point warnings."""
    idx, theta, epsilon = request
    sizes, w_off, b_off, _ = net
    l2 = codes[3]
    Y, _, _, _, J, reg = base
    m = Y.shape[1]
    values, kinks = out
    for k in range(lo, hi):
        i = idx[k]
        t = theta[i]
        weight = l2 != 0.0 and not locate(i, sizes, w_off, b_off)[3]
        rounding = 0.0
        crossings = 0
        for sign in range(2):
            # theta[i] + epsilon exactly as the seed forms thetaplus[i] + epsilon.
            value = t + epsilon if sign == 0 else t - epsilon
            cost, r, c = _perturbed_cost(i, value, theta, net, base, scratch, codes)
            if weight:  # biases are not regularised
                d = value - t
                cost += reg + l2 / (2.0 * m) * (d * (2.0 * t + d))
            else:
                cost += reg
            values[J_PLUS + sign, k] = cost
            values[DJ_PLUS + sign, k] = cost - J
            rounding += r
            crossings += c
        values[RESOLUTION, k] = rounding / m
        kinks[k] = crossings
        values[GRADAPPROX, k] = (values[J_PLUS, k] - values[J_MINUS, k]) / (2 * epsilon)


@jit(parallel=True)
def _costs_parallel(start, stop, n_chunks, n_workers, schedule, request, net, codes, base,
                    out):
    """:func:`_costs_range` over ``n_chunks`` chunks of [start, stop), claimed one at a time
    by ``n_workers`` threads (see :mod:`gradcheck_fast._schedule`).

    Each index writes only its own slots and each chunk has its own scratch, so the result
    does not depend on which thread runs which chunk: bitwise the same for any thread count.
    """
    n = stop - start
    for w in prange(n_workers):
        worker = np.int64(w)
        ch = claim(schedule, worker, n_chunks)
        while ch < n_chunks:
            _costs_range(start + ch * n // n_chunks, start + (ch + 1) * n // n_chunks, request,
                         net, codes, base, out)
            ch = claim(schedule, worker, n_chunks)


@jit
def _costs_at_once(request, net, X, Y, codes, out):
    """The unperturbed pass and then every slot of ``request`` on this thread, in one launch
    (a small check, the seed's: each launch costs microseconds); returns J."""
    theta = request[1]
    m = X.shape[1]
    n_act = net[3][-1]
    Z = np.empty(n_act)
    A = np.empty(n_act)
    ell = np.empty(m)
    J = _forward(theta, net, X, Y, Z, A, ell, codes)
    base = (Y, Z, A, ell, J, _regularisation(theta, net, m, codes[3]))
    # _costs_slots directly, not through _costs_range: one kernel less to compile for the
    # first check (the parallel path's chunks need _costs_range).
    _costs_slots(0, request[0].shape[0], request, net, codes, base, _scratch(net[0], m), out)
    return J


def costs(net, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, epsilon: float,
          indices: np.ndarray, progress: bool = False, model=SEED_MODEL) -> Costs:
    """J and J(theta +- epsilon e_i) for the parameters ``indices`` by the exact engine."""
    m = X.shape[1]
    n = indices.shape[0]
    network = bare(Network.of(net, m))
    codes = bare(Codes.of(model, net.n_layers))
    # A Request (idx, theta, epsilon), as the plain tuple a kernel is launched with.
    request = (indices, theta, float(epsilon))
    values = np.empty((6, n))
    kinks = np.empty(n, dtype=np.int64)
    seconds = exact_seconds(net.size_tuple, m)
    if runs_at_once(n, seconds, progress):
        J = _costs_at_once(request, network, X, Y, codes, (values, kinks))
    else:
        base = unperturbed(net, theta, X, Y, model)
        J = base.J
        run_kernel(_costs_range, _costs_parallel, n, seconds,
                   (request, network, codes, base, Outputs(values, kinks)), progress)
    J_plus, J_minus, dJ_plus, dJ_minus, gradapprox, resolution = values

    def noise():
        # J+- are full forward passes: they carry J's rounding noise, which ECnoise measures.
        sigma = cost_noise(net, theta, X, Y, model)
        return full_cost_noise(J_plus, J_minus, resolution, gradapprox, theta[indices],
                               epsilon, m, sigma)

    return Costs(J, J_plus, J_minus, dJ_plus, dJ_minus, gradapprox, resolution, kinks, "exact",
                 indices, noise)


def unperturbed(net, theta: np.ndarray, X: np.ndarray, Y: np.ndarray,
                model=SEED_MODEL) -> Unperturbed:
    """The full forward pass of the MLP (:class:`Unperturbed`): Z and A flat by the layout's
    activation offsets (layer 0 of A is X, the output layer's A its Z), the per-sample losses,
    J and its L2 term."""
    m = X.shape[1]
    network = bare(Network.of(net, m))
    n_act = int(network[3][-1])
    Z = np.empty(n_act)
    A = np.empty(n_act)
    ell = np.empty(m)
    J = _forward(theta, network, X, Y, Z, A, ell, bare(Codes.of(model, net.n_layers)))
    reg = _regularisation(theta, network, m, model.l2) if model.l2 else 0.0
    return Unperturbed(Y, Z, A, ell, J, reg)


def cost_noise(net, theta: np.ndarray, X: np.ndarray, Y: np.ndarray,
               model=SEED_MODEL) -> float:
    """The ECnoise estimate of the rounding noise of the MLP's J near theta (see
    :mod:`gradcheck_fast.noise`)."""
    codes = bare(Codes.of(model, net.n_layers))
    network = bare(Network.of(net, X.shape[1]))
    step = ecnoise_step(theta)
    # A line that crosses a ReLU kink measures the kink, not rounding (and would inflate the
    # noise bound until real mistakes hide under it): shorter lines are tried, and if every one
    # crosses, no estimate is used (the report then relies on its rigorous rounding bounds).
    for shrink in (1.0, 1e-3, 1e-6):
        values, crossed = _costs_along(theta, shrink * step, N_POINTS, network, X, Y, codes)
        if not crossed:
            return sigma_from_values(values)
    return 0.0
