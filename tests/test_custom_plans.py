"""Richardson extrapolation, time budgets and cost estimates for custom costs and layer checks
(issue 11, item 3): the same options as check_gradients, the time model "evaluations x one
evaluation's measured time / threads"."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from gradcheck_fast import Layout, check, check_layer, estimate_cost
from gradcheck_fast.options import RICHARDSON_STEP
from tests.test_custom_modes import _problem, _quadratic


def _smooth(theta):
    """A smooth cost whose third and fifth derivatives are not small: sum(exp(theta) +
    sin(3 theta)); gradient exp(theta) + 3 cos(3 theta)."""
    return float(np.sum(np.exp(theta) + np.sin(3.0 * theta)))


def _smooth_grad(theta):
    return np.exp(theta) + 3.0 * np.cos(3.0 * theta)


def test_richardson_extrapolates_the_two_central_differences():
    theta = np.linspace(-1.0, 1.0, 7)
    report = check(_smooth, theta, _smooth_grad(theta), method="richardson")
    assert report.passed and report.method == "richardson"
    h = RICHARDSON_STEP
    assert report.epsilon == h  # the method's default step

    def D(step):
        return np.array([(_smooth(theta + step * e) - _smooth(theta - step * e)) / (2 * step)
                         for e in np.eye(theta.size)])

    # The extrapolation from the very evaluations the check makes (same points, same order
    # of operations): bitwise equal.
    assert np.array_equal(report.gradapprox["dtheta"], (4.0 * D(h) - D(2 * h)) / 3.0)
    # O(h**4): at h = 7.4e-4 the error is ~f5 h**4 / 30 ~ 1e-13 plus rounding ~1e-16 / h, far
    # below the central difference's h**2 f3 / 6 ~ 1e-6 at the same step.
    exact = _smooth_grad(theta)
    richardson_error = np.max(np.abs(report.gradapprox["dtheta"] - exact))
    central_error = np.max(np.abs(D(h) - exact))
    assert richardson_error < 1e-9 < 1e-8 < central_error


def test_richardson_finds_a_wrong_block_of_a_dict_and_an_njit_cost():
    theta, grad, A, layout = _problem()
    wrong = grad.copy()
    wrong[layout.offsets[1]:] *= 1.01
    report = check(_quadratic, theta, wrong, (A,), layout=layout, method="richardson")
    assert report.failed_blocks == ["dv"] and report.engine == "numba"
    params = {"w": theta[:500].copy(), "v": theta[500:].reshape(10, 10).copy()}

    def cost(p):
        return _quadratic(np.concatenate([p["w"], p["v"].ravel()]), A)

    grads = {"w": grad[:500], "v": wrong[500:].reshape(10, 10)}
    report = check(cost, params, grads, method="richardson")
    assert report.failed_blocks == ["dv"] and report.engine == "python"


def test_a_kink_between_one_and_two_steps_does_not_make_richardson_call_a_right_gradient_wrong():
    """|theta_i - c_i| with the kink c_i at 1.5 h from theta_i: the central difference at h
    is exact, the one at 2h is not, so the extrapolation is off by up to 4/3 of the slope
    jump's share. The kink test must look out to 2h (a kink is reported, or the element left
    unverified), never call the correct gradient (sign(theta - c)) wrong."""
    h = RICHARDSON_STEP
    theta = np.array([0.3, -0.2, 0.7, 0.1])
    c = theta + np.array([1.5, -1.5, 1.25, 5.0]) * h  # the last kink is far outside 2h

    def cost(t):
        return float(np.sum(np.abs(t - c)))

    report = check(cost, theta, np.sign(theta - c), method="richardson")
    assert report.blocks["dtheta"].verdict != "wrong"
    flagged = {int(e.index[0]) for e in report.kinks} | {
        int(e.index[0]) for e in report.unverified}
    assert {0, 1, 2} <= flagged and 3 not in flagged
    # The same cost with a wrong slope at the far kink's element is still wrong.
    wrong = np.sign(theta - c)
    wrong[3] = 0.5
    assert check(cost, theta, wrong, method="richardson").blocks["dtheta"].verdict == "wrong"


@numba.njit
def _slow_sum(theta, repeat):
    """A cost that takes a measurable time per evaluation: sum(theta**2 / 2), ``repeat``
    times over."""
    total = 0.0
    for _ in range(repeat):
        total = 0.0
        for t in theta:
            total += 0.5 * t * t
    return total


def _python_slow(theta):
    return float(_slow_sum(theta, 200))


@pytest.fixture
def fixed_evaluation_time(monkeypatch):
    """One evaluation's time fixed at 1 ms for the plans (the estimate and each check would
    time it afresh: on a busy machine two timings differ by more than any budget's margin);
    the checks still evaluate the real cost."""
    from gradcheck_fast import custom

    real = custom.first_evaluation

    def fixed(cost, theta, args, timed=True):
        return real(cost, theta, args, timed=False)._replace(seconds=1e-3)

    monkeypatch.setattr(custom, "first_evaluation", fixed)


def test_a_budget_picks_the_most_thorough_mode_that_fits(fixed_evaluation_time):
    # Small parameters keep the cost's rounding (4000 terms) far below the tolerance: J ~ 2e-3
    # carries ~1e-18, 1e-11 of the gradient's ~1e-3 after the division by 2 epsilon.
    theta = 1e-3 * np.random.default_rng(0).normal(size=4000)
    layout = Layout({"a": (2000,), "b": (40, 50)})
    estimate = estimate_cost(_python_slow, theta, theta, layout=layout, n_per_block=200)
    per_evaluation = (estimate.full.seconds - estimate.full.setup) / estimate.full.evaluations
    assert estimate.full.evaluations == 8000 and estimate.sampled.evaluations == 800
    assert estimate.directional.evaluations == 2 * 8 * 2
    assert per_evaluation == pytest.approx(1e-3, rel=0.01)
    # Budgets placed between the modes' estimates: each picks its mode (a factor 3 from every
    # boundary, for the validation each check times).
    sampled = check(_python_slow, theta, theta, layout=layout, n_per_block=200,
                    budget_s=estimate.sampled.setup + 3 * 200 * 2 * 2 * per_evaluation)
    assert sampled.mode == "sampled" and sampled.passed
    assert "sampled" in sampled.notes[0] and "budget" in sampled.notes[0]
    # One probe per block: 4 evaluations; the smallest sampled check (16 per block) 64.
    directional = check(_python_slow, theta, theta, layout=layout, n_directions=1,
                        budget_s=estimate.directional.setup + 16 * per_evaluation)
    assert directional.mode == "directional" and directional.passed
    assert "directional with 1 probe per block" in directional.notes[0]
    tiny = check(_python_slow, theta, 2 * theta, layout=layout, budget_s=1e-6)
    assert tiny.mode == "directional" and "over budget" in tiny.notes[0]
    assert tiny.failed_blocks == ["da", "db"]  # a x2 error is caught by the single probes
    full = check(_python_slow, theta, theta, layout=layout,
                 budget_s=3 * estimate.full.seconds + 1.0)
    assert full.mode == "full" and full.passed


def test_a_budget_for_a_layer_check_and_the_estimate_of_a_layer(fixed_evaluation_time):
    rng = np.random.default_rng(1)
    inputs = {"x": rng.normal(size=(20, 30)), "w": rng.normal(size=(30, 40))}

    def forward(x, w):
        return np.tanh(x @ w), (x, w)

    def backward(dout, cache):
        x, w = cache
        dz = dout * (1.0 - np.tanh(x @ w) ** 2)
        return dz @ w.T, x.T @ dz

    estimate = estimate_cost(forward, backward, inputs, n_per_block=50)
    assert estimate.full.coordinates == 600 + 1200 and estimate.full.evaluations == 3600
    assert estimate.sampled.coordinates == 100 and estimate.engine == "python"
    report = check_layer(forward, backward, inputs, n_per_block=50,
                         budget_s=estimate.sampled.seconds * 1.5)
    assert report.mode == "sampled" and report.passed
    assert report.blocks["dx"].n_checked <= 50


def test_the_time_model_divides_an_njit_costs_evaluations_by_the_threads():
    from gradcheck_fast.custom import Evaluation, cost_model
    from gradcheck_fast.options import DEFAULTS, check_options

    theta, grad, A, layout = _problem()
    options = check_options(**{**DEFAULTS, "n_threads": 2}, low_precision=False)
    njit = cost_model(layout, options, Evaluation(0.0, True, 1e-3))
    python = cost_model(layout, options, Evaluation(0.0, False, 1e-3))
    assert (njit.threads, python.threads) == (2, 1)
    n, evaluations, seconds = njit.coordinates(options, None)
    assert (n, evaluations) == (600, 1200)
    assert seconds == pytest.approx(1200 * 1e-3 / 2, rel=0.01)
    assert python.coordinates(options, None)[2] == pytest.approx(1200 * 1e-3, rel=0.01)
    # The probes run one at a time for both.
    assert njit.probes(options, 8) == python.probes(options, 8)
    estimate = estimate_cost(_quadratic, theta, grad, (A,), layout=layout, n_threads=1)
    assert estimate.engine == "numba" and estimate.full.evaluations == 1200


@pytest.mark.parametrize("bad, message", [
    ({"budget_s": -1.0}, "budget_s"),
    ({"method": "forward"}, "method"),
    ({"frobnicate": 1}, "frobnicate"),
])
def test_bad_estimate_and_budget_options_are_named(bad, message):
    theta = np.ones(3)
    with pytest.raises((TypeError, ValueError), match=message):
        estimate_cost(_smooth, theta, theta, **bad)
    if "frobnicate" not in bad:
        with pytest.raises((TypeError, ValueError), match=message):
            check(_smooth, theta, theta, **bad)


def test_richardson_is_refused_for_directional_probes_by_name():
    theta = np.ones(3)
    with pytest.raises(ValueError, match="richardson"):
        check(_smooth, theta, _smooth_grad(theta), mode="directional", method="richardson")
