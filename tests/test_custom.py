"""Bring your own cost: gradcheck_fast.check with an njit cost and with a Python callable."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest

import gradcheck_fast
from gradcheck_fast import reference
from gradcheck_fast.networks import random_mlp


@numba.njit
def mlp_cost(theta, X, Y, sizes):
    """The seed's network as a user would write it on a flat theta (no BLAS needed)."""
    m = X.shape[1]
    A = X.copy()
    offset = 0
    n_layers = sizes.shape[0] - 1
    for l in range(1, n_layers + 1):
        n_prev, n = sizes[l - 1], sizes[l]
        W = theta[offset : offset + n * n_prev].reshape(n, n_prev)
        offset += n * n_prev
        b = theta[offset : offset + n]
        offset += n
        Z = np.zeros((n, m))
        for r in range(n):
            for c in range(n_prev):
                w = W[r, c]
                for j in range(m):
                    Z[r, j] += w * A[c, j]
            for j in range(m):
                Z[r, j] += b[r]
        A = np.maximum(Z, 0.0) if l < n_layers else 1.0 / (1.0 + np.exp(-Z))
    total = 0.0
    for o in range(A.shape[0]):
        for j in range(m):
            total += -math.log(A[o, j]) * Y[o, j] - math.log(1.0 - A[o, j]) * (1.0 - Y[o, j])
    return total / m


def _net(sizes=(6, 5, 3, 1), m=10, seed=0, correct=True):
    X, Y, parameters, gradients = random_mlp(sizes, m, seed=seed, correct=correct)
    theta, _ = gradcheck_fast.dictionary_to_vector(parameters)
    grad = gradcheck_fast.gradients_to_vector(gradients)
    return X, Y, parameters, theta, grad, np.array(sizes)


def test_njit_cost_matches_the_built_in_check():
    X, Y, parameters, theta, grad, sizes = _net()
    report = gradcheck_fast.check(mlp_cost, theta, grad, (X, Y, sizes), layout=parameters)
    assert report.engine == "numba" and report.passed
    assert list(report.blocks) == ["dW1", "db1", "dW2", "db2", "dW3", "db3"]
    built_in = gradcheck_fast.check_gradients(parameters, reference.backward_propagation_n(
        X, Y, reference.forward_propagation_n(X, Y, parameters)[1]), X, Y, engine="exact")
    # Both are central differences of the same cost at the same steps, computed with
    # different (but each ~ulp(J)-accurate) arithmetic: they agree within the rounding noise
    # of one cost, ~64 ulp(J) / eps.
    noise = 64 * 2.0**-53 * built_in.cost / 1e-7
    for name in built_in.gradapprox:
        assert np.allclose(report.gradapprox[name], built_in.gradapprox[name], rtol=0, atol=noise)


def test_njit_cost_finds_the_seeds_mistakes():
    X, Y, parameters, theta, grad, sizes = _net(correct=False)
    report = gradcheck_fast.check(mlp_cost, theta, grad, (X, Y, sizes), layout=parameters)
    assert report.failed_blocks == ["dW2", "db1"]
    assert report.blocks["dW2"].diagnosis == "dW2 ≈ 2.00 × numerical: an extra factor 2?"


def test_results_do_not_depend_on_threads_and_theta_is_untouched():
    X, Y, parameters, theta, grad, sizes = _net((12, 8, 1), m=16)
    before = theta.copy()
    one = gradcheck_fast.check(mlp_cost, theta, grad, (X, Y, sizes), n_threads=1)
    two = gradcheck_fast.check(mlp_cost, theta, grad, (X, Y, sizes),
                               n_threads=numba.config.NUMBA_NUM_THREADS)
    assert np.array_equal(one.gradapprox["dtheta"], two.gradapprox["dtheta"])
    assert np.array_equal(theta, before)


def test_python_callable_is_checked_and_the_report_says_so():
    A = np.array([[1.0, 2.0], [3.0, -1.0], [0.5, 0.0]])
    y = np.array([1.0, 0.0, 2.0])

    def cost(theta, A, y):
        r = A @ theta - y
        return 0.5 * float(r @ r)

    theta = np.array([0.3, -0.2])
    grad = A.T @ (A @ theta - y)
    report = gradcheck_fast.check(cost, theta, grad, (A, y))
    assert report.engine == "python" and report.passed
    assert "plain Python callable" in report.notes[0]
    wrong = gradcheck_fast.check(cost, theta, -grad, (A, y))
    assert "wrong sign" in wrong.blocks["dtheta"].diagnosis


def test_a_non_scalar_cost_is_refused():
    with pytest.raises(TypeError, match="real scalar"):
        gradcheck_fast.check(lambda theta: theta * 2, np.ones(3), np.ones(3))


@numba.njit
def vector_cost(theta):
    return theta * 2.0


def test_a_non_scalar_njit_cost_is_refused():
    with pytest.raises(TypeError, match="real scalar"):
        gradcheck_fast.check(vector_cost, np.ones(3), np.ones(3))


@numba.njit
def log_cost(theta):
    return math.log(theta[0])


def test_a_non_finite_cost_is_refused():
    with pytest.raises(ValueError, match="finite"):
        gradcheck_fast.check(log_cost, np.array([-1.0]), np.ones(1))


@numba.njit
def untypable(theta, label):
    return theta[0] + label  # float + str: numba cannot type it


def test_a_cost_that_does_not_compile_gets_a_clear_error():
    with pytest.raises(TypeError, match="could not be compiled by numba"):
        gradcheck_fast.check(untypable, np.ones(2), np.ones(2), ("seven",))


@pytest.mark.parametrize("bad,error,match", [
    (dict(cost=42), TypeError, "callable"),
    (dict(theta=np.array([1.0, np.nan])), ValueError, "theta"),
    (dict(grad=np.ones(3)), ValueError, "grad has 3"),
    (dict(theta=np.array([1, 2])), TypeError, "theta"),
    (dict(layout={"w": np.ones(3)}), ValueError, "layout has 3"),
])
def test_bad_arguments(bad, error, match):
    arguments = dict(cost=lambda theta: float(theta @ theta), theta=np.ones(2), grad=np.ones(2))
    arguments.update(bad)
    with pytest.raises(error, match=match):
        gradcheck_fast.check(arguments.pop("cost"), arguments.pop("theta"), arguments.pop("grad"),
                             **arguments)
