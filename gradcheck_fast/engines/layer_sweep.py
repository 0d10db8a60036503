"""The incremental engine's layer sweep: every coordinate's change at once, as sums of products.

Perturbing ``W_l[r, c]`` by ``d`` moves the pre-activation of unit r of layer l by
``u_j = d x_cj`` on each sample j (``x = A_{l-1}``, the previous layer's activations; 1 for
the bias). Wherever ``|u_j|`` stays below a limit of its own (no kink crossed, here or in a
later layer, and the series of the activation and of the loss exact to rounding), sample j's
loss changes by a cubic in u_j whose coefficients depend on (r, j) only::

    g_rj(u) = c1 u + c2 u**2 + c3 u**3                       (+ a bounded remainder)
    J(theta + d e_rc) - J = 1/m sum_j g_rj(d x_cj)
                         = 1/m (d P1[r, c] + d**2 P2[r, c] + d**3 P3[r, c]),
    P_q[r, c] = sum_j c_q[r, j] x_cj**q,

three sums of products per layer, the size of the layer's backward pass, for every parameter
of the layer and both steps at once, instead of a loop over (parameter, sample) pairs.

- The cubic of (r, j) composes the incremental engine's cubic of the loss in the unit's
  activation change (its ``K`` records, :func:`.incremental._composed`) with the activation's
  Taylor series (:func:`gradcheck_fast.activations.series`); for an output unit it is the
  loss's own series in that output (:func:`gradcheck_fast.losses.composed_terms` with one
  output moving).
- A parameter with one sample beyond its limit (a kink crossed, a large step) is *explicit*:
  found without visiting every (parameter, sample) pair (a unit's sample whose limit the
  largest step times the largest input stays below is passed in one comparison; only the
  others are scanned), and computed by the incremental engine's per-coordinate kernel
  instead, exactly as before.
- Every value carries a rounding bound: the cubic's own (the ``M`` scales of the records) and
  the sums' (``m`` terms), plus the remainder beyond the cubic (``E u**4``). Where the cubic
  term ``d**3 P3`` itself stays below that bound (the default step's case), the products
  leave it out and the bound carries it instead (:func:`_cubic_negligible`).

Each unit's row is computed by one thread, samples in order: bitwise the same for any thread
count.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
from numba import prange

from .. import _memory
from .._jit import jit
from .._schedule import PRODUCT_SECONDS, claim, spread
from .._steps import steps_taken
from .._threads import single_blas_thread
from ..activations import LINEAR, has_kink, series
from ..losses import COMPOSED_FIELDS, composed_terms
from ._common import Finish, Request, finish_change, finish_slots, locate, run_kernel
from .costmodel import (
    MATRIX_S_PER_RECORD,
    matrix_faster,
    sweep_row_seconds,
    sweep_slot_seconds,
)

#: Unit roundoff of float64.
_U = 2.0**-53

#: Per (unit, sample) record of the sweep: c1, c2, c3 (the loss change's cubic in the unit's
#: pre-activation change u), R1, R2, R3 (bounds of |c1|, |c2|, |c3| and the scales of their
#: rounding), E (the terms of degree 4 and more are at most E u**4) and the limit on |u|.
RECORD_FIELDS = 8

#: The output rows' cubic is used while the output moves by at most this (the hidden units'
#: limit, incremental.T_COMPOSED, for an output that moves alone).
T_OUTPUT = 2.0**-20

#: A threshold on |x| is lowered by this factor, so that ``|x| < tau`` implies
#: ``d |x| < limit`` despite the rounding of ``tau = limit / d``.
_TAU_SAFETY = 1.0 - 2.0**-50


class Tables(NamedTuple):
    """What the sweep reads besides the prepared state: per layer l the previous layer's
    activations transposed (``Xt``, (m, n_{l-1}) C order at ``act_off[l - 1]``), their largest
    magnitude per sample (``xmax[(l - 1) m + j]``), a bound of the largest step taken in the
    layer (``dmax[l]``, :func:`_largest_step`); the output units' records ``K_out`` (one
    output moving); per layer its activation's gain and fourth-derivative bound / 24
    (``layer``, :func:`layer_constants`); the first unit row of each layer (``row_off``); the
    activation codes ``acts`` and leaky ReLU's ``slope`` (the model's, as in
    :class:`~gradcheck_fast.engines._common.Codes`)."""

    Xt: np.ndarray
    xmax: np.ndarray
    dmax: np.ndarray
    K_out: np.ndarray
    layer: np.ndarray
    row_off: np.ndarray
    acts: np.ndarray
    slope: float


class SweepOut(NamedTuple):
    """Per slot k: ``values[:, k]`` = J(theta + eps e_i) - J, J(theta - eps e_i) - J (data part)
    and their rounding bound, as the per-coordinate kernel's (:class:`.incremental.Changes`);
    ``explicit[k]`` set when a sample of the parameter is beyond its limit (its values are
    then left to that kernel)."""

    values: np.ndarray
    explicit: np.ndarray


@functools.lru_cache(maxsize=64)
def layer_constants(model, n_layers: int) -> np.ndarray:
    """Per layer l = 1..L, ``(gain, fourth / 24)`` of its activation (the output layer, whose
    change is the output's own: 1, 0) as a (2, L + 1) array, read-only."""
    table = np.zeros((2, n_layers + 1))
    table[0, :] = 1.0
    for l, entry in enumerate(model.activations(n_layers), start=1):
        table[0, l] = entry.gain(model.leaky_slope)
        table[1, l] = entry.fourth / 24.0
    table.flags.writeable = False
    return table


@jit
def _tables(theta, epsilon, net, A, out, coef, sig, m):
    """The per-layer tables of :class:`Tables` (without ``layer`` and ``row_off``): the
    transposed activations, per sample their largest magnitude, a bound of the largest step
    per layer, and the output rows' records."""
    sizes, w_off, b_off, act_off = net
    n_layers = sizes.shape[0] - 1
    n_in = act_off[n_layers]  # the activations of layers 0 .. L-1, the sweep's x
    Xt = np.empty(n_in)
    xmax = np.zeros(n_layers * m)
    dmax = np.zeros(n_layers + 1)
    for l in range(1, n_layers + 1):
        n_prev = sizes[l - 1]
        off = act_off[l - 1]
        for j in range(m):
            largest = 0.0
            for c in range(n_prev):
                x = A[off + c * m + j]
                Xt[off + j * n_prev + c] = x
                largest = max(largest, abs(x))
            xmax[(l - 1) * m + j] = largest
        dmax[l] = _largest_step(theta[w_off[l] : b_off[l] + sizes[l]], epsilon)
    # The output units: the loss's cubic in one output's change (V = that unit vector).
    n_out = sizes[n_layers]
    V = np.zeros(n_out * m * n_out)
    for r in range(n_out):
        for j in range(m):
            V[(r * m + j) * n_out + r] = 1.0
    K_out = np.empty(n_out * m * COMPOSED_FIELDS)
    composed_terms(out, coef, sig, V, np.zeros(3), False, np.int64(0), np.int64(0),
                   n_out * m, m, K_out, np.int64(0))
    for row in range(n_out * m):
        reach = K_out[row * COMPOSED_FIELDS + 7]
        K_out[row * COMPOSED_FIELDS + 7] = min(1.0, T_OUTPUT / reach) if reach > 0.0 else 1.0
    return Xt, xmax, dmax, K_out


@jit(inline=True)
def _largest_step(theta, epsilon):
    """An upper bound of the steps |fl(t +- epsilon) - t| over ``theta`` (finite, as
    validated): with T = max |t|, fl(t + epsilon) = (t + epsilon)(1 + d1) and the difference
    rounds once more, so a step is at most (epsilon + (T + epsilon) u)(1 + u); raised by 8 u
    for the bound's own rounding. A larger step than any taken only leaves a parameter to the
    explicit path sooner (:func:`_beyond`). ``max |t|`` in four independent running maxima:
    exact in any order, and four chains run four times as fast as one."""
    lanes = np.zeros(4)
    n = theta.shape[0]
    for i in range(0, n - n % 4, 4):
        for k in range(4):
            t = abs(theta[i + k])
            lanes[k] = t if t > lanes[k] else lanes[k]
    for i in range(n - n % 4, n):
        t = abs(theta[i])
        lanes[0] = t if t > lanes[0] else lanes[0]
    largest = max(max(lanes[0], lanes[1]), max(lanes[2], lanes[3]))
    return (epsilon + (largest + epsilon) * _U) * (1.0 + 8.0 * _U)


@jit(inline=True)
def _record(code, slope, gain, fourth, point, K, q, rec, j):
    """Row j of ``rec``: the cubic in the pre-activation change u of a unit whose loss change
    is ``K[q:q+8]``'s cubic in its activation change (a1, a2, a3, M1, M2, M3, B, limit), for
    the activation ``code`` (leaky ReLU's ``slope``; ``gain`` bounds |f'|, ``fourth``
    |f''''| / 24) at ``point = (z, a, c1, c2)``: z, ``a = f(z)`` and its complements.

    da = D1 u + D2 u**2 + D3 u**3 + O(fourth u**4) composed with a1 da + a2 da**2 + a3 da**3
    gives c1 = a1 D1, c2 = a1 D2 + a2 D1**2, c3 = a1 D3 + 2 a2 D1 D2 + a3 D1**3. For |u| <= 1,
    with e = da - D1 u (|e| <= Eb u**2, Eb = |D2| + |D3| + fourth), the terms of degree 4 and
    more are a1 (da - D1 u - D2 u**2 - D3 u**3) [<= M1 fourth u**4], a2 (2 D1 u (D3 u**3 + R4)
    + e**2) [<= M2 (2 |D1| (|D3| + fourth) + Eb**2) u**4], a3 (3 (D1 u)**2 e + 3 D1 u e**2 +
    e**3) [<= M3 (3 D1**2 Eb + 3 |D1| Eb**2 + Eb**3) u**4] and the loss's own beyond its
    cubic, B da**4 <= B gain**4 u**4. A kinked activation is linear on z's side (da = D1 u,
    exact): only B D1**4 remains, and |u| < |z| keeps it there.
    """
    z, a, c1, c2 = point
    D1, D2, D3 = series(code, z, slope, a, c1, c2)
    a1 = K[q]
    a2 = K[q + 1]
    a3 = K[q + 2]
    M1 = K[q + 3]
    M2 = K[q + 4]
    M3 = K[q + 5]
    B = K[q + 6]
    limit = K[q + 7]
    s1 = abs(D1)
    rec[j, 0] = a1 * D1
    rec[j, 1] = a1 * D2 + a2 * (D1 * D1)
    rec[j, 2] = a1 * D3 + 2.0 * a2 * (D1 * D2) + a3 * (D1 * D1 * D1)
    rec[j, 3] = M1 * s1
    rec[j, 4] = M1 * abs(D2) + M2 * (D1 * D1)
    rec[j, 5] = M1 * abs(D3) + 2.0 * M2 * abs(D1 * D2) + M3 * (s1 * s1 * s1)
    if has_kink(code):
        rec[j, 6] = B * (D1 * D1) * (D1 * D1)
        rec[j, 7] = min(abs(z), limit / s1) if s1 > 0.0 else abs(z)
        return
    Eb = abs(D2) + abs(D3) + fourth
    g2 = gain * gain
    rec[j, 6] = (M1 * fourth + M2 * (2.0 * s1 * (abs(D3) + fourth) + Eb * Eb)
                 + M3 * (3.0 * s1 * s1 * Eb + 3.0 * s1 * Eb * Eb + Eb * Eb * Eb) + B * g2 * g2)
    rec[j, 7] = min(limit / gain, 1.0)


@jit(inline=True)
def _row_records(l, r, state, tables, net, rec):
    """The records (:func:`_record`) of unit r of layer l on every sample, into ``rec``."""
    sizes, _, _, act_off = net
    Z, A, F, _, _, _, _, _, _, _, _, s_off, _, K = state
    K_out, layer, acts, slope = tables[3], tables[4], tables[6], tables[7]
    m = rec.shape[0]
    for j in range(m):
        if l < sizes.shape[0] - 1:
            u = act_off[l] + r * m + j
            _record(acts[l], slope, layer[0, l], layer[1, l], (Z[u], A[u], F[0, u], F[1, u]), K,
                    ((s_off[l] + r) * m + j) * COMPOSED_FIELDS, rec, j)
        else:  # an output unit: its change is the output's own (linear, no kink)
            _record(LINEAR, slope, 1.0, 0.0, (0.0, 0.0, 0.0, 0.0), K_out,
                    (r * m + j) * COMPOSED_FIELDS, rec, j)


@jit(inline=True)
def _kappa(n_out, m):
    """The relative rounding of a change's linear part: the composed cubic's 8 (n_out + 4) u
    (as the per-coordinate kernel's), the sums of m terms, the Horner steps and the division."""
    return _U * (8.0 * (n_out + 4.0) + m + 8.0)


@jit(inline=True)
def _weight(rec, j, kappa):
    """Sample j's weight ``H = kappa (R2 + lim R3) + lim**2 E`` of x**2 in the bound: with
    |d x| < lim the terms in d**3 x**3 and d**4 x**4 lose a factor d x each."""
    lim = rec[j, 7]
    return kappa * (rec[j, 4] + lim * rec[j, 5]) + lim * lim * rec[j, 6]


@jit(inline=True)
def _row_sums(rec, Xt, off, n_prev, kappa, S):
    """For one unit's records ``rec`` and every input c (``x_cj = Xt[off + j n_prev + c]``;
    c = n_prev: the bias, x = 1), samples in order, into ``S[:, c]``: ``P_q = sum_j c_q x**q``
    (q = 1, 2, 3), ``Q1 = sum_j R1 |x|`` and ``Q2 = sum_j H x**2`` (:func:`_weight`).
    Vectorised over c: the inner loop runs along a row of Xt. Each sum takes the same
    operations in the same order as :func:`_column_sums`: the same bits."""
    for k in range(5):
        for c in range(n_prev + 1):
            S[k, c] = 0.0
    for j in range(rec.shape[0]):
        c1 = rec[j, 0]
        c2 = rec[j, 1]
        c3 = rec[j, 2]
        r1 = rec[j, 3]
        h = _weight(rec, j, kappa)
        start = off + j * n_prev
        for c in range(n_prev):
            x = Xt[start + c]
            x2 = x * x
            S[0, c] += c1 * x
            S[1, c] += c2 * x2
            S[2, c] += c3 * (x2 * x)
            S[3, c] += r1 * abs(x)
            S[4, c] += h * x2
        S[0, n_prev] += c1
        S[1, n_prev] += c2
        S[2, n_prev] += c3
        S[3, n_prev] += r1
        S[4, n_prev] += h


@jit(inline=True)
def _column_sums(rec, Xt, off, n_prev, c, kappa):
    """:func:`_row_sums` for the one input c (n_prev: the bias): ``(P1, P2, P3, Q1, Q2)``."""
    p1 = p2 = p3 = q1 = q2 = 0.0
    for j in range(rec.shape[0]):
        x = Xt[off + j * n_prev + c] if c < n_prev else 1.0
        x2 = x * x
        p1 += rec[j, 0] * x
        p2 += rec[j, 1] * x2
        p3 += rec[j, 2] * (x2 * x)
        q1 += rec[j, 3] * abs(x)
        q2 += _weight(rec, j, kappa) * x2
    return p1, p2, p3, q1, q2


@jit(inline=True)
def _assemble(values, slot, t, epsilon, sums, kappa, m):
    """Slot ``slot`` of ``values``: :func:`_changes`."""
    plus, minus, bound = _changes(t, epsilon, sums, kappa, m)
    values[0, slot] = plus
    values[1, slot] = minus
    values[2, slot] = bound


@jit(inline=True)
def _changes(t, epsilon, sums, kappa, m):
    """For a parameter at ``t``: J+- - J = (d P1 + d**2 P2 + d**3 P3) / m for the steps really
    taken, d = fl(t +- epsilon) - t, and the sum of their bounds ``|d| (kappa Q1 + |d| Q2) /
    m`` (``sums``: P1, P2, P3, Q1, Q2)."""
    p1, p2, p3, q1, q2 = sums
    d_plus, d_minus = steps_taken(t, epsilon)
    a_plus = abs(d_plus)
    a_minus = abs(d_minus)
    error = a_plus * (kappa * q1 + a_plus * q2) + a_minus * (kappa * q1 + a_minus * q2)
    return (d_plus * (p1 + d_plus * (p2 + d_plus * p3)) / m,
            d_minus * (p1 + d_minus * (p2 + d_minus * p3)) / m, error / m)


@jit(inline=True)
def _beyond(rec, j, dmax, x):
    """Whether a step of up to dmax on an input x moves sample j beyond its record's limit
    (``|x| >= tau``, tau lowered by _TAU_SAFETY; a NaN limit counts as beyond)."""
    return not abs(x) < rec[j, 7] / dmax * _TAU_SAFETY


@jit(inline=True)
def _mark_row(l, r, rec, net, tables, explicit):
    """Mark in ``explicit`` (by parameter) the parameters of unit r of layer l with a sample
    beyond its record's limit: the bias when the layer's largest step reaches it, an input c
    when that step times |x_cj| does. A sample whose largest |x| stays below is passed in one
    test; only the others are scanned."""
    sizes, w_off, b_off, act_off = net
    Xt, xmax, dmax = tables[0], tables[1], tables[2][l]
    m = rec.shape[0]
    n_prev = sizes[l - 1]
    off = act_off[l - 1]
    for j in range(m):
        if _beyond(rec, j, dmax, 1.0):
            explicit[b_off[l] + r] = 1
        if _beyond(rec, j, dmax, xmax[(l - 1) * m + j]):
            for c in range(n_prev):
                if _beyond(rec, j, dmax, Xt[off + j * n_prev + c]):
                    explicit[w_off[l] + r * n_prev + c] = 1


@jit
def _unit_row(row, row_off):
    """(layer l, unit r) of a unit row (numbered layer after layer)."""
    l = 1
    while row >= row_off[l + 1]:
        l += 1
    return l, row - row_off[l]


@jit
def _explicit_rows(lo, hi, net, state, tables, explicit):
    """:func:`_sweep_rows`'s explicit parameters alone, for the unit rows lo <= row < hi (the
    time model's count: the records and one test per sample, no sums)."""
    rec = np.empty((state[3].shape[1], RECORD_FIELDS))
    for row in range(lo, hi):
        l, r = _unit_row(row, tables[5])
        _row_records(l, r, state, tables, net, rec)
        _mark_row(l, r, rec, net, tables, explicit)


@jit
def _sweep_rows(lo, hi, request, net, state, tables, out):
    """The full sweep for the unit rows lo <= row < hi (numbered layer after layer, the output
    units last): each row's records, then its parameters (slot = parameter index of
    ``request``'s theta, step ``request.epsilon``): marked explicit in ``out.explicit`` when a
    sample is beyond its limit, else their changes and bound into ``out.values``
    (:class:`SweepOut`; ``state``: the incremental engine's prepared
    :class:`~gradcheck_fast.engines.incremental.State`; ``tables``: :class:`Tables`)."""
    _, theta, epsilon = request
    sizes, w_off, b_off, act_off = net
    Xt, row_off = tables[0], tables[5]
    values, explicit = out
    n_layers = sizes.shape[0] - 1
    m = state[3].shape[1]
    widest = 1
    for l in range(n_layers):
        widest = max(widest, sizes[l])
    rec = np.empty((m, RECORD_FIELDS))
    S = np.empty((5, widest + 1))  # per input (the bias last): P1, P2, P3, Q1, Q2
    kappa = _kappa(sizes[n_layers], m)
    for row in range(lo, hi):
        l, r = _unit_row(row, row_off)
        n_prev = sizes[l - 1]
        off = act_off[l - 1]
        _row_records(l, r, state, tables, net, rec)
        _mark_row(l, r, rec, net, tables, explicit)
        _row_sums(rec, Xt, off, n_prev, kappa, S)
        for c in range(n_prev + 1):  # the weights, then the bias
            i = w_off[l] + r * n_prev + c if c < n_prev else b_off[l] + r
            if not explicit[i]:
                _assemble(values, i, theta[i], epsilon, (S[0, c], S[1, c], S[2, c], S[3, c],
                                                         S[4, c]), kappa, m)


@jit
def _sweep_slots(lo, hi, request, net, state, tables, out):
    """The sweep for the slots lo <= k < hi of ``request`` (parameter ``request.idx[k]``):
    each bitwise as in the full sweep (:func:`_sweep_rows`), from its unit's records (made
    once for consecutive slots of one unit) and its own input's sums; ``out`` by slot."""
    idx, theta, epsilon = request
    sizes, w_off, b_off, act_off = net
    Xt, dmax = tables[0], tables[2]
    values, explicit = out
    m = state[3].shape[1]
    rec = np.empty((m, RECORD_FIELDS))
    kappa = _kappa(sizes[sizes.shape[0] - 1], m)
    unit_l = unit_r = -1
    for k in range(lo, hi):
        i = idx[k]
        l, r, c, is_bias = locate(i, sizes, w_off, b_off)
        n_prev = sizes[l - 1]
        if is_bias:
            c = n_prev
        if l != unit_l or r != unit_r:
            _row_records(l, r, state, tables, net, rec)
            unit_l, unit_r = l, r
        off = act_off[l - 1]
        explicit[k] = 0
        for j in range(m):
            x = Xt[off + j * n_prev + c] if c < n_prev else 1.0
            if _beyond(rec, j, dmax[l], x):
                explicit[k] = 1
        if not explicit[k]:
            _assemble(values, k, theta[i], epsilon, _column_sums(rec, Xt, off, n_prev, c,
                                                                 kappa), kappa, m)


@jit(parallel=True)
def _sweep_parallel(start, stop, n_chunks, n_workers, schedule, request, net, state, tables,
                    out):
    """:func:`_sweep_rows` over chunks of the unit rows claimed by ``n_workers`` threads (see
    :mod:`gradcheck_fast._schedule`); each row writes only its own parameters' slots."""
    n = stop - start
    for w in prange(n_workers):
        worker = np.int64(w)
        ch = claim(schedule, worker, n_chunks)
        while ch < n_chunks:
            _sweep_rows(start + ch * n // n_chunks, start + (ch + 1) * n // n_chunks, request,
                        net, state, tables, out)
            ch = claim(schedule, worker, n_chunks)


def tables(net, theta: np.ndarray, epsilon: float, prepared, model) -> Tables:
    """The :class:`Tables` of a sweep at step ``epsilon`` from the prepared state."""
    Xt, xmax, dmax, K_out = _tables(theta, float(epsilon), prepared.network, prepared.A,
                                    model.output_code, prepared.coef, prepared.sig,
                                    prepared.Y.shape[1])
    return Tables(Xt, xmax, dmax, K_out, layer_constants(model, net.n_layers), _row_off(net),
                  model.codes(net.n_layers), model.leaky_slope)


def _row_off(net) -> np.ndarray:
    """The first unit row of each layer l = 1..L (entry l), and the total (entry L + 1)."""
    return _row_offsets(net.size_tuple)


@functools.lru_cache(maxsize=64)
def _row_offsets(sizes: tuple[int, ...]) -> np.ndarray:
    offsets = np.concatenate(([0, 0], np.cumsum(sizes[1:]))).astype(np.int64)
    offsets.flags.writeable = False
    return offsets


def changes(net, theta: np.ndarray, epsilon: float, prepared, model, indices: np.ndarray,
            full: bool, progress: bool = False,
            finish: Finish | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The changes J(theta +- epsilon e_i) - J (data part) and their bound for the parameters
    ``indices`` by the sweep, as the rows of a (3, n) array by slot, and the slots it leaves
    explicit (for the per-coordinate kernel; their columns are NaN). ``full``: ``indices``
    is every parameter in order (then the whole layer sweep runs, in parallel where it pays;
    a subset takes its units' records and its inputs' sums, on one thread). ``finish``
    (:class:`._common.Finish`, arrays by slot): every slot not explicit also finished
    (:func:`._common.finish_change`: the L2 term added to its changes, its central
    difference, noise bound and finiteness), by the matrix products in their assembly."""
    n = indices.shape[0]
    m = prepared.Y.shape[1]
    table = tables(net, theta, epsilon, prepared, model)
    if not full and _is_range(indices) and matrix_pays(net.size_tuple, m):
        # A range of coordinates (a shard of a full check on an executor's worker): the
        # blocks of the full sweep that hold it, so the full sweep's bits. The arrays are by
        # parameter; the pages of the blocks not computed are never touched.
        P = theta.shape[0]
        values = np.empty((3, P))
        explicit = np.zeros(P, dtype=np.int8)
        by_parameter = None if finish is None else finish._replace(
            gradapprox=np.empty(P), noise=np.empty(P), finite=np.empty(P, dtype=np.bool_))
        a, b = int(indices[0]), int(indices[-1]) + 1
        _matrix_sweep(Request(indices, theta, float(epsilon)), prepared.network,
                      prepared.state, table, SweepOut(values, explicit), m, (a, b),
                      by_parameter)
        values, explicit = values[:, a:b].copy(), explicit[a:b]
        if finish is not None:
            for name in ("gradapprox", "noise", "finite"):
                getattr(finish, name)[:] = getattr(by_parameter, name)[a:b]
        left = np.flatnonzero(explicit)
        values[:, left] = np.nan
        return values, left
    # Every slot is written, or left explicit (then NaN, below): no need to fill it first
    # (5.6 MB for the mnist-size check, in page faults; a large one's from kept buffers).
    values = _memory.empty((3, n))
    explicit = np.zeros(n, dtype=np.int8)
    args = (Request(indices, theta, float(epsilon)), prepared.network, prepared.state, table,
            SweepOut(values, explicit))
    if full and matrix_pays(net.size_tuple, m):
        _matrix_sweep(*args, m, None, finish)
        finish = None  # done in the assembly
    elif full:
        before = _parameters_before_row(net.size_tuple)
        run_kernel(_sweep_rows, _sweep_parallel, rows(net), sweep_row_seconds(net.size_tuple, m),
                   args, progress, params_before=lambda k: int(before[k]))
    else:
        run_kernel(_sweep_slots, None, n, sweep_slot_seconds(m), args, progress)
    left = np.flatnonzero(explicit)
    values[:, left] = np.nan
    if finish is not None:
        finish_slots(values, theta if full else theta[indices], float(epsilon), finish,
                     indices)
    return values, left


def _is_range(indices: np.ndarray) -> bool:
    """Whether ``indices`` are consecutive parameters, ascending."""
    n = indices.shape[0]
    return n > 1 and int(indices[-1]) - int(indices[0]) == n - 1 and bool(
        np.all(np.diff(indices) == 1))


def matrix_pays(sizes: tuple[int, ...], m: int) -> bool:
    """Whether the full sweep runs as matrix products (:func:`_matrix_sweep`) rather than by
    unit rows: as :data:`FULL_SWEEP` says, by default where the time model expects it to be
    faster (:func:`.costmodel.matrix_faster`; below ~1e5 multiply-adds the row loops' single
    call costs less than the products' and blocks' overheads)."""
    if FULL_SWEEP == "auto":
        return matrix_faster(sizes, m)
    if FULL_SWEEP in ("matrix", "rows"):
        return FULL_SWEEP == "matrix"
    raise ValueError(f"layer_sweep.FULL_SWEEP must be 'auto', 'matrix' or 'rows', "
                     f"not {FULL_SWEEP!r}")


def explicit_parameters(net, theta: np.ndarray, epsilon: float, prepared, model) -> np.ndarray:
    """The parameters a full check at step ``epsilon`` leaves to the per-coordinate path (a
    sample beyond its limit), without the sweep's sums: for the time model."""
    explicit = np.zeros(theta.shape[0], dtype=np.int8)
    _explicit_rows(0, rows(net), prepared.network, prepared.state,
                   tables(net, theta, epsilon, prepared, model), explicit)
    return np.flatnonzero(explicit)


def rows(net) -> int:
    """The sweep's unit rows: every unit of every layer after the input."""
    return int(_row_off(net)[-1])


@functools.lru_cache(maxsize=64)
def _parameters_before_row(sizes: tuple[int, ...]) -> np.ndarray:
    """Entry k: the parameters of the unit rows before row k (a unit of layer l has n_{l-1}
    weights and a bias), for the progress bar."""
    per_row = np.repeat(np.asarray(sizes[:-1]) + 1, sizes[1:])
    return np.concatenate(([0], np.cumsum(per_row)))


# ---------------------------------------------------------------------------------------------
# The full sweep as matrix products
# ---------------------------------------------------------------------------------------------
# The three sums of a layer's values, P_q[r, c] = sum_j c_q[r, j] x_cj**q (q = 1, 2, 3), are
# three matrix products (units x samples) times (samples x inputs), the bias a column of ones:
# BLAS-3, on one BLAS thread (its rounding then depends on the shapes alone, never on a thread
# count), unit rows in blocks of BLOCK_ROWS or more, as many as BLOCK_BYTES of sums hold. The
# two sums of the bound, Q1 = sum_j R1[r, j] |x_cj| and Q2 = sum_j H[r, j] x_cj**2, are
# bounded by Cauchy-Schwarz instead, ||R1[r]|| ||x_c|| and ||H[r]|| ||x_c**2|| (norms over
# the samples, raised by (m + 8) u for their own rounding): an outer product of norms, not two
# more products. The bound then stays below kappa |d| max_j R1 max_j |x| (+ the like for Q2):
# the rounding of one sample's largest term, ~1e-14 of it: far below every tolerance and the
# 1 % of an element's size at which it would count as unverified. The records and the
# assembly of each unit row stay jitted; a row's sums are the same sums as
# :func:`_row_sums`', in BLAS's order of operations (so the values of a sampled check, which
# takes :func:`_column_sums`, agree with them within the sums' rounding, which the bound
# ``kappa`` carries, rather than bitwise).

#: Which full sweep runs (:func:`matrix_pays`): "auto" (the one the time model expects to be
#: faster), "matrix" or "rows" (always that one: for tests and measurements).
FULL_SWEEP = "auto"

#: The sums of one block of unit rows take at most this much memory.
BLOCK_BYTES = 16 * 2**20


@jit
def _records_range(lo, hi, where, net, state, tables, records):
    """For the rows lo <= k < hi of layer l's units from unit ``base`` on (``where``: l, base,
    kappa; unit r = base + k): their records' c1, c2, c3, R1 and H (:func:`_weight`) on every
    sample into ``W[:, k, :]``; their explicit parameters marked in ``explicit`` (by
    parameter; ``records``: W, explicit)."""
    l, base, kappa = where
    W, explicit = records
    m = state[3].shape[1]
    rec = np.empty((m, RECORD_FIELDS))
    for k in range(lo, hi):
        r = base + k
        _row_records(l, r, state, tables, net, rec)
        _mark_row(l, r, rec, net, tables, explicit)
        for j in range(m):
            W[0, k, j] = rec[j, 0]
            W[1, k, j] = rec[j, 1]
            W[2, k, j] = rec[j, 2]
            W[3, k, j] = rec[j, 3]
            W[4, k, j] = _weight(rec, j, kappa)


@jit(parallel=True)
def _records_parallel(start, stop, n_chunks, n_workers, schedule, where, net, state, tables,
                      records):
    """:func:`_records_range` over chunks of the rows claimed by ``n_workers`` threads."""
    n = stop - start
    for w in prange(n_workers):
        worker = np.int64(w)
        ch = claim(schedule, worker, n_chunks)
        while ch < n_chunks:
            _records_range(start + ch * n // n_chunks, start + (ch + 1) * n // n_chunks, where,
                           net, state, tables, records)
            ch = claim(schedule, worker, n_chunks)


@jit
def _layer_powers(Xt, off, n_prev, m):
    """The inputs of layer l (``Xt[off + j n_prev + c]``) as x, x**2 and x**3 (= x**2 x, as
    the loops form it), each (m, n_prev + 1) with a last column of ones (the bias), and per
    input the norms over the samples of x, x**2 and x**3 (:func:`_column_norms`)."""
    X = np.empty((3, m, n_prev + 1))
    for j in range(m):
        for c in range(n_prev):
            x = Xt[off + j * n_prev + c]
            x2 = x * x
            X[0, j, c] = x
            X[1, j, c] = x2
            X[2, j, c] = x2 * x
        for k in range(3):
            X[k, j, n_prev] = 1.0
    return X, _column_norms(X, m)


@jit
def _column_norms(X, m):
    """Per input c (the bias last), ``||x_c||``, ``||x_c**2||`` and ``||x_c**3||`` over the
    samples, raised by (m + 8) u so that they bound the exact norms despite their own
    rounding."""
    n = X.shape[2]
    norms = np.zeros((3, n))
    for j in range(m):
        for c in range(n):
            norms[0, c] += X[1, j, c]
            norms[1, c] += X[1, j, c] * X[1, j, c]
            norms[2, c] += X[2, j, c] * X[2, j, c]
    grow = 1.0 + (m + 8.0) * _U
    for c in range(n):
        for k in range(3):
            norms[k, c] = math.sqrt(norms[k, c]) * grow
    return norms


@jit
def _cubic_negligible(W, norms, dmax, kappa):
    """Whether a block of unit rows (``W``: their records, :func:`_records_range`) may leave
    out its cubic products P3 and bound them instead: ``|d**3 P3[r, c]| <= d**2 dmax ||c3_r||
    ||x_c**3||`` (Cauchy-Schwarz, ``dmax`` the layer's largest step), which
    :func:`_assemble_range` then adds to the bound. Only where that term stays below the
    linear part's own rounding bound ``|d| kappa ||R1_r|| ||x_c||`` for every row and input,
    so that the bound at most doubles: ``dmax**2 max_r ||c3_r|| / ||R1_r|| max_c ||x_c**3|| /
    ||x_c|| <= kappa``. At epsilon = 1e-7 the cubic term is 1e-3 to 1e-1 of that on the
    benchmark networks; at larger steps it is not, and the products run."""
    rows = 0.0
    for k in range(W.shape[1]):
        c3 = r1 = 0.0
        for j in range(W.shape[2]):
            c3 += W[2, k, j] * W[2, k, j]
            r1 += W[3, k, j] * W[3, k, j]
        if c3 != 0.0:
            ratio = c3 / r1
            if not math.isfinite(ratio):  # NaN, or no linear part to compare with
                return False
            rows = max(rows, ratio)
    columns = 0.0
    for c in range(norms.shape[1]):
        if norms[2, c] != 0.0:
            ratio = norms[2, c] / norms[0, c]
            if not math.isfinite(ratio):
                return False
            columns = max(columns, ratio)
    return dmax * dmax * math.sqrt(rows) * columns <= kappa


#: :func:`_assemble_range`'s ``finish`` when there is none (the same types: one signature).
_NO_FINISH = Finish(0.0, 0.0, np.zeros(1, dtype=np.bool_), np.zeros(1), np.zeros(1),
                    np.zeros(1, dtype=np.bool_))


@jit
def _assemble_range(lo, hi, where, S, W, norms, request, net, out, finish):
    """The parameters of the rows lo <= k < hi of a block of layer l's units (``where``: l,
    the block's first unit ``base`` (unit r = base + k), kappa, m, whether the cubic
    products were formed, the layer's largest step dmax) from their sums ``S`` (P1, P2, P3
    by row k and input, the bias last), the bound's sums by Cauchy-Schwarz from the rows'
    records ``W`` (R1, H: ``W[3:5, k]``) and the inputs' ``norms`` (:func:`_column_norms`):
    :func:`_assemble`. Without the cubic products (:func:`_cubic_negligible`) P3 counts as
    0 and ``d**2 dmax ||c3_r|| ||x_c**3||`` joins the bound (as ``dmax ||c3_r||
    ||x_c**3||`` in its sum Q2, which it multiplies by d**2). With ``finished`` each
    parameter is also finished (:func:`._common.finish_change`, into ``finish``'s arrays by
    parameter: :class:`._common.Finish` as a plain tuple) while its changes are at hand.
    Explicit parameters get values too, which their own path overwrites (a branch per
    parameter would keep the loop from vectorising)."""
    l, base, kappa, m, cubic, dmax = where
    _, theta, epsilon = request
    sizes, w_off, b_off, _ = net
    values = out[0]
    finished, (J, l2, _, gradapprox, noise, finite) = finish
    n_prev = sizes[l - 1]
    grow = 1.0 + (m + 8.0) * _U
    for k in range(lo, hi):
        r = base + k
        r1 = h = c3 = 0.0
        for j in range(m):
            r1 += W[3, k, j] * W[3, k, j]
            h += W[4, k, j] * W[4, k, j]
            c3 += W[2, k, j] * W[2, k, j]
        r1 = math.sqrt(r1) * grow
        h = math.sqrt(h) * grow
        c3 = 0.0 if cubic else dmax * (math.sqrt(c3) * grow)  # the left-out term's weight
        start = w_off[l] + r * n_prev
        plus = values[0, start : start + n_prev]  # slices: the loop vectorises
        minus = values[1, start : start + n_prev]
        bound = values[2, start : start + n_prev]
        t = theta[start : start + n_prev]
        p1, p2, p3 = S[0, k], S[1, k], S[2, k]
        x1, x2, x3 = norms[0], norms[1], norms[2]
        for c in range(n_prev):
            plus[c], minus[c], bound[c] = _changes(
                t[c], epsilon, (p1[c], p2[c], p3[c] if cubic else 0.0, r1 * x1[c],
                                h * x2[c] + c3 * x3[c]), kappa, m)
        if finished:  # the row's values still in the cache
            numerical = gradapprox[start : start + n_prev]
            bounds = noise[start : start + n_prev]
            fine = finite[start : start + n_prev]
            for c in range(n_prev):
                plus[c], minus[c], numerical[c], bounds[c], fine[c] = finish_change(
                    plus[c], minus[c], bound[c], t[c], epsilon, l2, J)
        i = b_off[l] + r
        _assemble(values, i, theta[i], epsilon,
                  (S[0, k, n_prev], S[1, k, n_prev], S[2, k, n_prev] if cubic else 0.0,
                   r1 * norms[0, n_prev], h * norms[1, n_prev] + c3 * norms[2, n_prev]),
                  kappa, m)
        if finished:  # the bias: no L2 term
            values[0, i], values[1, i], gradapprox[i], noise[i], finite[i] = finish_change(
                values[0, i], values[1, i], values[2, i], theta[i], epsilon, 0.0, J)


#: Unit rows per block of products (at least; more for narrow layers, up to BLOCK_BYTES of
#: sums): enough rows for BLAS-3 speed, few enough that a block's sums stay in cache for its
#: assembly.
BLOCK_ROWS = 32


def _block_rows(n_prev: int) -> int:
    return max(BLOCK_ROWS, BLOCK_BYTES // (3 * 8 * (n_prev + 1)))


def _matrix_sweep(request, net, state, table, out, m: int, span=None, finish=None) -> None:
    """The full sweep of every layer by matrix products (see above), into ``out`` (by
    parameter): the records of a layer's units in the engine's parallel loop, then blocks of
    unit rows (a fixed cut, whatever the threads), each block's products (one BLAS thread:
    three, or two where the cubic term is negligible) and its assembly by one thread.
    ``span = (a, b)``: only the blocks that hold a parameter a <= i < b (the same blocks as
    the full sweep's, and each block decides alone whether to form its cubic products: the
    same bits). ``finish`` (:class:`._common.Finish`, arrays by parameter): each parameter
    also finished in the assembly."""
    sizes = [int(s) for s in net[0]]
    kappa = float(_kappa(sizes[-1], m))
    finish = (finish is not None, tuple(_NO_FINISH if finish is None else finish))
    with single_blas_thread():
        for l in range(1, len(sizes)):
            n, n_prev = sizes[l], sizes[l - 1]
            rows = _block_rows(n_prev)
            blocks = [(lo, min(n, lo + rows)) for lo in range(0, n, rows)
                      if span is None or _block_in_span(net, l, lo, min(n, lo + rows), span)]
            if not blocks:
                continue
            first, last = blocks[0][0], blocks[-1][1]
            X, norms = _layer_powers(table.Xt, int(net[3][l - 1]), n_prev, m)
            W = np.empty((5, last - first, m))
            run_kernel(_records_range, _records_parallel, last - first, m * MATRIX_S_PER_RECORD,
                       ((l, first, kappa), net, state, table, (W, out.explicit)), False)

            def run_blocks(group, l=l, X=X, W=W, norms=norms, rows=rows, n_prev=n_prev,
                           first=first, dmax=float(table.dmax[l])):
                S = np.empty((3, rows, n_prev + 1))
                for lo, hi in group:
                    block = W[:, lo - first:hi - first]
                    cubic = not _cubic_negligible(block, norms, dmax, kappa)
                    for q in range(3 if cubic else 2):
                        np.matmul(block[q], X[q], out=S[q, :hi - lo])
                    _assemble_range(0, hi - lo, (l, lo, kappa, m, cubic, dmax), S, block,
                                    norms, request, net, out, finish)

            spread(run_blocks, blocks, 3 * (last - first) * m * (n_prev + 1) * PRODUCT_SECONDS)


def _block_in_span(net, l: int, lo: int, hi: int, span) -> bool:
    """Whether the units lo <= r < hi of layer l own a parameter a <= i < b (their weights
    are one range, their biases another)."""
    a, b = span
    n_prev = int(net[0][l - 1])
    w_lo, w_hi = int(net[1][l]) + lo * n_prev, int(net[1][l]) + hi * n_prev
    b_lo, b_hi = int(net[2][l]) + lo, int(net[2][l]) + hi
    return (w_lo < b and a < w_hi) or (b_lo < b and a < b_hi)

