"""Outputs with their losses: one registry entry per output+loss pair, holding everything of
it that any engine, mode and the reference need.

An entry (:class:`Loss`) owns its kernel **code** (a named constant below) and, in the jitted
dispatchers below, selected by that code:

- :func:`column_loss`: one sample's loss from its output pre-activations, with a bound on its
  rounding (the exact engine);
- :func:`output_coefficients`: per sample and output, what the loss change ``g(t) = l(z + t) -
  l(z)`` is made of (Taylor coefficients, probabilities), from the unperturbed pass;
- :func:`sample_change`: ``g`` of a sample's move ``t`` (any size), without cancellation, and
  its rounding bound; :func:`moved_change`, the same for a move ``t_o = v1 s + v2 s**2 + v3
  s**3`` per output (the incremental engine's middle path);
- :func:`composed_terms`: the loss change of a sample as one cubic in a hidden unit's change
  ``s`` (the incremental engine's fast path), with bounds on its rounding and remainder;

and in its registry entry: the NumPy output ``A = f(Z)``, the data loss from Z and Y, the
reference's ``dZ`` and whether integer class labels are accepted. An unknown code raises, in
Python (:func:`resolve`) and in a kernel, never falls through to another loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._jit import jit
from .activations import LOGISTIC_FOURTH, softplus_change

__all__ = ["Loss", "REGISTRY", "BY_CODE", "resolve"]

#: Kernel codes, one per output+loss pair.
SIGMOID_BCE = 0
SOFTMAX_CE = 1
LINEAR_MSE = 2

#: Unit roundoff of float64.
_U = 2.0**-53

#: Largest |t| for the 4-term Taylor series of the loss change. The remainder is at most
#: ``|t|**5 / 120 * max|s''''|`` (LOGISTIC_FOURTH = 0.12769 bounds the 4th derivative of the
#: logistic function), i.e. below 1e-18 here: beneath the rounding of the terms kept.
T_SERIES = 2.0**-10

#: The sigmoid cross-entropy's series beyond t**4 adds at most this times |t|**5 (see T_SERIES).
_BCE_TAIL = LOGISTIC_FOURTH / 120.0


# ---------------------------------------------------------------------------------------------
# One sample's loss (the exact engine)
# ---------------------------------------------------------------------------------------------
@jit
def _log_term(a, y):
    """``(-log(a)) * y``, without calling log when y == 0 and the result is already known.

    With y == 0 the product is +0 when -log(a) is finite, and NaN when it is +inf (a == 0) or
    NaN: exactly what the seed's ``np.multiply(-np.log(A), Y)`` gives, bit for bit, at half the
    cost for 0/1 labels.
    """
    if y == 0.0:
        return 0.0 if a > 0.0 else math.nan
    return (-math.log(a)) * y


@jit
def _logprob(z, y):
    """The seed's cross-entropy term for one output unit, and a bound on its rounding error.

    Returns ``(lp, err)`` with ``lp = -log(a)*y + -log(1-a)*(1-y)``, ``a = 1/(1 + exp(-z))``.
    ``a`` carries a relative error of at most ~3u (exp, add, divide), which costs ``log(a)`` an
    absolute 3u and ``log(1 - a)`` an absolute ``3u * a / (1 - a)`` — the cancellation in
    ``1 - a`` when an output saturates — plus ~2u relative for the products and the sum.
    ``err`` bounds that (beyond the error already in z): it is what blinds a central difference
    on saturated samples, and the report turns it into a noise bound.
    """
    a = 1.0 / (1.0 + math.exp(-z))
    lp = _log_term(a, y) + _log_term(1.0 - a, 1.0 - y)
    err = _U * (3.0 * abs(y) + 3.0 * abs(1.0 - y) * a / (1.0 - a) + 2.0 * abs(lp))
    return lp, err


# Not inlined (nor the helpers below marked so): LLVM inlines what pays, while numba's IR-level
# inlining copies the body into every caller and multiplied the cold compile (issue 10: the
# exact engine's kernel 5.5 s -> 0.7 s) at no measurable warm cost.
@jit(nrt=False)
def column_loss(Z, zo, stride, col, Y, j, out, r, z_r):
    """The loss of sample j from its output pre-activations ``Z[zo + o*stride + col]``, unit
    r's read as ``z_r`` (r = -1: none), and a bound on its rounding error beyond that of z.

    SIGMOID_BCE: binary cross-entropy, summed over outputs in order (the seed's terms,
    :func:`_logprob`); SOFTMAX_CE: categorical cross-entropy ``sum_o y_o (lse - z_o)`` with
    ``lse = max + log sum exp(z - max)``; LINEAR_MSE: ``1/2 sum_o (z_o - y_o)**2``.
    """
    n_out = Y.shape[0]
    total = 0.0
    error = 0.0
    if out == SIGMOID_BCE:
        for o in range(n_out):
            z = z_r if o == r else Z[zo + o * stride + col]
            term, err = _logprob(z, Y[o, j])
            total += term
            error += err
        return total, error
    if out == SOFTMAX_CE:
        top = -math.inf
        for o in range(n_out):
            z = z_r if o == r else Z[zo + o * stride + col]
            top = max(top, z)
        s = 0.0
        for o in range(n_out):
            z = z_r if o == r else Z[zo + o * stride + col]
            s += math.exp(z - top)
        lse = top + math.log(s)
        for o in range(n_out):
            z = z_r if o == r else Z[zo + o * stride + col]
            y = Y[o, j]
            if y != 0.0:
                total += y * (lse - z)
                # exp, sum and log: (n_out + 4) u on lse; then the subtraction and product.
                error += _U * abs(y) * ((n_out + 4.0) * (1.0 + abs(lse)) + 2.0 * abs(lse - z))
        return total, error
    if out == LINEAR_MSE:
        for o in range(n_out):
            z = z_r if o == r else Z[zo + o * stride + col]
            d = z - Y[o, j]
            total += 0.5 * (d * d)
            error += _U * (abs(d) * (abs(z) + abs(Y[o, j])) + 3.0 * d * d)
        return total, error
    raise ValueError("gradcheck_fast: unknown loss code")


# ---------------------------------------------------------------------------------------------
# Loss changes from the unperturbed pass (the incremental engine and the directional probes)
# ---------------------------------------------------------------------------------------------
@jit
def output_coefficients(Z, zo, Y, m, coef, sig, out):
    """Per sample j and output o, what the loss change ``g(t) = l(z + t) - l(z)`` is made of.

    SOFTMAX_CE: ``coef[.., 0] = S p_o - y_o`` (S = sum_o y_o, formed as
    ``-sum of the other p`` for the labelled class of one-hot labels, so a confident output
    loses nothing), ``coef[.., 1] = log p_o`` (from the logits: finite where p_o underflows),
    ``sig[.., 0] = p_o``, ``sig[.., 1] = S``; see :func:`_softmax_change`.
    LINEAR_MSE: ``g(t) = (z - y) t + t**2 / 2`` exactly: ``coef = (z - y,
    1/2, 0, 0)``. SIGMOID_BCE, the seed's sigmoid output:

    With ``l(z) = softplus(z) - y z`` (the seed's cross-entropy of a sigmoid output) and
    ``s = sigmoid(z)``, ``sbar = sigmoid(-z)`` (computed directly, not as 1 - s):
    ``g(t) = (s - y) t + s' t^2/2 + s'' t^3/6 + s''' t^4/24`` with ``s' = s sbar``,
    ``s'' = s sbar (sbar - s)``, ``s''' = s sbar (1 - 6 s sbar)``. ``s - y`` is formed as
    ``s (1 - y) - sbar y``, exact in sign and accurate for 0/1 labels at any saturation.
    ``coef[j, o, :]`` holds the 4 coefficients, ``sig[j, o, :]`` = (s, sbar) for large t.

    One thread: m x n_out evaluations are a small part of any check, not worth a parallel
    region (which, on a busy machine, may wait for a descheduled thread).
    """
    n_out = Y.shape[0]
    if out != SIGMOID_BCE and out != SOFTMAX_CE and out != LINEAR_MSE:
        raise ValueError("gradcheck_fast: unknown loss code")
    for j in range(m):
        if out == SOFTMAX_CE:
            top = -math.inf
            for o in range(n_out):
                top = max(top, Z[zo + o * m + j])
            total = 0.0
            labels = 0.0
            for o in range(n_out):
                total += math.exp(Z[zo + o * m + j] - top)
                labels += Y[o, j]
            log_total = math.log(total)
            for o in range(n_out):
                shifted = Z[zo + o * m + j] - top
                p = math.exp(shifted) / total
                k = (j * n_out + o) * 4
                sig[(j * n_out + o) * 2] = p
                sig[(j * n_out + o) * 2 + 1] = labels
                coef[k] = labels * p - Y[o, j]
                coef[k + 1] = shifted - log_total  # log p_o, finite where p_o underflows
                coef[k + 2] = 0.0
                coef[k + 3] = 0.0
            # One-hot labels: S p_c - 1 = -(sum of the other p), without cancellation.
            c = -1
            for o in range(n_out):
                y = Y[o, j]
                if y == 1.0 and c == -1:
                    c = o
                elif y != 0.0:
                    c = -2
            if c >= 0:
                rest = 0.0
                for o in range(n_out):
                    if o != c:
                        rest += sig[(j * n_out + o) * 2]
                coef[(j * n_out + c) * 4] = -rest
            continue
        for o in range(n_out):
            z = Z[zo + o * m + j]
            y = Y[o, j]
            k = (j * n_out + o) * 4
            if out == LINEAR_MSE:
                coef[k] = z - y
                coef[k + 1] = 0.5
                coef[k + 2] = 0.0
                coef[k + 3] = 0.0
                sig[(j * n_out + o) * 2] = 0.0  # unused, read by _unit_change
                sig[(j * n_out + o) * 2 + 1] = 0.0
                continue
            s = 1.0 / (1.0 + math.exp(-z))
            sbar = 1.0 / (1.0 + math.exp(z))
            d1 = s * sbar
            coef[k] = s * (1.0 - y) - sbar * y
            coef[k + 1] = d1 / 2.0
            coef[k + 2] = d1 * (sbar - s) / 6.0
            coef[k + 3] = d1 * (1.0 - 6.0 * d1) / 24.0
            sig[(j * n_out + o) * 2] = s
            sig[(j * n_out + o) * 2 + 1] = sbar


@jit
def _bce_change(c1, c2, c3, c4, s, sbar, y, t):
    """``g(t) = l(z + t) - l(z)`` of the sigmoid cross-entropy ``l(z) = softplus(z) - y z`` for
    one output unit, and a bound on its rounding error.

    ``c1..c4`` are its Taylor coefficients and ``s, sbar, y`` its sigmoid, complement and label
    (see :func:`output_coefficients`). Scalars only: an array argument would cost a
    reference-count increment and decrement per call, more than this arithmetic.
    """
    if t == 0.0:
        return 0.0, 0.0
    if abs(t) <= T_SERIES:
        value = t * (c1 + t * (c2 + t * (c3 + t * c4)))
        # Horner with 8 roundings; |c2| <= 1/8, |c3|, |c4| < 1/50 and |t| <= 1/1024.
        return value, 8.0 * _U * abs(t) * (abs(c1) + abs(t))
    change, scale = softplus_change(t, s, sbar)
    if scale == 0.0:
        scale = abs(y * t)  # the subtraction below
    return change - y * t, 8.0 * _U * (abs(change) + scale)


@jit
def _cubic(v1, v2, v3, s):
    """``((v3 s + v2) s + v1) s``: an output's move behind a tanh or sigmoid layer."""
    return (v1 + s * (v2 + s * v3)) * s


@jit(inline=True)  # per output of every composed row: a call's refcounts doubled that loop
def _triple(V, C3, curved, v):
    """``(v1, v2, v3)`` of V's index v: from C3 behind a tanh/sigmoid layer, else ``(V, 0, 0)``."""
    if curved:
        return C3[3 * v], C3[3 * v + 1], C3[3 * v + 2]
    return V[v], 0.0, 0.0


@jit(inline=True)
def _softmax_change(coef, sig, j, n_out, tvec):
    """Change of a softmax cross-entropy loss when the outputs move by ``tvec``; (value, err).

    ``S (LSE(z + t) - LSE(z)) - y . t`` with ``LSE(z + t) - LSE(z) = K(t) = log sum_o p_o e^t_o``,
    the cumulant generating function of t under p: ``kappa1 + kappa2/2 + kappa3/6 + kappa4/24
    + O(t**5)`` (kappa1 = p.t, then the central moments), exact to rounding for small t, with
    ``S kappa1 - y . t`` formed from the accurate ``S p - y`` (:func:`output_coefficients`);
    ``log1p(sum_o p_o expm1(t_o))`` beyond, while ``e^K = 1 + sum_o p_o expm1(t_o)`` stays
    above 1/2; below (a confident output pushed down: the sum cancels, to exactly -1 once
    ``K < log u``) or when an ``expm1`` overflows, ``log sum_o exp(log p_o + t_o)`` shifted by
    its largest term, which has nothing to cancel.
    """
    base = j * n_out
    k1 = 0.0
    first = 0.0
    magnitude = 0.0
    for o in range(n_out):
        t = tvec[o]
        k1 += sig[(base + o) * 2] * t
        d = coef[(base + o) * 4] * t
        first += d
        magnitude += abs(d)
    labels = sig[base * 2 + 1]
    spread = 0.0
    for o in range(n_out):
        spread = max(spread, abs(tvec[o] - k1))
    if spread <= T_SERIES:
        m2 = 0.0
        m3 = 0.0
        m4 = 0.0
        for o in range(n_out):
            p = sig[(base + o) * 2]
            u = tvec[o] - k1
            u2 = u * u
            m2 += p * u2
            m3 += p * u2 * u
            m4 += p * u2 * u2
        value = first + labels * (m2 / 2.0 + m3 / 6.0 + (m4 - 3.0 * m2 * m2) / 24.0)
        return value, 8.0 * _U * (n_out + 2.0) * (magnitude + labels * (m2 + spread * spread))
    s = 0.0
    dot = 0.0
    for o in range(n_out):
        s += sig[(base + o) * 2] * math.expm1(tvec[o])
        dot += (labels * sig[(base + o) * 2] - coef[(base + o) * 4]) * tvec[o]  # = y . t
    if -0.5 <= s < math.inf:  # False for NaN too (an underflowed p_o times expm1(t_o) = inf)
        # 1 + s >= 1/2: log1p's argument carries s's rounding at most doubled.
        change = math.log1p(s)
        value = labels * change - dot
        return value, 8.0 * _U * (n_out + 2.0) * (labels * abs(change) + abs(dot) + magnitude)
    change, reach = _shifted_log_sum(coef, base, n_out, tvec)
    value = labels * change - dot
    return value, 8.0 * _U * (n_out + 2.0) * (abs(labels) * (abs(change) + reach + 1.0)
                                              + abs(dot) + magnitude)


# A call rather than inlined: this rare branch inlined into the per-parameter kernel slowed
# the mnist-size check by ~5 % (code layout), though never executed there.
@jit
def _shifted_log_sum(coef, base, n_out, tvec):
    """``(K, reach)``: ``K = log sum_o exp(w_o)``, ``w_o = log p_o + t_o`` (log p_o in
    ``coef[(base + o) * 4 + 1]``), formed as ``M + log sum_o exp(w_o - M)`` with M the largest
    w_o, and ``reach = sum_o e_o (|log p_o| + |t_o|) / sum_o e_o`` (``e_o = exp(w_o - M)``).

    Rounding: w_o errs by at most ``3 u (|log p_o| + |t_o|) + (n_out + 3) u`` (log p_o from
    the shifted logit minus the log of a sum of n_out exponentials, then the addition of t_o);
    K moves by ``e_o / sum e`` times that, summed, so by ``3 u reach + (n_out + 3) u``; the
    exponentials, the sum (in [1, n_out]), its log and the final addition add ``(n_out + 4) u
    + u |K|``. :func:`_softmax_change` carries ``8 u (n_out + 2) (|K| + reach + 1)``, above it.
    """
    top = -math.inf
    for o in range(n_out):
        top = max(top, coef[(base + o) * 4 + 1] + tvec[o])
    total = 0.0
    reach = 0.0
    for o in range(n_out):
        lp = coef[(base + o) * 4 + 1]
        e = math.exp((lp + tvec[o]) - top)
        total += e
        reach += e * (abs(lp) + abs(tvec[o]))
    return top + math.log(total), reach / total


@jit(inline=True)
def _unit_change(out, c1, c2, c3, c4, s, sbar, y, t):
    """``g(t)`` of one output unit moved by t, and its rounding bound, for the outputs whose
    loss is a sum over units: the sigmoid's cross-entropy (:func:`_bce_change`, with its
    coefficients c1..c4, sigmoid s, complement sbar and label y) and the squared error (exact:
    ``c1 t + t**2 / 2`` with ``c1 = z - y``). Scalars only: an array handed to a helper costs
    reference counts per call."""
    if out == LINEAR_MSE:
        return t * (c1 + 0.5 * t), 4.0 * _U * (abs(c1 * t) + t * t)
    return _bce_change(c1, c2, c3, c4, s, sbar, y, t)


@jit(inline=True)
def sample_change(out, coef, sig, Y, j, n_out, tvec):
    """Loss change of sample j when its output pre-activations move by ``tvec``; (value, err)."""
    if out == SOFTMAX_CE:
        return _softmax_change(coef, sig, j, n_out, tvec)
    if out != SIGMOID_BCE and out != LINEAR_MSE:
        raise ValueError("gradcheck_fast: unknown loss code")
    total = 0.0
    error = 0.0
    for o in range(n_out):
        t = tvec[o]
        if t == 0.0:
            continue
        k = (j * n_out + o) * 4
        q = (j * n_out + o) * 2
        v, e = _unit_change(out, coef[k], coef[k + 1], coef[k + 2], coef[k + 3], sig[q],
                            sig[q + 1], Y[o, j], t)
        total += v
        error += e
    return total, error


@jit(inline=True)
def moved_change(out, coef, sig, Y, j, n_out, V, C3, curved, base, da, tvec):
    """Loss change of sample ``j`` when its ``n_out`` outputs move by ``t_o = V[base + o] da``
    (``curved``: by the cubic ``C3[3 (base + o) + (0, 1, 2)]`` in da, behind a curved layer);
    (value, err). ``out``: the loss code; ``coef``, ``sig``, ``Y``: as
    :func:`output_coefficients` gives them and the labels.

    :func:`sample_change` written out over t_o: array arguments of an inlined helper cost a
    reference count per call, more than this arithmetic (``tvec``: scratch of n_out floats for
    the softmax's rare large moves)."""
    value = 0.0
    err = 0.0
    if out == SOFTMAX_CE:
        sbase = j * n_out
        k1 = 0.0
        first = 0.0
        magnitude = 0.0
        for o in range(n_out):
            t_o = V[base + o] * da
            if curved:
                q3 = 3 * (base + o)
                t_o = _cubic(C3[q3], C3[q3 + 1], C3[q3 + 2], da)
            k1 += sig[(sbase + o) * 2] * t_o
            d = coef[(sbase + o) * 4] * t_o
            first += d
            magnitude += abs(d)
        spread = 0.0
        m2 = 0.0
        m3 = 0.0
        m4 = 0.0
        for o in range(n_out):
            p = sig[(sbase + o) * 2]
            u = V[base + o] * da
            if curved:
                q3 = 3 * (base + o)
                u = _cubic(C3[q3], C3[q3 + 1], C3[q3 + 2], da)
            u -= k1
            spread = max(spread, abs(u))
            u2 = u * u
            m2 += p * u2
            m3 += p * u2 * u
            m4 += p * u2 * u2
        if spread <= T_SERIES:
            labels = sig[sbase * 2 + 1]
            value = first + labels * (m2 / 2.0 + m3 / 6.0 + (m4 - 3.0 * m2 * m2) / 24.0)
            err = 8.0 * _U * (n_out + 2.0) * (magnitude + labels * (m2 + spread * spread))
            return value, err
        for o in range(n_out):
            tvec[o] = V[base + o] * da
            if curved:
                q3 = 3 * (base + o)
                tvec[o] = _cubic(C3[q3], C3[q3 + 1], C3[q3 + 2], da)
        return _softmax_change(coef, sig, j, n_out, tvec)
    if out != SIGMOID_BCE and out != LINEAR_MSE:
        raise ValueError("gradcheck_fast: unknown loss code")
    for o in range(n_out):
        t_o = V[base + o] * da
        if curved:
            q3 = 3 * (base + o)
            t_o = _cubic(C3[q3], C3[q3 + 1], C3[q3 + 2], da)
        k = (j * n_out + o) * 4
        q = (j * n_out + o) * 2
        v, e = _unit_change(out, coef[k], coef[k + 1], coef[k + 2], coef[k + 3], sig[q],
                            sig[q + 1], Y[o, j], t_o)
        value += v
        err += e
    return value, err


#: Per (hidden unit, sample) record of :func:`composed_terms`: a1, a2, a3, M1, M2, M3, B, reach.
COMPOSED_FIELDS = 8


# One call per layer's range of rows, not per row: an array handed to a function (inlined or
# not) costs reference counts per call, which per row doubled the set-up kernel's time.
@jit(nrt=False)
def composed_terms(out, coef, sig, V, C3, curved, v_start, lo, hi, m, K, k_start):
    """For the rows lo <= row < hi of one hidden layer (row ``r m + j``: unit r, sample j, of
    ``m`` samples), the loss change of sample j as one cubic in the unit's change s, when the
    outputs move by ``t_o = v1 s + v2 s**2 + v3 s**3`` (:func:`_triple` of ``V``, ``C3`` --
    ``curved``: behind a curved layer -- at ``v_start + row n_out + o``): into
    ``K[(k_start + row) COMPOSED_FIELDS + f]`` the fields ``(a1, a2, a3, M1, M2, M3, B,
    reach)`` with ``dl(s) = s (a1 + s (a2 + s a3)) + O(B s**4)``; ``out``: the loss code;
    ``coef``, ``sig``: as :func:`output_coefficients` gives them.

    Per output kind (coefficients c1..c4 and p, S of :func:`output_coefficients`):

    * sigmoid or linear: ``sum_o c1 t + c2 t**2 + c3 t**3 + c4 t**4``, so ``a1 = sum c1 v1``,
      ``a2 = sum c1 v2 + c2 v1**2``, ``a3 = sum c1 v3 + 2 c2 v1 v2 + c3 v1**3``;
    * softmax: ``sum_o d t + S (k2/2 + k3/6 + k4/24 + ...)`` (the cumulants of t under p), so
      with the centred ``u_k = v_k - p.v_k``: ``a1 = sum d v1``, ``a2 = sum d v2 + S/2 E u1**2``,
      ``a3 = sum d v3 + S E u1 u2 + S/6 E u1**3``.

    ``M1..M3`` are the sums of the absolute values of the terms forming ``a1..a3`` (the scale
    of their rounding), ``B`` bounds the terms of degree 4 and more for ``|s| <= 1`` (each such
    term of the expansion with its coefficients in absolute value), ``reach`` is
    ``max_o (|v1| + |v2| + |v3|)``.
    """
    if out != SIGMOID_BCE and out != SOFTMAX_CE and out != LINEAR_MSE:
        raise ValueError("gradcheck_fast: unknown loss code")
    n_out = coef.shape[0] // (4 * m)
    for row in range(lo, hi):
        j = row % m
        base = v_start + row * n_out
        a1 = a2 = a3 = M1 = M2 = M3 = B = 0.0
        reach = 0.0
        mean1 = mean2 = mean3 = 0.0
        if out != SOFTMAX_CE and not curved:
            # The outputs move by v1 s alone (no curved layer behind the unit): the general
            # loop's terms in v2 and v3 vanish (they add zeros), and with them most of its work.
            tail = _BCE_TAIL if out == SIGMOID_BCE else 0.0
            for o in range(n_out):
                k = (j * n_out + o) * 4
                c1 = coef[k]
                c2 = coef[k + 1]
                c3 = coef[k + 2]
                v1 = V[base + o]
                w = abs(v1)
                reach = max(reach, w)
                a1 += c1 * v1
                M1 += abs(c1 * v1)
                a2 += c2 * v1 * v1
                a3 += c3 * v1 * v1 * v1
                M2 += (abs(c2) + 1.0) * v1 * v1
                M3 += abs(c3 * v1 * v1 * v1)
                B += (abs(coef[k + 3]) + tail) * w**4
        else:
            if out == SOFTMAX_CE:
                for o in range(n_out):
                    p = sig[(j * n_out + o) * 2]
                    v1, v2, v3 = _triple(V, C3, curved, base + o)
                    mean1 += p * v1
                    mean2 += p * v2
                    mean3 += p * v3
            var_u = 0.0
            for o in range(n_out):
                k = (j * n_out + o) * 4
                c1 = coef[k]
                v1, v2, v3 = _triple(V, C3, curved, base + o)
                w = abs(v1) + abs(v2) + abs(v3)
                reach = max(reach, w)
                a1 += c1 * v1
                a2 += c1 * v2
                a3 += c1 * v3
                M1 += abs(c1 * v1)
                M2 += abs(c1 * v2)
                M3 += abs(c1 * v3)
                if out == SOFTMAX_CE:
                    p = sig[(j * n_out + o) * 2]
                    S = sig[(j * n_out + o) * 2 + 1]
                    u1 = v1 - mean1
                    u2 = v2 - mean2
                    u3 = v3 - mean3
                    big = abs(u1) + abs(u2) + abs(u3)
                    a2 += S / 2.0 * p * u1 * u1
                    a3 += S * p * u1 * u2 + S / 6.0 * p * u1 * u1 * u1
                    M2 += S * p * u1 * u1
                    M3 += S * p * (abs(u1 * u2) + abs(u1) ** 3 + u1 * u1 * abs(v1))
                    B += S * p * (((abs(u2) + abs(u3)) ** 2 + 2.0 * abs(u1 * u3)) / 2.0
                                  + (big**3 - abs(u1) ** 3) / 6.0 + big**4 / 8.0)
                    var_u += p * big * big
                else:
                    c2 = coef[k + 1]
                    c3 = coef[k + 2]
                    c4 = coef[k + 3]
                    a2 += c2 * v1 * v1
                    a3 += 2.0 * c2 * v1 * v2 + c3 * v1 * v1 * v1
                    M2 += (abs(c2) + 1.0) * v1 * v1
                    M3 += 2.0 * abs(c2 * v1 * v2) + abs(c3 * v1 * v1 * v1)
                    tail = _BCE_TAIL if out == SIGMOID_BCE else 0.0
                    B += (abs(c2) * ((abs(v2) + abs(v3)) ** 2 + 2.0 * abs(v1 * v3))
                          + abs(c3) * (w**3 - abs(v1) ** 3) + (abs(c4) + tail) * w**4)
            if out == SOFTMAX_CE:
                B += sig[j * n_out * 2 + 1] * 3.0 * var_u * var_u / 8.0
        q = (k_start + row) * COMPOSED_FIELDS
        K[q] = a1
        K[q + 1] = a2
        K[q + 2] = a3
        K[q + 3] = M1
        K[q + 4] = M2
        K[q + 5] = M3
        K[q + 6] = B
        K[q + 7] = reach


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------
def _sigmoid(Z):
    # No errstate here: the engines call this inside theirs, the reference (the seed's
    # arithmetic) warns on overflow as the seed does.
    return 1.0 / (1.0 + np.exp(-Z))


def _bce_sum(Z, Y):
    A = _sigmoid(Z)
    return np.sum(-np.log(A) * Y + -np.log(1.0 - A) * (1.0 - Y))


def _softmax(Z):
    shifted = Z - Z.max(axis=0, keepdims=True)
    return np.exp(shifted) / np.sum(np.exp(shifted), axis=0, keepdims=True)


def _ce_sum(Z, Y):
    shifted = Z - Z.max(axis=0, keepdims=True)
    lse = np.log(np.sum(np.exp(shifted), axis=0, keepdims=True))
    return np.sum(Y * (lse - shifted))


@dataclass(frozen=True)
class Loss:
    """Everything the package knows of one output layer with its loss.

    Attributes
    ----------
    name, code : the user's name (the output's) and the kernels' code.
    output : NumPy ``A = f(Z)`` of the output layer.
    data_sum : NumPy ``sum_oj l(Z, Y)``, the data cost times m (errors and overflows give
        inf/NaN silently: the engines report them).
    dZ : NumPy ``m dJ/dZ`` from ``A`` and ``Y`` (the reference's backward pass).
    class_labels : Y may be integer class labels of shape (m,) (one-hot columns then).
    doc : the formula, for the documentation.
    """

    name: str
    code: int
    output: Callable
    data_sum: Callable
    dZ: Callable
    class_labels: bool
    doc: str


REGISTRY: dict[str, Loss] = {
    entry.name: entry for entry in (
        Loss("sigmoid", SIGMOID_BCE, output=_sigmoid, data_sum=_bce_sum,
             dZ=lambda A, Y: A - Y, class_labels=False,
             doc="A = sigmoid(Z), binary cross-entropy J = 1/m sum_oj [-Y log A - (1 - Y) "
                 "log(1 - A)] (the seed's)"),
        Loss("softmax", SOFTMAX_CE, output=_softmax, data_sum=_ce_sum,
             # labels that sum to S per sample: dZ = A S - Y.
             dZ=lambda A, Y: A * np.sum(Y, axis=0, keepdims=True) - Y, class_labels=True,
             doc="A = softmax(Z) over each column, categorical cross-entropy J = -1/m "
                 "sum_oj Y log A; Y one-hot (nL, m) (or probabilities), or integer class "
                 "labels of shape (m,)"),
        Loss("linear", LINEAR_MSE, output=lambda Z: Z + 0.0,
             data_sum=lambda Z, Y: 0.5 * np.sum((Z - Y) ** 2),
             dZ=lambda A, Y: A - Y, class_labels=False,
             doc="A = Z, squared error J = 1/(2m) sum_oj (A - Y)**2"),
    )
}

#: Entries by kernel code.
BY_CODE: dict[int, Loss] = {entry.code: entry for entry in REGISTRY.values()}


def resolve(name: str) -> Loss:
    """The entry of the output ``name``; unknown names raise ValueError."""
    if name not in REGISTRY:
        raise ValueError(f"unknown output {name!r}; the registry has {tuple(REGISTRY)}")
    return REGISTRY[name]
