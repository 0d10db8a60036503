"""The incremental engine: J(theta +- eps e_i) - J(theta) from the unperturbed forward pass.

Perturbing one parameter of layer l changes one row of Z_l by an exactly known amount
``dz_j = delta * A_{l-1}[c, j]`` (``delta = fl(theta_i +- eps) - theta_i``, exact in floating
point). From there the change travels in *delta space*:

- through the ReLU of unit r: ``da = relu(z + dz) - relu(z)`` is ``dz`` while the unit stays
  active, 0 while it stays inactive, and is formed explicitly when it crosses the kink;
- through the later layers: the network is piecewise linear, so as long as no later hidden
  unit crosses its kink, the change of the output pre-activations is exactly ``V[r, j] * da``,
  ``V`` being the sensitivity of the outputs to unit r on sample j with the unperturbed
  activation pattern (the next layer's rank-1 update ``W_{l+1}[:, r] * da``, carried through
  the fixed pattern). A per-(r, j) radius ``rho`` says how large ``|da|`` may be before some
  later unit could cross; beyond it the sample is propagated explicitly, crossing included;
- into the loss: ``g(t) = l(z + t) - l(z)`` is evaluated without cancellation — its Taylor
  series, exact to rounding for ``|t| <= T_SERIES``, or ``log1p``/``expm1`` beyond.

Only samples that change contribute, and J+ - J- is formed from the per-sample changes, so
neither the unchanged work nor the cancellation of two nearly equal costs is paid for. Each
J+- is the full forward pass's value up to rounding (tests/test_incremental.py checks it,
kinks included), and its own rounding is relative to the change, not to J.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._jit import jit

#: Unit roundoff of float64.
_U = 2.0**-53

#: Largest |t| for the 4-term Taylor series of the loss change. The remainder is at most
#: ``|t|**5 / 120 * max|s''''| <= |t|**5 / 960`` (the 4th derivative of the logistic function is
#: below 1/8), i.e. below 1e-18 here: beneath the rounding of the terms kept.
T_SERIES = 2.0**-10

#: A sample takes the linear path while ``|da| < RHO_SAFETY * rho``: the margin keeps the
#: "no later unit crosses" decision away from rounding of the products that decide it.
RHO_SAFETY = 0.5


# ---------------------------------------------------------------------------------------------
# Set-up from the unperturbed pass
# ---------------------------------------------------------------------------------------------
@jit(parallel=True)
def _output_coefficients(Z, zo, Y, m, coef, sig):
    """Per sample j and output o: Taylor coefficients of ``g(t) = l(z + t) - l(z)``.

    With ``l(z) = softplus(z) - y z`` (the seed's cross-entropy of a sigmoid output) and
    ``s = sigmoid(z)``, ``sbar = sigmoid(-z)`` (computed directly, not as 1 - s):
    ``g(t) = (s - y) t + s' t^2/2 + s'' t^3/6 + s''' t^4/24`` with ``s' = s sbar``,
    ``s'' = s sbar (sbar - s)``, ``s''' = s sbar (1 - 6 s sbar)``. ``s - y`` is formed as
    ``s (1 - y) - sbar y``, exact in sign and accurate for 0/1 labels at any saturation.
    ``coef[j, o, :]`` holds the 4 coefficients, ``sig[j, o, :]`` = (s, sbar) for large t.
    """
    n_out = Y.shape[0]
    for j in prange(m):
        for o in range(n_out):
            z = Z[zo + o * m + j]
            y = Y[o, j]
            s = 1.0 / (1.0 + math.exp(-z))
            sbar = 1.0 / (1.0 + math.exp(z))
            d1 = s * sbar
            k = (j * n_out + o) * 4
            coef[k] = s * (1.0 - y) - sbar * y
            coef[k + 1] = d1 / 2.0
            coef[k + 2] = d1 * (sbar - s) / 6.0
            coef[k + 3] = d1 * (1.0 - 6.0 * d1) / 24.0
            sig[(j * n_out + o) * 2] = s
            sig[(j * n_out + o) * 2 + 1] = sbar


@jit(parallel=True)
def _radii(sizes, act_off, Z, m, bound, b_off, rho):
    """``rho_l[r, j]``: how far ``a_l[r, j]`` may move before a later hidden unit could cross 0.

    For each later hidden layer q, ``bound`` holds an upper bound ``B_{q<-l}[k, r]`` of
    ``|d z_q[k] / d a_l[r]|`` (``|W_{l+1}|`` for q = l + 1, exact; products of ``|W|`` beyond,
    which ignore the activation pattern and so only ever overstate), at ``b_off[l, q]``;
    ``rho = min_{q, k} |z_q[k, j]| / B[k, r]`` (infinite when no later unit depends on a_l[r]).
    """
    n_layers = sizes.shape[0] - 1
    for j in prange(m):
        for l in range(1, n_layers):
            n_l = sizes[l]
            for r in range(n_l):
                radius = np.inf
                for q in range(l + 1, n_layers):
                    base = b_off[l, q]
                    for k in range(sizes[q]):
                        b = bound[base + k * n_l + r]
                        if b > 0.0:
                            radius = min(radius, abs(Z[act_off[q] + k * m + j]) / b)
                rho[act_off[l] + r * m + j] = radius


def _derivative_bounds(weights, sizes):
    """The matrices ``B_{q<-l}`` of :func:`_radii` in one flat array, and their offsets."""
    n_layers = len(sizes) - 1
    b_off = np.zeros((n_layers + 1, n_layers + 1), dtype=np.int64)
    blocks = []
    size = 0
    for l in range(1, n_layers):
        B = None
        for q in range(l + 1, n_layers):
            B = np.abs(weights[q]) if B is None else np.abs(weights[q]) @ B
            b_off[l, q] = size
            blocks.append(B.ravel())
            size += B.size
    return (np.concatenate(blocks) if blocks else np.zeros(1)), b_off


class Prepared:
    """What the per-parameter loop reads: the unperturbed pass and what is derived from it.

    ``Z``, ``A`` (flat, layer l at ``act_off[l]``, ``(n_l, m)`` C order; layer 0 of A is X),
    ``J``, the output Taylor coefficients ``coef``/``sig`` (:func:`_output_coefficients`),
    the sensitivities ``V`` at ``v_off[l]`` (``V_l[r, j, o] = d z_out[o, j] / d a_l[r, j]``
    with the unperturbed activation pattern) and the radii ``rho`` (:func:`_radii`).
    """

    def __init__(self, **fields):
        self.__dict__.update(fields)


def forward(net, theta, X, Y):
    """The unperturbed forward pass with NumPy's BLAS: ``(J, Z, A, act_off, weights)``.

    Call under :func:`gradcheck_fast._threads.single_blas_thread` for reproducible rounding.
    """
    sizes, w_off, b_off = net.sizes, net.w_off, net.b_off
    m = X.shape[1]
    n_layers = len(sizes) - 1
    act_off = net.activation_offsets(m)
    Z = np.empty(int(act_off[-1]))
    A = np.empty(int(act_off[-1]))
    A[: act_off[1]] = X.ravel()
    weights = [None]
    for l in range(1, n_layers + 1):
        n_l, n_prev = int(sizes[l]), int(sizes[l - 1])
        W = theta[w_off[l] : w_off[l] + n_l * n_prev].reshape(n_l, n_prev)
        weights.append(W)
        b = theta[b_off[l] : b_off[l] + n_l].reshape(n_l, 1)
        Zl = Z[act_off[l] : act_off[l + 1]].reshape(n_l, m)
        np.matmul(W, A[act_off[l - 1] : act_off[l]].reshape(n_prev, m), out=Zl)
        Zl += b
        Al = A[act_off[l] : act_off[l + 1]].reshape(n_l, m)
        if l < n_layers:
            np.maximum(Zl, 0.0, out=Al)
        else:
            with np.errstate(over="ignore"):
                Al[...] = 1.0 / (1.0 + np.exp(-Zl))
    AL = A[act_off[-2] :].reshape(int(sizes[-1]), m)
    with np.errstate(divide="ignore", invalid="ignore"):
        logprobs = -np.log(AL) * Y + -np.log(1.0 - AL) * (1.0 - Y)
    J = float(np.sum(logprobs) / m)
    return J, Z, A, act_off, weights


def prepare(net, theta, X, Y):
    """Everything the incremental engine needs, or None if the forward pass is not finite (the
    exact engine then reports which perturbed costs are NaN/Inf)."""
    sizes = net.sizes
    m = X.shape[1]
    n_layers = len(sizes) - 1
    n_out = int(sizes[-1])
    J, Z, A, act_off, weights = forward(net, theta, X, Y)
    if not (np.isfinite(J) and np.isfinite(Z[act_off[1] :]).all()):
        return None
    coef = np.empty(m * n_out * 4)
    sig = np.empty(m * n_out * 2)
    _output_coefficients(Z, int(act_off[-2]), Y, m, coef, sig)

    # V_l[:, j, :] = W_{l+1}^T (mask_{l+1}[:, j] * V_{l+1}[:, j, :]), all samples in one product.
    v_off = np.zeros(n_layers + 1, dtype=np.int64)
    hidden = [int(n) for n in sizes[1:-1]]
    V = np.empty(max(sum(hidden) * m * n_out, 1))
    offset = 0
    for l in range(1, n_layers):
        v_off[l] = offset
        offset += int(sizes[l]) * m * n_out
    if n_layers >= 2:
        last = n_layers - 1
        V_next = V[v_off[last] : v_off[last] + int(sizes[last]) * m * n_out].reshape(
            int(sizes[last]), m, n_out)
        V_next[...] = weights[n_layers].T[:, None, :]
        for l in range(last - 1, 0, -1):
            n_next = int(sizes[l + 1])
            mask = Z[act_off[l + 1] : act_off[l + 2]].reshape(n_next, m) > 0.0
            masked = (V_next * mask[:, :, None]).reshape(n_next, m * n_out)
            n_l = int(sizes[l])
            V_l = V[v_off[l] : v_off[l] + n_l * m * n_out].reshape(n_l, m * n_out)
            np.matmul(weights[l + 1].T, masked, out=V_l)
            V_next = V_l.reshape(n_l, m, n_out)

    bound, bound_off = _derivative_bounds(weights, sizes)
    rho = np.full(int(act_off[-1]), np.inf)
    _radii(sizes, act_off, Z, m, bound, bound_off, rho)
    return Prepared(J=J, Z=Z, A=A, act_off=act_off, coef=coef, sig=sig, V=V, v_off=v_off,
                    rho=rho)


# ---------------------------------------------------------------------------------------------
# Per-coordinate evaluation
# ---------------------------------------------------------------------------------------------
@jit(inline=True)
def _loss_change(c1, c2, c3, c4, s, sbar, y, t):
    """``g(t) = l(z + t) - l(z)`` for one output unit, and a bound on its rounding error.

    ``c1..c4`` are its Taylor coefficients and ``s, sbar, y`` its sigmoid, complement and label
    (see :func:`_output_coefficients`). Scalars only: an array argument of an inlined helper
    costs a reference-count increment and decrement per call, more than this arithmetic.
    """
    if t == 0.0:
        return 0.0, 0.0
    if abs(t) <= T_SERIES:
        value = t * (c1 + t * (c2 + t * (c3 + t * c4)))
        # Horner with 8 roundings; |c2| <= 1/8, |c3|, |c4| < 1/50 and |t| <= 1/1024.
        return value, 8.0 * _U * abs(t) * (abs(c1) + abs(t))
    # softplus(z + t) - softplus(z) = log1p(s expm1(t)) = t + log1p(sbar expm1(-t)); the form
    # whose argument stays away from -1 is used.
    if s <= 0.5:
        change = math.log1p(s * math.expm1(t))
    else:
        change = t + math.log1p(sbar * math.expm1(-t))
    value = change - y * t
    return value, 8.0 * _U * (abs(change) + abs(y * t))


@jit
def _output_change(coef, sig, Y, j, o, t):
    """:func:`_loss_change` of output o of sample j, reading its coefficients (slow path)."""
    n_out = Y.shape[0]
    k = (j * n_out + o) * 4
    q = (j * n_out + o) * 2
    return _loss_change(coef[k], coef[k + 1], coef[k + 2], coef[k + 3], sig[q], sig[q + 1],
                        Y[o, j], t)


@jit(inline=True)
def _relu_change(z, dz):
    """``(relu(z + dz) - relu(z), crossed)`` with the change formed without cancellation."""
    zn = z + dz
    if z > 0.0:
        if zn > 0.0:
            return dz, False
        return -z, True
    if zn > 0.0:
        return zn, True
    return 0.0, False


@jit
def _propagate(theta, sizes, w_off, act_off, Z, coef, sig, Y, l, r, j, da, cur, nxt):
    """Explicit propagation of ``a_l[r, j] += da`` to the loss of sample j, kinks included.

    Returns ``(loss change, rounding bound, number of later units that crossed their kink)``.
    """
    n_layers = sizes.shape[0] - 1
    m = Y.shape[1]
    n_l = sizes[l]
    crossings = 0
    # Rank-1 update of the next layer.
    for k in range(sizes[l + 1]):
        cur[k] = theta[w_off[l + 1] + k * n_l + r] * da
    for q in range(l + 1, n_layers):
        n_q = sizes[q]
        for k in range(n_q):
            change, crossed = _relu_change(Z[act_off[q] + k * m + j], cur[k])
            cur[k] = change
            if crossed:
                crossings += 1
        n_next = sizes[q + 1]
        for k2 in range(n_next):
            acc = 0.0
            row = w_off[q + 1] + k2 * n_q
            for k in range(n_q):
                if cur[k] != 0.0:
                    acc += theta[row + k] * cur[k]
            nxt[k2] = acc
        cur, nxt = nxt, cur
    total = 0.0
    error = 0.0
    for o in range(sizes[n_layers]):
        value, err = _output_change(coef, sig, Y, j, o, cur[o])
        total += value
        error += err
    return total, error, crossings


@jit
def _deltas_range(lo, hi, idx, theta, sizes, w_off, b_off, act_off, A, Z, Y, coef, sig, V, v_off,
                  rho, epsilon, dJ_plus, dJ_minus, resolution, kinks):
    """For the parameters i = idx[k], lo <= k < hi, into slot k: J(theta +- eps e_i) - J(theta),
    the rounding bound of their difference, and how many (sample, unit) kinks the two steps
    crossed."""
    n_layers = sizes.shape[0] - 1
    m = Y.shape[1]
    n_out = sizes[n_layers]
    max_width = 1
    for l in range(1, n_layers + 1):
        max_width = max(max_width, sizes[l])
    cur = np.empty(max_width)
    nxt = np.empty(max_width)
    for slot in range(lo, hi):
        i = idx[slot]
        l = 1
        while l < n_layers and i >= w_off[l + 1]:
            l += 1
        n_prev = sizes[l - 1]
        is_bias = i >= b_off[l]
        r = i - b_off[l] if is_bias else (i - w_off[l]) // n_prev
        c = 0 if is_bias else (i - w_off[l]) % n_prev
        t = theta[i]
        # The steps the seed really takes: fl(theta_i + eps) - theta_i, exact in floating point.
        d_plus = (t + epsilon) - t
        d_minus = (t - epsilon) - t
        acc_plus = 0.0
        acc_minus = 0.0
        error = 0.0
        crossings = 0
        a_row = act_off[l - 1] + c * m
        z_row = act_off[l] + r * m
        for j in range(m):
            x = 1.0 if is_bias else A[a_row + j]
            if x == 0.0:
                continue  # this sample does not see the parameter
            for sign in range(2):
                dz = (d_plus if sign == 0 else d_minus) * x
                if l == n_layers:
                    # An output unit: its loss term alone changes.
                    k = (j * n_out + r) * 4
                    q = (j * n_out + r) * 2
                    value, err = _loss_change(coef[k], coef[k + 1], coef[k + 2], coef[k + 3],
                                              sig[q], sig[q + 1], Y[r, j], dz)
                else:
                    da, crossed = _relu_change(Z[z_row + j], dz)
                    if crossed:
                        crossings += 1
                    value = 0.0
                    err = 0.0
                    if da == 0.0:
                        pass  # the unit stays inactive: nothing changes downstream
                    elif abs(da) < RHO_SAFETY * rho[z_row + j]:
                        # No later unit can cross: the outputs move by V * da exactly.
                        base = v_off[l] + (r * m + j) * n_out
                        for o in range(n_out):
                            k = (j * n_out + o) * 4
                            q = (j * n_out + o) * 2
                            v, e = _loss_change(coef[k], coef[k + 1], coef[k + 2], coef[k + 3],
                                                sig[q], sig[q + 1], Y[o, j], V[base + o] * da)
                            value += v
                            err += e
                    else:
                        value, err, later = _propagate(theta, sizes, w_off, act_off, Z, coef,
                                                       sig, Y, l, r, j, da, cur, nxt)
                        crossings += later
                if sign == 0:
                    acc_plus += value
                else:
                    acc_minus += value
                error += err
        dJ_plus[slot] = acc_plus / m
        dJ_minus[slot] = acc_minus / m
        resolution[slot] = error / m
        kinks[slot] = crossings


@jit(parallel=True)
def _deltas_parallel(start, stop, n_chunks, idx, theta, sizes, w_off, b_off, act_off, A, Z, Y,
                     coef, sig, V, v_off, rho, epsilon, dJ_plus, dJ_minus, resolution, kinks):
    """:func:`_deltas_range` over ``n_chunks`` chunks of [start, stop) in parallel; each index
    writes only its own slots, so the result is the same for any thread count."""
    n = stop - start
    for ch in prange(n_chunks):
        _deltas_range(start + ch * n // n_chunks, start + (ch + 1) * n // n_chunks, idx, theta,
                      sizes, w_off, b_off, act_off, A, Z, Y, coef, sig, V, v_off, rho, epsilon,
                      dJ_plus, dJ_minus, resolution, kinks)
