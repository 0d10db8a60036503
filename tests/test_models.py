"""The MLP family: the reference's forward/backward passes against complex-step derivatives,
the library's check of every combination, and the model's validation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import gradcheck_fast
from gradcheck_fast import MLP, activations, losses, reference
from tests.registry_data import ACTIVATIONS, LOSSES

#: Every registry entry: a new activation or loss is tested by every test below.
HIDDEN = tuple(activations.REGISTRY)
OUTPUTS = tuple(losses.REGISTRY)


def _data(model, sizes=(4, 5, 3, 3), m=7, seed=0, labels="one-hot"):
    rng = np.random.default_rng(seed)
    parameters = {}
    for l in range(1, len(sizes)):
        parameters[f"W{l}"] = 0.6 * rng.standard_normal((sizes[l], sizes[l - 1]))
        parameters[f"b{l}"] = 0.2 * rng.standard_normal((sizes[l], 1))
    X = rng.standard_normal((sizes[0], m))
    n_out = sizes[-1]
    Y = LOSSES[model.output].labels(rng, n_out, m)
    if Y.ndim == 1 and labels != "integer":
        Y = reference.one_hot(Y, n_out)
    return X, Y, parameters


def _complex_cost(X, Y, parameters, model):
    """The cost of the MLP family in complex arithmetic, written independently of the library:
    J(theta + i h e_k) = J + i h dJ/dtheta_k + O(h^2), with no subtraction, so the imaginary
    part over h is the derivative to full precision (h = 1e-30). ReLU-type kinks are decided on
    the real part (no sample sits at a kink in these random data)."""
    L = len(parameters) // 2
    hidden = model.hidden_for(L)
    n_out = parameters[f"W{L}"].shape[0]
    if np.ndim(Y) == 1 and np.asarray(Y).dtype.kind in "iu":
        Y = reference.one_hot(Y, n_out)
    m = X.shape[1]
    A = X.astype(complex)
    for l in range(1, L + 1):
        Z = parameters[f"W{l}"] @ A + parameters[f"b{l}"]
        if l < L:
            A = ACTIVATIONS[hidden[l - 1]].complex(Z, model.leaky_slope)
    cost = LOSSES[model.output].complex_sum(Z, Y)
    cost = cost / m
    if model.l2:
        cost += model.l2 / (2 * m) * sum(np.sum(parameters[f"W{l}"] ** 2) for l in range(1, L + 1))
    return cost


def _complex_step_gradients(X, Y, parameters, model, h=1e-30):
    gradients = {}
    for key, value in parameters.items():
        g = np.zeros(value.shape)
        for index in np.ndindex(value.shape):
            perturbed = {k: v.astype(complex) for k, v in parameters.items()}
            perturbed[key][index] += 1j * h
            g[index] = _complex_cost(X, Y, perturbed, model).imag / h
        gradients["d" + key] = g
    return gradients


COMBINATIONS = [MLP(hidden=h, output=o, l2=l2)
                for (h, o), l2 in itertools.product(itertools.product(HIDDEN, OUTPUTS), (0.0, 0.3))]


@pytest.mark.parametrize("model", COMBINATIONS, ids=repr)
def test_reference_backward_pass_is_right(model):
    X, Y, parameters = _data(model)
    cost, cache = reference.forward_mlp(X, Y, parameters, model)
    assert np.isclose(cost, _complex_cost(X, Y, parameters, model).real, rtol=1e-13)
    gradients = reference.backward_mlp(X, Y, cache, model)
    truth = _complex_step_gradients(X, Y, parameters, model)
    for key, value in truth.items():
        # Two exact-to-rounding evaluations of the same derivative: they agree to a few
        # ulps of the terms summed (1e-12 of the largest element is generous).
        assert np.allclose(gradients[key], value, rtol=1e-10, atol=1e-12 * np.abs(value).max())


def test_seed_model_reference_is_the_seeds():
    X, Y, parameters = reference.seed_case()
    cost, cache = reference.forward_mlp(X, Y, parameters, MLP())
    seed_cost, seed_cache = reference.forward_propagation_n(X, Y, parameters)
    assert cost == seed_cost
    mine = reference.backward_mlp(X, Y, cache, MLP())
    seed = reference.backward_propagation_n(X, Y, seed_cache)
    assert all(np.array_equal(mine[k], seed[k]) for k in ("dW1", "db1", "dW2", "db2", "dW3", "db3"))


@pytest.mark.parametrize("bad,error", [
    (dict(hidden="relu6"), ValueError), (dict(hidden=3), TypeError),
    (dict(output="tanh"), ValueError), (dict(l2=-0.1), ValueError),
    (dict(leaky_slope=float("nan")), ValueError), (dict(l2="0.1"), TypeError),
])
def test_model_validation(bad, error):
    with pytest.raises(error):
        MLP(**bad)


def test_per_layer_activations_must_match_the_depth():
    X, Y, parameters = _data(MLP())
    with pytest.raises(ValueError, match="hidden"):
        reference.forward_mlp(X, Y, parameters, MLP(hidden=["tanh"]))


# -- the library checks every combination --------------------------------------------------------
@pytest.mark.parametrize("model", COMBINATIONS, ids=repr)
def test_library_checks_every_combination(model):
    X, Y, parameters = _data(model, sizes=(5, 4, 4, 3), m=9, seed=1)
    _, cache = reference.forward_mlp(X, Y, parameters, model)
    gradients = reference.backward_mlp(X, Y, cache, model)
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, model=model)
    assert report.passed, str(report)
    wrong = dict(gradients)
    wrong["dW2"] = gradients["dW2"] * 1.5
    bad = gradcheck_fast.check_gradients(parameters, wrong, X, Y, model=model)
    assert bad.failed_blocks == ["dW2"]
    assert bad.blocks["dW2"].diagnosis == "dW2 ≈ 1.50 × numerical"


@pytest.mark.parametrize("model", COMBINATIONS, ids=repr)
def test_incremental_engine_checks_every_combination(model):
    X, Y, parameters = _data(model, sizes=(5, 4, 4, 3), m=9, seed=3)
    _, cache = reference.forward_mlp(X, Y, parameters, model)
    gradients = reference.backward_mlp(X, Y, cache, model)
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, model=model,
                                            engine="incremental")
    assert report.engine == "incremental" and report.passed, str(report)
    exact = gradcheck_fast.check_gradients(parameters, gradients, X, Y, model=model,
                                           engine="exact")
    # Both are central differences of the same cost; the exact engine's carry the rounding of
    # two full costs, ~64 ulp(J) / eps at most here.
    noise = 64 * 2.0**-53 * abs(exact.cost) / 1e-7
    for name in report.gradapprox:
        assert np.allclose(report.gradapprox[name], exact.gradapprox[name], rtol=0, atol=noise)
    wrong = dict(gradients)
    wrong["db1"] = -gradients["db1"]
    bad = gradcheck_fast.check_gradients(parameters, wrong, X, Y, model=model,
                                         engine="incremental")
    assert bad.failed_blocks == ["db1"] and "wrong sign" in bad.blocks["db1"].diagnosis


@pytest.mark.parametrize("model", [MLP(hidden="tanh", output="softmax", l2=0.2),
                                   MLP(hidden=["leaky_relu", "sigmoid"], output="linear")],
                         ids=repr)
def test_exact_engine_is_bitwise_a_full_pass_for_other_models(model):
    from gradcheck_fast import engines, validation
    from gradcheck_fast.engines import exact
    from gradcheck_fast.engines._common import Codes, Network

    X, Y, parameters = _data(model, sizes=(4, 3, 3, 3), m=5, seed=2)
    layout, theta = validation.mlp_layout_and_theta(parameters)
    Xc, Yc = validation.check_data(X, Y, layout, model)
    costs = engines.mlp_costs(layout, theta, Xc, Yc, 1e-7, engine="exact", model=model)
    network = tuple(Network.of(layout, Xc.shape[1]))
    codes = tuple(Codes.of(model, layout.n_layers)._replace(l2=0.0))
    reg_free = []
    for i in range(theta.size):
        perturbed = theta.copy()
        perturbed[i] = theta[i] + 1e-7
        reg_free.append(exact._cost(perturbed, network, Xc, Yc, codes))
    # The data part is bitwise the full pass; the L2 term is formed from its exact change.
    reg = exact._regularisation(theta, network, Xc.shape[1], model.l2)
    weights = np.zeros(theta.size, dtype=bool)
    for name in layout.names:
        if name[0] == "W":
            weights[layout.block(name)] = True
    d = (theta + 1e-7) - theta
    expected = np.array(reg_free) + (reg + np.where(
        weights, model.l2 / (2 * Xc.shape[1]) * (d * (2 * theta + d)), 0.0))
    assert np.array_equal(costs.J_plus, expected)


def test_softmax_takes_integer_labels():
    model = MLP(output="softmax")
    X, labels, parameters = _data(model, labels="integer")
    _, cache = reference.forward_mlp(X, labels, parameters, model)
    gradients = reference.backward_mlp(X, labels, cache, model)
    by_label = gradcheck_fast.check_gradients(parameters, gradients, X, labels, model=model)
    one_hot = gradcheck_fast.check_gradients(parameters, gradients, X,
                                             reference.one_hot(labels, 3), model=model)
    assert by_label.passed and by_label.difference == one_hot.difference
    with pytest.raises(ValueError, match="class labels"):
        gradcheck_fast.check_gradients(parameters, gradients, X, labels + 3, model=model)


def test_seed_functions_take_a_model():
    model = MLP(hidden="tanh", output="linear", l2=0.1)
    X, Y, parameters = _data(model)
    _, cache = reference.forward_mlp(X, Y, parameters, model)
    gradients = reference.backward_mlp(X, Y, cache, model)
    assert gradcheck_fast.gradient_check_n(parameters, gradients, X, Y, model=model,
                                           verbose=False) < 2e-7
    sweep = gradcheck_fast.step_sweep(parameters, gradients, X, Y, model=model)
    assert sweep.verdict == "fine"


#: Different activations per layer: behind a curved layer (tanh, sigmoid, ...) the plus and
#: minus steps stop being each other's negative, also through the piecewise-linear layers after
#: it; and a kinked layer after a curved one.
MIXED = [MLP(hidden=["sigmoid", "linear"], output="softmax"),
         MLP(hidden=["tanh", "leaky_relu"], output="linear", l2=0.1)] + [
    model for name in HIDDEN if activations.REGISTRY[name].curved
    for model in (MLP(hidden=[name, "relu"]), MLP(hidden=["relu", name], output="softmax"))]


@pytest.mark.parametrize("model", COMBINATIONS + MIXED, ids=repr)
def test_directional_mode_checks_every_combination(model):
    """The directional probes of any model: for the reference's gradient (right, by the
    complex-step test above) each probe's central difference is v . grad; a x1.1 error in one
    block fails that block alone."""
    X, Y, parameters = _data(model)
    _, cache = reference.forward_mlp(X, Y, parameters, model)
    gradients = reference.backward_mlp(X, Y, cache, model)
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, model=model,
                                            mode="directional", n_directions=6)
    assert report.mode == "directional" and report.passed, report
    for name, probes in report.probes.items():
        # The central difference's truncation, eps**2 / 6 times a third derivative, ~2e-15 of
        # these O(1) derivatives, plus rounding in delta space (~1e-15 relative): 1e-10 of the
        # largest probe leaves room for probes much smaller than it.
        scale = np.abs(probes.analytic).max()
        assert np.all(np.abs(probes.analytic - probes.numerical) <= 1e-10 * scale), name
    wrong = dict(gradients, dW2=1.1 * gradients["dW2"])
    bad = gradcheck_fast.check_gradients(parameters, wrong, X, Y, model=model,
                                         mode="directional", n_directions=6)
    assert bad.failed_blocks == ["dW2"], bad


@pytest.mark.parametrize("model", [MLP(hidden=["relu", "tanh"]), MLP(hidden="sigmoid",
                                                                      output="softmax")],
                         ids=repr)
def test_directional_mode_allows_for_the_truncation_of_a_large_step(model):
    """With epsilon = 1e-3 the central difference's own error (eps**2 / 6 times a third
    derivative, ~1e-7 relative here) is far above rounding: like the full check, the probes
    estimate it from a second difference at 2 eps, so a right gradient passes and a x1.1 one
    still fails."""
    X, Y, parameters = _data(model)
    _, cache = reference.forward_mlp(X, Y, parameters, model)
    gradients = reference.backward_mlp(X, Y, cache, model)
    options = {"model": model, "mode": "directional", "epsilon": 1e-3, "n_directions": 8}
    assert gradcheck_fast.check_gradients(parameters, gradients, X, Y, **options).passed
    wrong = dict(gradients, dW2=1.1 * gradients["dW2"])
    bad = gradcheck_fast.check_gradients(parameters, wrong, X, Y, **options)
    assert bad.failed_blocks == ["dW2"], bad


def test_a_model_must_be_an_mlp():
    X, Y, parameters = _data(MLP())
    _, cache = reference.forward_mlp(X, Y, parameters, MLP())
    gradients = reference.backward_mlp(X, Y, cache, MLP())
    with pytest.raises(TypeError, match="model"):
        gradcheck_fast.check_gradients(parameters, gradients, X, Y, model="tanh")


@pytest.mark.parametrize("hidden", HIDDEN)
def test_sampled_mode_checks_every_activation(hidden):
    """A sample of coordinates of every block, for every registry activation: the reference's
    gradient passes; a x1.1 error in one block fails that block alone."""
    model = MLP(hidden=hidden, output="softmax", l2=0.1)
    X, Y, parameters = _data(model, sizes=(6, 5, 4, 3), m=8, seed=4)
    _, cache = reference.forward_mlp(X, Y, parameters, model)
    gradients = reference.backward_mlp(X, Y, cache, model)
    options = {"model": model, "mode": "sampled", "n_per_block": 5, "seed": 2}
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, **options)
    assert report.mode == "sampled" and report.passed, report
    assert report.n_checked < report.n_params
    wrong = dict(gradients, dW1=1.1 * gradients["dW1"])
    bad = gradcheck_fast.check_gradients(parameters, wrong, X, Y, **options)
    assert bad.failed_blocks == ["dW1"], bad
