"""The seed's published case: the numbers, the messages, the per-block verdict."""

from __future__ import annotations

import numpy as np
import pytest

import gradcheck_fast
from gradcheck_fast import reference
from gradcheck_fast._console import strip_ansi

#: The published difference of the seed's faulty backward pass (NumPy legacy seed 1).
PUBLISHED_FAULTY = 0.2850931568


def test_faulty_difference_matches_published(seed_faulty):
    X, Y, parameters, gradients = seed_faulty
    difference = gradcheck_fast.gradient_check_n(parameters, gradients, X, Y, verbose=False)
    assert isinstance(difference, float)
    assert difference == pytest.approx(PUBLISHED_FAULTY, abs=1e-9)


def test_faulty_prints_the_seed_mistake_message(seed_faulty, capsys):
    X, Y, parameters, gradients = seed_faulty
    difference = gradcheck_fast.gradient_check_n(parameters, gradients, X, Y)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == strip_ansi(reference.MISTAKE_MESSAGE.format(difference))
    assert "There is a mistake in the backward propagation!" in lines[0]
    # The per-block table follows and names the two wrong blocks.
    table = "\n".join(lines[1:])
    assert "dW2" in table and "db1" in table
    assert strip_ansi(reference.SUCCESS_MESSAGE.format(difference)) not in out


def test_correct_backward_passes_and_prints_success(seed_correct, capsys):
    X, Y, parameters, gradients = seed_correct
    difference = gradcheck_fast.gradient_check_n(parameters, gradients, X, Y)
    assert difference < 2e-7
    expected = strip_ansi(reference.SUCCESS_MESSAGE.format(difference))
    assert capsys.readouterr().out == expected + "\n"


@pytest.mark.parametrize("which", ["seed_faulty", "seed_correct"])
def test_verbose_false_prints_nothing(which, request, capsys):
    X, Y, parameters, gradients = request.getfixturevalue(which)
    gradcheck_fast.gradient_check_n(parameters, gradients, X, Y, verbose=False)
    gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    assert capsys.readouterr().out == ""


def test_epsilon_is_the_fifth_positional_argument_as_in_the_seed(seed_correct):
    X, Y, parameters, gradients = seed_correct
    by_position = gradcheck_fast.gradient_check_n(parameters, gradients, X, Y, 1e-7,
                                                  verbose=False)
    by_default = gradcheck_fast.gradient_check_n(parameters, gradients, X, Y, verbose=False)
    assert by_position == by_default
    other = gradcheck_fast.gradient_check_n(parameters, gradients, X, Y, 1e-6, verbose=False)
    assert other != by_default


@pytest.mark.parametrize("which", ["seed_faulty", "seed_correct"])
def test_reference_loop_gives_the_same_difference(which, request, capsys, helpers):
    X, Y, parameters, gradients = request.getfixturevalue(which)
    fast = gradcheck_fast.gradient_check_n(parameters, gradients, X, Y, verbose=False)
    slow = reference.gradient_check_n(parameters, gradients, X, Y, verbose=False)
    # The two differ only through the rounding of gradapprox, by at most delta_i per coordinate
    # (conftest.gradapprox_rounding_bound); eq. (3) is 1-Lipschitz in gradapprox up to the
    # factor 2 / (||grad|| + ||gradapprox||) (numerator and denominator each move by ||delta||).
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    gradapprox = np.concatenate([v.ravel() for v in report.gradapprox.values()])
    grad = np.concatenate([v.ravel() for v in report.grad.values()])
    delta = helpers.gradapprox_rounding_bound(X, Y, parameters, gradapprox, 1e-7)
    allowed = 2 * np.linalg.norm(delta) / (np.linalg.norm(grad) + np.linalg.norm(gradapprox))
    assert abs(fast - slow) <= allowed
    if which == "seed_faulty":
        assert slow == pytest.approx(PUBLISHED_FAULTY, abs=1e-9)
    else:
        assert slow < 2e-7
    assert capsys.readouterr().out == ""


def test_reference_loop_prints_the_same_messages(seed_faulty, seed_correct, capsys):
    for (X, Y, parameters, gradients), message in [(seed_faulty, reference.MISTAKE_MESSAGE),
                                                   (seed_correct, reference.SUCCESS_MESSAGE)]:
        difference = reference.gradient_check_n(parameters, gradients, X, Y)
        assert capsys.readouterr().out == strip_ansi(message.format(difference)) + "\n"


def test_check_gradients_finds_exactly_the_two_seed_mistakes(seed_faulty):
    X, Y, parameters, gradients = seed_faulty
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    assert report.passed is False
    assert report.difference == pytest.approx(PUBLISHED_FAULTY, abs=1e-9)
    assert set(report.failed_blocks) == {"dW2", "db1"}
    assert len(report.failed_blocks) == 2
    for name, block in report.blocks.items():
        assert block.passed == (name not in {"dW2", "db1"}), name
    assert list(report.blocks) == ["dW1", "db1", "dW2", "db2", "dW3", "db3"]
    assert report.n_params == 47


def test_check_gradients_passes_the_corrected_backward_pass(seed_correct):
    X, Y, parameters, gradients = seed_correct
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    assert report.passed is True
    assert report.failed_blocks == []
    assert all(block.passed for block in report.blocks.values())
    assert report.difference < 2e-7


def test_report_holds_grad_and_gradapprox_shaped_like_the_parameters(seed_correct):
    X, Y, parameters, gradients = seed_correct
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    for name, value in parameters.items():
        assert report.grad["d" + name].shape == value.shape
        assert report.gradapprox["d" + name].shape == value.shape
        np.testing.assert_array_equal(report.grad["d" + name], gradients["d" + name])
    cost, _ = reference.forward_propagation_n(X, Y, parameters)
    assert report.cost == pytest.approx(cost, rel=1e-14)
    assert report.epsilon == 1e-7 and report.threshold == 2e-7


def test_report_to_dict_and_str(seed_faulty):
    import json

    X, Y, parameters, gradients = seed_faulty
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["passed"] is False
    assert set(as_dict["failed_blocks"]) == {"dW2", "db1"}
    assert as_dict["n_params"] == 47
    assert as_dict["seed_passed"] is False
    assert as_dict["blocks"]["dW2"]["verdict"] == "wrong"
    assert as_dict["blocks"]["dW1"]["verdict"] == "ok"
    text = str(report)
    assert text.startswith("gradient check FAILED")
    assert "dW2 ≈ 2.00 × numerical" in text and "db1 ≈ 4.00 × numerical" in text


def test_threshold_decides_the_seed_criterion_only(seed_correct):
    # The seed's threshold acts on eq. (3) (seed_passed); the elementwise criterion, which
    # decides passed, does not depend on it.
    X, Y, parameters, gradients = seed_correct
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    strict = gradcheck_fast.check_gradients(parameters, gradients, X, Y,
                                            threshold=report.difference / 2)
    assert report.seed_passed and not strict.seed_passed
    assert report.passed and strict.passed
    assert strict.difference == report.difference


# ---------------------------------------------------------------------------------------------
# The 1-D check
# ---------------------------------------------------------------------------------------------
def test_one_dimensional_check_value_and_message(capsys):
    difference = gradcheck_fast.gradient_check(2, 4)
    assert isinstance(difference, float)
    assert 0 <= difference < 1e-7
    assert capsys.readouterr().out == "The gradient is correct!\n"
    # Same arithmetic as the seed's loop (the reference), hence the same number.
    assert difference == float(reference.gradient_check(2, 4, verbose=False))
    assert difference == pytest.approx(2.919335883291695e-10, rel=1e-12)


def test_one_dimensional_check_verbose_false_prints_nothing(capsys):
    gradcheck_fast.gradient_check(2, 4, verbose=False)
    assert capsys.readouterr().out == ""


def test_one_dimensional_check_elementwise_arrays(capsys):
    x = np.array([2.0, -3.0, 0.5])
    theta = np.array([4.0, 1.0, -2.0])
    difference = gradcheck_fast.gradient_check(x, theta)
    assert difference < 1e-7
    assert capsys.readouterr().out == "The gradient is correct!\n"
    with pytest.raises(ValueError, match="same shape"):
        gradcheck_fast.gradient_check(x, theta[:2])


@pytest.mark.parametrize("epsilon", [0, 0.0, -1e-7, float("nan"), float("inf")])
def test_one_dimensional_check_rejects_bad_epsilon(epsilon):
    with pytest.raises(ValueError, match="epsilon"):
        gradcheck_fast.gradient_check(2, 4, epsilon)


def test_one_dimensional_check_at_x_zero_agrees_exactly(capsys):
    # BUG (library): with x = 0 the derivative (0) and gradapprox (0) agree exactly, but
    # gradient_check computes 0/0: a RuntimeWarning (an error under this project's
    # filterwarnings = error), nan, and "The gradient is wrong!". The N-d check defines two
    # all-zero vectors as agreeing (difference 0.0, report.relative_difference); the 1-D check
    # should follow the same convention.
    difference = gradcheck_fast.gradient_check(0, 4)
    assert difference == 0.0
    assert capsys.readouterr().out == "The gradient is correct!\n"


def test_the_bare_difference_does_not_estimate_the_costs_noise(seed_faulty, monkeypatch):
    """gradient_check_n needs only eq. (3): the exact engine's noise bound (ECnoise, nine more
    forward passes) is computed when a report asks for it, not before (it once cost the seed's
    check ~70 % more). The report still gets it."""
    from gradcheck_fast.engines import exact
    from tests.conftest import count_calls

    calls = count_calls(monkeypatch, exact, "cost_noise")
    X, Y, parameters, gradients = seed_faulty
    gradcheck_fast.gradient_check_n(parameters, gradients, X, Y, verbose=False)
    assert calls == []
    gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    assert calls == [1]
