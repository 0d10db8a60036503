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
neither the unchanged work nor the cancellation of two nearly equal costs is paid for. The
coordinates are then taken all at once by the layer sweep (:mod:`.layer_sweep`: the cubics,
composed further with each unit's activation, summed over the samples as products with the
inputs' powers); the per-coordinate kernel here (:func:`_deltas_range`) takes the ones it
leaves explicit, a sample of theirs being beyond its cubic's limit. Each
J+- is the full forward pass's value up to rounding (tests/test_incremental.py checks it,
kinks included), and its own rounding is relative to the change, not to J.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from numba import prange

from .. import _memory
from .._jit import jit
from .._schedule import SERIAL_SECONDS, blocked_matmul, claim, run
from .._steps import steps_taken
from ..activations import change
from ..losses import (
    COMPOSED_FIELDS,
    composed_terms,
    moved_change,
    output_coefficients,
    sample_change,
)
from ..models import SEED_MODEL
from . import exact, layer_sweep
from ._common import (
    Codes,
    Costs,
    Finish,
    Network,
    Request,
    all_indices,
    finish_slots,
    locate,
    run_kernel,
)
from .costmodel import (
    COMPOSED_S_PER_ELEMENT,
    JIT_FORWARD_MACS,
    SCAN_ALL,
    forward_macs,
    incremental_seconds,
    incremental_worst_seconds,
    radii_sample_seconds,
)

#: Unit roundoff of float64.
_U = 2.0**-53

#: A sample takes the linear path while ``|da| < RHO_SAFETY * rho``: the margin keeps the
#: "no later unit crosses" decision away from rounding of the products that decide it.
RHO_SAFETY = 0.5


# ---------------------------------------------------------------------------------------------
# What the kernels take (with Network, Codes and Request of ._common)
# ---------------------------------------------------------------------------------------------
class Bounds(NamedTuple):
    """For the radii: the reciprocals ``inverse`` of the derivative bounds ``B_{q<-l}``, which
    start at ``offsets[l, q]`` (:func:`_derivative_bounds`), per layer whether it has a kink
    (``kinked[q]``), and per unit r of layer l the smallest reciprocal over layer q's units,
    ``floor[floor_off[l, q] + r] = min_k inverse[k, r]``."""

    inverse: np.ndarray
    offsets: np.ndarray
    kinked: np.ndarray
    floor: np.ndarray
    floor_off: np.ndarray


class LossState(NamedTuple):
    """The labels ``Y`` (n_out, m) and the loss change's coefficients ``coef``, ``sig`` per
    sample and output (:func:`~gradcheck_fast.losses.output_coefficients`)."""

    Y: np.ndarray
    coef: np.ndarray
    sig: np.ndarray


class Sensitivity(NamedTuple):
    """How the outputs move with a hidden unit: ``V`` at ``v_off[l]`` (``V_l[r, j, o]``, the
    outputs' derivative with the unperturbed activation pattern), behind a curved layer the
    cubic's coefficients ``C3`` (``series[l]`` set), per unit the largest change the cubic is
    exact for (``radius[s_off[l] + r]``) and the units' offsets ``s_off``."""

    V: np.ndarray
    v_off: np.ndarray
    C3: np.ndarray
    series: np.ndarray
    radius: np.ndarray
    s_off: np.ndarray


class State(NamedTuple):
    """Everything the per-coordinate kernel reads of the unperturbed pass: ``Z``, ``A`` (flat,
    by ``act_off``), the activations' complements ``F`` (2, n_act), the fields of
    :class:`LossState` and :class:`Sensitivity`, the kink radii ``rho`` (same layout as Z) and
    the composed cubics ``K`` (:func:`_composed`). Flat: a parallel kernel cannot hand a
    nested tuple of arrays to the function its threads run (numba 0.68)."""

    Z: np.ndarray
    A: np.ndarray
    F: np.ndarray
    Y: np.ndarray
    coef: np.ndarray
    sig: np.ndarray
    V: np.ndarray
    v_off: np.ndarray
    C3: np.ndarray
    series: np.ndarray
    radius: np.ndarray
    s_off: np.ndarray
    rho: np.ndarray
    K: np.ndarray


class Changes(NamedTuple):
    """Per slot k: in ``values[:, k]`` J(theta + eps e_i) - J, J(theta - eps e_i) - J (data
    part) and the rounding bound of their difference (one array: a kernel's dispatch pays per
    array it is handed), in ``kinks[k]`` the kink crossings of the two steps."""

    values: np.ndarray
    kinks: np.ndarray


# ---------------------------------------------------------------------------------------------
# Set-up from the unperturbed pass
# ---------------------------------------------------------------------------------------------
def _radii(net, Z, m, bounds, rho):
    """``rho_l[r, j]``: how far ``a_l[r, j]`` may move before a later hidden unit could cross 0.

    For each later hidden layer q, an upper bound ``B_{q<-l}[k, r]`` of ``|d z_q[k] / d a_l[r]|``
    (``|W_{l+1}|`` for q = l + 1, exact; products of ``|W|`` beyond, which ignore the
    activation pattern and so only ever overstate) is at ``b_off[l, q]``, given here by its
    reciprocal ``inverse`` (infinite where B is 0); ``rho = min_{q, k} |z_q[k, j]| / B[k, r]``
    (infinite when no later unit depends on a_l[r]). The product with the reciprocal is within
    an ulp of the quotient, far inside the RHO_SAFETY margin; ``0 * inf`` (a unit at its kink
    that does not depend on a_l[r]) is NaN and never taken as the minimum. The innermost loop
    runs along r, contiguous in B, so it vectorises. Serial for small networks, else pieces
    of the samples on several threads (:func:`gradcheck_fast._schedule.run`).

    Layer q's units are taken in rounds of increasing ``|z_q[k, j]|`` (below 4 times the least
    one left), and the scan stops once the least ``|z_q[k, j]|`` left times ``floor[r]``
    reaches every radius so far: each unit left then gives at least that (the rounded product
    is monotone in its factors), so none could lower a radius. A minimum does not depend on
    the order: the radii are bitwise the full scan's, from the few units nearest their kinks
    (a 4096-unit layer: tens of units per sample, not 4096).
    """
    sizes = net.sizes
    seconds = radii_sample_seconds(sizes, [q for q in range(1, len(sizes) - 1)
                                           if bounds.kinked[q]])
    run(_radii_range, m, seconds, (net, Z, m, bounds, rho))


@jit
def _radii_range(lo, hi, net, Z, m, bounds, rho):
    """:func:`_radii` for the samples lo <= j < hi."""
    sizes, _, _, act_off = net
    inverse, b_off, kinked, floors, floor_off = bounds
    n_layers = sizes.shape[0] - 1
    max_width = 1
    for l in range(1, n_layers):
        max_width = max(max_width, sizes[l])
    radius = np.empty(max_width)
    size = np.empty(max_width)
    for j in range(lo, hi):
        for l in range(1, n_layers):
            n_l = sizes[l]
            radius[:n_l] = np.inf
            smallest = radius[:n_l]
            for q in range(l + 1, n_layers):
                if not kinked[q]:  # a linear layer has no kink to cross
                    continue
                base = b_off[l, q]
                n_q = sizes[q]
                for k in range(n_q):
                    size[k] = abs(Z[act_off[q] + k * m + j])
                if n_q <= SCAN_ALL:  # a narrow layer: every unit, without the rounds' tests
                    for k in range(n_q):
                        z = size[k]
                        row = inverse[base + k * n_l : base + (k + 1) * n_l]
                        for r in range(n_l):
                            value = z * row[r]
                            smallest[r] = value if value < smallest[r] else smallest[r]
                    continue
                floor = floors[floor_off[l, q] : floor_off[l, q] + n_l]
                # Rounds: the units with start <= |z| < cut, then the least |z| left
                # (``following``) decides whether any unit left could lower a radius; if so,
                # the next round takes the units below 4 * following.
                start = cut = 0.0
                while True:
                    following = np.inf
                    for k in range(n_q):
                        z = size[k]
                        if z >= cut:
                            following = min(following, z)
                        elif z >= start:
                            # Slices and a select, not offsets and a branch: LLVM vectorises
                            # this loop (4x faster on the mnist-size set-up).
                            row = inverse[base + k * n_l : base + (k + 1) * n_l]
                            for r in range(n_l):
                                value = z * row[r]
                                smallest[r] = value if value < smallest[r] else smallest[r]
                    if following == np.inf or _settled(following, floor, smallest):
                        break
                    start = cut
                    cut = 4.0 * following if following > 0.0 else _TINY
            for r in range(n_l):
                rho[act_off[l] + r * m + j] = radius[r]


#: The least positive float64: the cut that takes the units at their kinks (|z| = 0).
_TINY = 5e-324

@jit(inline=True)
def _settled(z, floor, smallest):
    """Whether ``z * floor[r] >= smallest[r]`` for every r (NaN: not), counted rather than
    broken off so that the loop vectorises."""
    short = 0
    for r in range(smallest.shape[0]):
        short += not z * floor[r] >= smallest[r]
    return short == 0


def _derivative_bounds(weights, sizes, gains):
    """The matrices ``B_{q<-l}`` of :func:`_radii` in one flat array, and their offsets
    (``gains[q]``: the largest slope of layer q's activation, 1 for ReLU and linear)."""
    n_layers = len(sizes) - 1
    b_off = np.zeros((n_layers + 1, n_layers + 1), dtype=np.int64)
    size = 0
    for l in range(1, n_layers):
        for q in range(l + 1, n_layers):
            b_off[l, q] = size
            size += int(sizes[q]) * int(sizes[l])
    bound = _memory.empty(max(size, 1))
    for l in range(1, n_layers):
        B = None
        for q in range(l + 1, n_layers):
            shape = (int(sizes[q]), int(sizes[l]))
            block = bound[b_off[l, q] : b_off[l, q] + shape[0] * shape[1]].reshape(shape)
            if B is None:
                np.abs(weights[q], out=block)
            else:
                np.matmul(np.abs(weights[q]), B, out=block)
                block *= gains[q - 1]
            B = block
    return bound, b_off


def _floors(inverse, offsets, sizes):
    """:attr:`Bounds.floor` and its offsets: per (l, q) block of ``inverse`` (``(n_q, n_l)``
    at ``offsets[l, q]``), its smallest entry in each column; none where layer q has at most
    :data:`SCAN_ALL` units (scanned whole)."""
    n_layers = len(sizes) - 1
    if all(int(n) <= SCAN_ALL for n in sizes[2:n_layers]):
        return _NO_FLOORS
    floor_off = np.zeros((n_layers + 1, n_layers + 1), dtype=np.int64)
    floors = []
    size = 0
    for l in range(1, n_layers):
        n_l = int(sizes[l])
        for q in range(l + 1, n_layers):
            if int(sizes[q]) <= SCAN_ALL:
                continue
            block = inverse[offsets[l, q] : offsets[l, q] + int(sizes[q]) * n_l]
            floors.append(block.reshape(int(sizes[q]), n_l).min(axis=0))
            floor_off[l, q] = size
            size += n_l
    return (np.concatenate(floors) if floors else np.zeros(1)), floor_off


_NO_FLOORS = (np.zeros(1), np.zeros((1, 1), dtype=np.int64))


class Prepared:
    """What the per-parameter loop reads: the unperturbed cost ``J``, the offsets ``act_off``,
    the kernels' ``network`` bundle and ``state`` (:class:`State`), whose fields read as
    attributes here too: ``Z``, ``A`` (flat, layer l at ``act_off[l]``, ``(n_l, m)`` C order;
    layer 0 of A is X), the output Taylor coefficients ``coef``/``sig``
    (:func:`~gradcheck_fast.losses.output_coefficients`), the sensitivities ``V`` at
    ``v_off[l]`` (``V_l[r, j, o] = d z_out[o, j] / d a_l[r, j]`` with the unperturbed
    activation pattern), the radii ``rho`` (:func:`_radii`), ...
    """

    def __init__(self, J: float, act_off: np.ndarray, network: Network, state: State):
        self.J = J
        self.act_off = act_off
        self.network = network
        self.state = state

    def __getattr__(self, name):
        # Only called for names that are not set above: the state's fields (and, while a copy
        # or unpickling builds the object, for names looked up before state is set).
        state = self.__dict__.get("state")
        if state is None:
            raise AttributeError(name)
        return getattr(state, name)


def forward(net, theta, X, Y, model=SEED_MODEL):
    """The unperturbed forward pass: ``(J, Z, A, act_off, weights)`` (Z and A flat by act_off,
    layer 0 of A is X, the output layer's A its Z; ``weights[l]``: W_l, a view of theta).

    A small network takes the exact engine's jitted pass (:func:`.exact.unperturbed`): below
    :data:`~.costmodel.JIT_FORWARD_MACS` multiply-adds its loops beat NumPy's cost per call
    (the small example network: 7 us against 22). Larger ones take NumPy's BLAS, in blocks
    of rows fixed by the shapes (:func:`gradcheck_fast._schedule.blocked_matmul`): call under
    :func:`gradcheck_fast._threads.single_blas_thread` for reproducible rounding.
    """
    hidden = model.activations(len(net.sizes) - 1)
    sizes, w_off, b_off = net.sizes, net.w_off, net.b_off
    m = X.shape[1]
    n_layers = len(sizes) - 1
    act_off = net.activation_offsets(m)
    weights = [None] + [theta[w_off[l] : b_off[l]].reshape(int(sizes[l]), int(sizes[l - 1]))
                        for l in range(1, n_layers + 1)]
    if forward_macs(net.size_tuple, m) <= JIT_FORWARD_MACS:
        base = exact.unperturbed(net, theta, X, Y, model)
        return base.J, base.Z, base.A, act_off, weights
    Z = np.empty(int(act_off[-1]))
    A = np.empty(int(act_off[-1]))
    A[: act_off[1]] = X.ravel()
    for l in range(1, n_layers + 1):
        n_l, n_prev = int(sizes[l]), int(sizes[l - 1])
        W = weights[l]
        b = theta[b_off[l] : b_off[l] + n_l].reshape(n_l, 1)
        Zl = Z[act_off[l] : act_off[l + 1]].reshape(n_l, m)
        blocked_matmul(W, A[act_off[l - 1] : act_off[l]].reshape(n_prev, m), Zl)
        Zl += b
        Al = A[act_off[l] : act_off[l + 1]].reshape(n_l, m)
        if l < n_layers:
            Al[...] = hidden[l - 1].forward(Zl, model.leaky_slope)
        else:
            Al[...] = Zl  # the loss reads the output pre-activations
    ZL = Z[act_off[-2] :].reshape(int(sizes[-1]), m)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        data = model.loss.data_sum(ZL, Y)
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
    hidden = model.activations(n_layers)
    J, Z, A, act_off, weights = forward(net, theta, X, Y, model)
    if not (np.isfinite(J) and np.isfinite(Z[act_off[1] :]).all()):
        return None
    coef = np.empty(m * n_out * 4)
    sig = np.empty(m * n_out * 2)
    output_coefficients(Z, int(act_off[-2]), Y, m, coef, sig, model.output_code)

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
            slope = hidden[l].taylor(z_next, alpha)[0]
            masked = (V_next * slope[:, :, None]).reshape(n_next, m * n_out)
            n_l = int(sizes[l])
            V_l = V[v_off[l] : v_off[l] + n_l * m * n_out].reshape(n_l, m * n_out)
            blocked_matmul(weights[l + 1].T, masked, V_l)
            V_next = V_l.reshape(n_l, m, n_out)

    gains = np.ones(n_layers + 1)
    kinked = np.zeros(n_layers + 1, dtype=np.int64)
    for l in range(1, n_layers):
        gains[l] = hidden[l - 1].gain(alpha)
        kinked[l] = hidden[l - 1].kink
    bound, bound_off = _derivative_bounds(weights, sizes, gains)
    rho = np.full(int(act_off[-1]), np.inf)
    with np.errstate(divide="ignore"):
        inverse = np.divide(1.0, bound, out=_memory.empty(bound.shape[0]))
    network = Network(net.sizes, net.w_off, net.b_off, act_off)
    _radii(network, Z, m, Bounds(inverse, bound_off, kinked,
                                 *_floors(inverse, bound_off, sizes)), rho)
    C3, series, radius, s_off = _series(Z, act_off, weights, sizes, hidden, alpha, m, bound,
                                        bound_off, v_off, V)
    F = activation_complements(Z, act_off, hidden)
    loss = LossState(Y, coef, sig)
    sens = Sensitivity(V, v_off, C3, series, radius, s_off)
    K = _composed(network, model.output_code, loss, sens, rho)
    state = State(Z, A, F, *loss, *sens, rho, K)
    return Prepared(J, act_off, network, state)


def activation_complements(Z, act_off, hidden):
    """Per unit and sample of each hidden layer (``hidden``: its registry entries), the two
    complements :func:`gradcheck_fast.activations.change` needs besides f(z) (in A), e.g.
    sech(z)**2 for tanh: ``F[k]`` is a ``(2, n_act)`` array in Z's layout, 0 where unused."""
    F = np.zeros((2, int(act_off[-1])))
    for l, entry in enumerate(hidden, start=1):
        if entry.complements is None:
            continue
        for k, values in enumerate(entry.complements(Z[act_off[l] : act_off[l + 1]])):
            if values is not None:
                F[k, act_off[l] : act_off[l + 1]] = values
    return F


#: Behind a tanh or sigmoid layer the outputs move by ``V1 s + V2 s**2 + V3 s**3`` for a change
#: s of a unit, as long as every later smooth pre-activation moves by at most T_SMOOTH: the
#: terms left out are then of relative size ~ max|f^(4)| / 24 * T_SMOOTH**3 < 1e-18, below
#: rounding (each registry entry's ``fourth`` bounds |f''''|; tanh's 4.1 is the largest).
T_SMOOTH = 2.0**-20


def _series(Z, act_off, weights, sizes, hidden, alpha, m, bound, bound_off, v_off, V):
    """For hidden layers with a tanh or sigmoid layer after them: the coefficients (V1, V2, V3)
    of the outputs' change in a unit's change s, side by side in ``C3`` (``C3[3 (v + o) + k]``
    for V's index v + o; one cache line per output, forward-mode Taylor propagation in chunks
    of samples), the flags ``series[l]`` and per unit the largest |s| the expansion is exact
    for (``radius[s_off[l] + r]``, infinite where no smooth layer follows)."""
    v_size = V.size
    n_layers = len(sizes) - 1
    n_out = int(sizes[-1])
    smooth = [entry.curved for entry in hidden]
    needs = [l for l in range(1, n_layers - 1) if any(smooth[l:])]
    layout_sizes = tuple(int(n) for n in sizes)
    if not needs:  # read-only and kept: a small check's set-up pays per NumPy call
        return _no_series(layout_sizes)
    _, series, radius, s_off = (array.copy() for array in _no_series(layout_sizes))
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
        Wl = np.ascontiguousarray(weights[l + 1])
        # (layer l + 1's activation is hidden[l]; a piecewise-linear one carries no curvature)
        powers = (Wl, Wl * Wl, Wl * Wl * Wl) if hidden[l].curved else (Wl, None, None)
        # The first step's coefficients are (n_{l+2}, n_l) per sample: as many samples at
        # once as 2**20 of them take (the later steps', (n_q, n_l) per sample, set ``chunk``).
        first = chunk * max(1, (1 << 20) // max(1, n_l * int(sizes[l + 2])) // chunk)
        for start in range(0, m, chunk):
            if start % first == 0:
                span = slice(start, min(m, start + first))
                series_1 = _first_step(Z, act_off, weights, sizes, hidden, alpha, m, l, span,
                                       powers)
            cols = slice(start, min(m, start + chunk))
            k = cols.stop - cols.start
            A1, A2, A3 = (A[:, :, cols.start - span.start : cols.stop - span.start]
                          for A in series_1)
            for q in range(l + 2, n_layers):
                z = Z[act_off[q] : act_off[q + 1]].reshape(int(sizes[q]), m)[:, None, cols]
                D1, D2, D3 = hidden[q - 1].taylor(z, alpha)
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


def _first_step(Z, act_off, weights, sizes, hidden, alpha, m, l, cols, powers):
    """The series' coefficients (A1, A2, A3), each (n_{l+2}, n_l, samples), after the first
    layer q = l + 1 behind layer l, for the samples ``cols``: there the unit's change enters
    layer q through the column of W_{l+1} alone, so with (D1, D2, D3) the Taylor terms of
    layer q's activation,

        A1[p, r, s] = sum_o W_{q+1}[p, o] D1[o, s] W_{l+1}[o, r]

    (and D2 with W_{l+1}**2, D3 with W_{l+1}**3; ``powers``: W_{l+1} and those, made once per
    layer): one matrix product each for the samples (the same sums the general step forms
    from repeated columns, in BLAS's order)."""
    q = l + 1
    W = weights[q + 1]
    z = Z[act_off[q] : act_off[q + 1]].reshape(int(sizes[q]), m)[:, cols]
    D1, D2, D3 = hidden[q - 1].taylor(z, alpha)
    k = D1.shape[1]
    n_l = powers[0].shape[1]

    def through(D, power):  # (p, r, s) = sum_o W[p, o] D[o, s] Wl[o, r]**power
        scaled = (W[None, :, :] * D.T[:, None, :]).reshape(k * W.shape[0], W.shape[1])
        return (scaled @ power).reshape(k, W.shape[0], n_l).transpose(1, 2, 0)

    A1 = through(D1, powers[0])
    if D2 is None:  # a piecewise-linear layer: no curvature to carry
        zeros = np.zeros_like(A1)
        return A1, zeros, zeros.copy()
    return A1, through(D2, powers[1]), through(D3, powers[2])


@functools.lru_cache(maxsize=64)
def _no_series(sizes: tuple[int, ...]):
    """:func:`_series`'s result where no curved layer follows any hidden layer (read-only):
    no coefficients, no flags, infinite radii, and the units' offsets ``s_off``."""
    n_layers = len(sizes) - 1
    s_off = np.zeros(n_layers + 1, dtype=np.int64)
    s_off[1:] = np.cumsum([0] + list(sizes[1:-1]))[:n_layers]
    arrays = (np.zeros(3), np.zeros(n_layers + 1, dtype=np.int64),
              np.full(max(sum(sizes[1:-1]), 1), np.inf), s_off)
    for array in arrays:
        array.flags.writeable = False
    return arrays


#: A sample's loss change is the composed cubic of :func:`_composed` while every output moves by
#: at most T_COMPOSED: the terms of degree 4 and more left out are then bounded by the ``B s**4``
#: carried with it (and are below rounding in practice, ~T_COMPOSED**3 relative).
T_COMPOSED = 2.0**-20

#: Per (hidden unit, sample) record of :func:`_composed`: a1, a2, a3, M1, M2, M3, B (the loss's,
#: :func:`~gradcheck_fast.losses.composed_terms`), limit.
K_FIELDS = COMPOSED_FIELDS


def _composed(net, out, loss, sens, rho):
    """Per hidden unit r of layer l and sample j, the loss change of sample j as one cubic in
    the unit's change s: ``dl(s) = s (a1 + s (a2 + s a3)) + O(B s**4)``.

    The outputs move by ``t_o = v1 s + v2 s**2 + v3 s**3`` (V, and C3 behind curved layers);
    the cubic and its bounds ``a1, a2, a3, M1, M2, M3, B`` are the loss's
    (:func:`gradcheck_fast.losses.composed_terms`). One evaluation per sample instead of one
    per output: the incremental engine's inner loop. ``limit`` is the
    largest |s| (exclusive) the kernel's fast path uses it for: ``T_COMPOSED / max_o (|v1| +
    |v2| + |v3|)``, 1, ``RHO_SAFETY * rho`` (no later unit crosses its kink) and the unit's
    series ``radius``, whichever is least, so that the fast path needs one comparison.
    Layout ``K[((s_off[l] + r) m + j) K_FIELDS + field]``.
    """
    sizes = net.sizes
    m = loss.Y.shape[1]
    hidden_units = int(sum(int(n) for n in sizes[1:-1]))
    K = np.empty(max(hidden_units * m, 1) * K_FIELDS)  # every row is written
    # Small networks on one thread: waking the others costs more than the work.
    args = (net, out, loss, sens, rho, K)
    run(_composed_rows, hidden_units * m, int(sizes[-1]) * COMPOSED_S_PER_ELEMENT, args)
    return K


@jit
def _composed_rows(lo, hi, net, out, loss, sens, rho, K):
    """:func:`_composed` for the (hidden unit, sample) rows lo <= row < hi, numbered layer
    after layer: the loss's terms per layer's share of the range
    (:func:`~gradcheck_fast.losses.composed_terms`, which leaves the outputs' reach in the
    last field), then each row's limit in place of its reach."""
    sizes, _, _, act_off = net
    _, coef, sig = loss
    V, v_off, C3, series, radius, s_off = sens
    m = loss[0].shape[1]
    n_layers = sizes.shape[0] - 1
    for l in range(1, n_layers):
        first = max(lo, s_off[l] * m)
        last = min(hi, s_off[l + 1] * m) if l + 1 < n_layers else hi
        if first >= last:
            continue
        start = s_off[l] * m
        composed_terms(out, coef, sig, V, C3, series[l] != 0, v_off[l], first - start,
                       last - start, m, K, start)
        for k_row in range(first, last):
            row = k_row - start  # r m + j within layer l
            q = k_row * K_FIELDS + 7
            reach = K[q]
            limit = min(1.0, T_COMPOSED / reach) if reach > 0.0 else 1.0
            K[q] = min(limit, RHO_SAFETY * rho[act_off[l] + row], radius[s_off[l] + row // m])


# ---------------------------------------------------------------------------------------------
# Per-coordinate evaluation
# ---------------------------------------------------------------------------------------------
@jit
def _propagate(theta, net, codes, state, l, r, j, da, cur, nxt):
    """Explicit propagation of ``a_l[r, j] += da`` to the loss of sample j, kinks included
    (``cur``, ``nxt``: scratch of the widest layer's size).

    Returns ``(loss change, rounding bound, number of later units that crossed their kink)``.
    """
    sizes, w_off, _, act_off = net
    acts, out, slope, _ = codes
    Z, A, F, Y, coef, sig, _, _, _, _, _, _, _, _ = state
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
            da, crossed = change(acts[q], Z[u], cur[k], slope, A[u], F[0, u], F[1, u])
            cur[k] = da
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
    total, error = sample_change(out, coef, sig, Y, j, sizes[n_layers], cur)
    return total, error, crossings


@jit
def _deltas_range(lo, hi, request, net, codes, state, changes):
    """For the slots lo <= k < hi of ``request`` (parameter i = ``request.idx[k]``, step
    ``request.epsilon``), into slot k of ``changes`` (:class:`Changes`): J(theta +- eps e_i) -
    J(theta) (its data part; the L2 term's change is added by the caller), the rounding bound of
    their difference, and how many (sample, unit) kinks the two steps crossed; ``state``: the
    prepared :class:`State`."""
    idx, theta, epsilon = request
    sizes, w_off, b_off, act_off = net
    acts, out, slope, _ = codes
    Z, A, F, Y, coef, sig, V, v_off, C3, series, radius, s_off, rho, K = state
    values, kinks = changes
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
        l, r, c, is_bias = locate(i, sizes, w_off, b_off)
        t = theta[i]
        d_plus, d_minus = steps_taken(t, epsilon)  # the steps the seed really takes
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
                    value, err = sample_change(out, coef, sig, Y, j, n_out, tvec)
                else:
                    da, crossed = change(acts[l], Z[z_row + j], dz, slope, A[z_row + j],
                                         F[0, z_row + j], F[1, z_row + j])
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
                        value, err = moved_change(out, coef, sig, Y, j, n_out, V, C3,
                                                  series[l] != 0, base, da, tvec)
                    else:
                        value, err, later = _propagate(theta, net, codes, state, l, r, j, da,
                                                       cur, nxt)
                        crossings += later
                if sign == 0:
                    acc_plus += value
                else:
                    acc_minus += value
                error += err
        values[0, slot] = acc_plus / m
        values[1, slot] = acc_minus / m
        values[2, slot] = error / m
        kinks[slot] = crossings


@jit(parallel=True)
def _deltas_parallel(start, stop, n_chunks, n_workers, schedule, request, net, codes, state,
                     changes):
    """:func:`_deltas_range` over ``n_chunks`` chunks of [start, stop), claimed one at a time
    by ``n_workers`` threads (see :mod:`gradcheck_fast._schedule`); each index writes only its
    own slots, so the result is the same for any thread count."""
    n = stop - start
    for w in prange(n_workers):
        worker = np.int64(w)
        ch = claim(schedule, worker, n_chunks)
        while ch < n_chunks:
            _deltas_range(start + ch * n // n_chunks, start + (ch + 1) * n // n_chunks, request,
                          net, codes, state, changes)
            ch = claim(schedule, worker, n_chunks)


def slow_fractions(prepared, sizes, m: int, epsilon: float) -> np.ndarray:
    """Per hidden layer, the share of (unit, sample) pairs whose radius is below the change a
    step of epsilon can make (|da| <= epsilon * max(1, max|A_{l-1}|)): those take the explicit
    path (the costs of :func:`gradcheck_fast.engines.costmodel.incremental_seconds` need them)."""
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


def _kernel_changes(net, theta, epsilon, prepared, codes, indices, progress):
    """``(values, kinks)`` of :class:`Changes` for the parameters ``indices`` by the
    per-coordinate kernel."""
    m = prepared.Y.shape[1]
    n = indices.shape[0]
    values = np.empty((3, n))
    kinks = np.empty(n, dtype=np.int64)
    args = (Request(indices, theta, float(epsilon)), prepared.network, codes, prepared.state,
            Changes(values, kinks))
    # The time model only decides threads and pieces: when even every sample taking the
    # explicit path would stay below the serial threshold, the decision is made already and
    # the (NumPy-bound) count of slow samples is skipped.
    worst = incremental_worst_seconds(net.size_tuple, m)
    if n * worst < SERIAL_SECONDS:
        seconds = worst
    else:
        seconds = incremental_seconds(net.sizes, m,
                                      slow_fractions(prepared, net.sizes, m, epsilon))
    run_kernel(_deltas_range, _deltas_parallel, n, seconds, args, progress)
    return values, kinks


def costs(net, theta, Y, epsilon, prepared, indices, progress=False, model=SEED_MODEL) -> Costs:
    """J and the changes J(theta +- epsilon e_i) - J for the parameters ``indices`` by the
    incremental engine, from its ``prepared`` state (:func:`prepare`): by the layer sweep
    (:mod:`.layer_sweep`), and the parameters it leaves explicit by the per-coordinate kernel."""
    m = Y.shape[1]
    n = indices.shape[0]
    p = prepared
    codes = Codes.of(model, net.n_layers)
    full = n == theta.shape[0] and (indices is all_indices(n)
                                    or np.array_equal(indices, all_indices(n)))
    # Divided by the steps really taken, fl(theta_i +- epsilon) - theta_i, not by 2 epsilon:
    # the changes are exact to rounding, so the step's own rounding (up to an ulp of theta_i,
    # ~1e-9 relative at epsilon = 1e-7) would otherwise be the largest error left. A step that
    # rounds to 0 gives 0 (J did not move), which the report marks as unverified. The changes
    # are formed directly: their rounding is what resolution bounds, no J's. The sweep
    # finishes the slots it computes (:func:`._common.finish_change`; the matrix products in
    # their assembly, while the values are at hand), the explicit ones are finished here.
    finish = Finish(float(p.J), model.l2 / (2.0 * m),
                    _is_weight(net) if model.l2 else _NO_WEIGHTS,
                    _memory.empty(n), _memory.empty(n),  # apart: a report keeps one
                    np.empty(n, dtype=np.bool_))
    values, explicit = layer_sweep.changes(net, theta, epsilon, p, model, indices, full,
                                           progress, finish)
    kinks = np.zeros(n, dtype=np.int64)
    if explicit.size:
        left, kinks[explicit] = _kernel_changes(net, theta, epsilon, p, codes,
                                                indices[explicit], progress)
        _finish_explicit(values, explicit, left, theta, indices, float(epsilon), finish)
    dJ_plus, dJ_minus, resolution = values
    return Costs(p.J, None, None, dJ_plus, dJ_minus, finish.gradapprox, resolution, kinks,
                 "incremental", indices, finish.noise, explicit=int(explicit.size),
                 finite_memo=(dJ_plus, dJ_minus, finish.finite))


def _finish_explicit(values, explicit, left, theta, indices, epsilon: float,
                     finish: Finish) -> None:
    """The explicit slots' changes ``left`` (the per-coordinate kernel's) finished
    (:func:`._common.finish_slots`) into their slots of ``values`` and ``finish``."""
    part = Finish(finish.J, finish.l2_scale, finish.weight, *(np.empty(explicit.size, dtype)
                                                               for dtype in (float, float, bool)))
    finish_slots(left, theta[indices[explicit]], epsilon, part, indices[explicit])
    values[:, explicit] = left
    finish.gradapprox[explicit] = part.gradapprox
    finish.noise[explicit] = part.noise
    finish.finite[explicit] = part.finite


_NO_WEIGHTS = np.zeros(1, dtype=np.bool_)  # no L2 term: the finish never reads it


@functools.lru_cache(maxsize=4)
def _is_weight(net) -> np.ndarray:
    """Per parameter of the layout ``net``, whether it is a weight (the L2 term's),
    read-only."""
    weight = np.zeros(net.n_params, dtype=np.bool_)
    for name, start, stop in zip(net.names, net.offsets[:-1], net.offsets[1:]):
        weight[start:stop] = name[0] == "W"
    weight.flags.writeable = False
    return weight


