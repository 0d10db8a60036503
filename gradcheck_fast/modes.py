"""Checks cheaper than every coordinate: a stratified sample, or random directions per block.

- ``sample_indices``: a seeded random sample of coordinates, every block represented (small
  blocks whole); the engine then checks exactly those coordinates.
- ``directional_probes``: k seeded random unit directions per block, comparing ``v . grad``
  with ``(J(theta + eps v) - J(theta - eps v)) / 2 eps``, so each block costs 2k evaluations
  whatever its size. The two costs are formed in delta space as in the incremental engine
  (:mod:`gradcheck_fast.engines.incremental`): the change of the perturbed layer's
  pre-activations, carried through the activations (kinks formed explicitly, curved ones
  without cancellation) and the later layers with BLAS products, into the loss without
  cancellation. Any model of the MLP family; an L2 term's share is added exactly.

Directions are normalised *per block* (a probe of W1 does not drown db3). A weight block gets
rank-one directions ``v = a b^T`` with a, b uniform on their unit spheres: the change of the
block's pre-activations is then ``eps a (b^T A)``, at the cost of a matrix-vector product, and
``v . grad = a^T G b``. A bias block gets a uniform unit vector.

How small a wrong gradient the probes catch: if the analytic block is off by E (Frobenius norm
||E||), a probe sees ``v . E``. For a bias block ``v . E ~ ||E|| Z / sqrt(n)``; for a weight
block and a rank-one E -- the pattern rank-one probes are least sensitive to -- ``v . E ~
||E|| Z1 Z2 / sqrt(n)`` with independent standard normals (n is the block size, large-n
limits). A probe misses E when ``|v . E|`` stays within its tolerance; k independent probes all
miss with probability ``F(s)^k``, F being the distribution function of ``|Z|`` or ``|Z1 Z2|``.
:func:`detectable_error` inverts that: the smallest ``||E|| / ||G||`` caught with a stated
probability.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from . import activations
from ._jit import jit
from ._threads import single_blas_thread
from .engines import incremental
from .losses import output_coefficients, sample_change
from .models import SEED_MODEL
from .options import ATOL, RTOL
from .truncation import SMALLER_STEPS, propagated_rounding, truncation_bound

#: Unit roundoff of float64.
_U = 2.0**-53


# ---------------------------------------------------------------------------------------------
# Sampled mode
# ---------------------------------------------------------------------------------------------
def sample_indices(layout, n_per_block: int, seed: int) -> np.ndarray:
    """Sorted flat indices: ``n_per_block`` distinct coordinates of each block drawn with
    ``numpy.random.default_rng(seed)``, or the whole block when it is no larger.

    Examples
    --------
    >>> from gradcheck_fast import MLPLayout
    >>> net = MLPLayout([4, 5, 3, 1])
    >>> idx = sample_indices(net, 4, seed=0)
    >>> len(idx), bool(all(i in idx for i in range(43, 47)))   # W3 (3) and b3 (1) whole
    (19, True)
    """
    rng = np.random.default_rng(seed)
    chosen = []
    for k in range(len(layout.names)):
        start, stop = int(layout.offsets[k]), int(layout.offsets[k + 1])
        size = stop - start
        if size <= n_per_block:
            chosen.append(np.arange(start, stop))
        else:
            chosen.append(start + np.sort(rng.choice(size, size=n_per_block, replace=False)))
    return np.concatenate(chosen).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Directional mode
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Probes:
    """The directional derivatives of one block along its probes."""

    analytic: np.ndarray  # v . grad, one per probe
    numerical: np.ndarray  # (J(theta + eps v) - J(theta - eps v)) / 2 eps
    noise: np.ndarray  # rounding bound of numerical
    kinks: np.ndarray  # ReLU crossings in the two steps (a probe at a kink is set aside)
    rank_one: bool  # directions a b^T (weight block) rather than a full unit vector
    size: int  # number of parameters in the block
    grad_norm: float  # ||G|| of the analytic block


def _unit_rows(rng, k: int, n: int) -> np.ndarray:
    v = rng.standard_normal((k, n))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# The probes' kernels run on one thread: their work (probes x units x samples per layer) is a
# millisecond or so even on the mnist-size network, less than a parallel region can cost when
# another process holds a core (it waits for its descheduled worker).
@jit
def _activation_changes(code, slope, z, a, f1, f2, dz_plus, dz_minus, da_plus, da_minus,
                        crossings):
    """``da = f(z + dz) - f(z)`` of a hidden layer (activation ``code``, leaky ReLU's ``slope``,
    see :func:`gradcheck_fast.activations.change`; ``z``, ``a``, ``f1``, ``f2`` its unperturbed
    pre-activations, f(z) and complements, (units, samples)): ``da_plus``, ``da_minus`` from
    ``dz_plus``, ``dz_minus`` (units, probes, samples) for both steps of every probe, without
    cancellation; counts each probe's kink crossings into ``crossings[p]``. Each probe writes
    its own slots. Returns whether any crossing happened."""
    n, k, m = dz_plus.shape
    for p in range(k):
        count = 0
        for i in range(n):
            for j in range(m):
                da, crossed = activations.change(code, z[i, j], dz_plus[i, p, j], slope,
                                                 a[i, j], f1[i, j], f2[i, j])
                da_plus[i, p, j] = da
                count += crossed
                da, crossed = activations.change(code, z[i, j], dz_minus[i, p, j], slope,
                                                 a[i, j], f1[i, j], f2[i, j])
                da_minus[i, p, j] = da
                count += crossed
        crossings[p] += count
    total = 0
    for p in range(k):
        total += crossings[p]
    return total > 0


@jit
def _loss_changes(out, coef, sig, Y, t, value, error):
    """``sum_{o, j} g_oj(t[o, p, j]) / m`` per probe p into ``value[p]``, and a bound on its
    rounding into ``error[p]``; t is ``(n_out, k, m)`` (see
    :func:`gradcheck_fast.losses.sample_change`, any output kind)."""
    n_out, k, m = t.shape
    for p in range(k):
        tvec = np.empty(n_out)
        total = 0.0
        bound = 0.0
        for j in range(m):
            for o in range(n_out):
                tvec[o] = t[o, p, j]
            v, e = sample_change(out, coef, sig, Y, j, n_out, tvec)
            total += v
            bound += e
        value[p] = total / m
        error[p] = bound / m


def _propagate(layers, l, dz_plus, codes, slope):
    """Carry ``dz`` (n_l, k, m) at layer l and its negative to the output pre-activations.

    Returns ``(t_plus, t_minus, crossings per probe)``. Through piecewise-linear layers the
    minus step is the plus step negated; once some unit crossed its kink, or behind a curved
    layer (tanh, sigmoid, ...), the two differ, and from there on their difference is carried
    as well (``da_plus + da_minus``: small and formed without cancellation, so the two steps'
    outputs differ by exactly that).
    """
    _, k, m = dz_plus.shape
    dz_minus = -dz_plus
    crossings = np.zeros(k, dtype=np.int64)
    n_layers = len(layers.weights) - 1
    symmetric = True  # dz_minus == -dz_plus exactly
    for q in range(l, n_layers):
        da_plus = np.empty_like(dz_plus)
        da_minus = np.empty_like(dz_plus)
        code = int(codes[q])
        crossed = _activation_changes(code, slope, layers.Z[q], layers.A[q], layers.F1[q],
                                      layers.F2[q], dz_plus, dz_minus, da_plus, da_minus,
                                      crossings)
        W = layers.weights[q + 1]
        n_next, n_q = W.shape
        # W @ da for every probe in one product: da is (units, probes * samples) as stored.
        dz_plus = (W @ da_plus.reshape(n_q, k * m)).reshape(n_next, k, m)
        # da_plus + da_minus is 0 while both steps are symmetric and the layer is piecewise
        # linear with no kink crossed; after that, never again.
        symmetric = symmetric and not crossed and not activations.BY_CODE[code].curved
        if not symmetric:
            asymmetry = (da_plus + da_minus).reshape(n_q, k * m)
            dz_minus = -dz_plus + (W @ asymmetry).reshape(n_next, k, m)
        else:
            dz_minus = -dz_plus
    return dz_plus, dz_minus, crossings


@dataclass(frozen=True)
class _Layers:
    """The unperturbed pass per layer q as (n_q, m) views: Z, A and the activations' two
    complements F1, F2 (:func:`~gradcheck_fast.engines.incremental.activation_complements`);
    weights[q] is W_q."""

    Z: list
    A: list
    F1: list
    F2: list
    weights: list


def _unperturbed(net, theta, X, Y, model):
    J, Z, A, act_off, weights = incremental.forward(net, theta, X, Y, model)
    F = incremental.activation_complements(Z, act_off, model.activations(net.n_layers))
    sizes, m = net.sizes, X.shape[1]

    def per_layer(flat):
        return [flat[act_off[q] : act_off[q + 1]].reshape(int(sizes[q]), m)
                for q in range(len(sizes))]

    return J, Z, act_off, _Layers(per_layer(Z), per_layer(A), per_layer(F[0]),
                                  per_layer(F[1]), weights)


def _central_difference(layers, l, codes, model, coef, sig, Y, dz, epsilon):
    """``(J(theta + eps v) - J(theta - eps v)) / 2 eps`` per probe for the change ``dz`` of
    layer l's pre-activations (L2 term aside), its rounding bound and kink crossings."""
    n_out, k, m = int(layers.Z[-1].shape[0]), dz.shape[1], dz.shape[2]
    t_plus, t_minus, crossings = _propagate(layers, l, dz, codes, model.leaky_slope)
    dJ_plus, err_plus, dJ_minus, err_minus = np.empty((4, k))
    _loss_changes(model.output_code, coef, sig, Y, t_plus, dJ_plus, err_plus)
    _loss_changes(model.output_code, coef, sig, Y, t_minus, dJ_minus, err_minus)
    numerical = (dJ_plus - dJ_minus) / (2.0 * epsilon)
    # Rounding beyond the loss evaluations: the products that formed t, each a few ulps of its
    # terms per layer crossed; bounded through the first-order magnitude of the probe,
    # sum |dl/dz| |t| / (m eps), as if every term had the same sign.
    c1 = np.abs(coef.reshape(m, n_out, 4)[:, :, 0].T)[:, None, :]  # (n_out, 1, m)
    magnitude = (c1 * np.abs(t_plus)).sum(axis=(0, 2)) / (m * epsilon)
    depth_terms = sum(int(Z.shape[0]) for Z in layers.Z[l - 1 :])
    noise = (err_plus + err_minus) / (2.0 * epsilon) + 4 * depth_terms * _U * magnitude
    return numerical, noise, crossings


def directional_probes(net, theta, grad, X, Y, epsilon: float, n_directions: int, seed: int,
                       model=SEED_MODEL, truncation: bool = False, *, atol: float = ATOL,
                       rtol: float = RTOL) -> tuple[float, dict[str, Probes]]:
    """The cost J and k = ``n_directions`` seeded probes per block, keyed by gradient name
    ('dW1', ...), for any network of the MLP family (``model``). ``truncation``: add a bound
    on the central difference's truncation error to each probe's noise (for large steps; two
    more differences per probe; atol, rtol: the elementwise tolerance it will be compared
    with, see :func:`gradcheck_fast.truncation.truncation_bound`)."""
    sizes = net.sizes
    n_layers = len(sizes) - 1
    m = X.shape[1]
    n_out = int(sizes[-1])
    codes = model.codes(n_layers)
    rng = np.random.default_rng(seed)
    with single_blas_thread():
        J, Z, act_off, layers = _unperturbed(net, theta, X, Y, model)
        coef = np.empty(m * n_out * 4)
        sig = np.empty(m * n_out * 2)
        output_coefficients(Z, int(act_off[-2]), Y, m, coef, sig, model.output_code)
        probes = {}
        for index, name in enumerate(net.names):
            l = int(name[1:])
            block = slice(int(net.offsets[index]), int(net.offsets[index + 1]))
            G = grad[block].reshape(net.shapes[index])
            n_l = int(sizes[l])
            l2_change = l2_noise = 0.0
            if name[0] == "W":
                a = _unit_rows(rng, n_directions, n_l)
                b = _unit_rows(rng, n_directions, int(sizes[l - 1]))
                analytic = np.sum((a @ G) * b, axis=1)
                bA = b @ layers.A[l - 1]  # (k, m)
                dz = (epsilon * a.T)[:, :, None] * bA[None, :, :]  # (n_l, k, m)
                if model.l2:
                    # The L2 term's central difference along a b^T, exactly: l2/m a^T W b.
                    W = layers.weights[l]
                    l2_change = model.l2 / m * np.sum((a @ W) * b, axis=1)
                    l2_noise = (4 * (W.shape[0] + W.shape[1]) * _U * model.l2 / m
                                * np.sum((np.abs(a) @ np.abs(W)) * np.abs(b), axis=1))
            else:
                v = _unit_rows(rng, n_directions, n_l)
                analytic = v @ G[:, 0]
                dz = np.broadcast_to((epsilon * v.T)[:, :, None], (n_l, n_directions, m)).copy()
            central = functools.partial(_central_difference, layers, l, codes, model, coef,
                                        sig, Y)
            data, noise, crossings = central(dz, epsilon)
            numerical = data + l2_change
            noise = noise + l2_noise
            if truncation:
                # The same directions at eps/2 and eps/4 (dz scales exactly) bound the
                # truncation error, as in the full check.
                (half, noise_half, _), (quarter, noise_quarter, _) = (
                    central(f * dz, f * epsilon) for f in SMALLER_STEPS)
                rounding = noise + 2.0 * noise_half + noise_quarter
                noise = (noise + propagated_rounding(noise, noise_half, noise_quarter)
                         + truncation_bound(data, half, quarter,
                                            atol + rtol * np.abs(numerical), rounding))
            probes["d" + name] = Probes(
                analytic=analytic, numerical=numerical, noise=noise, kinks=crossings,
                rank_one=name[0] == "W", size=G.size,
                grad_norm=float(np.linalg.norm(G)),
            )
    return J, probes


# ---------------------------------------------------------------------------------------------
# Detection power
# ---------------------------------------------------------------------------------------------
@jit
def _product_normal_cdf(s):
    """``P(|Z1 Z2| <= s)`` = E_z1[erf(s / (|z1| sqrt 2))]: the trapezoid rule over z1 in
    (0, 12] on 24,000 intervals (the integrand is bounded by the normal density and smooth;
    below z1 = 1e-6 the missing mass is < 1e-6 and erf is 1 there)."""
    n = 24000
    z_max = 12.0
    h = (z_max - 1e-6) / n
    total = 0.0
    for i in range(n + 1):
        z = 1e-6 + i * h
        value = math.sqrt(2.0 / math.pi) * math.exp(-0.5 * z * z) * math.erf(
            s / (z * math.sqrt(2.0)))
        total += value * (0.5 if i == 0 or i == n else 1.0)
    return total * h + 1e-6 * math.sqrt(2.0 / math.pi)


def _miss_probability(s: float, rank_one: bool) -> float:
    """``P(|Z| <= s)`` or, for rank-one probes, ``P(|Z1 Z2| <= s)`` (independent N(0, 1))."""
    if s <= 0.0:
        return 0.0
    if not rank_one:
        return math.erf(s / math.sqrt(2.0))
    return float(_product_normal_cdf(s))


@functools.lru_cache(maxsize=64)
def _quantile(target: float, rank_one: bool) -> float:
    """The s with ``F(s) = target`` (bisection; F is increasing)."""
    low, high = 0.0, 1.0
    while _miss_probability(high, rank_one) < target:
        high *= 2.0
    for _ in range(60):
        mid = 0.5 * (low + high)
        if _miss_probability(mid, rank_one) < target:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def detectable_error(tolerance: float, size: int, grad_norm: float, n_probes: int,
                     rank_one: bool, probability: float) -> float:
    """The smallest relative error ``||E|| / ||G||`` of a block that ``n_probes`` probes, each
    with this tolerance on ``|v . E|``, catch with ``probability`` (inf if none could).

    Examples
    --------
    A tolerance of 1e-6 on probes of a 100-element bias block with ``||G|| = 1``: all 8 miss
    with probability <= 0.001 once ``P(|Z| <= s)**8 <= 0.001``, i.e. s = 0.556, so errors
    from ``1e-6 * sqrt(100) / 0.556`` up are caught:

    >>> round(detectable_error(1e-6, 100, 1.0, 8, False, 0.999), 7)
    1.8e-05
    """
    if n_probes == 0 or grad_norm == 0.0:
        return math.inf
    s = _quantile((1.0 - probability) ** (1.0 / n_probes), rank_one)
    return tolerance * math.sqrt(size) / (s * grad_norm)
