"""Diagnoses that say what the user would conclude (issue 11, item 4): a scale equal to m, 1/m,
2 or 1/2 named as the missing or extra factor, an error proportional to the parameters named as
a regularisation term, a wrong block under a wrong layer marked as inheriting its error, and,
when every block is wrong, the model that the gradients match instead."""

from __future__ import annotations

import numpy as np
import pytest

import gradcheck_fast
from gradcheck_fast import MLP, check, check_layer, reference
from gradcheck_fast.networks import random_mlp


def _network(model, sizes=(6, 5, 4, 1), m=16, seed=3):
    X, Y, parameters, _ = random_mlp(sizes, m=m, seed=seed)
    _, cache = reference.forward_mlp(X, Y, parameters, model)
    return X, Y, parameters, reference.backward_mlp(X, Y, cache, model)


def test_a_missing_one_over_m_is_named():
    X, Y, parameters, gradients = _network(MLP())
    m = X.shape[1]
    wrong = dict(gradients, dW1=m * gradients["dW1"], db2=gradients["db2"] / m)
    report = gradcheck_fast.check_gradients(parameters, wrong, X, Y)
    assert report.failed_blocks == ["db2", "dW1"]
    assert report.blocks["dW1"].diagnosis == "dW1 ≈ 16.00 × numerical = m: a missing 1/m?"
    assert report.blocks["db2"].diagnosis == "db2 ≈ 0.06 × numerical = 1/m: an extra 1/m?"


@pytest.mark.parametrize("factor, text", [(2.0, ": an extra factor 2?"),
                                          (0.5, ": a missing factor 2 (or an extra 1/2)?"),
                                          (1.5, "")])
def test_a_factor_two_or_a_half_is_named_and_others_are_not(factor, text):
    X, Y, parameters, gradients = _network(MLP())
    report = gradcheck_fast.check_gradients(parameters, dict(gradients,
                                                             dW2=factor * gradients["dW2"]),
                                            X, Y)
    assert report.blocks["dW2"].diagnosis == f"dW2 ≈ {factor:.2f} × numerical{text}"


@pytest.mark.parametrize("l2_factor, text", [(0.0, "lacks the L2 term"),
                                             (2.0, "counts the L2 term twice"),
                                             (0.5, "has half the L2 term")])
def test_a_wrong_l2_term_is_named(l2_factor, text):
    lam = 0.7
    model = MLP(l2=lam)
    X, Y, parameters, gradients = _network(model)
    m = X.shape[1]
    # The backward pass with the L2 term's gradient lambda/m W1 taken l2_factor times.
    wrong = dict(gradients, dW1=gradients["dW1"] + (l2_factor - 1.0) * lam / m
                 * parameters["W1"])
    report = gradcheck_fast.check_gradients(parameters, wrong, X, Y, model=model)
    assert report.failed_blocks == ["dW1"]
    diagnosis = report.blocks["dW1"].diagnosis
    assert diagnosis.startswith(f"dW1 {text}: analytic - numerical ≈ ")
    assert f"(the L2 term's gradient is {lam / m:.3g} × W1)" in diagnosis


def test_a_custom_regularisation_term_with_the_wrong_factor_is_named():
    """The course convention: loss + reg * sum(W**2), whose gradient has 2 reg W; a backward
    pass with reg W is off by -reg W."""
    rng = np.random.default_rng(0)
    X, y, reg = rng.normal(size=(20, 5)), rng.normal(size=20), 0.3
    params = {"W": rng.normal(size=(5, 3)), "v": rng.normal(size=3)}

    def loss(p):
        r = np.tanh(X @ p["W"]) @ p["v"] - y
        return 0.5 * r @ r + reg * np.sum(p["W"] ** 2)

    def grads(p, reg_factor):
        h = np.tanh(X @ p["W"])
        r = h @ p["v"] - y
        dW = X.T @ ((r[:, None] * p["v"][None, :]) * (1 - h**2))
        return {"W": dW + reg_factor * reg * p["W"], "v": h.T @ r}

    assert check(loss, params, grads(params, 2.0)).passed
    report = check(loss, params, grads(params, 1.0))
    assert report.failed_blocks == ["dW"]
    assert report.blocks["dW"].diagnosis.startswith(
        "dW - numerical ≈ -0.3 × W: a regularisation term with the wrong factor")


def test_a_layers_batch_size_stands_in_for_m():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 4)), rng.integers(0, 4, size=7)

    def softmax_loss(x, y):
        shifted = x - x.max(axis=1, keepdims=True)
        p = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        return -np.mean(np.log(p[np.arange(len(y)), y])), (p, y)

    def backward(dloss, cache):  # forgets the mean's 1/N
        p, y = cache
        dx = p.copy()
        dx[np.arange(len(y)), y] -= 1.0
        return dx * dloss

    report = check_layer(softmax_loss, backward, x, args=(y,), dout=1.0)
    assert report.blocks["dx"].diagnosis == (
        "dx ≈ 7.00 × numerical = x.shape[0]: a missing 1/x.shape[0]?")


def test_lower_layers_that_inherit_an_error_are_marked_and_an_isolated_one_is_not():
    model = MLP(hidden="tanh")
    X, Y, parameters, _ = random_mlp((6, 5, 4, 3, 1), m=12, seed=2)
    right = _backward_with_wrong_dz(X, Y, parameters, model, layer=3, factor=1.0)
    assert gradcheck_fast.check_gradients(parameters, right, X, Y, model=model).passed
    # A wrong dZ3 (scaled by 1.3): backprop carries it into dW3, db3 and everything below.
    wrong = _backward_with_wrong_dz(X, Y, parameters, model, layer=3, factor=1.3)
    report = gradcheck_fast.check_gradients(parameters, wrong, X, Y, model=model)
    assert report.failed_blocks == ["dW3", "db3", "dW2", "db2", "dW1", "db1"]
    for name in ("dW3", "db3"):
        assert "inherited" not in (report.blocks[name].diagnosis or "")
    for name in ("dW2", "db2", "dW1", "db1"):
        assert report.blocks[name].diagnosis.endswith(
            "likely inherited from layer 3 (dW3, db3 are wrong too): fix that layer first")
    # The seed's faulty case: dW2 and db1 wrong, dW1 right: nothing is inherited.
    X, Y, parameters = reference.seed_case()
    _, cache = reference.forward_propagation_n(X, Y, parameters)
    faulty = reference.backward_propagation_n_faulty(X, Y, cache)
    report = gradcheck_fast.check_gradients(parameters, faulty, X, Y)
    assert not any("inherited" in (b.diagnosis or "") for b in report.blocks.values())


def _backward_with_wrong_dz(X, Y, parameters, model, layer, factor):
    """Backprop of a tanh network with sigmoid output and cross-entropy, written here (samples
    in columns), with dZ of ``layer`` scaled by ``factor``."""
    L = len(parameters) // 2
    A = [X]
    for l in range(1, L + 1):
        Z = parameters[f"W{l}"] @ A[-1] + parameters[f"b{l}"]
        A.append(np.tanh(Z) if l < L else 1.0 / (1.0 + np.exp(-Z)))
    m = X.shape[1]
    dZ = A[L] - Y
    grads = {}
    for l in range(L, 0, -1):
        if l == layer:
            dZ = factor * dZ
        grads[f"dW{l}"] = dZ @ A[l - 1].T / m
        grads[f"db{l}"] = dZ.sum(axis=1, keepdims=True) / m
        if l > 1:
            dZ = (parameters[f"W{l}"].T @ dZ) * (1.0 - A[l - 1] ** 2)
    return grads


def test_every_block_wrong_names_the_model_the_gradients_match():
    tanh = MLP(hidden="tanh")
    X, Y, parameters, gradients = _network(tanh)
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y)  # checked as ReLU
    assert set(report.failed_blocks) == {"dW1", "db1", "dW2", "db2", "dW3", "db3"}
    note = report.notes[-1]
    assert "the gradients match hidden='tanh'" in note and "model=MLP(hidden='tanh'" in note
    assert "checked as relu" in note
    assert gradcheck_fast.check_gradients(parameters, gradients, X, Y, model=tanh).passed


def test_every_block_wrong_without_a_matching_model_says_what_else_to_suspect():
    X, Y, parameters, gradients = _network(MLP())
    wrong = {k: 1.5 * v for k, v in gradients.items()}  # a mistake at the output
    report = gradcheck_fast.check_gradients(parameters, wrong, X, Y)
    assert len(report.failed_blocks) == 6
    assert report.notes[-1].startswith("every block is wrong: does model= match")
    # A check where some blocks pass gets no such note.
    partly = dict(gradients, dW1=1.5 * gradients["dW1"])
    assert not any("every block" in n
                   for n in gradcheck_fast.check_gradients(parameters, partly, X, Y).notes)


def test_the_hint_prepares_no_engine_for_the_activations_it_tries(monkeypatch):
    # The activations tried for the hint are checked by directional probes, which need each
    # model's forward pass only: the incremental engine is prepared once, for the check
    # itself (before: once more for every activation tried, five times the passing check's
    # time at the mnist size).
    from gradcheck_fast.engines import incremental
    from tests.conftest import count_calls

    X, Y, parameters, gradients = _network(MLP(hidden="tanh"))
    prepares = count_calls(monkeypatch, incremental, "prepare")
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y,  # checked as ReLU
                                            engine="incremental")
    assert "the gradients match hidden='tanh'" in report.notes[-1]
    assert len(prepares) == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("actual", ["tanh", "sigmoid", "gelu", "softplus", "leaky_relu"])
def test_the_hint_names_exactly_the_activation_the_gradients_match(actual, seed):
    # One directional probe per block tells one activation's gradients from another's (a
    # different gradient passes a random probe only if the direction is nearly orthogonal to
    # the difference): gradients of each activation, checked as ReLU on a deeper network,
    # get a hint naming that activation and no other.
    model = MLP(hidden=actual, output="softmax")
    X, Y, parameters, _ = random_mlp((12, 9, 7, 3), m=20, seed=seed)
    Y = np.eye(3)[:, np.argmax(Y, axis=0)]
    _, cache = reference.forward_mlp(X, Y, parameters, model)
    gradients = reference.backward_mlp(X, Y, cache, model)
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y,
                                            model=MLP(output="softmax"))
    assert len(report.failed_blocks) == 6
    note = report.notes[-1]
    assert f"the gradients match hidden={actual!r} (" in note, note
    assert " or " not in note.split("(")[0]
