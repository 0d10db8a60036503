"""Layer checks with an @numba.njit forward (issue 11, item 2): the vector-Jacobian cost is
compiled and evaluated in the black-box engine's parallel loop, with the same verdicts as the
Python path and bitwise the same numbers for any thread count."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from gradcheck_fast import check_layer


@numba.njit
def tanh_affine(x, w, b):
    """tanh(x @ w + b), written with loops (numba's matmul needs SciPy)."""
    out = np.empty((x.shape[0], w.shape[1]))
    for i in range(x.shape[0]):
        for j in range(w.shape[1]):
            s = b[j]
            for k in range(x.shape[1]):
                s += x[i, k] * w[k, j]
            out[i, j] = np.tanh(s)
    return out, out


def tanh_affine_backward(x, w):
    def backward(dout, out, bug=None):
        dz = dout * (1.0 - out**2)
        dx, dw, db = dz @ w.T, x.T @ dz, dz.sum(axis=0)
        if bug == "db":
            db = 2.0 * db
        return dx, dw, db
    return backward


def _inputs(seed=0, n=12, d=7, h=5):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, d)), "w": 0.4 * rng.normal(size=(d, h)),
            "b": 0.1 * rng.normal(size=h)}


def test_an_njit_forward_runs_compiled_with_the_python_paths_verdicts():
    inputs = _inputs()
    backward = tanh_affine_backward(inputs["x"], inputs["w"])
    report = check_layer(tanh_affine, backward, inputs)
    assert report.engine == "numba" and report.passed
    assert list(report.blocks) == ["dx", "dw", "db"]
    python = check_layer(tanh_affine.py_func, backward, inputs)
    assert python.engine == "python" and python.passed
    # The compiled and the NumPy sums of dout * out round differently: the two numerical
    # gradients agree to the noise of J (a few ulps of ~|J|, over 2 epsilon).
    for name in report.blocks:
        np.testing.assert_allclose(report.gradapprox[name], python.gradapprox[name],
                                   rtol=0, atol=1e-6)
    wrong = check_layer(tanh_affine, lambda d, c: backward(d, c, "db"), inputs)
    assert wrong.failed_blocks == ["db"] and wrong.engine == "numba"


def test_an_njit_forward_gives_the_same_bits_on_one_and_two_threads():
    inputs = _inputs(1)
    backward = tanh_affine_backward(inputs["x"], inputs["w"])
    one = check_layer(tanh_affine, backward, inputs, n_threads=1)
    two = check_layer(tanh_affine, backward, inputs, n_threads=2)
    for name in one.blocks:
        assert np.array_equal(one.gradapprox[name], two.gradapprox[name])


@numba.njit
def gated(x, w, scale):
    """Two outputs and a further argument: h = tanh(scale * x * w), c = h * x."""
    h = np.tanh(scale * x * w)
    return (h, h * x), (h,)


def test_several_outputs_and_further_arguments_reach_the_compiled_cost():
    rng = np.random.default_rng(2)
    x, w, scale = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), 0.7

    def backward(douts, cache):
        dh, dc = douts
        (h,) = cache
        dh_total = dh + dc * x
        dpre = dh_total * (1.0 - h**2) * scale
        return dpre * w + dc * h, dpre * x

    report = check_layer(gated, backward, (x, w), args=(scale,))
    assert report.engine == "numba" and report.passed
    assert check_layer(gated, lambda d, c: (backward(d, c)[0], 0.5 * backward(d, c)[1]),
                       (x, w), args=(scale,)).failed_blocks == ["dx1"]


@numba.njit
def cubic_sum(x):
    return np.sum(x**3)


def test_a_scalar_output_and_the_modes_with_an_njit_forward():
    x = np.random.default_rng(3).normal(size=(6, 4))
    right = check_layer(cubic_sum, lambda d, c: 3.0 * d * x**2, x)
    assert right.engine == "numba" and right.passed
    for mode in ("sampled", "directional"):
        report = check_layer(cubic_sum, lambda d, c: 3.3 * d * x**2, x, mode=mode,
                             n_per_block=5, n_directions=4)
        assert report.failed_blocks == ["dx"] and report.engine == "numba"


def test_a_zero_dimensional_input_of_an_njit_forward_is_refused_by_name():
    @numba.njit
    def square(t):
        return t * t

    with pytest.raises(TypeError, match="0-d input"):
        check_layer(square, lambda d, c: 2.0 * d * 3.0, np.float64(3.0))
