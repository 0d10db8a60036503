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
  series, exact to rounding for ``|t| <= T_SERIES``, or ``log1p``/``expm1`` beyond. For the
  small moves of an ordinary step the whole chain, unit change -> outputs -> loss, is one cubic
  in the unit's change per (unit, sample), composed once from the unperturbed pass
  (:func:`_composed`): one evaluation per sample instead of one per output.

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
from ._schedule import claim, run
from .costmodel import COMPOSED_S_PER_ELEMENT, radii_sample_seconds
from .mlp import _locate
from .models import SEED_MODEL

#: Unit roundoff of float64.
_U = 2.0**-53

#: Largest |t| for the 4-term Taylor series of the loss change. The remainder is at most
#: ``|t|**5 / 120 * max|s''''| <= |t|**5 / 960`` (the 4th derivative of the logistic function is
#: below 1/8), i.e. below 1e-18 here: beneath the rounding of the terms kept.
T_SERIES = 2.0**-10

#: Beyond this |t| the loss change of a sigmoid output avoids expm1 (which overflows past 709.78).
T_OVERFLOW = 700.0

#: A sample takes the linear path while ``|da| < RHO_SAFETY * rho``: the margin keeps the
#: "no later unit crosses" decision away from rounding of the products that decide it.
RHO_SAFETY = 0.5


# ---------------------------------------------------------------------------------------------
# Set-up from the unperturbed pass
# ---------------------------------------------------------------------------------------------
@jit
def _output_coefficients(Z, zo, Y, m, coef, sig, out=0):
    """Per sample j and output o, what the loss change ``g(t) = l(z + t) - l(z)`` is made of.

    out 1 (softmax and cross-entropy): ``coef[.., 0] = S p_o - y_o`` (S = sum_o y_o, formed as
    ``-sum of the other p`` for the labelled class of one-hot labels, so a confident output
    loses nothing), ``coef[.., 1] = log p_o`` (from the logits: finite where p_o underflows),
    ``sig[.., 0] = p_o``, ``sig[.., 1] = S``; see :func:`_softmax_change`.
    out 2 (linear and squared error): ``g(t) = (z - y) t + t**2 / 2`` exactly: ``coef = (z - y,
    1/2, 0, 0)``. out 0, the seed's sigmoid output:

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
    for j in range(m):
        if out == 1:
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
            if out == 2:
                coef[k] = z - y
                coef[k + 1] = 0.5
                coef[k + 2] = 0.0
                coef[k + 3] = 0.0
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


def _radii(sizes, act_off, Z, m, inverse, b_off, rho, kinked):
    """``rho_l[r, j]``: how far ``a_l[r, j]`` may move before a later hidden unit could cross 0.

    For each later hidden layer q, an upper bound ``B_{q<-l}[k, r]`` of ``|d z_q[k] / d a_l[r]|``
    (``|W_{l+1}|`` for q = l + 1, exact; products of ``|W|`` beyond, which ignore the
    activation pattern and so only ever overstate) is at ``b_off[l, q]``, given here by its
    reciprocal ``inverse`` (infinite where B is 0); ``rho = min_{q, k} |z_q[k, j]| / B[k, r]``
    (infinite when no later unit depends on a_l[r]). The product with the reciprocal is within
    an ulp of the quotient, far inside the RHO_SAFETY margin; ``0 * inf`` (a unit at its kink
    that does not depend on a_l[r]) is NaN and never taken as the minimum. The innermost loop
    runs along r, contiguous in B, so it vectorises. Serial for small networks, else one
    region over the samples (see :mod:`gradcheck_fast._schedule`).
    """
    seconds = radii_sample_seconds(sizes, [q for q in range(1, len(sizes) - 1) if kinked[q]])
    run(_radii_range, _radii_parallel, m, seconds,
        (sizes, act_off, Z, m, inverse, b_off, rho, kinked))


@jit
def _radii_range(lo, hi, sizes, act_off, Z, m, inverse, b_off, rho, kinked):
    """:func:`_radii` for the samples lo <= j < hi."""
    n_layers = sizes.shape[0] - 1
    max_width = 1
    for l in range(1, n_layers):
        max_width = max(max_width, sizes[l])
    radius = np.empty(max_width)
    for j in range(lo, hi):
        for l in range(1, n_layers):
            n_l = sizes[l]
            radius[:n_l] = np.inf
            for q in range(l + 1, n_layers):
                if not kinked[q]:  # a linear layer has no kink to cross
                    continue
                base = b_off[l, q]
                for k in range(sizes[q]):
                    z = abs(Z[act_off[q] + k * m + j])
                    row = base + k * n_l
                    for r in range(n_l):
                        value = z * inverse[row + r]
                        if value < radius[r]:
                            radius[r] = value
            for r in range(n_l):
                rho[act_off[l] + r * m + j] = radius[r]


@jit(parallel=True)
def _radii_parallel(start, stop, n_chunks, n_workers, schedule, sizes, act_off, Z, m, inverse,
                    b_off, rho, kinked):
    """:func:`_radii_range` over chunks of the samples claimed by ``n_workers`` threads."""
    n = stop - start
    for w in prange(n_workers):
        ch = claim(schedule, w, n_chunks)
        while ch < n_chunks:
            _radii_range(start + ch * n // n_chunks, start + (ch + 1) * n // n_chunks, sizes,
                         act_off, Z, m, inverse, b_off, rho, kinked)
            ch = claim(schedule, w, n_chunks)


def _derivative_bounds(weights, sizes, gains):
    """The matrices ``B_{q<-l}`` of :func:`_radii` in one flat array, and their offsets
    (``gains[q]``: the largest slope of layer q's activation, 1 for ReLU and linear)."""
    n_layers = len(sizes) - 1
    b_off = np.zeros((n_layers + 1, n_layers + 1), dtype=np.int64)
    blocks = []
    size = 0
    for l in range(1, n_layers):
        B = None
        for q in range(l + 1, n_layers):
            B = np.abs(weights[q]) if B is None else gains[q - 1] * (np.abs(weights[q]) @ B)
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


def forward(net, theta, X, Y, model=SEED_MODEL):
    """The unperturbed forward pass with NumPy's BLAS: ``(J, Z, A, act_off, weights)``.

    Call under :func:`gradcheck_fast._threads.single_blas_thread` for reproducible rounding.
    """
    hidden = model.hidden_for(len(net.sizes) - 1)
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
            name = hidden[l - 1]
            if name == "relu":
                np.maximum(Zl, 0.0, out=Al)
            elif name == "leaky_relu":
                Al[...] = np.where(Zl > 0.0, Zl, model.leaky_slope * Zl)
            elif name == "tanh":
                np.tanh(Zl, out=Al)
            elif name == "sigmoid":
                with np.errstate(over="ignore"):
                    Al[...] = 1.0 / (1.0 + np.exp(-Zl))
            else:
                Al[...] = Zl
        else:
            Al[...] = Zl  # the loss reads the output pre-activations
    ZL = Z[act_off[-2] :].reshape(int(sizes[-1]), m)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if model.output == "sigmoid":
            AL = 1.0 / (1.0 + np.exp(-ZL))
            data = np.sum(-np.log(AL) * Y + -np.log(1.0 - AL) * (1.0 - Y))
        elif model.output == "softmax":
            shifted = ZL - ZL.max(axis=0, keepdims=True)
            lse = np.log(np.sum(np.exp(shifted), axis=0, keepdims=True))
            data = np.sum(Y * (lse - shifted))
        else:
            data = 0.5 * np.sum((ZL - Y) ** 2)
    J = float(data / m)
    if model.l2:
        J += model.l2 / (2 * m) * sum(float(np.sum(W * W)) for W in weights[1:])
    return J, Z, A, act_off, weights


def prepare(net, theta, X, Y, model=SEED_MODEL):
    """Everything the incremental engine needs, or None if the forward pass is not finite (the
    exact engine then reports which perturbed costs are NaN/Inf)."""
    sizes = net.sizes
    m = X.shape[1]
    n_layers = len(sizes) - 1
    n_out = int(sizes[-1])
    alpha = model.leaky_slope
    # A leaky ReLU of slope 1 is the identity: no kink.
    hidden = tuple("linear" if name == "leaky_relu" and alpha == 1.0 else name
                   for name in model.hidden_for(n_layers))
    J, Z, A, act_off, weights = forward(net, theta, X, Y, model)
    if not (np.isfinite(J) and np.isfinite(Z[act_off[1] :]).all()):
        return None
    coef = np.empty(m * n_out * 4)
    sig = np.empty(m * n_out * 2)
    _output_coefficients(Z, int(act_off[-2]), Y, m, coef, sig, model.output_code)

    # V_l[:, j, :] = W_{l+1}^T (mask_{l+1}[:, j] * V_{l+1}[:, j, :]), all samples in one product.
    v_off = np.zeros(n_layers + 1, dtype=np.int64)
    hidden_units = sum(int(n) for n in sizes[1:-1])
    V = np.empty(max(hidden_units * m * n_out, 1))
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
            # The slope of layer l+1's activation at the unperturbed point, per unit and sample.
            z_next = Z[act_off[l + 1] : act_off[l + 2]].reshape(n_next, m)
            slope = _taylor_coefficients(hidden[l], z_next, alpha)[0]
            masked = (V_next * slope[:, :, None]).reshape(n_next, m * n_out)
            n_l = int(sizes[l])
            V_l = V[v_off[l] : v_off[l] + n_l * m * n_out].reshape(n_l, m * n_out)
            np.matmul(weights[l + 1].T, masked, out=V_l)
            V_next = V_l.reshape(n_l, m, n_out)

    gains = np.ones(n_layers + 1)
    kinked = np.zeros(n_layers + 1, dtype=np.int64)
    for l in range(1, n_layers):
        gains[l] = {"leaky_relu": max(1.0, alpha), "sigmoid": 0.25}.get(hidden[l - 1], 1.0)
        kinked[l] = hidden[l - 1] in ("relu", "leaky_relu")
    bound, bound_off = _derivative_bounds(weights, sizes, gains)
    rho = np.full(int(act_off[-1]), np.inf)
    with np.errstate(divide="ignore"):
        inverse = 1.0 / bound
    _radii(sizes, act_off, Z, m, inverse, bound_off, rho, kinked)
    C3, series, radius, s_off = _series(Z, act_off, weights, sizes, hidden, alpha, m, bound,
                                        bound_off, v_off, V)
    F = activation_complements(Z, act_off, hidden)
    K = _composed(coef, sig, V, v_off, C3, series, s_off, sizes, m, model.output_code, rho,
                  radius, act_off)
    return Prepared(J=J, Z=Z, A=A, act_off=act_off, coef=coef, sig=sig, V=V, v_off=v_off,
                    rho=rho, C3=C3, series=series, radius=radius, s_off=s_off, F=F, K=K)


def activation_complements(Z, act_off, hidden):
    """Per unit and sample of a tanh or sigmoid layer, what :func:`_act_change` needs besides
    f(z) (in A): sech(z)**2, respectively sigmoid(-z); 0 elsewhere. Same layout as Z."""
    F = np.zeros(int(act_off[-1]))
    for l, name in enumerate(hidden, start=1):
        if name not in ("tanh", "sigmoid"):
            continue
        z = Z[act_off[l] : act_off[l + 1]]
        with np.errstate(over="ignore"):
            if name == "tanh":
                F[act_off[l] : act_off[l + 1]] = 1.0 / np.cosh(z) ** 2
            else:
                F[act_off[l] : act_off[l + 1]] = 1.0 / (1.0 + np.exp(z))
    return F


#: Behind a tanh or sigmoid layer the outputs move by ``V1 s + V2 s**2 + V3 s**3`` for a change
#: s of a unit, as long as every later smooth pre-activation moves by at most T_SMOOTH: the
#: terms left out are then of relative size ~ max|f^(4)| / 24 * T_SMOOTH**3 < 1e-18, below
#: rounding (|tanh^(4)| < 4.1, |sigmoid^(4)| < 1/8).
T_SMOOTH = 2.0**-20


def _taylor_coefficients(name, z, alpha):
    """``(f'(z), f^(2)(z)/2, f^(3)(z)/6)`` of a hidden activation, elementwise (None: zero)."""
    if name == "relu":
        return (z > 0.0).astype(np.float64), None, None
    if name == "leaky_relu":
        return np.where(z > 0.0, 1.0, alpha), None, None
    if name == "tanh":
        f = np.tanh(z)
        with np.errstate(over="ignore"):
            f1 = 1.0 / np.cosh(z) ** 2  # 1 - tanh**2 without cancellation
        return f1, -f * f1, -f1 * (f1 - 2.0 * f * f) / 3.0
    if name == "sigmoid":
        with np.errstate(over="ignore"):
            s = 1.0 / (1.0 + np.exp(-z))
            sbar = 1.0 / (1.0 + np.exp(z))
        s1 = s * sbar
        return s1, s1 * (sbar - s) / 2.0, s1 * (1.0 - 6.0 * s1) / 6.0
    return np.ones_like(z), None, None


def _series(Z, act_off, weights, sizes, hidden, alpha, m, bound, bound_off, v_off, V):
    """For hidden layers with a tanh or sigmoid layer after them: the coefficients (V1, V2, V3)
    of the outputs' change in a unit's change s, side by side in ``C3`` (``C3[3 (v + o) + k]``
    for V's index v + o; one cache line per output, forward-mode Taylor propagation in chunks
    of samples), the flags ``series[l]`` and per unit the largest |s| the expansion is exact
    for (``radius[s_off[l] + r]``, infinite where no smooth layer follows)."""
    v_size = V.size
    n_layers = len(sizes) - 1
    n_out = int(sizes[-1])
    series = np.zeros(n_layers + 1, dtype=np.int64)
    s_off = np.zeros(n_layers + 1, dtype=np.int64)
    s_off[1:] = np.cumsum([0] + [int(n) for n in sizes[1:-1]])[: n_layers]
    radius = np.full(max(int(sum(int(n) for n in sizes[1:-1])), 1), np.inf)
    smooth = [name in ("tanh", "sigmoid") for name in hidden]
    needs = [l for l in range(1, n_layers - 1) if any(smooth[l:])]
    if not needs:
        return np.zeros(3), series, radius, s_off
    C3 = np.zeros(3 * v_size)
    for l in needs:
        series[l] = 1
        n_l = int(sizes[l])
        # |dz_q| <= bound_{q<-l}[:, r] |s| for every later layer q: the smooth ones set r's radius.
        largest = np.zeros(n_l)
        for q in range(l + 1, n_layers):
            if smooth[q - 1]:
                B = bound[bound_off[l, q] : bound_off[l, q] + int(sizes[q]) * n_l]
                largest = np.maximum(largest, B.reshape(int(sizes[q]), n_l).max(axis=0))
        with np.errstate(divide="ignore"):
            radius[s_off[l] : s_off[l] + n_l] = T_SMOOTH / largest
        chunk = max(1, (1 << 20) // max(1, n_l * int(max(sizes[1:]))))
        C3_l = C3[3 * v_off[l] : 3 * (v_off[l] + n_l * m * n_out)].reshape(n_l, m, n_out, 3)
        C3_l[..., 0] = V[v_off[l] : v_off[l] + n_l * m * n_out].reshape(n_l, m, n_out)
        for start in range(0, m, chunk):
            cols = slice(start, min(m, start + chunk))
            k = cols.stop - cols.start
            A1 = np.repeat(weights[l + 1][:, :, None], k, axis=2)
            A2 = np.zeros_like(A1)
            A3 = np.zeros_like(A1)
            for q in range(l + 1, n_layers):
                z = Z[act_off[q] : act_off[q + 1]].reshape(int(sizes[q]), m)[:, None, cols]
                D1, D2, D3 = _taylor_coefficients(hidden[q - 1], z, alpha)
                B1 = D1 * A1
                B2 = D1 * A2
                B3 = D1 * A3
                if D2 is not None:
                    B2 = B2 + D2 * A1 * A1
                    B3 = B3 + 2.0 * D2 * A1 * A2 + D3 * A1 * A1 * A1
                W = weights[q + 1]
                A1, A2, A3 = ((W @ B.reshape(int(sizes[q]), -1)).reshape(W.shape[0], n_l, k)
                              for B in (B1, B2, B3))
            C3_l[:, cols, :, 1] = A2.transpose(1, 2, 0)
            C3_l[:, cols, :, 2] = A3.transpose(1, 2, 0)
    return C3, series, radius, s_off


#: A sample's loss change is the composed cubic of :func:`_composed` while every output moves by
#: at most T_COMPOSED: the terms of degree 4 and more left out are then bounded by the ``B s**4``
#: carried with it (and are below rounding in practice, ~T_COMPOSED**3 relative).
T_COMPOSED = 2.0**-20

#: Per (hidden unit, sample) record of :func:`_composed`: a1, a2, a3, M1, M2, M3, B, limit.
K_FIELDS = 8


def _composed(coef, sig, V, v_off, C3, series, s_off, sizes, m, out, rho, radius, act_off):
    """Per hidden unit r of layer l and sample j, the loss change of sample j as one cubic in
    the unit's change s: ``dl(s) = s (a1 + s (a2 + s a3)) + O(B s**4)``.

    The outputs move by ``t_o = v1 s + v2 s**2 + v3 s**3`` (V, and C3 behind tanh/sigmoid
    layers); the loss change of the outputs' move is, per output kind (coefficients c1..c4 and
    p, S of :func:`_output_coefficients`),

    * sigmoid or linear: ``sum_o c1 t + c2 t**2 + c3 t**3 + c4 t**4``, so ``a1 = sum c1 v1``,
      ``a2 = sum c1 v2 + c2 v1**2``, ``a3 = sum c1 v3 + 2 c2 v1 v2 + c3 v1**3``;
    * softmax: ``sum_o d t + S (k2/2 + k3/6 + k4/24 + ...)`` (the cumulants of t under p), so
      with the centred ``u_k = v_k - p.v_k``: ``a1 = sum d v1``, ``a2 = sum d v2 + S/2 E u1**2``,
      ``a3 = sum d v3 + S E u1 u2 + S/6 E u1**3``.

    One evaluation per sample instead of one per output: the incremental engine's inner loop.
    ``M1..M3`` are the sums of the absolute values of the terms forming ``a1..a3`` (the scale
    of their rounding), ``B`` bounds the terms of degree 4 and more for ``|s| <= 1`` (each such
    term of the expansion with its coefficients in absolute value), and ``limit`` is the
    largest |s| (exclusive) the kernel's fast path uses it for: ``T_COMPOSED / max_o (|v1| +
    |v2| + |v3|)``, 1, ``RHO_SAFETY * rho`` (no later unit crosses its kink) and the unit's
    series ``radius``, whichever is least, so that the fast path needs one comparison.
    Layout ``K[((s_off[l] + r) m + j) K_FIELDS + field]``.
    """
    hidden_units = int(sum(int(n) for n in sizes[1:-1]))
    K = np.empty(max(hidden_units * m, 1) * K_FIELDS)  # every row is written
    # Small networks on one thread: waking the others costs more than the work.
    args = (coef, sig, V, v_off, C3, series, s_off, sizes, m, out, rho, radius, act_off, K)
    run(_composed_rows, _composed_parallel, hidden_units * m,
        int(sizes[-1]) * COMPOSED_S_PER_ELEMENT, args)
    return K


@jit
def _composed_rows(lo, hi, coef, sig, V, v_off, C3, series, s_off, sizes, m, out, rho, radius,
                   act_off, K):
    """:func:`_composed` for the (hidden unit, sample) rows lo <= row < hi, numbered layer
    after layer."""
    n_layers = sizes.shape[0] - 1
    n_out = sizes[n_layers]
    for k_row in range(lo, hi):
        l = 1
        while l + 1 < n_layers and k_row >= s_off[l + 1] * m:
            l += 1
        row = k_row - s_off[l] * m  # r m + j within layer l
        j = row % m
        curved = series[l] != 0
        base = v_off[l] + row * n_out
        a1 = a2 = a3 = M1 = M2 = M3 = B = 0.0
        reach = 0.0
        mean1 = mean2 = mean3 = 0.0
        if out == 1:
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
            if out == 1:
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
                # The logistic loss's series beyond t**4 adds at most |t|**5 / 960.
                tail = 1.0 / 960.0 if out == 0 else 0.0
                B += (abs(c2) * ((abs(v2) + abs(v3)) ** 2 + 2.0 * abs(v1 * v3))
                      + abs(c3) * (w**3 - abs(v1) ** 3) + (abs(c4) + tail) * w**4)
        if out == 1:
            B += sig[j * n_out * 2 + 1] * 3.0 * var_u * var_u / 8.0
        q = k_row * K_FIELDS
        K[q] = a1
        K[q + 1] = a2
        K[q + 2] = a3
        K[q + 3] = M1
        K[q + 4] = M2
        K[q + 5] = M3
        K[q + 6] = B
        limit = min(1.0, T_COMPOSED / reach) if reach > 0.0 else 1.0
        limit = min(limit, RHO_SAFETY * rho[act_off[l] + row], radius[s_off[l] + row // m])
        K[q + 7] = limit


@jit(parallel=True)
def _composed_parallel(start, stop, n_chunks, n_workers, schedule, coef, sig, V, v_off, C3,
                       series, s_off, sizes, m, out, rho, radius, act_off, K):
    """:func:`_composed_rows` over chunks of the rows claimed by ``n_workers`` threads."""
    n = stop - start
    for w in prange(n_workers):
        ch = claim(schedule, w, n_chunks)
        while ch < n_chunks:
            _composed_rows(start + ch * n // n_chunks, start + (ch + 1) * n // n_chunks, coef,
                           sig, V, v_off, C3, series, s_off, sizes, m, out, rho, radius,
                           act_off, K)
            ch = claim(schedule, w, n_chunks)


@jit(inline=True)
def _triple(V, C3, curved, v):
    """``(v1, v2, v3)`` of V's index v: from C3 behind a tanh/sigmoid layer, else ``(V, 0, 0)``."""
    if curved:
        return C3[3 * v], C3[3 * v + 1], C3[3 * v + 2]
    return V[v], 0.0, 0.0


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
    if abs(t) > T_OVERFLOW:
        # That form's expm1 may overflow (z > 0 moved down, z < 0 up; an exact cost can stay
        # finite there): log(sbar + s e^t) = t + log(s + sbar e^-t), sums of positive terms,
        # the one whose exponential is below 1.
        if t < 0.0:
            change = math.log(sbar + s * math.exp(t))
        else:
            change = t + math.log(s + sbar * math.exp(-t))
        return change - y * t, 8.0 * _U * (abs(change) + abs(t))
    if s <= 0.5:
        change = math.log1p(s * math.expm1(t))
        scale = abs(y * t)  # the subtraction below
    else:
        # The addition cancels where the output ends near its start (t = -40 from z = 0.3):
        # its rounding is relative to |t|, not to the change.
        change = t + math.log1p(sbar * math.expm1(-t))
        scale = abs(t)
    value = change - y * t
    return value, 8.0 * _U * (abs(change) + scale)


@jit(inline=True)
def _cubic(v1, v2, v3, s):
    """``((v3 s + v2) s + v1) s``: an output's move behind a tanh or sigmoid layer."""
    return (v1 + s * (v2 + s * v3)) * s


@jit(inline=True)
def _act_change(code, z, dz, slope, a, b):
    """``(f(z + dz) - f(z), crossed)`` for ReLU (code 0), leaky ReLU (1, ``slope`` below 0),
    tanh (2), sigmoid (3) or linear (4), formed without cancellation: the exact change where
    no kink is crossed. For tanh ``tanh(dz) b / (1 + a tanh(dz))`` with ``a = tanh(z)``,
    ``b = sech(z)**2``; for the sigmoid ``a b e / (1 + a e)``, ``e = expm1(dz)``, with
    ``a = sigmoid(z)``, ``b = sigmoid(-z)`` (a and b come from the unperturbed pass, see
    :func:`prepare`): the addition theorems, which never subtract nearly equal values. For
    |dz| <= 2**-15 tanh(dz) and expm1(dz) are their series to dz**3 and dz**4 (the next terms,
    2 dz**4 / 15 and dz**4 / 120 relative, are below 2e-19): no transcendental function per
    sample."""
    if code == 4:
        return dz, False
    if code == 2 or code == 3:
        if abs(dz) > 1.0:
            # A change this large (a huge step, unscaled inputs) has nothing to cancel: the
            # plain difference, which also survives the overflow of the formulas below.
            if code == 2:
                return math.tanh(z + dz) - math.tanh(z), False
            return 1.0 / (1.0 + math.exp(-(z + dz))) - 1.0 / (1.0 + math.exp(-z)), False
        small = abs(dz) <= 2.0**-15
        if code == 2:
            td = dz * (1.0 - dz * dz / 3.0) if small else math.tanh(dz)
            return td * b / (1.0 + a * td), False
        e = dz * (1.0 + dz * (0.5 + dz * (1.0 / 6.0 + dz / 24.0))) if small else math.expm1(dz)
        return a * b * e / (1.0 + a * e), False
    zn = z + dz
    if z > 0.0:
        if zn > 0.0:
            return dz, False
        return (slope * zn - z if code == 1 else -z), True
    if zn > 0.0:
        return (zn - slope * z if code == 1 else zn), True
    return (slope * dz if code == 1 else 0.0), False


@jit(inline=True)
def _softmax_change(coef, sig, j, n_out, tvec):
    """Change of a softmax cross-entropy loss when the outputs move by ``tvec``; (value, err).

    ``S (LSE(z + t) - LSE(z)) - y . t`` with ``LSE(z + t) - LSE(z) = K(t) = log sum_o p_o e^t_o``,
    the cumulant generating function of t under p: ``kappa1 + kappa2/2 + kappa3/6 + kappa4/24
    + O(t**5)`` (kappa1 = p.t, then the central moments), exact to rounding for small t, with
    ``S kappa1 - y . t`` formed from the accurate ``S p - y`` (:func:`_output_coefficients`);
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
def _sample_change(out, coef, sig, Y, j, n_out, tvec):
    """Loss change of sample j when its output pre-activations move by ``tvec``; (value, err)
    for the sigmoid (0, :func:`_loss_change`), softmax (1) or linear (2) output."""
    if out == 1:
        return _softmax_change(coef, sig, j, n_out, tvec)
    total = 0.0
    error = 0.0
    for o in range(n_out):
        t = tvec[o]
        if t == 0.0:
            continue
        k = (j * n_out + o) * 4
        if out == 2:
            c1 = coef[k]
            total += t * (c1 + 0.5 * t)
            error += 4.0 * _U * (abs(c1 * t) + t * t)
        else:
            q = (j * n_out + o) * 2
            v, e = _loss_change(coef[k], coef[k + 1], coef[k + 2], coef[k + 3], sig[q],
                                sig[q + 1], Y[o, j], t)
            total += v
            error += e
    return total, error


@jit
def _propagate(theta, sizes, w_off, act_off, Z, A, F, coef, sig, Y, l, r, j, da, cur, nxt,
               acts, slope, out):
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
            u = act_off[q] + k * m + j
            change, crossed = _act_change(acts[q], Z[u], cur[k], slope, A[u], F[u])
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
    total, error = _sample_change(out, coef, sig, Y, j, sizes[n_layers], cur)
    return total, error, crossings


@jit
def _deltas_range(lo, hi, idx, theta, sizes, w_off, b_off, act_off, A, Z, Y, coef, sig, V, v_off,
                  rho, epsilon, dJ_plus, dJ_minus, resolution, kinks, acts, slope, out, C3,
                  series, radius, s_off, F, K):
    """For the parameters i = idx[k], lo <= k < hi, into slot k: J(theta +- eps e_i) - J(theta)
    (its data part; the L2 term's change is added by the caller), the rounding bound of their
    difference, and how many (sample, unit) kinks the two steps crossed."""
    n_layers = sizes.shape[0] - 1
    m = Y.shape[1]
    n_out = sizes[n_layers]
    max_width = 1
    for l in range(1, n_layers + 1):
        max_width = max(max_width, sizes[l])
    cur = np.empty(max_width)
    nxt = np.empty(max_width)
    tvec = np.zeros(n_out)
    for slot in range(lo, hi):
        i = idx[slot]
        l, r, c, is_bias = _locate(i, sizes, w_off, b_off)
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
                    # An output unit moves alone.
                    for o in range(n_out):
                        tvec[o] = 0.0
                    tvec[r] = dz
                    value, err = _sample_change(out, coef, sig, Y, j, n_out, tvec)
                else:
                    da, crossed = _act_change(acts[l], Z[z_row + j], dz, slope, A[z_row + j],
                                              F[z_row + j])
                    if crossed:
                        crossings += 1
                    value = 0.0
                    err = 0.0
                    if da == 0.0:
                        pass  # the unit stays inactive: nothing changes downstream
                    elif abs(da) < K[((s_off[l] + r) * m + j) * K_FIELDS + 7]:
                        # No later unit can cross, any later tanh/sigmoid layer stays within its
                        # series and the outputs move little: the loss changes by the composed
                        # cubic of _composed, one evaluation for all outputs.
                        q = ((s_off[l] + r) * m + j) * K_FIELDS
                        ad = abs(da)
                        value = da * (K[q] + da * (K[q + 1] + da * K[q + 2]))
                        err = (8.0 * _U * (n_out + 4.0)
                               * ad * (K[q + 3] + ad * (K[q + 4] + ad * K[q + 5]))
                               + K[q + 6] * (da * da) * (da * da))
                    elif (abs(da) < RHO_SAFETY * rho[z_row + j]
                          and abs(da) <= radius[s_off[l] + r]):
                        # No later unit can cross, and any later tanh/sigmoid layer stays within
                        # its series: the outputs move by V da (+ V2 da^2 + V3 da^3) exactly.
                        base = v_off[l] + (r * m + j) * n_out
                        curved = series[l] != 0
                        if out == 1:
                            # _softmax_change written out over t_o = V_o da (array arguments
                            # of an inlined helper cost more than this arithmetic).
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
                                value = first + labels * (
                                    m2 / 2.0 + m3 / 6.0 + (m4 - 3.0 * m2 * m2) / 24.0)
                                err = 8.0 * _U * (n_out + 2.0) * (
                                    magnitude + labels * (m2 + spread * spread))
                            else:
                                for o in range(n_out):
                                    tvec[o] = V[base + o] * da
                                    if curved:
                                        q3 = 3 * (base + o)
                                        tvec[o] = _cubic(C3[q3], C3[q3 + 1], C3[q3 + 2], da)
                                value, err = _softmax_change(coef, sig, j, n_out, tvec)
                        else:
                            # Written out rather than through _sample_change: scalar helpers
                            # only in the innermost loop (see _loss_change).
                            for o in range(n_out):
                                t_o = V[base + o] * da
                                if curved:
                                    q3 = 3 * (base + o)
                                    t_o = _cubic(C3[q3], C3[q3 + 1], C3[q3 + 2], da)
                                k = (j * n_out + o) * 4
                                if out == 2:
                                    c1 = coef[k]
                                    value += t_o * (c1 + 0.5 * t_o)
                                    err += 4.0 * _U * (abs(c1 * t_o) + t_o * t_o)
                                else:
                                    q = (j * n_out + o) * 2
                                    v, e = _loss_change(coef[k], coef[k + 1], coef[k + 2],
                                                        coef[k + 3], sig[q], sig[q + 1],
                                                        Y[o, j], t_o)
                                    value += v
                                    err += e
                    else:
                        value, err, later = _propagate(theta, sizes, w_off, act_off, Z, A, F,
                                                       coef, sig, Y, l, r, j, da, cur, nxt,
                                                       acts, slope, out)
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
def _deltas_parallel(start, stop, n_chunks, n_workers, schedule, idx, theta, sizes, w_off,
                     b_off, act_off, A, Z, Y, coef, sig, V, v_off, rho, epsilon, dJ_plus,
                     dJ_minus, resolution, kinks, acts, slope, out, C3, series, radius, s_off,
                     F, K):
    """:func:`_deltas_range` over ``n_chunks`` chunks of [start, stop), claimed one at a time
    by ``n_workers`` threads (see :mod:`gradcheck_fast._schedule`); each index writes only its
    own slots, so the result is the same for any thread count."""
    n = stop - start
    for w in prange(n_workers):
        ch = claim(schedule, w, n_chunks)
        while ch < n_chunks:
            _deltas_range(start + ch * n // n_chunks, start + (ch + 1) * n // n_chunks, idx,
                          theta, sizes, w_off, b_off, act_off, A, Z, Y, coef, sig, V, v_off,
                          rho, epsilon, dJ_plus, dJ_minus, resolution, kinks, acts, slope, out,
                          C3, series, radius, s_off, F, K)
            ch = claim(schedule, w, n_chunks)


def slow_fractions(prepared, sizes, m: int, epsilon: float) -> np.ndarray:
    """Per hidden layer, the share of (unit, sample) pairs whose radius is below the change a
    step of epsilon can make (|da| <= epsilon * max(1, max|A_{l-1}|)): those take the explicit
    path (the costs of :func:`gradcheck_fast.costmodel.incremental_seconds` need them)."""
    sizes = [int(s) for s in sizes]
    act_off = prepared.act_off
    fractions = np.zeros(len(sizes))
    for l in range(1, len(sizes) - 1):
        A_prev = prepared.A[act_off[l - 1] : act_off[l]]
        change = epsilon * max(1.0, float(np.max(np.abs(A_prev), initial=0.0)))
        rho = prepared.rho[act_off[l] : act_off[l + 1]].reshape(int(sizes[l]), m)
        # Behind a tanh or sigmoid layer, the series' radius per unit as well.
        radius = prepared.radius[prepared.s_off[l] : prepared.s_off[l] + int(sizes[l])]
        limit = np.minimum(RHO_SAFETY * rho, radius[:, None])
        fractions[l] = float(np.mean(limit <= change)) if limit.size else 0.0
    return fractions
