"""Networks written with samples in rows (issue 11, item 5): ``MLP(layout="rows")`` takes
X (N, D), W (D, H), 1-D biases, gradients keyed like the parameters and L2 as
reg * sum ||W||**2, runs the same engines, and reports in the user's own layout."""

from __future__ import annotations

import numpy as np
import pytest

import gradcheck_fast
from gradcheck_fast import MLP


def _course_net(N=9, D=6, H=5, C=4, reg=0.1, seed=0):
    """A two-layer ReLU net with softmax loss as the course writes it, samples in rows, with
    its hand-written backward pass (reg * sum W**2, so dW gains 2 reg W)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D))
    y = rng.integers(0, C, size=N)
    params = {"W1": 0.5 * rng.normal(size=(D, H)), "b1": 0.1 * rng.normal(size=H),
              "W2": 0.5 * rng.normal(size=(H, C)), "b2": 0.1 * rng.normal(size=C)}
    h_pre = X @ params["W1"] + params["b1"]
    h = np.maximum(h_pre, 0)
    scores = h @ params["W2"] + params["b2"]
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dscores = p.copy()
    dscores[np.arange(N), y] -= 1
    dscores /= N
    grads = {"W2": h.T @ dscores + 2 * reg * params["W2"], "b2": dscores.sum(axis=0)}
    dh = dscores @ params["W2"].T * (h_pre > 0)
    grads["W1"] = X.T @ dh + 2 * reg * params["W1"]
    grads["b1"] = dh.sum(axis=0)
    return X, y, params, grads, reg


def _columns(X, y, params, grads):
    return ({k: (v.T if k[0] == "W" else v.reshape(-1, 1)) for k, v in params.items()},
            {"d" + k: (v.T if k[0] == "W" else v.reshape(-1, 1)) for k, v in grads.items()},
            X.T, y)


def test_a_course_style_network_is_checked_in_its_own_layout():
    X, y, params, grads, reg = _course_net()
    model = MLP(hidden="relu", output="softmax", l2=reg, layout="rows")
    report = gradcheck_fast.check_gradients(params, grads, X, y, model=model)
    assert report.passed
    assert {name: b.shape for name, b in report.blocks.items()} == {
        "dW1": (6, 5), "db1": (5,), "dW2": (5, 4), "db2": (4,)}
    assert report.gradapprox["dW1"].shape == (6, 5)
    # The same network in columns, with the seed's L2 (lambda / 2m sum W**2, lambda = 2 N reg):
    # the same numbers, transposed. The L2 weights differ in their last bit at most (2 N reg
    # / 2N against reg), so the numerical gradients agree to rounding, not bitwise.
    p_c, g_c, X_c, y_c = _columns(X, y, params, grads)
    columns = gradcheck_fast.check_gradients(
        p_c, g_c, X_c, y_c, model=MLP(hidden="relu", output="softmax", l2=2 * 9 * reg))
    for name in ("dW1", "dW2"):
        np.testing.assert_allclose(report.gradapprox[name], columns.gradapprox[name].T,
                                   rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(report.gradapprox["db1"], columns.gradapprox["db1"][:, 0],
                               rtol=1e-7, atol=1e-9)


def test_a_wrong_element_is_named_by_its_index_in_the_users_array():
    X, y, params, grads, reg = _course_net()
    model = MLP(output="softmax", l2=reg, layout="rows")
    wrong = {k: v.copy() for k, v in grads.items()}
    wrong["W1"][4, 1] += 0.05  # row 4 (an input feature), column 1 (a hidden unit)
    report = gradcheck_fast.check_gradients(params, wrong, X, y, model=model)
    assert report.failed_blocks == ["dW1"]
    assert report.worst[0].block == "dW1" and report.worst[0].index == (4, 1)
    assert report.blocks["dW1"].diagnosis == "1 of 30 elements of dW1 are wrong"


def test_reg_w_where_two_reg_w_is_due_is_named():
    X, y, params, grads, reg = _course_net()
    model = MLP(output="softmax", l2=reg, layout="rows")
    half = dict(grads, W2=grads["W2"] - reg * params["W2"])  # reg W2 where 2 reg W2 is due
    report = gradcheck_fast.check_gradients(params, half, X, y, model=model)
    assert report.failed_blocks == ["dW2"]
    assert report.blocks["dW2"].diagnosis.startswith("dW2 has half the L2 term")


@pytest.mark.parametrize("mode", ["sampled", "directional"])
def test_every_mode_runs_in_rows(mode):
    X, y, params, grads, reg = _course_net(N=12, D=30, H=20)
    model = MLP(output="softmax", l2=reg, layout="rows")
    ok = gradcheck_fast.check_gradients(params, grads, X, y, model=model, mode=mode,
                                        n_per_block=25)
    assert ok.passed and ok.mode == mode
    bad = gradcheck_fast.check_gradients(params, dict(grads, b1=1.5 * grads["b1"]), X, y,
                                         model=model, mode=mode, n_per_block=25)
    assert bad.failed_blocks == ["db1"]
    if mode == "sampled":
        # Drawn in the user's layout: the checked elements are the ones the seed picks there.
        checked = ~np.isnan(ok.gradapprox["dW1"])
        assert checked.sum() == 25 and ok.blocks["dW1"].n_checked == 25
        full = gradcheck_fast.check_gradients(params, grads, X, y, model=model)
        assert np.array_equal(ok.gradapprox["dW1"][checked], full.gradapprox["dW1"][checked])


@pytest.mark.parametrize("change, message", [
    (lambda p, g, X, y: (dict(p, b1=p["b1"].reshape(-1, 1)), g, X, y), "b1"),
    (lambda p, g, X, y: (p, dict(g, W1=g["W1"].T), X, y), "transposed"),
    (lambda p, g, X, y: (p, g, X.T, y), "features"),
    (lambda p, g, X, y: (p, g, X, y[:-1]), "one row"),
    (lambda p, g, X, y: (p, dict(g, W3=g["W1"]), X, y), "W3"),
    (lambda p, g, X, y: ({k: v for k, v in p.items() if k != "b2"}, g, X, y), "b2"),
])
def test_rows_inputs_in_the_other_layout_are_named(change, message):
    X, y, params, grads, reg = _course_net()
    model = MLP(output="softmax", l2=reg, layout="rows")
    p, g, X2, y2 = change(params, grads, X, y)
    with pytest.raises(ValueError, match=message):
        gradcheck_fast.check_gradients(p, g, X2, y2, model=model)


def test_the_callers_arrays_are_left_alone_and_the_layout_name_is_checked():
    X, y, params, grads, reg = _course_net()
    before = {k: v.copy() for k, v in params.items()}
    gradcheck_fast.check_gradients(params, grads, X, y,
                                   model=MLP(output="softmax", l2=reg, layout="rows"))
    assert all(np.array_equal(before[k], params[k]) for k in params)
    with pytest.raises(ValueError, match="layout"):
        MLP(layout="samples")


def test_the_seeds_entry_points_take_rows_too():
    X, y, params, grads, reg = _course_net()
    model = MLP(output="softmax", l2=reg, layout="rows")
    assert gradcheck_fast.gradient_check_n(params, grads, X, y, model=model,
                                           verbose=False) < 2e-7
    assert gradcheck_fast.step_sweep(params, grads, X, y, model=model).verdict == "fine"
    wrong = dict(grads, b2=2 * grads["b2"])
    assert gradcheck_fast.step_sweep(params, wrong, X, y, model=model).verdict == "wrong"
    estimate = gradcheck_fast.estimate_cost(params, grads, X, y, model=model)
    assert estimate.n_params == 30 + 5 + 20 + 4
    report = gradcheck_fast.check_gradients(params, grads, X, y, model=model,
                                            method="richardson")
    assert report.passed and report.method == "richardson"
