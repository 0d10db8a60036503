"""Checks you can trust: the step sweep's verdict, Richardson's accuracy, float32 input."""

from __future__ import annotations

import numpy as np
import pytest

import gradcheck_fast
from gradcheck_fast import reference
from gradcheck_fast.networks import example, random_mlp


@pytest.fixture(scope="module")
def seed_grads():
    X, Y, parameters = reference.seed_case()
    _, cache = reference.forward_propagation_n(X, Y, parameters)
    return (X, Y, parameters, reference.backward_propagation_n(X, Y, cache),
            reference.backward_propagation_n_faulty(X, Y, cache))


# -- step sweep ---------------------------------------------------------------------------------
def test_sweep_of_a_correct_gradient_is_fine_with_the_classic_v_shape(seed_grads):
    X, Y, parameters, correct, _ = seed_grads
    sweep = gradcheck_fast.step_sweep(parameters, correct, X, Y)
    assert sweep.verdict == "fine"
    eps = [row.epsilon for row in sweep.rows]
    assert eps == sorted(eps, reverse=True) and eps[0] == 1e-2 and eps[-1] == 1e-10
    best = eps.index(sweep.best_epsilon)
    # truncation: the difference falls like eps^2 on the large-step side ...
    assert all(1.5 < row.slope < 2.5 for row in sweep.rows[1:best] if row.slope is not None)
    # ... rounding: it grows like 1/eps on the small-step side (the seed's arithmetic)
    small_side = [row.slope for row in sweep.rows[best + 2 :]]
    assert np.median(small_side) == pytest.approx(-1.0, abs=0.4)
    assert sweep.rows[best].difference <= 2e-7
    assert "choose epsilon" in sweep.explanation and "FINE" in str(sweep)


def test_sweep_of_a_wrong_gradient_says_wrong(seed_grads):
    X, Y, parameters, _, faulty = seed_grads
    sweep = gradcheck_fast.step_sweep(parameters, faulty, X, Y)
    assert sweep.verdict == "wrong"
    assert all(abs(row.difference - 0.2851) < 1e-3 for row in sweep.rows)
    assert sweep.to_dict()["verdict"] == "wrong"


def test_sweep_options_are_checked(seed_grads):
    X, Y, parameters, correct, _ = seed_grads
    with pytest.raises(ValueError, match="steps"):
        gradcheck_fast.step_sweep(parameters, correct, X, Y, steps=[1e-3, -1e-4])
    with pytest.raises(ValueError, match="engine"):
        gradcheck_fast.step_sweep(parameters, correct, X, Y, engine="fast")


# -- Richardson ---------------------------------------------------------------------------------
def test_richardson_separates_correct_and_wrong_by_orders_of_magnitude(seed_grads):
    X, Y, parameters, correct, faulty = seed_grads
    central = gradcheck_fast.check_gradients(parameters, correct, X, Y)
    accurate = gradcheck_fast.check_gradients(parameters, correct, X, Y, method="richardson")
    assert 5e-8 < central.difference < 2e-7  # the seed's 1.2e-7
    assert accurate.difference <= 1e-10  # the target
    assert accurate.method == "richardson" and accurate.epsilon == pytest.approx(7.4e-4, 0.01)
    wrong = gradcheck_fast.check_gradients(parameters, faulty, X, Y, method="richardson")
    assert wrong.failed_blocks == ["dW2", "db1"] and wrong.difference > 0.28
    assert accurate.passed and "richardson" in str(accurate)


@pytest.mark.parametrize("seed", range(4))
def test_richardson_is_more_accurate_than_central_on_random_networks(seed):
    # Smooth enough (small weights) that no step of either method crosses a ReLU kink.
    X, Y, parameters, gradients = random_mlp((5, 4, 3, 1), m=6, seed=seed)
    for key in parameters:
        parameters[key] = parameters[key] * 0.5
    _, cache = reference.forward_propagation_n(X, Y, parameters)
    gradients = reference.backward_propagation_n(X, Y, cache)
    central = gradcheck_fast.check_gradients(parameters, gradients, X, Y, engine="exact")
    accurate = gradcheck_fast.check_gradients(parameters, gradients, X, Y, engine="exact",
                                              method="richardson")
    if sum(b.n_kinks for b in accurate.blocks.values()):
        pytest.fail("a kink was crossed: choose other seeds")
    assert accurate.difference < central.difference / 100


# -- float32 ------------------------------------------------------------------------------------
def _float32_backward(X, Y, parameters):
    """The corrected backward pass run entirely in float32, as a float32 framework would."""
    p32 = {k: v.astype(np.float32) for k, v in parameters.items()}
    _, cache = reference.forward_propagation_n(X.astype(np.float32), Y.astype(np.float32), p32)
    grads = reference.backward_propagation_n(X.astype(np.float32), Y.astype(np.float32), cache)
    return p32, {k: v.astype(np.float32) for k, v in grads.items() if k[:2] in ("dW", "db")}


def test_float32_gradients_are_checked_in_float64_with_float32_tolerances():
    X, Y, parameters, _ = example("mnist")  # sums over 784 inputs and 64 samples in float32
    p32, g32 = _float32_backward(X, Y, parameters)
    with pytest.warns(gradcheck_fast.LowPrecisionWarning, match="float64"):
        report = gradcheck_fast.check_gradients(p32, g32, X, Y)
    assert report.rtol == 1e-3 and report.atol == 1e-5
    assert report.passed, str(report)
    assert any("float32" in note for note in report.notes)
    # With float64 tolerances the float32 rounding of the backward pass itself is flagged:
    # the widening is needed, not decorative.
    with pytest.warns(gradcheck_fast.LowPrecisionWarning):
        strict = gradcheck_fast.check_gradients(p32, g32, X, Y, rtol=1e-6, atol=1e-8)
    assert not strict.passed


def test_float32_does_not_hide_a_real_mistake():
    X, Y, parameters, _ = example("medium")
    p32, g32 = _float32_backward(X, Y, parameters)
    g32["dW2"] = g32["dW2"] * np.float32(1.1)
    with pytest.warns(gradcheck_fast.LowPrecisionWarning):
        report = gradcheck_fast.check_gradients(p32, g32, X, Y)
    assert report.failed_blocks == ["dW2"]
    assert report.blocks["dW2"].scale == pytest.approx(1.1, rel=1e-4)
