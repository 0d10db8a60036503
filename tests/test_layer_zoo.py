"""The rest of issue 11's layer zoo under gradcheck_fast.check_layer: max-pool, softmax
cross-entropy, an LSTM step and scaled dot-product attention.

As in tests/test_layers.py: each layer is written here with its backward pass, which is first
held to complex-step vector-Jacobian products (exact to rounding, independent of the library),
then checked by the library; each planted mistake must fail in exactly the blocks it reaches,
a set derived by reasoning about the backward pass (written beside the bug) and confirmed
against the complex-step truth before the library is asked.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest

from gradcheck_fast import check_layer
from tests.test_layers import _complex_vjp, _named

#: The library's default step (check_layer's ``epsilon``).
EPSILON = 1e-7


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _softmax_rows(s):
    # The shift by the (real) row maximum leaves the softmax unchanged, so a complex step
    # through it still gives the exact derivative; .real because complex numbers have no order.
    e = np.exp(s - s.real.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# -- max-pool, 2x2, stride 2 -------------------------------------------------------------------
def _windows(x):
    """(N, C, H, W) -> (N, C, H/2, W/2, 4): each 2x2 window's elements, row by row."""
    N, C, H, W = x.shape
    return x.reshape(N, C, H // 2, 2, W // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
        N, C, H // 2, W // 2, 4)


def _unwindows(w, shape):
    N, C, H, W = shape
    return w.reshape(N, C, H // 2, W // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(shape)


def maxpool_forward(x):
    windows = _windows(x)
    argmax = windows.real.argmax(axis=-1)
    return np.take_along_axis(windows, argmax[..., None], axis=-1)[..., 0], (x.shape, argmax)


def maxpool_backward(dout, cache, bug=None):
    shape, argmax = cache
    if bug == "spread":  # dout shared by the window, as an average pool would
        dwindows = np.repeat(dout[..., None] / 4, 4, axis=-1)
    else:
        target = argmax if bug is None else (argmax + 1) % 4  # "neighbour": the wrong element
        dwindows = np.zeros(dout.shape + (4,))
        np.put_along_axis(dwindows, target[..., None], dout[..., None], axis=-1)
    return {"x": _unwindows(dwindows, shape)}


def maxpool_inputs(rng):
    x = rng.normal(size=(2, 2, 4, 4))
    # A tie is a kink of max: there the central difference is no derivative. Every step the
    # check takes moves an element by at most epsilon (full, sampled and directional steps,
    # the truncation steps h/2, h/4, the kink test's h/8) or ~1e-8 (the noise estimate's
    # points), so a gap between each window's largest and second-largest element of 1e3
    # epsilon keeps every step on the same side of every kink.
    top2 = np.sort(_windows(x), axis=-1)[..., -2:]
    assert np.min(top2[..., 1] - top2[..., 0]) > 1e3 * EPSILON
    return {"x": x}, ()


# -- softmax cross-entropy ---------------------------------------------------------------------
def softmax_loss_forward(x, y):
    """Mean cross-entropy of the rows of x against integer labels y: (loss, cache)."""
    p = _softmax_rows(x)
    N = x.shape[0]
    return -np.log(p[np.arange(N), y]).sum() / N, (p, y)


def softmax_loss_backward(dloss, cache, bug=None):
    p, y = cache
    N = p.shape[0]
    dx = p.copy()
    dx[np.arange(N), y] -= 1
    dx = dx * dloss
    if bug == "sign":
        return {"x": -dx / N}
    return {"x": dx if bug == "no 1/N" else dx / N}


def softmax_loss_inputs(rng):
    # N = 5, C = 3: the missing factor N is none of the layer's other sizes.
    return {"x": rng.normal(size=(5, 3))}, (rng.integers(0, 3, size=5),)


# -- LSTM step (CS231n: samples in rows, gates i, f, o, g) --------------------------------------
def lstm_forward(x, prev_h, prev_c, Wx, Wh, b):
    H = prev_h.shape[1]
    a = x @ Wx + prev_h @ Wh + b
    i, f, o = _sigmoid(a[:, :H]), _sigmoid(a[:, H:2 * H]), _sigmoid(a[:, 2 * H:3 * H])
    g = np.tanh(a[:, 3 * H:])
    next_c = f * prev_c + i * g
    next_h = o * np.tanh(next_c)
    return (next_h, next_c), (x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c)


def lstm_backward(dout, cache, bug=None):
    dnext_h, dnext_c = dout
    x, prev_h, prev_c, Wx, Wh, i, f, o, g, next_c = cache
    t = np.tanh(next_c)
    dc = dnext_c + dnext_h * o * (1 - t * t)  # next_c reaches the loss directly and via next_h
    # "forget gate sees next_c": d next_c / d f is prev_c, not next_c; the f columns of da go
    # wrong, and with them every gradient taken from da (dx, dprev_h, dWx, dWh, db); dprev_c
    # = dc * f does not use da and stays right.
    df = dc * (next_c if bug == "forget gate sees next_c" else prev_c)
    # "dprev_c misses next_h": the cell-state gradient without its path through next_h;
    # nothing else reads dprev_c, so it alone goes wrong.
    dprev_c = (dnext_c if bug == "dprev_c misses next_h" else dc) * f
    da = np.hstack([dc * g * i * (1 - i), df * f * (1 - f), dnext_h * t * o * (1 - o),
                    dc * i * (1 - g * g)])
    dWh = prev_h.T @ da
    if bug == "dWh transposed":
        # Wh is (H, 4H), never square: the transposed product, reshaped to fit. Only dWh.
        dWh = (da.T @ prev_h).reshape(dWh.shape)
    return da @ Wx.T, da @ Wh.T, dprev_c, x.T @ da, dWh, da.sum(axis=0)


def lstm_inputs(rng):
    N, D, H = 2, 3, 2
    return {"x": rng.normal(size=(N, D)), "prev_h": rng.normal(size=(N, H)),
            "prev_c": rng.normal(size=(N, H)), "Wx": 0.5 * rng.normal(size=(D, 4 * H)),
            "Wh": 0.5 * rng.normal(size=(H, 4 * H)), "b": rng.normal(size=4 * H)}, ()


# -- scaled dot-product attention ---------------------------------------------------------------
def attention_forward(Q, K, V):
    p = _softmax_rows(Q @ K.T / math.sqrt(Q.shape[1]))
    return p @ V, (Q, K, V, p)


def attention_backward(dout, cache, bug=None):
    Q, K, V, p = cache
    scale = 1.0 if bug == "no 1/sqrt(d)" else 1 / math.sqrt(Q.shape[1])
    dp = dout @ V.T
    # "softmax without subtraction": dS = p * dp, as if the row's normaliser were constant;
    # dS feeds dQ and dK only, and dV = p^T dout does not use it.
    centred = dp if bug == "softmax without subtraction" else (
        dp - (dp * p).sum(axis=1, keepdims=True))
    ds = p * centred
    return {"Q": ds @ K * scale, "K": ds.T @ Q * scale, "V": p.T @ dout}


def attention_inputs(rng):
    # d = 4: the missing 1/sqrt(d) is a factor 2, none of the layer's sizes.
    return {"Q": rng.normal(size=(3, 4)), "K": rng.normal(size=(5, 4)),
            "V": rng.normal(size=(5, 2))}, ()


#: name: (forward, backward, make inputs and args from an rng, {bug: blocks it must fail}).
ZOO = {
    "maxpool": (maxpool_forward, maxpool_backward, maxpool_inputs,
                {"neighbour": {"dx"}, "spread": {"dx"}}),
    "softmax_loss": (softmax_loss_forward, softmax_loss_backward, softmax_loss_inputs,
                     {"no 1/N": {"dx"}, "sign": {"dx"}}),
    "lstm": (lstm_forward, lstm_backward, lstm_inputs,
             {"forget gate sees next_c": {"dx", "dprev_h", "dWx", "dWh", "db"},
              "dprev_c misses next_h": {"dprev_c"}, "dWh transposed": {"dWh"}}),
    "attention": (attention_forward, attention_backward, attention_inputs,
                  {"no 1/sqrt(d)": {"dQ", "dK"}, "softmax without subtraction": {"dQ", "dK"}}),
}
CASES = [(name, bug) for name, (*_, bugs) in ZOO.items() for bug in bugs]


def _setup(name, seed=3):
    """The layer's pieces, its inputs and args, its cache and a drawn dout (a tuple for
    several outputs, a 0-d array for a scalar loss)."""
    forward, backward, make, bugs = ZOO[name]
    rng = np.random.default_rng(seed)
    inputs, args = make(rng)
    out, cache = forward(*inputs.values(), *args)
    outs = out if isinstance(out, tuple) else (out,)
    dout = tuple(rng.normal(size=np.shape(o)) for o in outs)
    return forward, backward, bugs, inputs, args, cache, dout if len(dout) > 1 else dout[0]


def _grads(backward, dout, cache, inputs, bug=None):
    grads = backward(dout, cache, bug=bug)
    named = dict(grads) if isinstance(grads, dict) else dict(zip(_named(inputs), grads))
    return {"d" + k: v for k, v in named.items()}


def _truth(forward, inputs, args, dout):
    """The complex-step VJP per block ("dx", ...); args (labels) bound, not stepped."""
    truth = _complex_vjp(lambda *arrays: forward(*arrays, *args), inputs, dout)
    return {"d" + k: v for k, v in truth.items()}


def _wrong_blocks(grads, truth):
    """The blocks where a backward pass departs from the complex-step truth by more than
    rounding could (1e-6 of the block's size; rounding is ~1e-14 of it, a mistake O(1))."""
    return {k for k, v in grads.items()
            if np.max(np.abs(v - truth[k])) > 1e-6 * max(np.max(np.abs(truth[k])), 1.0)}


@pytest.mark.parametrize("name", list(ZOO))
def test_a_right_backward_matches_complex_steps_and_passes(name):
    forward, backward, _, inputs, args, cache, dout = _setup(name)
    before = {k: v.copy() for k, v in inputs.items()}
    grads = _grads(backward, dout, cache, inputs)
    truth = _truth(forward, inputs, args, dout)
    assert set(grads) == set(truth)
    for key in truth:
        # A complex step has no cancellation: both sides are the derivative up to rounding
        # of a few dozen operations on O(1) values (~1e-14); 1e-10 relative (1e-12 absolute
        # for elements near 0) leaves a wide margin and is 1e8 below any planted mistake.
        assert np.allclose(grads[key], truth[key], rtol=1e-10, atol=1e-12), (name, key)
    assert check_layer(forward, backward, inputs, dout=dout, args=args).passed
    report = check_layer(forward, backward, inputs, args=args, seed=5)
    assert report.passed and list(report.blocks) == list(truth), report
    assert all(np.array_equal(v, before[k]) for k, v in inputs.items())


@pytest.mark.parametrize("name, bug", CASES)
def test_a_wrong_backward_fails_in_exactly_the_blocks_it_reaches(name, bug):
    forward, backward, bugs, inputs, args, cache, dout = _setup(name)
    expected = bugs[bug]
    # The reasoned set is the true one (independently of the library)...
    truth = _truth(forward, inputs, args, dout)
    assert _wrong_blocks(_grads(backward, dout, cache, inputs, bug), truth) == expected
    # ...and the check finds exactly it, with the given dout and with a drawn one.
    for kwargs in ({"dout": dout}, {"seed": 5}):
        report = check_layer(forward, lambda d, c: backward(d, c, bug=bug), inputs, args=args,
                             **kwargs)
        assert set(report.failed_blocks) == expected, (bug, report.failed_blocks)
        assert len(report.failed_blocks) == len(expected)
        assert all(report.blocks[k].passed for k in report.blocks if k not in expected)


@pytest.mark.parametrize("name, bug", CASES)
def test_sampled_and_directional_checks_find_the_same_bugs(name, bug):
    """Sampled mode checks a few coordinates per block: a block fails exactly when a drawn
    coordinate is one the bug changed (read from the complex-step truth). Directional probes
    see every coordinate of a block at once: the planted mistakes are O(1) of their blocks,
    far beyond what 4 probes are stated to detect, so exactly the expected blocks fail."""
    forward, backward, bugs, inputs, args, cache, dout = _setup(name)
    expected = bugs[bug]
    wrong = lambda d, c: backward(d, c, bug=bug)  # noqa: E731

    assert check_layer(forward, backward, inputs, dout=dout, args=args, mode="sampled",
                       n_per_block=3).passed
    sampled = check_layer(forward, wrong, inputs, dout=dout, args=args, mode="sampled",
                          n_per_block=3)
    truth = _truth(forward, inputs, args, dout)
    # The sampled numerical gradient is the truth where drawn (central-difference accuracy,
    # ~1e-9 absolute on O(1) values: 1e-5 relative and 1e-7 absolute leave room) and NaN
    # elsewhere.
    for k in truth:
        drawn = sampled.checked[k]
        assert 0 < drawn.sum() <= 3
        assert np.allclose(sampled.gradapprox[k][drawn], truth[k][drawn], rtol=1e-5, atol=1e-7)
        assert np.all(np.isnan(sampled.gradapprox[k][~drawn]))
    grads = _grads(backward, dout, cache, inputs, bug)
    reached = {k for k in expected
               if np.any((np.abs(grads[k] - truth[k]) > 1e-6) & sampled.checked[k])}
    assert reached, "no drawn coordinate is wrong: choose another seed"
    assert set(sampled.failed_blocks) == reached

    assert check_layer(forward, backward, inputs, args=args, mode="directional",
                       n_directions=4).passed
    directional = check_layer(forward, wrong, inputs, args=args, mode="directional",
                              n_directions=4)
    assert set(directional.failed_blocks) == expected


# -- what the report says about each mistake ----------------------------------------------------
def test_the_softmax_loss_scale_mistakes_are_measured():
    """A missing 1/N makes dx exactly N times the truth, a wrong sign -1 times: the report's
    fitted scale says so (to ~1e-8: the central difference's rounding, ~1e-16 / 1e-7 on
    gradient elements of ~0.1; 1e-6 relative leaves room)."""
    forward, backward, _, inputs, args, _, _ = _setup("softmax_loss")
    N = inputs["x"].shape[0]
    for bug, factor in (("no 1/N", N), ("sign", -1.0)):
        report = check_layer(forward, partial(backward, bug=bug), inputs, args=args)
        block = report.blocks["dx"]
        assert block.scale == pytest.approx(factor, rel=1e-6), (bug, block)
        assert block.diagnosis is not None


def test_the_softmax_loss_takes_a_plain_float_upstream_gradient():
    """A scalar output gets a scalar dout: 1.0 (the loss itself) and 2.5, as Python floats."""
    forward, backward, _, inputs, args, _, _ = _setup("softmax_loss")
    for dloss in (1.0, 2.5):
        assert check_layer(forward, backward, inputs, args=args, dout=dloss).passed
        halved = lambda d, c: backward(d / 2, c)  # noqa: E731
        assert check_layer(forward, halved, inputs, args=args,
                           dout=dloss).blocks["dx"].scale == pytest.approx(0.5, rel=1e-6)


def test_the_attention_scale_mistake_is_measured():
    """Without 1/sqrt(d), dQ and dK are sqrt(d) = 2 times the truth (tolerance as above)."""
    forward, backward, _, inputs, args, _, _ = _setup("attention")
    report = check_layer(forward, lambda d, c: backward(d, c, bug="no 1/sqrt(d)"), inputs)
    d = inputs["Q"].shape[1]
    for key in ("dQ", "dK"):
        assert report.blocks[key].scale == pytest.approx(math.sqrt(d), rel=1e-6), report


def test_the_lstm_transposed_dWh_is_named_a_transposition():
    forward, backward, _, inputs, _, _, _ = _setup("lstm")
    report = check_layer(forward, lambda d, c: backward(d, c, bug="dWh transposed"), inputs)
    block = report.blocks["dWh"]
    assert block.scale is None and "transposed" in block.diagnosis, block


def test_an_lstm_dWh_of_the_transposed_shape_is_named():
    """The transposed product not reshaped, (4H, H) for Wh (H, 4H): refused, naming Wh."""
    forward, backward, _, inputs, _, _, _ = _setup("lstm")

    def transposed(dout, cache):
        dx, dh, dc, dWx, dWh, db = backward(dout, cache)
        return dx, dh, dc, dWx, dWh.T, db

    with pytest.raises(ValueError, match=r"Wh.*\(8, 2\)"):
        check_layer(forward, transposed, inputs)


# -- a tie in a pooling window: a kink, never a mistake -----------------------------------------
def test_a_tie_in_a_pooling_window_never_calls_the_right_backward_wrong():
    """ReLU before a max-pool leaves windows of zeros: an exact tie, at which max has no
    derivative (its one-sided slopes differ), so the central difference through the tie is
    not a derivative. Full and sampled checks set the tied coordinates aside as kinks and
    still find a real mistake; a directional probe steps across the tie just the same, so it
    must not call the right backward pass wrong either (kinks or unverified are both honest).

    Fails today: directional probes of a custom cost carry no kink test
    (gradcheck_fast/custom.py cost_probes builds Probes with kinks=0), and every probe is
    reported wrong.
    """
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 2, 4, 4))
    x[0, 0, :2, :2] = 0.0  # one window of zeros, as after a ReLU
    inputs = {"x": x}
    full = check_layer(maxpool_forward, maxpool_backward, inputs)
    assert full.passed and full.blocks["dx"].n_kinks > 0, full
    sampled = check_layer(maxpool_forward, maxpool_backward, inputs, mode="sampled",
                          n_per_block=x.size)
    assert sampled.passed and sampled.blocks["dx"].n_kinks > 0, sampled
    wrong = check_layer(maxpool_forward, lambda d, c: maxpool_backward(d, c, bug="spread"),
                        inputs)
    assert wrong.failed_blocks == ["dx"]
    directional = check_layer(maxpool_forward, maxpool_backward, inputs, mode="directional",
                              n_directions=4)
    assert directional.blocks["dx"].verdict != "wrong", directional


def test_a_directional_layer_check_says_which_engine_ran():
    """The report of a layer check names the engine that evaluated it in every mode: the
    Python black-box path, with its notion of a kink (any non-smooth point of the cost).

    Fails today: gradcheck_fast/report/build.py (directional measurements) fixes
    engine="incremental", and the report's kink stays the built-in network's "a ReLU kink".
    """
    forward, backward, _, inputs, _, _, dout = _setup("attention")
    full = check_layer(forward, backward, inputs, dout=dout)
    directional = check_layer(forward, backward, inputs, dout=dout, mode="directional",
                              n_directions=4)
    assert directional.passed
    assert (directional.engine, directional.kink) == (full.engine, full.kink)
