"""The registries of hidden activations and of outputs with their losses: every entry against
50-digit arithmetic (tests/registry_data.py), every field an engine relies on (value, exact
change, complements, Taylor coefficients, gain and fourth-derivative bounds, kink flag, NumPy
forward and derivative; a loss's per-sample value, coefficients and change with their rounding
bounds), and unknown codes raising instead of falling through. The engine-level tests
(test_models, test_incremental) iterate over the same registries."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

from gradcheck_fast import MLP, activations, losses, models
from tests.registry_data import ACTIVATIONS, LOSSES

U = 2.0**-53
SLOPE = 0.2  # leaky ReLU's, where an entry needs one
mpmath.mp.dps = 50

NAMES = tuple(activations.REGISTRY)
OUTPUTS = tuple(losses.REGISTRY)

#: Pre-activations: both tails, the neighbourhood of 0 (the kink), GELU's minimum
#: (-0.7518, where f' = 0) and ordinary values.
Z_GRID = (-30.0, -8.0, -3.0, -1.2, -0.7517915, -0.1, -1e-9, 0.0, 1e-9, 0.1, 0.5, 1.3, 3.0, 8.0,
          30.0)
#: Changes in every regime of the change formulas: the series (|dz| <= 2**-15), around its
#: edge, the addition theorems / integrals (up to 1) and the plain difference beyond.
DZ_GRID = tuple(sign * d for d in (1e-12, 1e-7, 2.0**-15, 1.01 * 2.0**-15, 1e-3, 0.1, 0.99, 1.0,
                                   1.01, 5.0, 40.0) for sign in (1.0, -1.0))


def _mp(name, z):
    return ACTIVATIONS[name].mp(mpmath.mpf(z), SLOPE)


def _complements(entry, z):
    """(a, c1, c2) as the unperturbed pass stores them for one z."""
    Z = np.array([z])
    a = float(entry.forward(Z, SLOPE)[0])
    if entry.complements is None:
        return a, 0.0, 0.0
    c1, c2 = entry.complements(Z)
    return a, float(c1[0]) if c1 is not None else 0.0, float(c2[0]) if c2 is not None else 0.0


# ---------------------------------------------------------------------------------------------
# The registries themselves
# ---------------------------------------------------------------------------------------------
def test_every_entry_has_test_data_and_a_unique_code():
    assert set(activations.REGISTRY) == set(ACTIVATIONS), "activation without test data"
    assert set(losses.REGISTRY) == set(LOSSES), "loss without test data"
    for registry, by_code in ((activations.REGISTRY, activations.BY_CODE),
                              (losses.REGISTRY, losses.BY_CODE)):
        codes = [entry.code for entry in registry.values()]
        assert len(set(codes)) == len(codes)
        assert all(by_code[entry.code] is entry for entry in registry.values())
        assert all(name == entry.name for name, entry in registry.items())
    assert models.HIDDEN == {name: e.code for name, e in activations.REGISTRY.items()}
    assert models.OUTPUTS == {name: e.code for name, e in losses.REGISTRY.items()}


def test_a_kink_is_not_curved():
    for entry in activations.REGISTRY.values():
        assert not (entry.kink and entry.curved), entry.name
        assert (entry.taylor(np.array([0.3]), SLOPE)[1] is not None) == entry.curved, entry.name


def test_unknown_names_raise_in_python():
    with pytest.raises(ValueError, match="relu6"):
        activations.resolve("relu6", 0.01)
    with pytest.raises(ValueError, match="hinge"):
        losses.resolve("hinge")
    with pytest.raises(ValueError, match="hidden"):
        MLP(hidden="relu6")
    with pytest.raises(ValueError, match="output"):
        MLP(output="hinge")


def test_unknown_codes_raise_in_a_kernel_instead_of_falling_through():
    """Before the registry an unknown code was silently linear in the exact engine's value and
    ReLU in the incremental engine's change: two engines, two answers."""
    unknown = max(activations.BY_CODE) + 1
    with pytest.raises(ValueError, match="unknown activation code"):
        activations.value(unknown, 0.5, 0.0)
    with pytest.raises(ValueError, match="unknown activation code"):
        activations.change(unknown, 0.5, 1e-7, 0.0, 0.4, 0.0, 0.0)
    with pytest.raises(ValueError, match="unknown activation code"):
        activations.series(unknown, 0.5, 0.0, 0.4, 0.0, 0.0)
    bad = max(losses.BY_CODE) + 1
    Z = np.array([0.3, -0.2])
    Y = np.array([[1.0], [0.0]])
    coef, sig = np.empty(8), np.empty(4)
    with pytest.raises(ValueError, match="unknown loss code"):
        losses.column_loss(Z, 0, 1, 0, Y, 0, bad, -1, 0.0)
    with pytest.raises(ValueError, match="unknown loss code"):
        losses.output_coefficients(Z, 0, Y, 1, coef, sig, bad)
    losses.output_coefficients(Z, 0, Y, 1, coef, sig, losses.LINEAR_MSE)
    with pytest.raises(ValueError, match="unknown loss code"):
        losses.sample_change(bad, coef, sig, Y, 0, 2, np.array([1e-3, 0.0]))


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_value_and_forward_are_f(name):
    """The kernels' value and the NumPy forward against 50 digits: a few ulps (each is one or
    two correctly rounded library calls and an operation or two), plus the rounding of an
    internal argument (-z / sqrt 2 for GELU) amplified by f's conditioning, |z f'(z)| ulps."""
    entry = activations.REGISTRY[name]
    Z = np.array(Z_GRID)
    forward = entry.forward(Z, SLOPE)
    for z, numpy_value in zip(Z_GRID, forward):
        truth = float(_mp(name, z))
        slope = abs(z) * abs(float(_mp_derivatives(name, z, 1)[0])) if z else 0.0
        tol = 8 * U * (abs(truth) + slope) + 1e-300
        kernel = activations.value(entry.code, z, SLOPE)
        assert abs(kernel - truth) <= tol, (z, kernel, truth)
        assert abs(numpy_value - truth) <= tol, (z, numpy_value, truth)


@pytest.mark.parametrize("name", NAMES)
def test_change_is_exact_to_rounding_in_every_regime(name):
    """f(z + dz) - f(z) from the stored f(z) and complements, against 50 digits, for changes in
    every regime of the formula. Bound: 64 ulps of the change and of the terms making up
    f'(z) dz (registry_data's ``terms``: the formulas never subtract nearly equal values, so
    their rounding is relative to these, not to f); beyond |dz| = 1 the plain difference adds
    a few ulps of |f(z)| + |f(z + dz)|. A crossed kink is reported as crossed."""
    entry = activations.REGISTRY[name]
    data = ACTIVATIONS[name]
    for z in Z_GRID:
        a, c1, c2 = _complements(entry, z)
        for dz in DZ_GRID:
            value, crossed = activations.change(entry.code, z, dz, SLOPE, a, c1, c2)
            after, before = _mp(name, mpmath.mpf(z) + mpmath.mpf(dz)), _mp(name, z)
            truth = float(after - before)
            tol = 64 * U * (abs(truth) + abs(dz) * (data.terms(z, SLOPE)
                                                    + data.terms(z + dz, SLOPE)))
            if abs(dz) > activations.DZ_PLAIN:
                tol += 8 * U * (abs(float(after)) + abs(float(before)))
            assert abs(value - truth) <= tol, (z, dz, value, truth, tol)
            assert crossed == (entry.kink and (z > 0.0) != (z + dz > 0.0)), (z, dz)


def _mp_derivatives(name, z, n):
    return [mpmath.diff(lambda x: ACTIVATIONS[name].mp(x, SLOPE), mpmath.mpf(z), k)
            for k in range(1, n + 1)]


@pytest.mark.parametrize("name", NAMES)
def test_taylor_coefficients_and_derivative_are_f_derivatives(name):
    """(f', f''/2, f'''/6) and the reference's derivative against 50-digit differentiation,
    away from kinks (1e-12 relative to the largest: each is a few operations on correctly
    rounded values)."""
    entry = activations.REGISTRY[name]
    Z = np.array([z for z in Z_GRID if abs(z) > 1e-6 or not entry.kink])
    f1, f2, f3 = entry.taylor(Z, SLOPE)
    derivative = entry.derivative(Z, entry.forward(Z, SLOPE), SLOPE)
    for k, z in enumerate(Z):
        d1, d2, d3 = (float(d) for d in _mp_derivatives(name, z, 3))
        # f' may be a sum of terms that cancel (GELU near -0.75): ulps of the terms.
        terms = 16 * U * ACTIVATIONS[name].terms(z, SLOPE)
        assert math.isclose(f1[k], d1, rel_tol=1e-12, abs_tol=terms), (z, f1[k], d1)
        # The reference's derivative reads A = f(Z): tanh's 1 - A**2 and the sigmoid's
        # A (1 - A) lose up to an ulp of 1 to cancellation (~1e-16, room to 1e-15).
        assert math.isclose(derivative[k], d1, rel_tol=1e-12, abs_tol=1e-15 + terms), (z, d1)
        if entry.curved:
            # Absolute: f2, f3 carry a few ulps of their O(1) terms (sigmoid: s - sbar cancels
            # near 0), so 16 u.
            assert math.isclose(f2[k], d2 / 2, rel_tol=1e-11, abs_tol=16 * U), (z, f2[k], d2)
            assert math.isclose(f3[k], d3 / 6, rel_tol=1e-11, abs_tol=16 * U), (z, f3[k], d3)


@pytest.mark.parametrize("name", NAMES)
def test_jitted_series_is_f_derivatives_from_the_stored_complements(name):
    """The kernels' (f', f''/2, f'''/6), formed from f(z) and the complements the unperturbed
    pass stores (the layer sweep's coefficients), against 50-digit differentiation with the
    tolerances of the NumPy taylor above; the piecewise-linear ones take z's side of the kink."""
    entry = activations.REGISTRY[name]
    for z in Z_GRID:
        if entry.kink and abs(z) <= 1e-6:
            continue
        f1, f2, f3 = activations.series(entry.code, z, SLOPE, *_complements(entry, z))
        d1, d2, d3 = (float(d) for d in _mp_derivatives(name, z, 3))
        terms = 16 * U * ACTIVATIONS[name].terms(z, SLOPE)
        assert math.isclose(f1, d1, rel_tol=1e-12, abs_tol=terms), (z, f1, d1)
        assert math.isclose(f2, d2 / 2, rel_tol=1e-11, abs_tol=16 * U), (z, f2, d2)
        assert math.isclose(f3, d3 / 6, rel_tol=1e-11, abs_tol=16 * U), (z, f3, d3)
    if entry.kink:  # at the kink itself: the slope below it
        assert activations.series(entry.code, 0.0, SLOPE, 0.0, 0.0, 0.0)[0] == (
            float(entry.taylor(np.array([0.0]), SLOPE)[0][0]))


@pytest.mark.parametrize("name", NAMES)
def test_gain_and_fourth_derivative_bound_f(name):
    """gain >= |f'| and, for curved entries, fourth >= |f''''| on a fine grid over [-12, 12]
    (the radii and series limits of the incremental engine rest on these bounds)."""
    entry = activations.REGISTRY[name]
    grid = np.linspace(-12.0, 12.0, 481) + 1e-3  # off the kink at 0
    slopes = np.abs(entry.taylor(grid, SLOPE)[0])
    assert np.max(slopes) <= entry.gain(SLOPE)
    if entry.curved:
        fourth = max(abs(float(_mp_derivatives(name, z, 4)[3])) for z in grid[::4])
        assert fourth <= entry.fourth, fourth
        # T_SMOOTH's claim: the series behind the layer is exact to rounding.
        from gradcheck_fast.engines.incremental import T_SMOOTH

        assert entry.fourth / 24 * T_SMOOTH**3 < 1e-18


@pytest.mark.parametrize("name", NAMES)
def test_complex_test_data_is_the_same_function(name):
    """The complex definitions (for complex-step derivatives) agree with the 50-digit ones on
    the real axis: the test data are self-consistent."""
    Z = np.array([z for z in Z_GRID if abs(z) <= 8.0])
    values = ACTIVATIONS[name].complex(Z.astype(complex), SLOPE)
    for z, value in zip(Z, values):
        truth = float(_mp(name, z))
        # NumPy's complex exp/tanh/log and mpmath's complex erfc are accurate to a few ulps of
        # their O(1) values for |z| <= 8; 1e-14 (~90 ulps) allows for the composition.
        assert abs(value.real - truth) <= 1e-14 * max(1.0, abs(truth)), (z, value, truth)


# ---------------------------------------------------------------------------------------------
# Outputs and losses
# ---------------------------------------------------------------------------------------------
def _sample(rng, name, n_out):
    """Output pre-activations of one sample and its labels as a float column."""
    z = rng.standard_normal(n_out) * 3.0
    y = LOSSES[name].labels(rng, n_out, 1)
    if y.ndim == 1:
        y = np.eye(n_out)[:, y]
    return z, y


@pytest.mark.parametrize("name", OUTPUTS)
def test_column_loss_is_the_loss_within_its_bound(name):
    entry = losses.REGISTRY[name]
    rng = np.random.default_rng(5)
    for _ in range(20):
        z, y = _sample(rng, name, 3)
        value, bound = losses.column_loss(z, 0, 1, 0, y, 0, entry.code, -1, 0.0)
        truth = float(LOSSES[name].mp_sample([mpmath.mpf(v) for v in z],
                                             [mpmath.mpf(v) for v in y[:, 0]]))
        assert abs(value - truth) <= bound + U * abs(truth), (z, value, truth, bound)
        numpy_sum = entry.data_sum(z.reshape(3, 1), y)
        # A few roundings per output (exp, log, products, the sum of three), each relative to
        # the terms' size: |z| and O(1) for the logs; 16 ulps of their sum leaves room.
        assert abs(numpy_sum - truth) <= 16 * U * (abs(truth) + np.sum(np.abs(z)) + 1.0)


@pytest.mark.parametrize("name", OUTPUTS)
def test_sample_change_is_the_loss_change_within_its_bound(name):
    """g(t) = l(z + t) - l(z) for moves from 1e-12 to 50 (series, log1p/expm1 and shifted
    forms) against 50 digits: within the bound the function returns plus an ulp of g."""
    entry = losses.REGISTRY[name]
    rng = np.random.default_rng(6)
    n_out = 3
    for _ in range(12):
        z, y = _sample(rng, name, n_out)
        coef, sig = np.empty(4 * n_out), np.empty(2 * n_out)
        losses.output_coefficients(z, 0, y, 1, coef, sig, entry.code)
        for scale in (1e-12, 1e-6, 1e-3, 0.1, 3.0, 50.0):
            t = rng.standard_normal(n_out) * scale
            value, bound = losses.sample_change(entry.code, coef, sig, y, 0, n_out, t)
            zs = [mpmath.mpf(v) for v in z]
            ys = [mpmath.mpf(v) for v in y[:, 0]]
            moved = [a + mpmath.mpf(b) for a, b in zip(zs, t)]
            loss = LOSSES[name].mp_sample
            truth = float(loss(moved, ys) - loss(zs, ys))
            assert abs(value - truth) <= bound + U * abs(truth), (scale, value, truth, bound)


@pytest.mark.parametrize("name", OUTPUTS)
def test_reference_dZ_is_the_loss_gradient(name):
    """The reference's dZ (per sample, times m) against 50-digit differentiation of the loss."""
    entry = losses.REGISTRY[name]
    rng = np.random.default_rng(7)
    z, y = _sample(rng, name, 3)
    dZ = entry.dZ(entry.output(z.reshape(3, 1)), y)
    ys = [mpmath.mpf(v) for v in y[:, 0]]
    for o in range(3):
        def along(x, o=o):
            return LOSSES[name].mp_sample([mpmath.mpf(v) if k != o else x
                                           for k, v in enumerate(z)], ys)
        truth = float(mpmath.diff(along, mpmath.mpf(z[o])))
        # dZ = A - Y (or A S - Y) from a correctly rounded A: a few ulps of O(1) values; the
        # 50-digit derivative is exact, so 1e-14 absolute (~50 ulps of 1) is ample.
        assert math.isclose(dZ[o, 0], truth, rel_tol=1e-12, abs_tol=1e-14), (o, dZ, truth)
