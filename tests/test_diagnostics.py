"""The report names the wrong gradient, where, and how: per-block verdicts, diagnoses, worst
elements, kinks, non-finite coordinates, and the helpers for users' own test suites."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gradcheck_fast
from gradcheck_fast import reference
from gradcheck_fast.networks import example, random_mlp


def _wrong(gradients, key, value):
    gradients = dict(gradients)
    gradients[key] = value
    return gradients


# -- the seed's case ---------------------------------------------------------------------------
def test_seed_case_reads_dW2_twice_and_db1_four_times():
    X, Y, parameters, gradients = example("seed")
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    assert report.failed_blocks == ["dW2", "db1"]
    # The seed's dW2 carries an extra "* 2"; its db1 has 4./m where 1./m is due (m = 3: the
    # factor 4 is none of the named ones).
    assert report.blocks["dW2"].diagnosis == "dW2 ≈ 2.00 × numerical: an extra factor 2?"
    assert report.blocks["db1"].diagnosis == "db1 ≈ 4.00 × numerical"
    assert report.blocks["dW2"].scale == pytest.approx(2.0, rel=1e-6)
    assert report.blocks["db1"].scale == pytest.approx(4.0, rel=1e-6)
    for name in ("dW1", "db2", "dW3", "db3"):
        assert report.blocks[name].verdict == "ok" and report.blocks[name].scale is None
    # db3 is correct although, alone, its eq. (3) difference is above the seed's 2e-7: a
    # per-block verdict on the seed's threshold would have been a false alarm.
    assert report.blocks["db3"].difference > 2e-7
    # Worst elements come from the wrong blocks, with their index in the block's shape.
    assert {e.block for e in report.worst} <= {"dW2", "db1"}
    first = report.worst[0]
    assert report.grad[first.block][first.index] == first.analytic
    assert report.gradapprox[first.block][first.index] == first.numerical
    assert all(e.block == "dW2" for e in report.blocks["dW2"].worst)


def test_the_printed_table_reads_in_order():
    X, Y, parameters, gradients = example("seed")
    text = str(gradcheck_fast.check_gradients(parameters, gradients, X, Y))
    lines = text.splitlines()
    assert lines[0].startswith("gradient check FAILED: 2 of 6 blocks")
    # global verdict first, wrong blocks next, worst elements last
    assert text.index("seed criterion") < text.index("wrong blocks") < text.index("worst elements")
    assert "dW2 ≈ 2.00 × numerical" in text and "db1 ≈ 4.00 × numerical" in text


# -- the diagnoses -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def square_net():
    """A network whose W2 is square (5 x 5), gradients correct; large enough for the
    incremental engine."""
    return random_mlp((6, 5, 5, 2), m=40, seed=3)


def test_sign_flip(square_net):
    X, Y, parameters, gradients = square_net
    report = gradcheck_fast.check_gradients(
        parameters, _wrong(gradients, "dW1", -gradients["dW1"]), X, Y)
    assert report.failed_blocks == ["dW1"]
    assert "wrong sign" in report.blocks["dW1"].diagnosis
    assert report.blocks["dW1"].scale == pytest.approx(-1.0, rel=1e-6)


def test_transposed_square_block(square_net):
    X, Y, parameters, gradients = square_net
    report = gradcheck_fast.check_gradients(
        parameters, _wrong(gradients, "dW2", gradients["dW2"].T.copy()), X, Y)
    assert report.failed_blocks == ["dW2"]
    assert "transposed" in report.blocks["dW2"].diagnosis
    assert report.blocks["dW2"].scale is None


def test_transposed_and_reshaped_block(square_net):
    X, Y, parameters, gradients = square_net
    wrong = gradients["dW1"].T.reshape(gradients["dW1"].shape)  # (6, 5) data in a (5, 6) shape
    report = gradcheck_fast.check_gradients(parameters, _wrong(gradients, "dW1", wrong), X, Y)
    assert "transposed and reshaped" in report.blocks["dW1"].diagnosis


def test_zeros_where_the_numerical_gradient_is_not(square_net):
    X, Y, parameters, gradients = square_net
    report = gradcheck_fast.check_gradients(
        parameters, _wrong(gradients, "db2", np.zeros_like(gradients["db2"])), X, Y)
    assert report.failed_blocks == ["db2"]
    diagnosis = report.blocks["db2"].diagnosis
    assert "is 0 where the numerical gradient is not" in diagnosis


def test_some_zeros(square_net):
    X, Y, parameters, gradients = square_net
    partly = gradients["dW2"].copy()
    partly[:2] = 0.0  # two rows forgotten
    report = gradcheck_fast.check_gradients(parameters, _wrong(gradients, "dW2", partly), X, Y)
    block = report.blocks["dW2"]
    assert "is 0 where the numerical gradient is not" in block.diagnosis
    assert f"at {block.n_failing} of 25 elements" in block.diagnosis


def test_no_pattern_is_not_invented(square_net):
    X, Y, parameters, gradients = square_net
    rng = np.random.default_rng(0)
    noisy = gradients["dW2"] * (1 + rng.uniform(0.2, 0.8, gradients["dW2"].shape))
    report = gradcheck_fast.check_gradients(parameters, _wrong(gradients, "dW2", noisy), X, Y)
    assert report.blocks["dW2"].verdict == "wrong"
    assert report.blocks["dW2"].diagnosis is None and report.blocks["dW2"].scale is None
    assert "no simple pattern" in str(report)


def test_nan_in_the_analytic_gradient(square_net):
    X, Y, parameters, gradients = square_net
    bad = gradients["db1"].copy()
    bad[3, 0] = np.nan
    report = gradcheck_fast.check_gradients(parameters, _wrong(gradients, "db1", bad), X, Y)
    assert report.failed_blocks == ["db1"]
    assert "NaN/Inf" in report.blocks["db1"].diagnosis
    assert report.worst[0].label == "db1[3, 0]"


# -- one wrong element hidden by eq. (3) ---------------------------------------------------------
def test_a_single_wrong_element_among_200000_is_flagged():
    X, Y, parameters, gradients = example("mnist")  # 235,146 parameters, 200,704 in dW1
    dW1 = gradients["dW1"]
    norm = np.sqrt(sum(np.sum(gradients[k] ** 2) for k in ("dW1", "db1", "dW2", "db2",
                                                             "dW3", "db3")))
    # Off by delta = 2e-7 ||g|| (about 1e-7 here), an element moves eq. (3) by about
    # delta / (2 ||g||) = 1e-7: below the seed's 2e-7. Elementwise it is far outside the
    # tolerance of an element of size < 1e-3 (1e-8 + 1e-6 |n|, noise ~1e-15).
    delta = 2e-7 * norm
    r, c = (int(n) for n in np.argwhere(np.abs(dW1) < 1e-3)[1000])
    wrong = dW1.copy()
    wrong[r, c] += delta
    report = gradcheck_fast.check_gradients(parameters, _wrong(gradients, "dW1", wrong), X, Y)
    assert report.seed_passed and report.difference < 2e-7  # the global number hides it
    assert not report.passed
    assert report.failed_blocks == ["dW1"]
    assert report.blocks["dW1"].n_failing == 1
    assert report.worst[0].label == f"dW1[{r}, {c}]"
    assert report.blocks["dW1"].diagnosis == "1 of 200704 elements of dW1 are wrong"


# -- kinks and non-finite costs ------------------------------------------------------------------
def test_a_kink_is_reported_not_failed():
    X, Y, parameters, gradients = random_mlp((3, 4, 1), m=6, seed=5)
    A = parameters["W1"] @ X + parameters["b1"]
    # Unit 2 of layer 1 sits 2e-8 above its kink on sample 1 (and is active elsewhere or not):
    # b1[2] +- 1e-7 crosses it, so the central difference there is the mean of two one-sided
    # slopes, not the derivative the backward pass (rightly) computes.
    parameters["b1"][2, 0] -= A[2, 1] - 2e-8
    _, cache = reference.forward_propagation_n(X, Y, parameters)
    gradients = reference.backward_propagation_n(X, Y, cache)
    plain = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    kink = [e for e in plain.kinks if e.label == "db1[2, 0]"]
    assert kink, [e.label for e in plain.kinks]
    # The element really disagrees (by far more than the tolerance) ...
    assert abs(kink[0].analytic - kink[0].numerical) > 1e-4 * abs(kink[0].analytic)
    # ... yet is not counted as failing: the report says why instead.
    assert plain.blocks["db1"].n_kinks >= 1 and plain.blocks["db1"].n_failing == 0
    assert plain.passed
    assert "ReLU kink" in str(plain)


def test_nonfinite_costs_are_listed_with_their_index():
    parameters = {"W1": np.array([[100.0, 0.0]]), "b1": np.zeros((1, 1))}
    gradients = {"dW1": np.array([[1.0, 0.0]]), "db1": np.ones((1, 1))}
    X = np.array([[1.0], [1.0]])
    report = gradcheck_fast.check_gradients(parameters, gradients, X, np.zeros((1, 1)))
    assert not report.passed and report.failed_blocks == []
    labels = [e.label for e in report.nonfinite]
    assert labels == ["dW1[0, 0]", "dW1[0, 1]", "db1[0, 0]"]
    assert report.blocks["dW1"].n_nonfinite == 2 and report.blocks["dW1"].verdict == "unverified"


# -- criteria and tolerances ---------------------------------------------------------------------
def test_tolerances_decide_passed(square_net):
    X, Y, parameters, gradients = square_net
    slightly = gradients["dW2"] * (1 + 1e-4)
    strict = gradcheck_fast.check_gradients(parameters, _wrong(gradients, "dW2", slightly), X, Y)
    loose = gradcheck_fast.check_gradients(parameters, _wrong(gradients, "dW2", slightly), X, Y,
                                           rtol=1e-3)
    assert not strict.passed and strict.failed_blocks == ["dW2"]
    assert loose.passed and loose.failed_blocks == []
    assert strict.difference == loose.difference  # the seed's number is the same either way


@pytest.mark.parametrize("name,value", [("rtol", -1.0), ("atol", float("nan"))])
def test_bad_tolerances(square_net, name, value):
    X, Y, parameters, gradients = square_net
    with pytest.raises(ValueError, match=name):
        gradcheck_fast.check_gradients(parameters, gradients, X, Y, **{name: value})


# -- output for people, machines and test suites -------------------------------------------------
def test_to_dict_is_json_ready():
    X, Y, parameters, gradients = example("seed")
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["failed_blocks"] == ["dW2", "db1"]
    assert data["blocks"]["dW2"]["scale"] == pytest.approx(2.0, rel=1e-6)
    assert data["worst"][0]["block"] in ("dW2", "db1")
    assert data["passed"] is False and data["seed_passed"] is False


def test_raise_if_failed_and_assert_gradients_close():
    X, Y, parameters, faulty = example("seed")
    _, cache = reference.forward_propagation_n(X, Y, parameters)
    correct = reference.backward_propagation_n(X, Y, cache)
    report = gradcheck_fast.assert_gradients_close(parameters, correct, X, Y)
    assert report.passed
    report.raise_if_failed()  # passes silently
    with pytest.raises(AssertionError) as info:
        gradcheck_fast.assert_gradients_close(parameters, faulty, X, Y)
    assert isinstance(info.value, gradcheck_fast.GradientCheckFailed)
    assert str(info.value) == str(gradcheck_fast.check_gradients(parameters, faulty, X, Y))


def test_gradient_check_n_prints_the_message_then_the_table(capsys):
    X, Y, parameters, gradients = example("seed")
    gradcheck_fast.gradient_check_n(parameters, gradients, X, Y)
    out = capsys.readouterr().out
    assert out.index("There is a mistake in the backward propagation!") < out.index(
        "wrong blocks, in backprop order")
    assert "dW2 ≈ 2.00 × numerical" in out
