"""Verdicts that must hold at any step: a correct gradient is never called wrong (large steps,
kinks of a black-box cost), a wrong one still fails."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import gradcheck_fast as gc
from gradcheck_fast import reference
from gradcheck_fast.truncation import propagated_rounding, truncation_bound

from .conftest import random_network

OUTPUTS = ("sigmoid", "softmax", "linear")


def tanh_case(seed: int):
    """A small random tanh network (widths 2-5, 1-2 hidden layers, 3-6 samples; the output
    takes turns at sigmoid, softmax, linear) and its correct gradients."""
    rng = np.random.default_rng(1000 + seed)
    sizes = tuple(int(n) for n in rng.integers(2, 6, size=int(rng.integers(3, 5))))
    X, Y, parameters = random_network(sizes, int(rng.integers(3, 7)), seed)
    model = gc.MLP(hidden="tanh", output=OUTPUTS[seed % 3])
    _, cache = reference.forward_mlp(X, Y, parameters, model)
    return X, Y, parameters, reference.backward_mlp(X, Y, cache, model), model


N_CASES = 24


# ---------------------------------------------------------------------------------------------
# Large steps (issue 9, item 6)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["full", "directional"])
@pytest.mark.parametrize("epsilon", [1e-2, 5e-2])
def test_large_steps_never_call_a_correct_gradient_wrong(epsilon, mode):
    """The truncation estimate |D(h) - D(2h)| / 3 came out below the true error by cancellation
    (a few % of networks at 1e-2, all at 5e-2): correct gradients were called wrong."""
    wrong = []
    for seed in range(N_CASES):
        X, Y, parameters, gradients, model = tanh_case(seed)
        report = gc.check_gradients(parameters, gradients, X, Y, model=model, epsilon=epsilon,
                                    mode=mode)
        if report.failed_blocks:
            wrong.append((seed, report.failed_blocks))
    assert wrong == []


@pytest.mark.parametrize("hidden", ["relu", "tanh"])
def test_the_seed_case_at_epsilon_one_has_no_wrong_block(hidden):
    X, Y, parameters = reference.seed_case()
    model = gc.MLP(hidden=hidden)
    _, cache = reference.forward_mlp(X, Y, parameters, model)
    gradients = reference.backward_mlp(X, Y, cache, model)
    report = gc.check_gradients(parameters, gradients, X, Y, model=model, epsilon=1.0)
    assert report.failed_blocks == [], report


@pytest.mark.parametrize("hidden", ["relu", "tanh"])
def test_a_directional_probe_without_a_bound_verifies_nothing(hidden):
    """At epsilon = 1 most probes' truncation has no bound (inf): a block whose probes all
    passed only within such bounds is unverified, not ok with an infinite detectable error."""
    X, Y, parameters = reference.seed_case()
    model = gc.MLP(hidden=hidden)
    _, cache = reference.forward_mlp(X, Y, parameters, model)
    gradients = reference.backward_mlp(X, Y, cache, model)
    report = gc.check_gradients(parameters, gradients, X, Y, model=model, epsilon=1.0,
                                mode="directional")
    assert report.failed_blocks == [], report
    assert not report.passed
    for name, block in report.blocks.items():
        assert block.verdict == "unverified" or np.isfinite(block.detectable_error), name


@pytest.mark.parametrize("epsilon", [1e-4, 1e-3])
def test_wrong_gradients_are_still_caught_at_large_steps(epsilon):
    """x1.1 on the last weights, db1's sign flipped, a single element of dW1 doubled: the
    right block fails (and only it), on every network."""
    for seed in range(12):
        X, Y, parameters, gradients, model = tanh_case(seed)
        last = f"dW{len(parameters) // 2}"
        single = gradients["dW1"].copy()
        single[0, 0] = 2.0 * single[0, 0] + 1e-3
        for name, wrong in ((last, {last: 1.1 * gradients[last]}),
                            ("db1", {"db1": -gradients["db1"]}),
                            ("dW1", {"dW1": single})):
            report = gc.check_gradients(parameters, dict(gradients, **wrong), X, Y, model=model,
                                        epsilon=epsilon)
            assert report.failed_blocks == [name], (seed, name, report)


def test_the_truncation_bound_holds_for_smooth_functions():
    """|D(h) - f'| <= bound + its rounding for 6 smooth functions at 2000 random points and
    steps from 1e-4 to a * h = 5, wherever a bound is claimed (inf: none claimed); and a bound is
    claimed almost everywhere at moderate steps (a h <= 0.5)."""
    functions = {
        "tanh": (np.tanh, lambda x: 1.0 / np.cosh(x) ** 2),
        "sin": (np.sin, np.cos),
        "exp": (np.exp, np.exp),
        "softplus": (lambda x: np.logaddexp(0.0, x), lambda x: 1.0 / (1.0 + np.exp(-x))),
        "log-sigmoid": (lambda x: -np.logaddexp(0.0, -x), lambda x: 1.0 / (1.0 + np.exp(x))),
        "cubic": (lambda x: x**3 - 2.0 * x, lambda x: 3.0 * x**2 - 2.0),
    }
    rng = np.random.default_rng(0)
    x = rng.uniform(-3.0, 3.0, 2000)
    a = rng.uniform(0.2, 5.0, 2000)
    for name, (f, df) in functions.items():
        for h in (1e-4, 1e-3, 1e-2, 5e-2, 0.1, 0.3, 1.0):
            def D(s, f=f):
                return (f(a * (x + s)) - f(a * (x - s))) / (2.0 * s)

            # The default elementwise tolerance (flat sequences within a tenth of it count).
            bound = truncation_bound(D(h), D(h / 2), D(h / 4), 1e-8 + 1e-6 * np.abs(D(h)))
            # Rounding: each f value within 4 ulps of max(|f|, 1) (numpy's exp/log/tanh are
            # within a few ulps; the argument a (x +- s) adds one more), so D(s) within
            # 4e-16 max(|f|, 1) / s; the bound's own rounding follows from the three.
            rounding = 4e-16 * np.maximum(np.abs(f(a * x)), 1.0) / h
            rounding = rounding + propagated_rounding(rounding, 2 * rounding, 4 * rounding)
            error = np.abs(D(h) - a * df(a * x))
            assert np.all(error <= bound + rounding), (name, h)
            if a.max() * h <= 0.5:
                # Not claimed only near points where the third derivative vanishes (tanh's
                # inflections of f'; 0.85 % of the points at a h up to 0.5).
                assert np.mean(np.isfinite(bound)) >= 0.99, (name, h)


def test_a_large_step_of_a_custom_cost_never_calls_a_correct_gradient_wrong():
    cost = numba.njit(lambda th, A: np.sum(np.tanh((A * th).sum(axis=1))))  # no BLAS in njit
    rng = np.random.default_rng(5)
    for _ in range(5):
        A = rng.standard_normal((6, 8))
        theta = rng.standard_normal(8)
        grad = A.T @ (1.0 / np.cosh(A @ theta) ** 2)
        assert gc.check(cost, theta, grad, (A,), epsilon=5e-2).failed_blocks == []
        wrong = grad.copy()
        wrong[3] *= 1.1
        assert gc.check(cost, theta, wrong, (A,), epsilon=1e-3).failed_blocks == ["dtheta"]


# ---------------------------------------------------------------------------------------------
# Kinks of a black-box cost (issue 9, item 5)
# ---------------------------------------------------------------------------------------------
def _one_layer(activation):
    """An njit cost 1/(2m) sum_j (v . act(W x_j + b) - y_j)**2 on theta = (W, b, v)."""

    @numba.njit
    def cost(theta, X, y, n_hidden):
        n_in, m = X.shape
        W = theta[: n_hidden * n_in].reshape(n_hidden, n_in)
        b = theta[n_hidden * n_in : n_hidden * (n_in + 1)]
        v = theta[n_hidden * (n_in + 1) :]
        total = 0.0
        for j in range(m):
            out = 0.0
            for k in range(n_hidden):
                z = b[k]
                for c in range(n_in):
                    z += W[k, c] * X[c, j]
                out += v[k] * activation(z)
            total += 0.5 * (out - y[j]) ** 2
        return total / m

    return cost


relu = numba.njit(lambda z: max(z, 0.0))
softplus = numba.njit(lambda z: np.log1p(np.exp(z)))


def _gradient(theta, X, y, n_hidden, derivative, activation):
    n_in, m = X.shape
    W = theta[: n_hidden * n_in].reshape(n_hidden, n_in)
    b = theta[n_hidden * n_in : n_hidden * (n_in + 1)]
    v = theta[n_hidden * (n_in + 1) :]
    Z = W @ X + b[:, None]
    residual = (v @ activation(Z) - y) / m
    dZ = np.outer(v, residual) * derivative(Z)
    return np.concatenate([(dZ @ X.T).ravel(), dZ.sum(axis=1), activation(Z) @ residual])


N_IN, N_HIDDEN, M = 3, 4, 5
#: b[1]: unit 1 sits 3e-8 from its kink on sample 2, so a step of 1e-7 crosses it.
AT_KINK = N_HIDDEN * N_IN + 1


@pytest.fixture(scope="module")
def relu_case():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((N_IN, M))
    y = rng.standard_normal(M)
    theta = rng.standard_normal(N_HIDDEN * (N_IN + 2))
    W = theta[: N_HIDDEN * N_IN].reshape(N_HIDDEN, N_IN)
    theta[AT_KINK] = 3e-8 - W[1] @ X[:, 2]
    grad = _gradient(theta, X, y, N_HIDDEN, lambda z: (z > 0).astype(float),
                     lambda z: np.maximum(z, 0.0))
    return theta, grad, (X, y, N_HIDDEN)


@pytest.mark.parametrize("compiled", [True, False], ids=["njit", "python"])
def test_a_kink_of_a_custom_cost_is_a_kink_not_a_mistake(relu_case, compiled):
    theta, grad, args = relu_case
    cost = _one_layer(relu)
    cost = cost if compiled else cost.py_func
    report = gc.check(cost, theta, grad, args)
    assert report.passed, report
    assert AT_KINK in [e.flat_index for e in report.kinks]
    assert report.blocks["dtheta"].n_kinks == len(report.kinks)


def test_a_kink_does_not_excuse_a_mistake_at_a_smooth_point(relu_case):
    theta, grad, args = relu_case
    wrong = grad.copy()
    wrong[0] *= 2.0  # W[0, 0]: unit 0 is far from its kink on every sample
    report = gc.check(_one_layer(relu), theta, wrong, args)
    assert report.failed_blocks == ["dtheta"]
    assert report.worst[0].flat_index == 0 and 0 not in [e.flat_index for e in report.kinks]


def test_a_mistake_larger_than_the_kink_can_explain_still_fails(relu_case):
    """At the kinked element itself: the kink moves the central difference by at most a few
    times what the kink statistics show; a doubled element is far beyond that."""
    theta, grad, args = relu_case
    wrong = grad.copy()
    wrong[AT_KINK] *= 2.0
    report = gc.check(_one_layer(relu), theta, wrong, args)
    assert report.failed_blocks == ["dtheta"]
    assert report.worst[0].flat_index == AT_KINK


def test_a_smooth_cost_with_a_mistake_is_not_called_a_kink(relu_case):
    """The same element of a smooth cost (softplus for ReLU), doubled: wrong, no kink."""
    theta, _, args = relu_case
    grad = _gradient(theta, *args, lambda z: 1.0 / (1.0 + np.exp(-z)),
                     lambda z: np.log1p(np.exp(z)))
    cost = _one_layer(softplus)
    assert gc.check(cost, theta, grad, args).passed
    wrong = grad.copy()
    wrong[AT_KINK] *= 2.0
    report = gc.check(cost, theta, wrong, args)
    assert report.failed_blocks == ["dtheta"] and report.kinks == ()


@numba.njit
def _quartic(theta):
    return np.sum(theta) + np.sum(theta**4)


def test_a_large_step_never_excuses_a_mistake_as_a_kink_of_a_smooth_cost():
    # sum(theta + theta**4) has no kink, but at epsilon = 0.05 its curvature differences
    # Q ~ f4 h**3 / 32 are far above rounding: before, a 3e-4 mistake (300 x rtol) was called
    # a kink and the check PASSED; at theta = 0 the central difference is even exact.
    theta = np.array([0.0, 0.01, -0.02, 0.03])
    grad = 1.0 + 4.0 * theta**3
    report = gc.check(_quartic, theta, grad + 3e-4, epsilon=0.05)
    assert not report.passed and report.failed_blocks == ["dtheta"]
    assert report.kinks == () and report.blocks["dtheta"].n_failing >= 3
    assert gc.check(_quartic, theta, grad, epsilon=0.05).blocks["dtheta"].n_kinks == 0


@numba.njit
def _l1_cost(theta, lam):
    return 50.0 + 0.5 * np.sum((theta - 1.0) ** 2) + lam * np.sum(np.abs(theta))


@pytest.mark.parametrize("lam", [1e-3, 1e-5, 3e-6])
def test_a_small_kink_never_makes_a_correct_gradient_wrong(lam):
    # An L1 penalty with weights within the step of 0 (subgradient descent leaves them
    # oscillating there): the slope jump 2 lam moves the central difference by up to lam,
    # beyond the noise bound, while the curvature differences that would show the kink can
    # sit within their rounding (J ~ 50). Before, lam = 1e-5 and 3e-6 were called wrong.
    rng = np.random.default_rng(0)
    near_zero = rng.uniform(-1, 1, 6) * 1e-7 * np.array([0.3, 0.5, 0.7, 0.9, 0.2, 0.6])
    theta = np.concatenate([near_zero, rng.normal(size=4)])
    grad = (theta - 1.0) + lam * np.sign(theta)
    block = gc.check(_l1_cost, theta, grad, (lam,)).blocks["dtheta"]
    assert block.verdict != "wrong" and block.n_failing == 0
    # A mistake of the size of the gradient is still wrong.
    wrong = grad.copy()
    wrong[7] *= 2.0
    assert gc.check(_l1_cost, theta, wrong, (lam,)).blocks["dtheta"].verdict == "wrong"
