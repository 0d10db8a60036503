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
