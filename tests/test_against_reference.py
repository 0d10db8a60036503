"""Both engines and the public report against the seed's loop; the exact engine's bitwise
invariant against a full forward pass.

Tolerances are not tuned: they are the rounding bounds derived in conftest.py
(``cost_rounding_bound`` for one evaluation of J, ``gradapprox_rounding_bound`` for two
implementations' central differences). In short: each implementation's J+- is within E of the
exact value, E being first-order forward error analysis of the seed's formulas (pre-activation
sums, exp/log, the 1 - a cancellation of saturated outputs, the sums over units and samples),
whatever the summation order or BLAS; so two gradapprox differ by at most 2E / eps.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

import gradcheck_fast
from gradcheck_fast import engines, reference, validation
from gradcheck_fast._threads import n_threads_set
from gradcheck_fast.engines import exact
from gradcheck_fast.engines._common import Codes, Network
from gradcheck_fast.models import SEED_MODEL

EPSILON = 1e-7

#: (sizes, m, seed, scale): depths 1..5, widths 1..8, m 1..40, He scale <= 1 (unsaturated).
CASES = [
    ((3, 1), 1, 0, 1.0),
    ((5, 1), 40, 1, 1.0),
    ((4, 6, 1), 7, 2, 1.0),
    ((2, 3, 2), 13, 3, 0.7),
    ((4, 5, 3, 1), 3, 4, 1.0),
    ((6, 8, 4, 2), 25, 5, 0.5),
    ((3, 4, 4, 4, 1), 17, 6, 1.0),
    ((5, 6, 5, 4, 3, 1), 40, 7, 0.7),
    ((1, 1, 1, 1, 1, 1), 9, 8, 1.0),
    ((8, 2, 7, 1), 31, 9, 0.5),
    ((2, 8, 8, 3), 1, 10, 1.0),
    ((7, 3, 5, 2, 4, 2), 11, 11, 0.5),
]


#: Larger networks: more work than the "auto" engine choice keeps on the exact engine.
BIG_CASES = [
    ((30, 20, 10, 1), 64, 12, 1.0),
    ((12, 16, 16, 8, 2), 40, 13, 0.7),
]


def _case_id(case):
    sizes, m, seed, scale = case
    return f"{'-'.join(map(str, sizes))}_m{m}_s{seed}_w{scale}"


def reference_central_differences(parameters, X, Y, epsilon=EPSILON):
    """J+, J- and gradapprox by the seed's loop: a full ``reference.forward_propagation_n`` on
    explicitly perturbed copies of theta, rebuilt with the seed's ``vector_to_dictionary``."""
    theta, _ = reference.dictionary_to_vector(parameters)
    shapes = {key: value.shape for key, value in parameters.items()}
    P = theta.shape[0]
    J_plus, J_minus = np.empty(P), np.empty(P)
    for i in range(P):
        thetaplus = np.copy(theta)
        thetaplus[i][0] = thetaplus[i][0] + epsilon
        J_plus[i], _ = reference.forward_propagation_n(
            X, Y, reference.vector_to_dictionary(thetaplus, shapes))
        thetaminus = np.copy(theta)
        thetaminus[i][0] = thetaminus[i][0] - epsilon
        J_minus[i], _ = reference.forward_propagation_n(
            X, Y, reference.vector_to_dictionary(thetaminus, shapes))
    return J_plus, J_minus, (J_plus - J_minus) / (2 * epsilon)


def flat_gradapprox(report):
    return np.concatenate([report.gradapprox[name].ravel() for name in report.layout.grad_names])


#: (sizes, m, seed, layer, offset): a hidden pre-activation of ``layer`` at +-1e-8 for one
#: sample, so that +-1e-7 steps on the unit's bias (and on weights fed by inputs with
#: |x| > 0.1) cross the ReLU's kink.
KINK_CASES = [
    ((4, 5, 3, 1), 6, 20, 1, 1e-8),
    ((4, 5, 3, 1), 6, 21, 1, -1e-8),
    ((3, 6, 4, 2), 9, 22, 2, 1e-8),
    ((2, 3, 3, 3, 1), 1, 23, 3, -1e-8),
]


def _kink_id(case):
    sizes, m, seed, layer, offset = case
    return f"{'-'.join(map(str, sizes))}_m{m}_layer{layer}_{offset:+g}"


def kink_network(helpers, case):
    sizes, m, seed, layer, offset = case
    X, Y, parameters = helpers.random_network(sizes, m, seed, scale=0.8)
    for row in range(min(2, sizes[layer])):
        parameters = helpers.place_on_kink(X, parameters, layer, row, sample=row % m,
                                           offset=offset)
    return X, Y, parameters


# ---------------------------------------------------------------------------------------------
# gradapprox and J+- against the seed's loop
# ---------------------------------------------------------------------------------------------
def _engine_costs(X, Y, parameters, engine_name, epsilon=EPSILON):
    layout, theta = validation.mlp_layout_and_theta(parameters)
    X, Y = validation.check_data(X, Y, layout)
    return engines.mlp_costs(layout, theta, X, Y, epsilon, engine=engine_name)


def _compare_with_reference(X, Y, parameters, helpers):
    gradients = helpers.correct_gradients(X, Y, parameters)
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    J_plus, J_minus, slow = reference_central_differences(parameters, X, Y)
    tolerance = helpers.gradapprox_rounding_bound(X, Y, parameters, slow, EPSILON)
    # Not a tolerance but a guard against a vacuous bound: it must sit orders of magnitude
    # below the gradient, or a wrong gradapprox could hide in it. (It grows with depth and
    # width through gamma_D Zabs: ~1e-4 relative for the 4-layer 16-wide case.)
    assert np.max(tolerance) < 1e-3 * np.max(np.abs(slow))
    # The public report (whichever engine it chose), per block by name: a block mix-up that a
    # flat comparison would hide shows here.
    offsets = report.layout.offsets
    for k, name in enumerate(report.layout.grad_names):
        s = slice(int(offsets[k]), int(offsets[k + 1]))
        assert report.gradapprox[name].shape == parameters[name[1:]].shape
        excess = np.abs(report.gradapprox[name].ravel() - slow[s]) - tolerance[s]
        assert np.all(excess <= 0), (name, int(np.argmax(excess)), float(np.max(excess)))
    # Each engine. The incremental one forms J+- - J from the changes, without cancellation:
    # it is at least as close to the exact central difference as the seed's loop, so the same
    # bound applies.
    E, J = helpers.cost_rounding_bound(X, Y, parameters)
    for engine_name in ("exact", "incremental"):
        costs = _engine_costs(X, Y, parameters, engine_name)
        excess = np.abs(costs.gradapprox - slow) - tolerance
        assert np.all(excess <= 0), (engine_name, int(np.argmax(excess)), float(np.max(excess)))
        # The costs themselves: each evaluation is within E of the exact value; E moves by a
        # relative O(epsilon) between theta and theta +- eps e_i: factor 1.01.
        assert abs(costs.J - J) <= 2 * E
        assert np.all(np.abs(costs.J_plus - J_plus) <= 1.01 * 2 * E), engine_name
        assert np.all(np.abs(costs.J_minus - J_minus) <= 1.01 * 2 * E), engine_name
        if engine_name == report.engine:
            assert report.cost == costs.J
            assert flat_gradapprox(report).tobytes() == costs.gradapprox.tobytes()


@pytest.mark.parametrize("case", CASES + BIG_CASES, ids=_case_id)
def test_gradapprox_matches_reference_loop(case, helpers):
    sizes, m, seed, scale = case
    X, Y, parameters = helpers.random_network(sizes, m, seed, scale=scale)
    _compare_with_reference(X, Y, parameters, helpers)


@pytest.mark.parametrize("case", KINK_CASES, ids=_kink_id)
def test_gradapprox_matches_reference_loop_across_relu_kinks(case, helpers):
    X, Y, parameters = kink_network(helpers, case)
    _compare_with_reference(X, Y, parameters, helpers)


@pytest.mark.parametrize("epsilon", [1e-5, 1e-3, 0.1, 0.5])
def test_both_engines_match_reference_loop_for_large_steps(epsilon, helpers):
    # Large steps cross ReLU kinks and leave the small-t series of the incremental engine.
    # E is no longer the same at theta and theta +- eps e_i, so the bound is evaluated at each
    # perturbed point: |J+-_fast - J+-_ref| <= 2 E(theta +- eps e_i), hence
    # |gradapprox_fast - gradapprox_ref| <= (2 E+ + 2 E-) / (2 eps) + 2u |gradapprox|.
    X, Y, parameters = helpers.random_network((4, 6, 5, 2), 15, 60, scale=1.0)
    parameters = helpers.place_on_kink(X, parameters, 2, 1, 3, 1e-8)
    J_plus, J_minus, slow = reference_central_differences(parameters, X, Y, epsilon)
    theta, _ = reference.dictionary_to_vector(parameters)
    shapes = {key: value.shape for key, value in parameters.items()}
    E_plus, E_minus = np.empty_like(slow), np.empty_like(slow)
    for i in range(theta.shape[0]):
        for sign, out in ((1, E_plus), (-1, E_minus)):
            stepped = theta.copy()
            stepped[i, 0] = stepped[i, 0] + sign * epsilon
            out[i], _ = helpers.cost_rounding_bound(
                X, Y, reference.vector_to_dictionary(stepped, shapes))
    tolerance = (2 * E_plus + 2 * E_minus) / (2 * epsilon) + 2 * 2.0**-53 * np.abs(slow)
    kinks = {}
    for engine_name in ("exact", "incremental"):
        costs = _engine_costs(X, Y, parameters, engine_name, epsilon)
        assert np.all(np.abs(costs.J_plus - J_plus) <= 2 * E_plus), engine_name
        assert np.all(np.abs(costs.J_minus - J_minus) <= 2 * E_minus), engine_name
        excess = np.abs(costs.gradapprox - slow) - tolerance
        assert np.all(excess <= 0), (engine_name, int(np.argmax(excess)), float(np.max(excess)))
        kinks[engine_name] = costs.kinks
    # Both engines count the same (sample, hidden unit) kink crossings, and the placed unit
    # (pre-activation 1e-8) is crossed by every step here.
    np.testing.assert_array_equal(kinks["exact"], kinks["incremental"])
    assert np.any(kinks["exact"] > 0)


def test_reference_gradapprox_helper_reproduces_the_seed_difference(helpers):
    # The loop above is the seed's: on the published case it gives the published number.
    X, Y, parameters = helpers.seed_case()
    gradients = helpers.faulty_gradients(X, Y, parameters)
    _, _, gradapprox = reference_central_differences(parameters, X, Y)
    grad = reference.gradients_to_vector(gradients).ravel()
    difference = np.linalg.norm(grad - gradapprox) / (np.linalg.norm(grad)
                                                       + np.linalg.norm(gradapprox))
    assert difference == pytest.approx(0.2850931568, abs=1e-9)


def test_rounding_bound_is_not_vacuous(helpers):
    # The bound must be positive and grow with the cost's conditioning (saturation).
    X, Y, parameters = helpers.random_network((4, 5, 1), 8, 3, scale=0.5)
    E_small, _ = helpers.cost_rounding_bound(X, Y, parameters)
    saturated = {k: 8 * v for k, v in parameters.items()}
    E_large, _ = helpers.cost_rounding_bound(X, Y, saturated)
    assert 0 < E_small < 1e-13
    assert E_large > E_small


# ---------------------------------------------------------------------------------------------
# The exact engine's invariant: each J+- is bitwise a full forward pass at the perturbed theta.
# (The incremental engine forms J+- = J + change instead: equal up to rounding, checked above.)
# ---------------------------------------------------------------------------------------------
def _full_pass_costs(layout, theta, X, Y, epsilon, model=SEED_MODEL):
    network = tuple(Network.of(layout, X.shape[1]))
    codes = tuple(Codes.of(model, layout.n_layers))
    J_plus = np.empty_like(theta)
    J_minus = np.empty_like(theta)
    for i in range(theta.shape[0]):
        perturbed = theta.copy()
        perturbed[i] = theta[i] + epsilon
        J_plus[i] = exact._cost(perturbed, network, X, Y, codes)
        perturbed[i] = theta[i] - epsilon
        J_minus[i] = exact._cost(perturbed, network, X, Y, codes)
    J = exact._cost(theta, network, X, Y, codes)
    return J, J_plus, J_minus


def _assert_bitwise(actual, expected):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    mismatch = actual.view(np.uint64) != expected.view(np.uint64)
    assert not mismatch.any(), (np.flatnonzero(mismatch)[:5], actual[mismatch][:5],
                                expected[mismatch][:5])


def _check_engine_bitwise(X, Y, parameters, epsilon=EPSILON, n_threads=None):
    layout, theta = validation.mlp_layout_and_theta(parameters)
    X, Y = validation.check_data(X, Y, layout)
    with n_threads_set(n_threads):
        costs = engines.mlp_costs(layout, theta, X, Y, epsilon, engine="exact")
    J, J_plus, J_minus = _full_pass_costs(layout, theta, X, Y, epsilon)
    _assert_bitwise(costs.J, J)
    _assert_bitwise(costs.J_plus, J_plus)
    _assert_bitwise(costs.J_minus, J_minus)
    return layout, theta, costs


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_engine_costs_bitwise_equal_full_forward_pass(case, helpers):
    sizes, m, seed, scale = case
    X, Y, parameters = helpers.random_network(sizes, m, seed, scale=scale)
    _check_engine_bitwise(X, Y, parameters)


@pytest.mark.parametrize("case", KINK_CASES, ids=_kink_id)
def test_engine_costs_bitwise_equal_across_relu_kinks(case, helpers):
    X, Y, parameters = kink_network(helpers, case)
    layer = case[3]
    layout, theta, _ = _check_engine_bitwise(X, Y, parameters)
    # The case really crosses a kink: stepping b_layer[0] by +-epsilon switches unit 0 of that
    # layer on at one sample and off at the other step (seen by the seed's own formulas).
    i = int(layout.offsets[2 * (layer - 1) + 1])  # flat index of b_layer[0, 0]
    on = []
    for sign in (+1, -1):
        perturbed = theta.copy()
        perturbed[i] += sign * EPSILON
        stepped = layout.unpack(perturbed)
        A_prev = helpers.hidden_activations(X, stepped, layer - 1)
        on.append((stepped[f"W{layer}"] @ A_prev + stepped[f"b{layer}"])[0] > 0)
    assert np.any(on[0] != on[1])


@pytest.mark.parametrize("epsilon", [1e-7, 1e-4, 2.0**-20, 0.3])
def test_engine_bitwise_for_other_steps(epsilon, helpers):
    X, Y, parameters = helpers.random_network((3, 4, 3, 2), 10, 30, scale=1.0)
    _check_engine_bitwise(X, Y, parameters, epsilon=epsilon)


def test_engine_bitwise_with_saturated_outputs(helpers):
    # Large weights: outputs at 1 - 1e-12 and beyond, where log(1 - a) cancels. The engine must
    # still reproduce the full pass bit for bit (including inf costs if a == 1 exactly).
    X, Y, parameters = helpers.random_network((4, 6, 5, 2), 12, 31, scale=6.0)
    _check_engine_bitwise(X, Y, parameters)


def test_engine_bitwise_on_the_parallel_path(helpers):
    # parameters x samples >= engines._SERIAL_WORK (few parameters, many samples keeps the
    # full-pass loop below cheap): the prange path runs when more than one thread is allowed,
    # the serial one with n_threads=1. Both must be the full pass's bits.
    sizes = (6, 5, 4, 1)
    n_params = 5 * 7 + 4 * 6 + 5
    m = -(-engines._SERIAL_WORK // n_params)
    X, Y, parameters = helpers.random_network(sizes, m, 32, scale=1.0)
    parameters = helpers.place_on_kink(X, parameters, 1, 0, 5, 1e-8)
    layout, theta = validation.mlp_layout_and_theta(parameters)
    assert layout.n_params == n_params and n_params * m >= engines._SERIAL_WORK
    X, Y = validation.check_data(X, Y, layout)
    J, J_plus, J_minus = _full_pass_costs(layout, theta, X, Y, EPSILON)
    for n_threads in (1, numba.config.NUMBA_NUM_THREADS):
        with n_threads_set(n_threads):
            costs = engines.mlp_costs(layout, theta, X, Y, EPSILON, engine="exact")
        _assert_bitwise(costs.J, J)
        _assert_bitwise(costs.J_plus, J_plus)
        _assert_bitwise(costs.J_minus, J_minus)


def test_engine_bitwise_with_several_outputs_and_one_sample(helpers):
    X, Y, parameters = helpers.random_network((2, 3, 4), 1, 33, scale=1.0)
    _check_engine_bitwise(X, Y, parameters)
    X, Y, parameters = helpers.random_network((5, 3), 6, 34, scale=1.0)  # depth 1
    _check_engine_bitwise(X, Y, parameters)
