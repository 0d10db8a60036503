"""Edge cases found in review: each once made the check wrong, crash, warn or hang."""

from __future__ import annotations

import numpy as np
import pytest

import gradcheck_fast as gc
from gradcheck_fast import reference
from gradcheck_fast.networks import random_mlp


def _correct(X, Y, parameters):
    _, cache = reference.forward_propagation_n(X, Y, parameters)
    return reference.backward_propagation_n(X, Y, cache)


def test_a_wrong_element_is_not_hidden_by_a_kink_on_the_noise_line():
    # Every layer-1 unit 1e-9 from its kink: the ECnoise line crosses kinks, which once
    # inflated the noise bound until a 5 % error in dW3 passed.
    X, Y, parameters = reference.seed_case()
    for j in range(3):
        parameters["b1"][j, 0] = -(parameters["W1"][j] @ X[:, j]) + 1e-9
    gradients = _correct(X, Y, parameters)
    gradients["dW3"][0, 0] *= 1.05
    for engine in ("exact", "incremental"):
        report = gc.check_gradients(parameters, gradients, X, Y, engine=engine)
        assert "dW3" in report.failed_blocks, engine


@pytest.mark.parametrize("engine", ["exact", "incremental"])
def test_steps_that_round_are_accounted_for(engine):
    # theta = 3000.7 and epsilon = 1e-12: fl(theta +- eps) - theta is 9 % off 2 eps.
    X = np.array([[1e-3, -2e-3, 5e-4]])
    Y = np.array([[1.0, 0.0, 1.0]])
    parameters = {"W1": np.array([[3000.7]]), "b1": np.array([[0.1]])}
    report = gc.check_gradients(parameters, _correct(X, Y, parameters), X, Y, epsilon=1e-12,
                                engine=engine)
    assert report.failed_blocks == []


def test_a_step_below_the_spacing_of_theta_is_unverified_not_wrong():
    X, Y, parameters = reference.seed_case()
    report = gc.check_gradients(parameters, _correct(X, Y, parameters), X, Y, epsilon=1e-17,
                                engine="incremental")
    assert report.failed_blocks == [] and not report.passed
    assert all(b.verdict == "unverified" for b in report.blocks.values())


def test_the_incremental_engine_is_accurate_to_about_1e_12():
    X, Y, parameters, gradients = random_mlp((64, 32, 16, 1), m=128, seed=0)
    report = gc.check_gradients(parameters, gradients, X, Y)
    assert report.engine == "incremental"
    assert max(b.max_rel_error for b in report.blocks.values()) < 1e-11


def test_richardson_is_refused_in_directional_mode():
    X, Y, parameters, gradients = random_mlp((4, 5, 3, 2), m=6, seed=2)
    with pytest.raises(ValueError, match="richardson"):
        gc.check_gradients(parameters, gradients, X, Y, mode="directional", method="richardson")


def test_directional_mode_on_extreme_inputs_does_not_warn():
    X = np.array([[-1e5, 1e5, 1.0]])
    Y = np.array([[0.0, 1.0, 0.0]])
    parameters = {"W1": np.ones((1, 1)), "b1": np.zeros((1, 1))}
    with np.errstate(all="ignore"):  # the reference saturates: exp overflow, log(0)
        gradients = _correct(X, Y, parameters)
    report = gc.check_gradients(parameters, gradients, X, Y, mode="directional", epsilon=1e-3)
    assert report.mode == "directional"


def test_step_sweep_refuses_repeated_and_bad_steps():
    X, Y, parameters = reference.seed_case()
    gradients = _correct(X, Y, parameters)
    with pytest.raises(ValueError, match="distinct"):
        gc.step_sweep(parameters, gradients, X, Y, steps=[1e-3, 1e-5, 1e-3])
    with pytest.raises(ValueError, match="steps"):
        gc.step_sweep(parameters, gradients, X, Y, steps=[-1e-3])
    with pytest.raises(TypeError, match="steps"):
        gc.step_sweep(parameters, gradients, X, Y, steps="abc")


def test_a_large_epsilon_does_not_fail_a_correct_gradient():
    X, Y, parameters = reference.seed_case()
    correct = _correct(X, Y, parameters)
    assert gc.check_gradients(parameters, correct, X, Y, epsilon=1e-2).failed_blocks == []
    _, cache = reference.forward_propagation_n(X, Y, parameters)
    faulty = reference.backward_propagation_n_faulty(X, Y, cache)
    assert gc.check_gradients(parameters, faulty, X, Y, epsilon=1e-2).failed_blocks == [
        "dW2", "db1"]


def test_smaller_review_items():
    # J = 1e600 overflows: the 1-D check says NaN (never "correct") and does not warn.
    assert np.isnan(gc.gradient_check(1e300, 1e300, verbose=False))
    X, Y, parameters = reference.seed_case()
    with pytest.raises(TypeError, match="layout"):
        gc.gradients_to_vector(_correct(X, Y, parameters), 5)
    # backprop order within a layer: dW before db
    gradients = _correct(X, Y, parameters)
    gradients["dW2"] = gradients["dW2"] * 2
    gradients["db2"] = gradients["db2"] * 2
    assert gc.check_gradients(parameters, gradients, X, Y).failed_blocks == ["dW2", "db2"]
    # float32 warns from the seed-compatible entry points too
    p32 = {k: v.astype(np.float32) for k, v in parameters.items()}
    with pytest.warns(gc.LowPrecisionWarning):
        gc.gradient_check_n(p32, _correct(X, Y, parameters), X, Y, verbose=False)


# -- second review: the MLP family and check() ---------------------------------------------------
def test_check_of_a_float32_cost_does_not_fail_a_correct_gradient():
    import numba

    cost = numba.njit(lambda th: np.float32(0.5 * np.sum(th * th)))
    theta = np.array([0.3, -0.2, 0.5])
    report = gc.check(cost, theta, theta.copy())
    assert report.failed_blocks == []
    assert any("float32" in note for note in report.notes)
    # A x3 mistake never passes. At the default step the float32 rounding of J (~1.5e-8 here,
    # 0.15 after dividing by the step) could hide a kink of the cost that moves the central
    # difference as far as the mistake does (a black-box cost may have kinks): the element is
    # unverified, not wrong. A step the float32 values resolve calls it wrong.
    wrong = gc.check(cost, theta, 3 * theta)
    assert not wrong.passed and wrong.blocks["dtheta"].verdict in ("wrong", "unverified")
    assert gc.check(cost, theta, 3 * theta, epsilon=1e-3).failed_blocks == ["dtheta"]


def test_check_refuses_a_cost_that_writes_into_theta():
    import numba

    @numba.njit
    def clipping(theta):
        theta[0] = min(theta[0], 0.5)
        return np.sum(theta * theta)

    with pytest.raises(ValueError, match="modified theta"):
        gc.check(clipping, np.array([1.0, 2.0]), np.array([2.0, 4.0]))


def test_leaky_relu_of_slope_one_has_no_kinks():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 4))
    parameters = {"W1": rng.standard_normal((4, 3)), "b1": rng.standard_normal((4, 1)),
                  "W2": rng.standard_normal((2, 4)), "b2": rng.standard_normal((2, 1))}
    parameters["b1"][0, 0] -= (parameters["W1"][0] @ X[:, 2] + parameters["b1"][0, 0]) - 3e-8
    Y = rng.standard_normal((2, 4))
    model = gc.MLP(hidden="leaky_relu", leaky_slope=1.0, output="linear")
    _, cache = reference.forward_mlp(X, Y, parameters, model)
    gradients = reference.backward_mlp(X, Y, cache, model)
    gradients["dW1"] = gradients["dW1"].copy()
    gradients["dW1"][0, :] *= 3
    for engine in ("exact", "incremental"):
        report = gc.check_gradients(parameters, gradients, X, Y, model=model, engine=engine)
        assert report.kinks == () and "dW1" in report.failed_blocks, engine


def test_check_allows_for_truncation_at_a_large_step():
    import numba

    cost = numba.njit(lambda th: np.sum(np.exp(3.0 * th)))
    theta = np.array([0.5, 1.0, 2.0])
    assert gc.check(cost, theta, 3 * np.exp(3 * theta), epsilon=1e-3).failed_blocks == []


def test_huge_changes_through_a_sigmoid_layer_stay_finite():
    rng = np.random.default_rng(1)
    X = 1e10 * rng.standard_normal((2, 5))
    parameters = {"W1": 1e-10 * rng.standard_normal((3, 2)), "b1": np.zeros((3, 1)),
                  "W2": rng.standard_normal((2, 3)), "b2": np.zeros((2, 1))}
    Y = (rng.random((2, 5)) < 0.5).astype(float)
    model = gc.MLP(hidden="sigmoid")
    _, cache = reference.forward_mlp(X, Y, parameters, model)
    gradients = reference.backward_mlp(X, Y, cache, model)
    report = gc.check_gradients(parameters, gradients, X, Y, model=model, engine="incremental")
    assert report.nonfinite == ()


def test_check_small_items():
    import numba

    @numba.njit
    def with_dict(theta, table):
        return theta[0] * table["a"]

    with pytest.raises(TypeError, match="could not be compiled"):
        gc.check(with_dict, np.ones(1), np.ones(1), ({"a": 1.0},))
    cost = numba.njit(lambda th: np.sum(th * th))
    report = gc.check(cost, np.arange(3.0), 2 * np.arange(3.0), layout={"w": (2,), "b": (1,)})
    assert list(report.blocks) == ["dw", "db"] and report.passed
    with pytest.warns(gc.LowPrecisionWarning):
        gc.check(cost, np.arange(3.0, dtype=np.float32), 2 * np.arange(3.0))
