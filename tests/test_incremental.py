"""The incremental engine against the truth: each J(theta +- eps e_i) - J(theta) it forms must be
that of a full forward pass, up to rounding, kinks included.

The truth is a full forward pass in 50-digit arithmetic (mpmath): the change of J it gives,
~1e-9 here, is then known to ~1e-40, far below any float64 rounding. (Extended precision is not
enough: its 2**-64 times J, subtracted from itself, is already 1e-11 of such a change.) Each
perturbation is applied as the engine applies it: theta_i + delta with
delta = fl(theta_i +- eps) - theta_i, exact in float64 and so in 50 digits.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from gradcheck_fast import MLP, activations, engines, validation
from gradcheck_fast.models import SEED_MODEL
from tests.registry_data import ACTIVATIONS, LOSSES

U = 2.0**-53
mpmath.mp.dps = 50
_exp = np.vectorize(mpmath.exp, otypes=[object])
_log = np.vectorize(mpmath.log, otypes=[object])
_mpf = np.vectorize(mpmath.mpf, otypes=[object])


def _cost_exact(parameters, X, Y, model=SEED_MODEL):
    """J of ``model`` in 50 digits, written from the MLP docstring's definitions."""
    L = len(parameters) // 2
    hidden = model.hidden_for(L)
    A = _mpf(X)
    for l in range(1, L + 1):
        Z = _mpf(parameters[f"W{l}"]) @ A + _mpf(parameters[f"b{l}"])
        if l < L:
            f = ACTIVATIONS[hidden[l - 1]].mp
            A = np.vectorize(lambda z, f=f: f(z, model.leaky_slope), otypes=[object])(Z)
    Y = _mpf(Y)
    loss = LOSSES[model.output].mp_sample
    data = sum(loss(Z[:, j], Y[:, j]) for j in range(Z.shape[1]))
    cost = data / X.shape[1]
    if model.l2:
        squares = sum(sum((_mpf(parameters[f"W{l}"]) ** 2).ravel()) for l in range(1, L + 1))
        cost += mpmath.mpf(model.l2) / (2 * X.shape[1]) * squares
    return cost


def _true_changes(parameters, X, Y, epsilon, model=SEED_MODEL):
    """Per coordinate, J(theta + delta+-) - J(theta) in 50 digits, rounded to float64."""
    layout, theta = validation.mlp_layout_and_theta(parameters)
    J0 = _cost_exact(parameters, X, Y, model)
    changes = np.empty((2, theta.size))
    for i in range(theta.size):
        for k, step in enumerate((epsilon, -epsilon)):
            perturbed = theta.copy()
            perturbed[i] = theta[i] + step  # the float64 step the engines take
            changes[k, i] = float(_cost_exact(layout.unpack(perturbed), X, Y, model) - J0)
    return changes


def _network(rng, sizes, m, scale=1.0):
    parameters = {}
    for l in range(1, len(sizes)):
        parameters[f"W{l}"] = scale * rng.standard_normal((sizes[l], sizes[l - 1]))
        parameters[f"b{l}"] = scale * rng.standard_normal((sizes[l], 1))
    X = rng.standard_normal((sizes[0], m))
    Y = (rng.random((sizes[-1], m)) < 0.5).astype(np.float64)
    return X, Y, parameters


def _place_near_kinks(rng, parameters, X, layers, margin=3e-8):
    """Shift biases so that some pre-activations sit within +-margin of 0: a +-1e-7 step of a
    weight feeding them (|x| ~ 1) crosses the kink."""
    A = X
    for l in range(1, len(parameters) // 2 + 1):
        Z = parameters[f"W{l}"] @ A + parameters[f"b{l}"]
        if l in layers:
            r, j = rng.integers(Z.shape[0]), rng.integers(Z.shape[1])
            parameters[f"b{l}"][r, 0] -= Z[r, j] + margin * rng.uniform(-1, 1)
            Z = parameters[f"W{l}"] @ A + parameters[f"b{l}"]
        A = np.maximum(Z, 0)
    return parameters


def _incremental(parameters, X, Y, epsilon, model=SEED_MODEL):
    layout, theta = validation.mlp_layout_and_theta(parameters)
    X, Y = validation.check_data(X, Y, layout, model)
    return engines.mlp_costs(layout, theta, X, Y, epsilon, engine="incremental", model=model)


@pytest.mark.parametrize("seed", range(20))
def test_changes_equal_full_pass_up_to_rounding(seed):
    rng = np.random.default_rng(seed)
    depth = 1 + seed % 5
    sizes = [int(n) for n in rng.integers(1, 7, size=depth + 1)]
    X, Y, parameters = _network(rng, sizes, m=int(rng.integers(1, 12)), scale=0.7)
    if depth > 1:
        _place_near_kinks(rng, parameters, X, layers=range(1, depth))
    costs = _incremental(parameters, X, Y, 1e-7)
    truth = _true_changes(parameters, X, Y, 1e-7)
    _check(costs, truth)


#: Every registry activation alone and before a kinked layer, every output, L2.
CURVED = [name for name, entry in activations.REGISTRY.items() if entry.curved]
MODELS = [
    MLP(output="softmax"), MLP(output="linear"), MLP(hidden="leaky_relu", leaky_slope=0.2),
    MLP(hidden="linear", output="softmax", l2=0.3), MLP(hidden=["leaky_relu", "relu"],
                                                      output="linear", l2=0.1),
    MLP(hidden="sigmoid", output="softmax", l2=0.2), MLP(hidden=["relu", "sigmoid"]),
] + [MLP(hidden=name) for name in CURVED if name != "sigmoid"] + [
    MLP(hidden=[name, "relu"], output="linear") for name in CURVED]


@pytest.mark.parametrize("model", MODELS, ids=repr)
@pytest.mark.parametrize("seed", range(3))
def test_changes_equal_full_pass_for_every_model(model, seed):
    rng = np.random.default_rng(40 + seed)
    sizes = [int(n) for n in rng.integers(2, 6, size=4)]
    X, Y, parameters = _network(rng, sizes, m=int(rng.integers(2, 9)), scale=0.7)
    Y = _labels(rng, model, sizes[-1], X.shape[1])
    _place_near_kinks(rng, parameters, X, layers=range(1, 3))
    costs = _incremental(parameters, X, Y, 1e-7, model)
    _check(costs, _true_changes(parameters, X, Y, 1e-7, model))


def _labels(rng, model, n_out, m):
    """Y for the model's loss as a float matrix (class labels one-hot)."""
    Y = LOSSES[model.output].labels(rng, n_out, m)
    return np.eye(n_out)[:, Y] if Y.ndim == 1 else Y


def _check(costs, truth):
    """|dJ_inc - dJ_true| within the engine's own rounding bound plus a few ulps of |dJ|.

    ``resolution`` bounds the rounding of the loss changes; the remaining roundings (the
    product dz = delta * x, the sensitivities V -- sums of at most 6 products per layer here --,
    the sums over samples) are each a few ulps of products of the step with the network's
    weights and activations, not of J. The largest change of J over all coordinates bounds
    those products (up to a factor the width), so 2**10 ulps of it covers them with room; it is
    still ~10**6 times tighter than the ulp(J) / eps noise of subtracting two full float64
    costs. (Per coordinate the error is a few ulps of its own change unless the sensitivity
    itself cancels -- a sum of terms of both signs -- which the network-wide scale allows for.)

    At a kink the part of the step beyond the kink is ``z + dz``, with z the float64
    pre-activation: its rounding (~u sum|w a|, below u |J| on these networks) is in every
    float64 forward pass, so those coordinates are held to a full pass's precision, 16 ulps of J.
    """
    assert np.isfinite(costs.J)
    changes = np.stack([costs.dJ_plus, costs.dJ_minus])
    scale = np.max(np.abs(truth))
    tolerance = 4 * costs.resolution + 2.0**10 * U * scale
    tolerance = tolerance + np.where(costs.kinks > 0, 16 * U * abs(costs.J), 0.0)
    error = np.abs(changes - truth)
    assert np.all(error <= tolerance), float(np.max(error / np.maximum(tolerance, 1e-300)))


def _index(parameters, name, index):
    layout = validation.mlp_layout(parameters)
    return int(layout.offsets[layout.names.index(name)]) + int(
        np.ravel_multi_index(index, layout.shape(name)))


def test_kink_in_the_perturbed_layer_is_crossed_exactly():
    rng = np.random.default_rng(7)
    X, Y, parameters = _network(rng, [3, 4, 2], m=5, scale=0.7)
    # Unit 1 of layer 1 sits 3e-8 from its kink on sample 2: a 1e-7 step of W1[1, c] (|x| ~ 1)
    # or b1[1] moves it across.
    z = parameters["W1"] @ X[:, 2] + parameters["b1"][:, 0]
    parameters["b1"][1, 0] -= z[1] - 3e-8
    costs = _incremental(parameters, X, Y, 1e-7)
    assert costs.kinks[_index(parameters, "b1", (1, 0))] > 0
    _check(costs, _true_changes(parameters, X, Y, 1e-7))


def test_kink_in_a_later_layer_takes_the_explicit_path():
    rng = np.random.default_rng(8)
    X, Y, parameters = _network(rng, [3, 4, 3, 1], m=4, scale=0.7)
    A1 = np.maximum(parameters["W1"] @ X + parameters["b1"], 0)
    # Unit 0 of layer 2 sits 1e-9 from its kink on every sample: any step that moves an active
    # layer-1 unit feeding it moves it across, which the linear path would miss.
    z2 = parameters["W2"] @ A1 + parameters["b2"]
    j = int(np.argmax(A1.sum(axis=0)))
    parameters["b2"][0, 0] -= z2[0, j] - 1e-9
    costs = _incremental(parameters, X, Y, 1e-7)
    layout = validation.mlp_layout(parameters)
    W1 = layout.block("W1")
    assert np.any(costs.kinks[W1] > 0)
    _check(costs, _true_changes(parameters, X, Y, 1e-7))


@pytest.mark.parametrize("seed", range(6))
def test_both_engines_find_the_same_kinks_and_agree(seed):
    rng = np.random.default_rng(100 + seed)
    sizes = [4, 5, 4, 3, 2][: 2 + seed % 4]
    X, Y, parameters = _network(rng, sizes, m=6, scale=0.7)
    _place_near_kinks(rng, parameters, X, layers=range(1, len(sizes) - 1), margin=1e-8)
    layout, theta = validation.mlp_layout_and_theta(parameters)
    Xc, Yc = validation.check_data(X, Y, layout)
    exact = engines.mlp_costs(layout, theta, Xc, Yc, 1e-7, engine="exact")
    incremental = engines.mlp_costs(layout, theta, Xc, Yc, 1e-7, engine="incremental")
    # Crossings are decided on the same pre-activations, 1e-8 away from the kink against a step
    # of ~1e-7: no rounding can tip them differently.
    assert np.array_equal(exact.kinks > 0, incremental.kinks > 0)
    # The exact engine's J+- are full float64 passes: their difference carries up to a few
    # ulps of J (~1e-15 here) of rounding each, divided by 2 eps.
    noise = 64 * U * abs(exact.J) / 1e-7
    assert np.all(np.abs(exact.gradapprox - incremental.gradapprox) <= noise)


def test_incremental_is_bitwise_the_same_for_one_and_two_threads():
    import numba

    rng = np.random.default_rng(11)
    # 1913 parameters x m samples: above engines._SERIAL_WORK, so the parallel kernel runs.
    m = max(96, -(-engines._SERIAL_WORK // 1913))
    X, Y, parameters = _network(rng, [40, 30, 20, 3], m=m, scale=0.3)
    assert 1913 * m >= engines._SERIAL_WORK
    results = []
    previous = numba.get_num_threads()
    try:
        for n in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(n)
            results.append(_incremental(parameters, X, Y, 1e-7))
    finally:
        numba.set_num_threads(previous)
    for field in ("dJ_plus", "dJ_minus", "gradapprox", "resolution", "kinks"):
        assert np.array_equal(getattr(results[0], field), getattr(results[1], field)), field


def test_memory_of_a_235k_parameter_check_stays_under_64_mib():
    """The issue's bound: no O(P m) or O(P^2) buffers, only O(P) outputs and O(width m)
    set-up. tracemalloc sees every NumPy allocation (the kernels' per-chunk scratch, a few
    rows of floats, is allocated by numba outside it and is negligible here)."""
    import tracemalloc

    from gradcheck_fast import check_gradients
    from gradcheck_fast.networks import example

    X, Y, parameters, gradients = example("mnist")
    check_gradients(parameters, gradients, X, Y)  # compile or load the kernels first
    tracemalloc.start()
    try:
        report = check_gradients(parameters, gradients, X, Y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.n_params == 235_146 and report.engine == "incremental"
    assert peak <= 64 * 2**20, peak / 2**20


@pytest.mark.parametrize("name", CURVED)
def test_curved_layers_take_the_series_path(name):
    """Behind a curved layer the outputs' change is a cubic in the unit's change (V, V2, V3):
    the exactness tests above cover it; here, that it is what runs (and not the explicit
    propagation) for ordinary steps."""
    from gradcheck_fast.engines import incremental

    rng = np.random.default_rng(3)
    X, Y, parameters = _network(rng, [6, 5, 4, 2], m=7, scale=0.5)
    model = MLP(hidden=["sigmoid", name])
    layout, theta = validation.mlp_layout_and_theta(parameters)
    Xc, Yc = validation.check_data(X, Y, layout, model)
    prepared = incremental.prepare(layout, theta, Xc, Yc, model)
    assert prepared.series[1] == 1 and prepared.series[2] == 0
    C3 = prepared.C3.reshape(-1, 3)
    assert np.any(C3[:, 1] != 0) and np.any(C3[:, 2] != 0)
    assert incremental.slow_fractions(prepared, layout.sizes, 7, 1e-7)[1] == 0.0
    _check(_incremental(parameters, X, Y, 1e-7, model),
           _true_changes(parameters, X, Y, 1e-7, model))


def _sample_loss_change(z, t, y, model):
    """l(z + t) - l(z) of one sample's outputs in 50 digits (z, y float64, t mpf vectors)."""
    z, y = _mpf(z), _mpf(y)
    loss = LOSSES[model.output].mp_sample
    return loss(z + t, y) - loss(z, y)


@pytest.mark.parametrize("model", [MLP(), MLP(hidden="sigmoid", output="softmax")] + [
    MLP(hidden=[name, "relu"], output="linear") for name in CURVED] + [
    MLP(hidden=name) for name in CURVED if name != "sigmoid"], ids=repr)
def test_composed_cubic_is_the_loss_change_within_its_bound(model):
    """The incremental engine's fast path takes a sample's loss change as one cubic in the
    unit's change s (incremental._composed). Its claim: for |s| up to its limit, the cubic is
    the loss change of the outputs' move t(s) = v1 s + v2 s**2 + v3 s**3 within the bound it
    carries (rounding of its terms plus the left-out degree >= 4 terms). Checked at the limit
    itself, where the s**2 and s**3 terms are largest (~2**-20 and 2**-40 of the linear one, far
    above rounding: a wrong a2 or a3 fails), and at limit / 64, against 50-digit arithmetic."""
    from gradcheck_fast.engines import incremental

    rng = np.random.default_rng(11)
    sizes = [4, 6, 5, 3]
    X, Y, parameters = _network(rng, sizes, m=5, scale=0.7)
    Y = _labels(rng, model, 3, 5)
    layout, theta = validation.mlp_layout_and_theta(parameters)
    Xc, Yc = validation.check_data(X, Y, layout, model)
    p = incremental.prepare(layout, theta, Xc, Yc, model)
    m, n_out = 5, 3
    z_out = p.Z[p.act_off[-2] :].reshape(n_out, m)
    K = p.K.reshape(-1, incremental.K_FIELDS)
    checked = 0
    for l in (1, 2):
        for r in range(sizes[l]):
            for j in range(m):
                a1, a2, a3, M1, M2, M3, B, limit = K[(p.s_off[l] + r) * m + j]
                v = p.v_off[l] + (r * m + j) * n_out
                if p.series[l]:
                    v1, v2, v3 = p.C3.reshape(-1, 3)[v : v + n_out].T
                else:
                    v1, v2, v3 = p.V[v : v + n_out], np.zeros(n_out), np.zeros(n_out)
                for s in (limit, -limit, limit / 64):
                    e = mpmath.mpf(s)
                    t = _mpf(v1) * e + _mpf(v2) * e**2 + _mpf(v3) * e**3
                    exact = _sample_loss_change(z_out[:, j], t, Y[:, j], model)
                    value = s * (a1 + s * (a2 + s * a3))
                    bound = (8 * U * (n_out + 4) * abs(s) * (M1 + abs(s) * (M2 + abs(s) * M3))
                             + B * s**4)
                    assert abs(value - exact) <= bound, (l, r, j, s, float(value - exact), bound)
                    checked += 1
    assert checked == 3 * m * (6 + 5)


@pytest.mark.parametrize("hidden", [["relu", "leaky_relu", "relu"], ["relu", "tanh", "relu"]])
@pytest.mark.parametrize("sizes", [[7, 40, 90, 70, 3], [7, 40, 30, 20, 3]], ids=["rounds", "whole"])
def test_the_radii_are_the_full_scans_minimum(hidden, sizes):
    """The kink radii stop scanning a later layer's units once none left could lower them
    (incremental._radii; layers wider than SCAN_ALL, else scanned whole): bitwise the
    minimum over every unit, ``min_{q, k} |z_q[k, j]| * inverse_q[k, r]`` with NaN (0 * inf)
    never taken, including layers two and three behind, and a unit no later unit depends on
    (its products infinite)."""
    from gradcheck_fast.engines import incremental

    rng = np.random.default_rng(5)
    assert (max(sizes[2:4]) > incremental.SCAN_ALL) == (sizes[2] == 90)
    X, Y, parameters = _network(rng, sizes, m=9, scale=0.12)
    parameters["W2"][:, 3] = 0.0  # no unit of layer 2 depends on unit 3 of layer 1
    model = MLP(hidden=hidden)
    layout, theta = validation.mlp_layout_and_theta(parameters)
    Xc, Yc = validation.check_data(X, Y, layout, model)
    p = incremental.prepare(layout, theta, Xc, Yc, model)
    assert p is not None  # a finite forward pass
    m, L = 9, len(sizes) - 1
    weights = [None] + [parameters[f"W{l}"] for l in range(1, L + 1)]
    gains = np.ones(L + 1)
    for l in range(1, L):
        gains[l] = activations.REGISTRY[hidden[l - 1]].gain(model.leaky_slope)
    bound, offsets = incremental._derivative_bounds(weights, sizes, gains)
    with np.errstate(divide="ignore"):
        inverse = 1.0 / bound
    for l in range(1, L - 1):
        expected = np.full((sizes[l], m), np.inf)
        for q in range(l + 1, L):
            if not activations.REGISTRY[hidden[q - 1]].kink:
                continue
            block = inverse[offsets[l, q] : offsets[l, q] + sizes[q] * sizes[l]]
            z = np.abs(p.Z[p.act_off[q] : p.act_off[q + 1]].reshape(sizes[q], m))
            with np.errstate(invalid="ignore"):
                products = z[:, None, :] * block.reshape(sizes[q], sizes[l])[:, :, None]
            expected = np.fmin(expected, np.nanmin(np.where(np.isnan(products), np.inf,
                                                            products), axis=0))
        rho = p.rho[p.act_off[l] : p.act_off[l + 1]].reshape(sizes[l], m)
        assert np.array_equal(rho, expected), l
    # Unit 3 of layer 1: no later kinked unit depends on it (W2[:, 3] = 0 also cuts it off
    # from layers 3 and 4), so it has no radius.
    assert np.all(np.isinf(p.rho[p.act_off[1] + 3 * m : p.act_off[1] + 4 * m]))
