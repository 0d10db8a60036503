"""Networks with extreme weights: x1e4 and x1e5 (J ~ 1e11 and beyond, every softmax output
saturated, steps that move an output by tens) and x1e-4 (outputs near their biases).

A correct gradient is then "ok" or "unverified", never "wrong"; the incremental engine's J+- are
finite wherever the exact engine's are and within its own rounding bound of the 50-digit truth;
a NaN cost reads the same in directional mode as in the full check.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest

from gradcheck_fast import MLP, check_gradients, engines, losses, reference, validation
from tests.conftest import correct_gradients, random_network
from tests.test_incremental import _check, _true_changes

U = 2.0**-53

SOFTMAX_MODELS = [MLP(output="softmax"), MLP(hidden="leaky_relu", leaky_slope=0.2,
                                              output="softmax")]


def _scaled(sizes, m, seed, scale, model):
    """``conftest.random_network`` with weights x scale, labels fitting ``model``, and the
    correct gradients of ``reference.backward_mlp``: ``(X, Y, parameters, gradients)``."""
    X, Y, parameters = random_network(sizes, m, seed, scale)
    rng = np.random.default_rng(seed)
    if model.output == "softmax":
        Y = np.eye(sizes[-1])[:, rng.integers(sizes[-1], size=m)]
    elif model.output == "linear":
        Y = rng.standard_normal(Y.shape)
    _, cache = reference.forward_mlp(X, Y, parameters, model)
    return X, Y, parameters, reference.backward_mlp(X, Y, cache, model)


def _both_engines(parameters, X, Y, model):
    layout, theta = validation.mlp_layout_and_theta(parameters)
    X, Y = validation.check_data(X, Y, layout, model)
    return tuple(engines.mlp_costs(layout, theta, X, Y, 1e-7, engine=name, model=model)
                 for name in ("exact", "incremental"))


def _finite(costs):
    return np.isfinite(costs.J_plus) & np.isfinite(costs.J_minus)


# ---------------------------------------------------------------------------------------------
# The loss change of a saturated softmax
# ---------------------------------------------------------------------------------------------
def _softmax_cases():
    """(logits, move) pairs of 3 outputs: confident outputs pushed down by up to 800 (1 + sum
    p expm1(t) cancels, to exactly 0 below t = log u), an underflowed p_o pushed up past the
    overflow of expm1, ordinary moves on both sides of the branch point e^K = 1/2."""
    rng = np.random.default_rng(0)
    cases = [([40.0, 0.0, -3.0], [-45.0, 0.0, 0.0]), ([4e11, 1e11, 0.0], [-37.4, 0.0, 0.0]),
             ([4e11, 1e11, 0.0], [-800.0, 0.0, 0.0]), ([0.0, -750.0, 3.0], [0.0, 800.0, 0.0]),
             ([0.0, -750.0, 3.0], [0.0, 760.0, -5.0]), ([2.0, 1.0, 0.0], [-0.7, 0.1, 0.2])]
    for _ in range(40):
        z = rng.standard_normal(3) * 10.0 ** rng.uniform(-1, 12)
        t = rng.standard_normal(3) * 10.0 ** rng.uniform(-3, 3)
        cases.append((list(z), list(t)))
    return cases


def test_softmax_loss_change_is_within_its_bound_at_any_saturation():
    """losses._softmax_change against 50 digits, for every one-hot label: the value within the
    rounding bound it returns (plus the rounding of the float64 result itself, u |value|).
    Before the shifted log-sum branch, a confident output pushed down by 37.4 came out 0.67
    off (bound ~1e-14) and by 800 as -inf."""
    mpmath.mp.dps = 50
    n_out = 3
    for z, t in _softmax_cases():
        for label in range(n_out):
            Y = np.zeros((n_out, 1))
            Y[label, 0] = 1.0
            Z = np.array(z)  # one sample: output o at index o
            coef, sig = np.empty(4 * n_out), np.empty(2 * n_out)
            losses.output_coefficients(Z, 0, Y, 1, coef, sig, 1)
            value, bound = losses._softmax_change(coef, sig, 0, n_out, np.array(t))

            def loss(shift, label=label, z=z):
                u = [mpmath.mpf(a) + mpmath.mpf(b) for a, b in zip(z, shift)]
                return mpmath.log(sum(mpmath.exp(a) for a in u)) - u[label]

            exact = float(loss(t) - loss([0.0] * n_out))
            assert math.isfinite(value), (z, t, label, value)
            assert abs(value - exact) <= bound + U * abs(exact), (z, t, label, value, exact,
                                                                  bound)


def test_sigmoid_loss_change_is_within_its_bound_for_moves_past_expm1_overflow():
    """losses._bce_change (the sigmoid output's cross-entropy) for |t| up to 900 against 50
    digits: before, a confident output moved by -720 came out +inf (expm1(720) overflows),
    and z = 0.3 moved by -40 (t + log1p(...) cancelling to -0.85) 2.5 times its bound off."""
    mpmath.mp.dps = 50
    for z in (-700.0, -30.0, -2.0, 0.3, 2.0, 30.0):
        s, sbar = 1.0 / (1.0 + math.exp(-z)), 1.0 / (1.0 + math.exp(z))
        for t in (-900.0, -720.0, -705.0, -40.0, -1.5, 1.5, 40.0, 705.0, 720.0, 900.0):
            for y in (0.0, 1.0):
                value, bound = losses._bce_change(0.0, 0.0, 0.0, 0.0, s, sbar, y, t)

                def loss(u, y=y):
                    return mpmath.log1p(mpmath.exp(u)) - y * u

                exact = float(loss(mpmath.mpf(z) + t) - loss(mpmath.mpf(z)))
                assert math.isfinite(value), (z, t, y, value)
                assert abs(value - exact) <= bound + U * abs(exact), (z, t, y, value, exact)


def test_a_sigmoid_output_moved_past_expm1_overflow_stays_finite():
    """One unit at z = 30 fed by a hidden activation of 7.2e9: a step of W2 moves z by -+720.
    The seed's cost at z = -690 is finite (A = 1e-300); the incremental engine gave +inf."""
    parameters = {"W1": np.array([[7.2e9]]), "b1": np.zeros((1, 1)),
                  "W2": np.array([[30.0 / 7.2e9]]), "b2": np.zeros((1, 1))}
    X, Y = np.ones((1, 1)), np.zeros((1, 1))
    exact, incremental = _both_engines(parameters, X, Y, MLP())
    assert np.isfinite(exact.J_minus[2])  # W2's step down
    assert np.all(_finite(incremental)[_finite(exact)])
    # The change itself: softplus(-690) - softplus(30) = -30 - 9.4e-14 (to 1e-300).
    assert abs(incremental.dJ_minus[2] - (-30.000000000000094)) <= 16 * U * 30


# ---------------------------------------------------------------------------------------------
# Whole checks
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", SOFTMAX_MODELS, ids=repr)
@pytest.mark.parametrize("scale", [1e4, 1e5, 1e-4])
def test_changes_match_the_50_digit_truth(scale, model):
    """Every J(theta +- eps e_i) - J(theta) of the incremental engine within its resolution of
    the 50-digit full pass (test_incremental._check), and finite as the exact engine's are.
    Before the fix, x1e4 had changes 0.07 off (resolution 1e-13) and x1e5 spurious -inf."""
    X, Y, parameters, _ = _scaled([5, 4, 3, 2], 10, 1, scale, model)
    exact, incremental = _both_engines(parameters, X, Y, model)
    assert np.all(_finite(exact))
    assert np.all(_finite(incremental))
    _check(incremental, _true_changes(parameters, X, Y, 1e-7, model))


CHECK_MODELS = SOFTMAX_MODELS + [MLP(hidden="linear", output="softmax"),
                                 MLP(hidden="tanh", output="softmax"), MLP(output="linear")]


@pytest.mark.parametrize("scale", [1e4, 1e5, 1e-4])
def test_correct_gradients_are_never_wrong(scale):
    """Correct gradients of softmax and linear-output networks: no block "wrong" in the full
    check (either engine) nor in directional mode, and the incremental engine's J+- finite
    wherever the exact engine's are. Before the fix, x1e4 and x1e5 softmax networks had
    "wrong" blocks (incremental and directional) and x1e5 spurious non-finite J+-."""
    problems = []
    for model in CHECK_MODELS:
        for seed in range(3):
            X, Y, parameters, gradients = _scaled([6, 8, 5, 3], 20, seed, scale, model)
            for options in ({"engine": "exact"}, {"engine": "incremental"},
                            {"mode": "directional"}):
                report = check_gradients(parameters, gradients, X, Y, model=model, **options)
                if report.failed_blocks:
                    problems.append((model, seed, options, report.failed_blocks))
            exact, incremental = _both_engines(parameters, X, Y, model)
            spurious = int(np.count_nonzero(_finite(exact) & ~_finite(incremental)))
            if spurious:
                problems.append((model, seed, "non-finite J+-", spurious))
    assert not problems, problems


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_a_wrong_block_still_fails(scale):
    """dW2 doubled: "wrong" (and only dW2) in the full check and along random directions."""
    model = MLP(output="softmax")
    X, Y, parameters, gradients = _scaled([6, 8, 5, 3], 20, 0, scale, model)
    gradients["dW2"] = 2.0 * gradients["dW2"]
    for options in ({"engine": "incremental"}, {"mode": "directional"}):
        report = check_gradients(parameters, gradients, X, Y, model=model, **options)
        assert report.failed_blocks == ["dW2"], (options, report.failed_blocks)


@pytest.mark.parametrize("scale", [1e4, 1e5])
def test_directional_nonfinite_cost_is_reported_as_in_the_full_check(scale):
    """The seed's cost of a saturated sigmoid is NaN (log(1 - A) with A = 1). The full check
    reports every element non-finite and every block "unverified"; the directional check must
    do the same with its probes, not pass (x1e4, before) or fail (x1e5, before) them on the
    delta-space changes, which stay finite."""
    X, Y, parameters = random_network([5, 4, 3, 1], 10, 0, scale)
    with np.errstate(all="ignore"):  # the seed's sigmoid overflows exp on the way
        gradients = correct_gradients(X, Y, parameters)
        full = check_gradients(parameters, gradients, X, Y)
    assert math.isnan(full.cost)
    assert all(b.verdict == "unverified" and b.n_nonfinite > 0 for b in full.blocks.values())
    with np.errstate(all="ignore"):
        report = check_gradients(parameters, gradients, X, Y, mode="directional")
    assert math.isnan(report.cost)
    for name, b in report.blocks.items():
        assert b.verdict == "unverified", (name, b.verdict)
        assert b.n_nonfinite == b.n_probes and b.n_failing == 0 and b.n_kinks == 0, name
    assert not report.passed and not report.seed_passed
    assert "NaN/Inf J(theta +- eps v)" in str(report)
