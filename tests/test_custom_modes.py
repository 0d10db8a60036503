"""Sampled and directional modes for custom costs and layers (issue 11, item 3, first part).

A sampled check of a custom cost evaluates only the drawn coordinates, each exactly as the full
check does (same evaluations, so the same bits), and still finds a wrong block; directional
probes cost 2k evaluations per block whatever its size, and find it too.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from gradcheck_fast import Layout, check, check_layer
from gradcheck_fast.modes import sample_indices


@numba.njit
def _quadratic(theta, A):
    """sum(sin theta_i) + 1/2 sum(a_i theta_i**2) + sum(c_i theta_i theta_(i+1)), with
    ``A = (a, c)``: smooth, coupled, and short sums (a dense quadratic form of 600 variables
    sums 360,000 terms, whose rounding leaves small elements unverifiable)."""
    a, c = A[0], A[1]
    total = 0.0
    for i in range(theta.shape[0]):
        total += np.sin(theta[i]) + 0.5 * a[i] * theta[i] * theta[i]
        if i + 1 < theta.shape[0]:
            total += c[i] * theta[i] * theta[i + 1]
    return total


def _problem(P=600, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(2, P))
    theta = rng.normal(size=P)
    a, c = A
    grad = np.cos(theta) + a * theta
    grad[:-1] += c[:-1] * theta[1:]
    grad[1:] += c[:-1] * theta[:-1]
    layout = Layout({"w": (P - 100,), "v": (10, 10)})
    return theta, grad, A, layout


def test_sampled_checks_the_drawn_coordinates_with_the_full_checks_bits():
    theta, grad, A, layout = _problem()
    full = check(_quadratic, theta, grad, (A,), layout=layout)
    sampled = check(_quadratic, theta, grad, (A,), layout=layout, mode="sampled",
                    n_per_block=40, seed=3)
    assert full.passed and sampled.passed and sampled.mode == "sampled"
    assert sampled.blocks["dw"].n_checked == 40 and sampled.blocks["dv"].n_checked == 40
    drawn = sample_indices(layout, 40, 3)
    full_flat = np.concatenate([full.gradapprox[k].ravel() for k in ("dw", "dv")])
    sampled_flat = np.concatenate([sampled.gradapprox[k].ravel() for k in ("dw", "dv")])
    assert np.array_equal(sampled_flat[drawn], full_flat[drawn])
    assert np.isnan(np.delete(sampled_flat, drawn)).all()  # nothing else was evaluated


def test_a_sampled_check_finds_a_wrong_block_with_fewer_evaluations():
    theta, grad, A, layout = _problem()
    wrong = grad.copy()
    wrong[500:] *= 1.1  # the block "v"
    calls = []

    def cost(theta):  # plain Python: every evaluation counted
        calls.append(1)
        return _quadratic(theta, A)

    report = check(cost, theta, wrong, layout=layout, mode="sampled", n_per_block=25)
    assert report.failed_blocks == ["dv"] and report.blocks["dw"].verdict == "ok"
    assert len(calls) < 2 * 50 + 200  # 2 per checked coordinate, the point, the noise line


def test_a_layer_check_can_sample_its_inputs():
    def affine_forward(x, w, b):
        return x @ w + b, (x, w)

    def affine_backward(dout, cache):
        x, w = cache
        return dout @ w.T, x.T @ dout, dout.sum(axis=0) * 0.5  # db halved

    rng = np.random.default_rng(1)
    inputs = {"x": rng.normal(size=(30, 20)), "w": rng.normal(size=(20, 15)),
              "b": rng.normal(size=15)}
    report = check_layer(affine_forward, affine_backward, inputs, mode="sampled",
                         n_per_block=10)
    assert report.mode == "sampled" and report.failed_blocks == ["db"]
    assert [b.n_checked for b in report.blocks.values()] == [10, 10, 10]


@pytest.mark.parametrize("epsilon", [1e-7, 1e-3])
def test_directional_probes_of_a_custom_cost_find_a_wrong_block(epsilon):
    """Eight probes per block (16 evaluations each, whatever its size): a correct gradient
    passes, every probe of a block scaled by 1.1 fails while the other block stays ok; at a
    large step the truncation bound keeps the correct one from being called wrong."""
    theta, grad, A, layout = _problem()
    report = check(_quadratic, theta, grad, (A,), layout=layout, mode="directional",
                   epsilon=epsilon)
    assert report.mode == "directional" and report.passed, str(report)
    assert all(block.n_probes == 8 for block in report.blocks.values())
    wrong = grad.copy()
    wrong[500:] *= 1.1
    report = check(_quadratic, theta, wrong, (A,), layout=layout, mode="directional",
                   epsilon=epsilon)
    assert report.failed_blocks == ["dv"] and report.blocks["dw"].verdict == "ok"
    assert report.blocks["dv"].n_failing == 8


def test_a_layer_check_can_probe_its_inputs():
    def affine_forward(x, w, b):
        return x @ w + b, (x, w)

    def affine_backward(dout, cache):
        x, w = cache
        return dout @ w.T, -(x.T @ dout), dout.sum(axis=0)  # dw's sign flipped

    rng = np.random.default_rng(1)
    inputs = {"x": rng.normal(size=(30, 20)), "w": rng.normal(size=(20, 15)),
              "b": rng.normal(size=15)}
    report = check_layer(affine_forward, affine_backward, inputs, mode="directional")
    assert report.mode == "directional" and report.failed_blocks == ["dw"]


@pytest.mark.parametrize("h", [1e-7, 1e-3])
def test_a_probe_across_a_kink_is_set_aside_and_a_wrong_gradient_still_fails(h):
    """sum |theta - c| with a kink c_0 within the probes' step of theta_0: the central
    difference along a direction that crosses a kink is no directional derivative, and a
    right gradient must not be called wrong there (the probe is a kink, or unverified); a
    gradient off by 10 % in the same block still fails on the probes no kink explains. At the
    large step the truncation bound alone leaves such probes unverified; at the small one only
    the kink test can set them aside."""
    rng = np.random.default_rng(4)
    n = 6
    theta = rng.normal(size=n)
    c = theta + 1.0  # kinks far away, but the first: a probe crosses it when |v_0| > 0.2
    c[0] = theta[0] + 0.2 * h

    def cost(t):
        return float(np.sum(np.abs(t - c)))

    right = np.sign(theta - c)
    report = check(cost, theta, right, mode="directional", epsilon=h, n_directions=16)
    assert report.blocks["dtheta"].verdict != "wrong"
    block = report.blocks["dtheta"]
    assert 0 < block.n_kinks + block.n_unverified < 16  # some probes cross it, some do not
    wrong = right * np.array([1.0, 1.0, 1.0, 1.1, 1.1, 1.1])
    report = check(cost, theta, wrong, mode="directional", epsilon=h, n_directions=16)
    assert report.failed_blocks == ["dtheta"]


def test_directional_probes_evaluate_the_cost_exactly_at_theta_plus_minus_eps_v():
    """The probe points are fl(theta + eps v) and fl(theta - eps v) bit for bit, v the seeded
    unit direction of the block and exactly 0 elsewhere: -0.0 outside the block becomes +0.0
    in the plus point (-0.0 + 0.0) and stays -0.0 in the minus point, as NumPy gives them."""
    theta = np.array([-0.0, 0.0, 1.5, -0.0, -2.0, 0.0, 0.25, -0.0, 3.0])
    layout = Layout({"a": (2, 2), "b": (5,)})
    seen = []

    def cost(point):
        seen.append(point.copy())
        return float(np.sum(np.sin(point)) + np.sum(np.copysign(1e-3, point)))

    check(cost, theta, np.cos(theta), layout=layout, mode="directional", n_directions=3,
          seed=7)
    rng = np.random.default_rng(7)
    expected = []
    for start, stop in [(0, 4), (4, 9)]:
        v = rng.standard_normal((3, stop - start))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        for row in v:
            direction = np.zeros_like(theta)
            direction[start:stop] = row
            expected += [theta + 1e-7 * direction, theta - 1e-7 * direction]
    probes = seen[-len(expected):]
    assert all(point.tobytes() == want.tobytes() for point, want in zip(probes, expected))
    assert np.signbit(probes[-2][0]) == 0 and np.signbit(probes[-1][0]) == 1  # block b's probe


def test_a_correct_large_block_is_verified_whatever_its_probes_projections():
    """Probes of a 20,000-element block whose cost carries a large constant (J ~ 1e6: each
    probe's noise ~4 ulp(J) / eps ~ 5e-3, under 1 % of the block's RMS of v . grad, ~0.7).
    A probe nearly orthogonal to the gradient (|v . grad| ~ 0.1 RMS, one in twelve) used to
    be judged against its own small projection and left unverified, so most correct checks
    came out inconclusive; held to the block's RMS, every seed passes, and a x1.1 error in the
    block still fails."""
    rng = np.random.default_rng(0)
    n = 20_000
    theta, a = rng.normal(size=n), rng.normal(size=n)

    def cost(t):
        return 1e6 + float(np.sin(t) @ a)

    grad = np.cos(theta) * a
    for seed in range(6):
        report = check(cost, theta, grad, mode="directional", seed=seed)
        assert report.passed, (seed, report.blocks["dtheta"].n_unverified)
    assert check(cost, theta, 1.1 * grad, mode="directional").failed_blocks == ["dtheta"]
