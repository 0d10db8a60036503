"""Layer checks with an upstream gradient (issue 11, item 2): gradcheck_fast.check_layer.

Each layer here is written in the test with its backward pass; the backward pass is first held,
independently of the library, to complex-step vector-Jacobian products (exact to rounding), then
checked by the library, and a planted mistake must be found in the right input's block.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck_fast import check_layer


# -- the layers -------------------------------------------------------------------------------
def affine_forward(x, w, b):
    return x @ w + b, (x, w)


def affine_backward(dout, cache, bug=None):
    x, w = cache
    dx, dw, db = dout @ w.T, x.T @ dout, dout.sum(axis=0)
    if bug == "dw transposed-free":
        dw = x.T @ dout * 2.0
    return dx, dw, db


def relu_forward(x):
    return np.where(x.real > 0, x, 0), x


def relu_backward(dout, x, bug=None):
    return (dout * (x > 0),) if bug is None else (dout * (x >= 0) + 0.5 * dout * (x < 0),)


def conv_forward(x, w, b):
    """Naive 2-D convolution, stride 1, no padding: x (N, C, H, W), w (F, C, HH, WW)."""
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    out = np.zeros((N, F, H - HH + 1, W - WW + 1), dtype=np.result_type(x, w))
    for i in range(H - HH + 1):
        for j in range(W - WW + 1):
            patch = x[:, :, i:i + HH, j:j + WW]
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out, (x, w)


def conv_backward(dout, cache, bug=None):
    x, w = cache
    _, _, HH, WW = w.shape
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            g = dout[:, :, i, j]
            dx[:, :, i:i + HH, j:j + WW] += np.tensordot(g, w, axes=([1], [0]))
            dw += np.tensordot(g, x[:, :, i:i + HH, j:j + WW], axes=([0], [0]))
    if bug == "flipped":
        dw = dw[:, :, ::-1, :]
    return dx, dw, dout.sum(axis=(0, 2, 3))


def batchnorm_forward(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    inv = 1 / np.sqrt(var + eps)
    xhat = (x - mu) * inv
    return gamma * xhat + beta, (xhat, gamma, inv)


def batchnorm_backward(dout, cache, bug=None):
    xhat, gamma, inv = cache
    N = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    dx = inv / N * (N * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0))
    if bug == "no centring":
        dx = inv * dxhat
    return {"x": dx, "gamma": dgamma, "beta": dbeta}


def gate_forward(x, h, w):
    """A step with two outputs, (tanh(z), sigmoid(z)) of z = x w + h."""
    z = x @ w + h
    return (np.tanh(z), 1 / (1 + np.exp(-z))), (x, w, z)


def gate_backward(dout, cache, bug=None):
    dt, ds = dout
    x, w, z = cache
    t, s = np.tanh(z), 1 / (1 + np.exp(-z))
    dz = dt * (1 - t * t) + ds * s * (1 - s)  # both outputs reach z
    return dz @ w.T, (-dz if bug == "dh sign" else dz), x.T @ dz


LAYERS = {
    "affine": (affine_forward, affine_backward,
               lambda rng: {"x": rng.normal(size=(4, 5)), "w": rng.normal(size=(5, 3)),
                            "b": rng.normal(size=3)}, "dw transposed-free", "dw"),
    "relu": (relu_forward, relu_backward, lambda rng: (rng.normal(size=(3, 6)),), "leaky",
             "dx0"),
    "conv": (conv_forward, conv_backward,
             lambda rng: {"x": rng.normal(size=(2, 2, 5, 5)), "w": rng.normal(size=(3, 2, 3, 3)),
                          "b": rng.normal(size=3)}, "flipped", "dw"),
    "batchnorm": (batchnorm_forward, batchnorm_backward,
                  lambda rng: {"x": rng.normal(size=(6, 4)), "gamma": rng.normal(size=4),
                               "beta": rng.normal(size=4)}, "no centring", "dx"),
    "gate": (gate_forward, gate_backward,
             lambda rng: {"x": rng.normal(size=(3, 4)), "h": rng.normal(size=(3, 2)),
                          "w": rng.normal(size=(4, 2))}, "dh sign", "dh"),
}


def _named(inputs):
    return dict(inputs) if isinstance(inputs, dict) else {f"x{k}": v for k, v in
                                                           enumerate(inputs)}


def _complex_vjp(forward, inputs, dout):
    """d(sum(dout * forward)) / d input, each element by a complex step of 1e-30i."""
    named = _named(inputs)
    douts = dout if isinstance(dout, tuple) else (dout,)
    result = {}
    for name, value in named.items():
        grad = np.empty(value.size)
        for i in range(value.size):
            args = {k: v.astype(complex) for k, v in named.items()}
            args[name].flat[i] += 1e-30j
            out = forward(*args.values())
            out = out[0] if isinstance(out, tuple) and len(out) == 2 else out
            outs = out if isinstance(out, tuple) else (out,)
            grad[i] = sum(np.sum(d * o) for d, o in zip(douts, outs)).imag / 1e-30
        result[name] = grad.reshape(value.shape)
    return result


@pytest.mark.parametrize("name", list(LAYERS))
def test_a_right_backward_passes_and_a_wrong_one_is_found_in_its_input(name):
    forward, backward, make, bug, wrong_block = LAYERS[name]
    rng = np.random.default_rng(3)
    inputs = make(rng)
    before = {k: v.copy() for k, v in _named(inputs).items()}
    out, cache = forward(*_named(inputs).values())
    outs = out if isinstance(out, tuple) else (out,)
    dout = tuple(rng.normal(size=o.shape) for o in outs)
    dout = dout if len(dout) > 1 else dout[0]
    # The test's own backward pass is right (complex steps, no subtraction)...
    grads = backward(dout, cache)
    named = dict(grads) if isinstance(grads, dict) else dict(zip(_named(inputs), grads))
    truth = _complex_vjp(forward, inputs, dout)
    for key in truth:
        # Both sides are rounding away from the derivative (no cancellation in a complex step):
        # 1e-10 relative covers the conv's and batch-norm's sums of ~100 terms of size O(1)
        # with a wide margin, and is still 1e8 times below any planted mistake.
        assert np.allclose(named[key], truth[key], rtol=1e-10, atol=1e-12), (name, key)
    # ...and so is the check's verdict, with the given dout or a drawn one.
    assert check_layer(forward, backward, inputs, dout=dout).passed
    report = check_layer(forward, backward, inputs, seed=5)
    assert report.passed and len(report.blocks) == len(truth)
    wrong = check_layer(forward, lambda d, c: backward(d, c, bug=bug), inputs, seed=5)
    assert wrong.failed_blocks == [wrong_block], (name, wrong.failed_blocks)
    assert all(np.array_equal(v, before[k]) for k, v in _named(inputs).items())


def test_bad_layers_are_named():
    rng = np.random.default_rng(0)
    inputs = {"x": rng.normal(size=(4, 5)), "w": rng.normal(size=(5, 3)),
              "b": rng.normal(size=3)}
    with pytest.raises(ValueError, match=r"backward returned 2 gradient\(s\) for 3 input"):
        check_layer(affine_forward, lambda d, c: affine_backward(d, c)[:2], inputs)
    with pytest.raises(ValueError, match=r"grads\['dw'\]|has shape \(3, 5\)"):
        check_layer(affine_forward,
                    lambda d, c: (affine_backward(d, c)[0], affine_backward(d, c)[1].T,
                                  affine_backward(d, c)[2]), inputs)
    with pytest.raises(ValueError, match=r"dout\[0\] has shape \(2, 2\)"):
        check_layer(affine_forward, affine_backward, inputs, dout=np.ones((2, 2)))
    with pytest.raises(TypeError, match=r"inputs\['x'\] must be a floating-point array"):
        check_layer(affine_forward, affine_backward, dict(inputs, x=np.ones((4, 5), int)))


def test_a_layer_with_two_outputs_gets_an_upstream_gradient_for_each():
    """The gate's backward pass that forgets its second output's upstream gradient: every
    input's gradient is then wrong, and a drawn tuple dout shows it."""
    rng = np.random.default_rng(1)
    inputs = {"x": rng.normal(size=(3, 4)), "h": rng.normal(size=(3, 2)),
              "w": rng.normal(size=(4, 2))}

    def forgetful(dout, cache):
        return gate_backward((dout[0], np.zeros_like(dout[1])), cache)

    assert check_layer(gate_forward, gate_backward, inputs).passed
    assert check_layer(gate_forward, forgetful, inputs).failed_blocks == ["dx", "dh", "dw"]
