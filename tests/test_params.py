"""Parameters as a dict of arrays (issue 11, item 1): checked on copies or in place.

The model here is the course convention: samples in rows, ``W1 (D, H)``, 1-D biases, a loss
method returning ``(loss, grads)`` with grads keyed like the parameters, L2 written
``reg * sum ||W||**2``. Its backward pass is held, independently of the library, to
complex-step derivatives (exact to rounding: no subtraction), before the library checks it.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck_fast import check


class TwoLayerNet:
    """affine - ReLU - affine - softmax cross-entropy, with L2 ``reg * (|W1|^2 + |W2|^2)``."""

    def __init__(self, D=5, H=7, C=3, reg=0.1, seed=0, dtype=np.float64):
        rng = np.random.default_rng(seed)
        self.params = {"W1": rng.normal(size=(D, H)).astype(dtype),
                       "b1": rng.normal(size=H).astype(dtype),
                       "W2": rng.normal(size=(H, C)).astype(dtype),
                       "b2": rng.normal(size=C).astype(dtype)}
        self.reg = reg
        self.calls = 0

    def loss(self, X, y, *, bug=None):
        self.calls += 1
        p = self.params
        z1 = X @ p["W1"] + p["b1"]
        a1 = np.maximum(z1, 0)
        scores = a1 @ p["W2"] + p["b2"]
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        N = X.shape[0]
        loss = -log_probs[np.arange(N), y].mean()
        loss += self.reg * (np.sum(p["W1"] ** 2) + np.sum(p["W2"] ** 2))
        dscores = np.exp(log_probs)
        dscores[np.arange(N), y] -= 1
        dscores /= N
        factor = 1.0 if bug == "reg" else 2.0  # the classic slip: reg W instead of 2 reg W
        grads = {"W2": a1.T @ dscores + factor * self.reg * p["W2"],
                 "b2": dscores.sum(axis=0)}
        da1 = dscores @ p["W2"].T
        dz1 = da1 * (z1 > 0)
        grads["W1"] = X.T @ dz1 + 2.0 * self.reg * p["W1"]
        grads["b1"] = dz1.sum(axis=0)
        return loss, grads


def _data(D=5, N=11, C=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, D)), rng.integers(C, size=N)


def _complex_step_gradient(net, X, y, name):
    """d loss / d params[name] by complex steps (the ReLU's kink is not met at this point)."""
    base = {k: v.astype(complex) for k, v in net.params.items()}
    h = 1e-30
    out = np.empty(base[name].size)
    for i in range(base[name].size):
        params = {k: v.copy() for k, v in base.items()}
        params[name].flat[i] += 1j * h
        p = params
        z1 = X @ p["W1"] + p["b1"]
        a1 = np.where(z1.real > 0, z1, 0)
        scores = a1 @ p["W2"] + p["b2"]
        shifted = scores - scores.real.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -log_probs[np.arange(X.shape[0]), y].mean()
        loss += net.reg * (np.sum(p["W1"] ** 2) + np.sum(p["W2"] ** 2))
        out[i] = loss.imag / h
    return out.reshape(base[name].shape)


def test_the_test_model_is_right():
    net = TwoLayerNet()
    X, y = _data()
    _, grads = net.loss(X, y)
    for name in net.params:
        # Complex steps have no cancellation: both sides are a few ulps from the derivative,
        # whose scale here is O(1); 1e-12 relative (1e-14 absolute near 0) leaves room for the
        # sums over 11 samples and 7 hidden units.
        assert np.allclose(grads[name], _complex_step_gradient(net, X, y, name),
                           rtol=1e-12, atol=1e-14), name


def _snapshot(params):
    return {k: (v, v.copy()) for k, v in params.items()}


def _unchanged(params, snapshot):
    return all(params[k] is obj and np.array_equal(params[k], copy) and
               params[k].tobytes() == copy.tobytes() for k, (obj, copy) in snapshot.items())


def test_the_course_style_check_in_place_is_one_call():
    net = TwoLayerNet()
    X, y = _data()
    before = _snapshot(net.params)
    report = check(lambda: net.loss(X, y), net.params, in_place=True)
    assert report.passed and list(report.blocks) == ["dW1", "db1", "dW2", "db2"]
    assert report.blocks["dW1"].n_checked == 35 and report.n_params == 35 + 7 + 21 + 3
    assert _unchanged(net.params, before)
    # 2 evaluations per parameter, plus the gradient's and a few for the noise estimate.
    assert net.calls >= 2 * report.n_params


def test_a_missing_factor_is_found_in_its_block():
    net = TwoLayerNet()
    X, y = _data()
    report = check(lambda: net.loss(X, y, bug="reg"), net.params, in_place=True)
    assert not report.passed and report.failed_blocks == ["dW2"]
    worst = report.worst[0]
    assert worst.block == "dW2" and len(worst.index) == 2  # the user's own (H, C) index


def test_a_dict_on_copies_leaves_the_callers_arrays_alone():
    net = TwoLayerNet()
    X, y = _data()
    _, grads = net.loss(X, y)
    seen = []

    def cost(params):
        seen.append(params["W1"])
        saved, net.params = net.params, params
        try:
            return net.loss(X, y)[0]
        finally:
            net.params = saved

    before = _snapshot(net.params)
    d_grads = {"d" + k: v for k, v in grads.items()}  # the seed's d-prefixed keys work too
    report = check(cost, net.params, d_grads)
    assert report.passed and _unchanged(net.params, before)
    assert all(array is not net.params["W1"] for array in seen)


def test_a_cost_returning_its_gradients_is_the_whole_check():
    net = TwoLayerNet()
    X, y = _data()

    def cost(params):
        saved, net.params = net.params, params
        try:
            return net.loss(X, y)
        finally:
            net.params = saved

    assert check(cost, net.params).passed


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_in_place_arrays_are_restored_when_the_cost_raises(failure):
    """Every array bitwise as before, whether the cost raises or Ctrl-C interrupts it in the
    middle of the perturbations."""
    net = TwoLayerNet()
    X, y = _data()
    before = _snapshot(net.params)

    def cost():
        if net.calls == 40:
            raise failure("stop")
        return net.loss(X, y)

    with pytest.raises(failure, match="stop"):
        check(cost, net.params, in_place=True)
    assert net.calls == 40 and _unchanged(net.params, before)


@pytest.mark.parametrize("grads, error, message", [
    ("missing", ValueError, "no 'b1'"),
    ("not a dict", TypeError, "dict of arrays"),
    ("transposed", ValueError, r"grads\['W1'\] has shape \(7, 5\).*transposed"),
    ("extra", ValueError, "'W3', which names no parameter"),
])
def test_bad_gradients_are_named(grads, error, message):
    net = TwoLayerNet()
    X, y = _data()
    _, good = net.loss(X, y)
    if grads == "missing":
        grads = {"W1": good["W1"]}
    elif grads == "transposed":
        grads = dict(good, W1=good["W1"].T)
    elif grads == "extra":
        grads = dict(good, W3=good["W1"])
    before = _snapshot(net.params)
    with pytest.raises(error, match=message):
        check(lambda: net.loss(X, y), net.params, grads, in_place=True)
    assert _unchanged(net.params, before)


def test_bad_calls_are_named():
    net = TwoLayerNet()
    X, y = _data()
    with pytest.raises(TypeError, match=r"must return \(loss, grads\)"):
        check(lambda: net.loss(X, y)[0], net.params, in_place=True)
    with pytest.raises(TypeError, match="in_place=True perturbs a dict"):
        check(lambda: 0.0, np.ones(3), np.ones(3), in_place=True)
    with pytest.raises(TypeError, match="grad is None"):
        check(lambda theta: 0.0, np.ones(3))
    single = TwoLayerNet(dtype=np.float32)
    with pytest.raises(TypeError, match=r"params\['W1'\].*float64"):
        check(lambda: single.loss(X, y), single.params, in_place=True)
    net.params["b1"] = np.full(7, np.nan)
    with pytest.raises(ValueError, match=r"params\['b1'\] contains NaN"):
        check(lambda: net.loss(X, y), net.params, in_place=True)


def test_an_njit_cost_of_a_dict_reads_the_flat_vector_in_parallel():
    """A compiled cost takes the flat vector (the dict's arrays in order, each in C order);
    the report's blocks keep the dict's names and a mistake is found in its block."""
    import numba

    rng = np.random.default_rng(2)
    params = {"w": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}
    X = rng.normal(size=(8, 3))

    @numba.njit
    def cost(theta, X):  # loops: numba's matrix product needs SciPy
        total = 0.0
        for n in range(X.shape[0]):
            for k in range(2):
                z = theta[6 + k]
                for d in range(3):
                    z += X[n, d] * theta[2 * d + k]
                total += 0.5 * z * z
        return total

    z = X @ params["w"] + params["b"]
    grads = {"w": X.T @ z, "b": z.sum(axis=0)}
    before = _snapshot(params)
    report = check(cost, params, grads, (X,))
    assert report.passed and report.engine == "numba" and list(report.blocks) == ["dw", "db"]
    assert _unchanged(params, before)
    assert check(cost, params, dict(grads, b=-grads["b"]), (X,)).failed_blocks == ["db"]
    with pytest.raises(TypeError, match="njit cost takes the flat parameter vector"):
        check(cost, params, None, (X,))
