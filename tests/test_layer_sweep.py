"""The incremental engine's layer sweep (issue 14): a full check's changes as sums of products.

The sweep must give what the per-coordinate kernel gives, within the two rounding bounds, for
every model of the family and for steps large enough that the quadratic and cubic terms of
each sample's change are far above rounding (a wrong coefficient fails); the parameters it
cannot take (a sample beyond its limit: a kink, a large step) must be the kernel's own
values. tests/test_incremental.py holds the sweep (the default of a full check) to 50-digit
arithmetic as well.
"""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradcheck_fast import MLP, activations, validation
from gradcheck_fast.engines import incremental, layer_sweep
from gradcheck_fast.engines._common import Codes
from tests.conftest import count_calls
from tests.registry_data import LOSSES

CURVED = [name for name, entry in activations.REGISTRY.items() if entry.curved]
MODELS = [
    MLP(), MLP(output="softmax"), MLP(output="linear", l2=0.2),
    MLP(hidden="leaky_relu", leaky_slope=0.2, output="softmax"),
    MLP(hidden=["linear", "relu"], output="linear"),
] + [MLP(hidden=[name, "relu"]) for name in CURVED] + [
    MLP(hidden=name, output="softmax") for name in CURVED]


def _setup(model, seed, sizes=(7, 6, 5, 3), m=9, scale=0.6):
    rng = np.random.default_rng(seed)
    parameters = {}
    for l in range(1, len(sizes)):
        parameters[f"W{l}"] = scale * rng.standard_normal((sizes[l], sizes[l - 1]))
        parameters[f"b{l}"] = scale * rng.standard_normal((sizes[l], 1))
    X = rng.standard_normal((sizes[0], m))
    Y = LOSSES[model.output].labels(rng, sizes[-1], m)
    Y = np.eye(sizes[-1])[:, Y] if Y.ndim == 1 else Y
    layout, theta = validation.mlp_layout_and_theta(parameters)
    X, Y = validation.check_data(X, Y, layout, model)
    prepared = incremental.prepare(layout, theta, X, Y, model)
    return layout, theta, prepared, Codes.of(model, layout.n_layers)


def _both(model, seed, epsilon, **network):
    layout, theta, prepared, codes = _setup(model, seed, **network)
    values, explicit = layer_sweep.changes(layout, theta, epsilon, prepared, model,
                                     np.arange(theta.size), True)
    kernel, kinks = incremental._kernel_changes(layout, theta, epsilon, prepared, codes,
                                                np.arange(theta.size), False)
    return values, explicit, kernel, kinks


@pytest.fixture(params=["rows", "matrix"])
def sweep_path(request, monkeypatch):
    """The full sweep by the jitted row loops, or by matrix products (which the time model
    takes for larger networks than these): each must hold every bound."""
    if request.param == "matrix":
        monkeypatch.setattr(layer_sweep, "FULL_SWEEP", "matrix")
    else:
        monkeypatch.setattr(layer_sweep, "FULL_SWEEP", "rows")
    return request.param


@pytest.mark.parametrize("epsilon", [1e-7, 5e-7, 1e-2])
@pytest.mark.parametrize("model", MODELS, ids=repr)
def test_the_sweep_is_the_per_coordinate_kernel_within_both_bounds(model, epsilon,
                                                                   sweep_path):
    """Each J+- - J of the sweep against the kernel's, held to the sum of their rounding
    bounds (each covers its own side's rounding and series remainder, so two correct values
    differ by less). At eps = 5e-7 a sample's unit moves by up to ~1e-6, the cubics' limit:
    the quadratic term of a change is then ~1e-6 and the cubic one ~1e-12 of the linear one,
    far above the bounds (~1e-14 relative), so a wrong c2 or c3 fails. At eps = 1e-2 every
    sample is beyond its limit: every parameter that moves is explicit."""
    values, explicit, kernel, _ = _both(model, 5, epsilon)
    taken = np.setdiff1d(np.arange(values.shape[1]), explicit)
    assert np.all(np.isfinite(values[:, taken])) and np.all(np.isnan(values[:, explicit]))
    difference = np.abs(values[:2, taken] - kernel[:2, taken])
    bound = values[2, taken] + kernel[2, taken]
    assert np.all(difference <= bound), float(np.max(difference / np.maximum(bound, 1e-300)))
    # The bound is a rounding bound, not a tolerance: it stays far below the changes (its
    # quadratic and higher terms take each row's largest coefficient, looser at large steps).
    assert np.all(values[2, taken] <= 1e-8 * np.max(np.abs(kernel[:2])))
    if epsilon == 1e-7:
        assert explicit.size <= values.shape[1] // 10
    if epsilon == 1e-2:  # the sweep keeps only what does not move (a dead unit's inputs)
        assert np.all(kernel[:2, taken] == 0) and np.all(values[:2, taken] == 0)


@pytest.mark.parametrize("model", [MLP(output="softmax"), MLP(hidden="tanh")], ids=repr)
def test_the_cubic_products_are_left_out_only_below_rounding(model, monkeypatch):
    """The matrix sweep leaves out a block's cubic products where ``d**3 P3`` stays below the
    linear part's rounding bound (at epsilon = 1e-7: some blocks here, every block of the
    benchmark networks) and forms them where it does not (1e-5, the cubic term ~1e-10 of
    the linear one: every block); the values stay within the bounds of the per-coordinate
    kernel's."""
    monkeypatch.setattr(layer_sweep, "FULL_SWEEP", "matrix")
    decisions = []
    negligible = layer_sweep._cubic_negligible

    def record(*args):
        decisions.append(negligible(*args))
        return decisions[-1]

    monkeypatch.setattr(layer_sweep, "_cubic_negligible", record)
    for epsilon in (1e-7, 1e-5):
        decisions.clear()
        values, explicit, kernel, _ = _both(model, 4, epsilon, scale=0.3)
        assert decisions and (any(decisions) if epsilon == 1e-7 else not any(decisions))
        taken = np.setdiff1d(np.arange(values.shape[1]), explicit)
        assert np.all(np.abs(values[:2, taken] - kernel[:2, taken])
                      <= values[2, taken] + kernel[2, taken])


def test_a_left_out_cubic_term_is_carried_by_the_bound(monkeypatch):
    """Forced out at 5e-7, where the cubic term of a tanh network exceeds the bound the
    products carry (~1e-12 of the linear term against ~1e-14), the values without it still
    sit within the bounds of the per-coordinate kernel's: the left-out term joined the
    bound."""
    model = MLP(hidden="tanh")
    monkeypatch.setattr(layer_sweep, "FULL_SWEEP", "matrix")
    monkeypatch.setattr(layer_sweep, "_cubic_negligible", lambda *args: False)
    formed, explicit, kernel, _ = _both(model, 4, 5e-7, scale=0.3)
    monkeypatch.setattr(layer_sweep, "_cubic_negligible", lambda *args: True)
    left_out, left_explicit, _, _ = _both(model, 4, 5e-7, scale=0.3)
    assert np.array_equal(left_explicit, explicit)
    taken = np.setdiff1d(np.arange(left_out.shape[1]), explicit)
    assert taken.size > left_out.shape[1] // 2
    assert np.any(np.abs(left_out[:2, taken] - formed[:2, taken]) > formed[2, taken])
    assert np.all(np.abs(left_out[:2, taken] - kernel[:2, taken])
                  <= left_out[2, taken] + kernel[2, taken])


def test_a_parameter_with_a_sample_across_a_kink_is_explicit(sweep_path):
    """Unit 2 of layer 1 sits 3e-8 from its kink on sample 4: a 1e-7 step of its bias or of a
    weight with |x| > 0.3 crosses it, which no cubic describes; those parameters go to the
    per-coordinate kernel, which counts the crossing."""
    model = MLP()
    layout, theta, _, _ = _setup(model, 3)
    parameters = layout.unpack(theta)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((7, 9))
    z = parameters["W1"] @ X[:, 4] + parameters["b1"][:, 0]
    parameters["b1"][2, 0] -= z[2] - 3e-8
    layout, theta = validation.mlp_layout_and_theta(parameters)
    Y = (rng.random((3, 9)) < 0.5).astype(float)
    prepared = incremental.prepare(layout, theta, X, Y, model)
    values, explicit = layer_sweep.changes(layout, theta, 1e-7, prepared, model,
                                     np.arange(theta.size), True)
    bias = int(layout.offsets[layout.names.index("b1")]) + 2
    W1 = layout.block("W1")
    crossing = W1.start + 2 * 7 + np.flatnonzero(np.abs(X[:, 4]) > 0.3 + 1e-9)
    assert bias in explicit and set(crossing) <= set(explicit)
    assert explicit.size < theta.size // 4  # the others still take the products
    full = incremental.costs(layout, theta, Y, 1e-7, prepared, np.arange(theta.size), False,
                             model)
    assert full.kinks[bias] > 0


@pytest.mark.parametrize("sweep", ["matrix", "rows"])
@pytest.mark.parametrize("model", [MLP(output="linear", l2=0.2), MLP(l2=0.5)], ids=repr)
def test_the_finish_in_the_sweep_is_bitwise_the_finish_after_it(model, sweep, monkeypatch):
    """The matrix sweep finishes each parameter in its assembly (the L2 term, the central
    difference over the steps taken, the noise bound, finiteness) and the explicit ones after
    the per-coordinate kernel: the same bits as the sweep's raw changes, the kernel's for the
    explicit slots, and one finishing pass over every slot (:func:`finish_slots`, the one
    home of the formula), with L2 terms and a parameter taken explicitly (a sample across a
    kink)."""
    from gradcheck_fast.engines._common import Finish, finish_slots

    monkeypatch.setattr(layer_sweep, "FULL_SWEEP", sweep)
    layout, theta, _, codes = _setup(model, 3)
    parameters = layout.unpack(theta)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((7, 9))
    z = parameters["W1"] @ X[:, 4] + parameters["b1"][:, 0]
    parameters["b1"][2, 0] -= z[2] - 3e-8  # a 1e-7 step of this bias crosses the kink
    layout, theta = validation.mlp_layout_and_theta(parameters)
    Y = (rng.random((3, 9)) < 0.5).astype(float)
    X, Y = validation.check_data(X, Y, layout, model)
    prepared = incremental.prepare(layout, theta, X, Y, model)
    everything = np.arange(theta.size)
    costs = incremental.costs(layout, theta, Y, 1e-7, prepared, everything, False, model)
    assert costs.explicit > 0

    values, explicit = layer_sweep.changes(layout, theta, 1e-7, prepared, model, everything,
                                           True)
    values[:, explicit] = incremental._kernel_changes(layout, theta, 1e-7, prepared, codes,
                                                      explicit, False)[0]
    n = theta.size
    finish = Finish(float(prepared.J), model.l2 / (2.0 * 9), incremental._is_weight(layout),
                    np.empty(n), np.empty(n), np.empty(n, dtype=np.bool_))
    finish_slots(values, theta, 1e-7, finish, everything)
    assert np.array_equal(costs.dJ_plus, values[0]) and np.array_equal(costs.dJ_minus,
                                                                       values[1])
    assert np.array_equal(costs.gradapprox, finish.gradapprox)
    assert np.array_equal(costs.noise, finish.noise)
    assert np.array_equal(costs.finite(), finish.finite) and finish.finite.all()


def test_a_full_check_runs_no_per_coordinate_loop_when_nothing_is_explicit(monkeypatch):
    """The point of the sweep: a smooth network's full check is products only."""
    model = MLP(hidden="tanh")
    layout, theta, prepared, _ = _setup(model, 9)
    calls = count_calls(monkeypatch, incremental, "_kernel_changes")
    costs = incremental.costs(layout, theta, prepared.Y, 1e-7, prepared,
                              np.arange(theta.size), False, model)
    assert calls == [] and np.all(costs.kinks == 0)
    # A subset of coordinates (sampled mode) too.
    incremental.costs(layout, theta, prepared.Y, 1e-7, prepared, np.arange(5), False, model)
    assert calls == []


@pytest.mark.parametrize("model", [MLP(hidden="gelu", output="softmax"), MLP()], ids=repr)
def test_the_matrix_sweep_gives_the_same_bits_on_any_threads_and_the_rows_values(model,
                                                                                monkeypatch):
    """The products' blocks are a fixed cut of the unit rows, each block's products on one
    BLAS thread and its assembly by one thread: the same bits on one thread and spread over
    several (forced, whatever the size). Against the row loops (another order of the same
    sums) the values agree within the two bounds, and the same parameters are explicit."""
    import numba

    layout, theta, prepared, _ = _setup(model, 2, sizes=(40, 70, 33, 4), m=23, scale=0.25)
    everything = np.arange(theta.size)
    monkeypatch.setattr(layer_sweep, "FULL_SWEEP", "matrix")
    monkeypatch.setattr(layer_sweep, "BLOCK_ROWS", 8)  # several blocks per layer
    monkeypatch.setattr(layer_sweep, "BLOCK_BYTES", 1)
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one, one_explicit = layer_sweep.changes(layout, theta, 5e-7, prepared, model,
                                                everything, True)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        from gradcheck_fast import _schedule

        monkeypatch.setattr(_schedule, "SERIAL_SECONDS", 0.0)
        spread_calls = count_calls(monkeypatch, _schedule, "_pool")
        many, many_explicit = layer_sweep.changes(layout, theta, 5e-7, prepared, model,
                                                  everything, True)
    finally:
        numba.set_num_threads(previous)
    assert numba.config.NUMBA_NUM_THREADS == 1 or len(spread_calls) >= 1
    assert np.array_equal(one, many, equal_nan=True)
    assert np.array_equal(one_explicit, many_explicit) and one_explicit.size > 0
    monkeypatch.setattr(layer_sweep, "FULL_SWEEP", "rows")
    rows, rows_explicit = layer_sweep.changes(layout, theta, 5e-7, prepared, model,
                                              everything, True)
    assert np.array_equal(rows_explicit, one_explicit)
    taken = np.setdiff1d(everything, one_explicit)
    assert np.all(np.abs(one[:2, taken] - rows[:2, taken]) <= one[2, taken] + rows[2, taken])
    assert not np.array_equal(one[:2, taken], rows[:2, taken])  # truly another path
    # The products bound the bound's two sums by Cauchy-Schwarz: never below the row loops'
    # exact sums (up to those sums' own rounding, m u ~ 3e-15 relative here).
    assert np.all(one[2, taken] >= rows[2, taken] * (1.0 - 1e-12))
    assert np.any(one[2, taken] > rows[2, taken] * 1.01)  # and truly a bound of them


def test_the_parallel_sweep_is_bitwise_the_serial_one(monkeypatch):
    """Rows claimed by threads in any order, each written by one: the same bits."""
    import numba

    from gradcheck_fast import _schedule

    model = MLP(hidden="gelu", output="softmax")
    layout, theta, prepared, codes = _setup(model, 2, sizes=(30, 20, 10, 4), m=17)
    everything = np.arange(theta.size)
    serial, _ = layer_sweep.changes(layout, theta, 1e-7, prepared, model, everything, True)
    monkeypatch.setattr(_schedule, "SERIAL_SECONDS", 0.0)
    launches = count_calls(monkeypatch, layer_sweep, "_sweep_parallel")
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        parallel, _ = layer_sweep.changes(layout, theta, 1e-7, prepared, model, everything, True)
    finally:
        numba.set_num_threads(previous)
    assert numba.config.NUMBA_NUM_THREADS == 1 or len(launches) >= 1
    assert np.array_equal(serial, parallel, equal_nan=True)


@pytest.mark.parametrize("model", [MLP(), MLP(hidden=["softplus", "relu"], output="softmax")],
                         ids=repr)
@pytest.mark.parametrize("epsilon", [1e-7, 5e-7])
def test_a_subset_of_parameters_gets_the_full_sweeps_bits(model, epsilon):
    """Sampled mode's coordinates, in any order, from their unit's records and their own
    input's sums: the same operations in the same order as the full sweep's vectorised rows,
    so the same bits (explicit ones included: the same decision, the same kernel)."""
    layout, theta, prepared, _ = _setup(model, 4)
    full, full_explicit = layer_sweep.changes(layout, theta, epsilon, prepared, model,
                                        np.arange(theta.size), True)
    subset = np.random.default_rng(0).permutation(theta.size)[: theta.size // 2]
    values, explicit = layer_sweep.changes(layout, theta, epsilon, prepared, model, subset, False)
    assert np.array_equal(values, full[:, subset], equal_nan=True)
    assert set(subset[explicit]) == set(subset) & set(full_explicit)
    assert epsilon == 1e-7 or explicit.size > 0  # at 5e-7 some samples pass their limit


def test_the_report_counts_the_coordinates_taken_one_by_one():
    """report.n_explicit: 0 for an ordinary check (and the text says nothing), the explicit
    coordinates' number where a unit sits at its kink (and the text says so), None for the
    exact engine, which takes every coordinate one by one."""
    import gradcheck_fast
    from gradcheck_fast import reference
    from gradcheck_fast.networks import random_mlp

    X, Y, parameters, gradients = random_mlp((8, 6, 4, 1), m=40, seed=1)
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    assert report.engine == "incremental" and report.n_explicit == 0 and report.passed
    assert "one by one" not in str(report)
    # Unit 3 of layer 1 at 1e-9 from its kink on sample 5: its weights and bias are explicit.
    z = parameters["W1"] @ X[:, 5] + parameters["b1"][:, 0]
    parameters["b1"][3, 0] -= z[3] - 1e-9
    _, cache = reference.forward_propagation_n(X, Y, parameters)
    gradients = reference.backward_propagation_n(X, Y, cache)
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    assert report.n_explicit >= 9 and f"({report.n_explicit} taken one by one)" in str(report)
    assert report.to_dict()["n_explicit"] == report.n_explicit
    exact = gradcheck_fast.check_gradients(parameters, gradients, X, Y, engine="exact")
    assert exact.n_explicit is None


@settings(max_examples=200, deadline=None)
@given(theta=hnp.arrays(np.float64, st.integers(1, 40),
                        elements=st.floats(-1e300, 1e300, allow_nan=False,
                                           allow_infinity=False)),
       epsilon=st.floats(1e-300, 1e3))
def test_the_layers_step_bound_covers_every_step_taken(theta, epsilon):
    # The sweep sends a parameter to the explicit path when its layer's largest step times
    # an input could leave a record's range; the bound it uses (from max |t|, not from every
    # step) must be at least each step really taken, fl(t +- eps) - t, whatever the
    # magnitudes (a step below it would be missed: a sample beyond its cubic taken as inside).
    steps = np.maximum(np.abs((theta + epsilon) - theta), np.abs((theta - epsilon) - theta))
    bound = layer_sweep._largest_step(theta, epsilon)
    assert bound >= steps.max()
    # ... and not far above the largest one: eps plus an ulp of the largest |t| at most
    # ((T + eps) u <= spacing(T + eps); the factor 1 + 1e-12 covers the bound's own 1 + 8u
    # and this line's rounding, a few u).
    assert bound <= (epsilon + np.spacing(np.abs(theta).max() + epsilon)) * (1 + 1e-12)


def test_the_time_model_chooses_the_full_sweep(monkeypatch):
    # "auto": matrix products where the time model expects them to be faster than the row
    # loops (costmodel.matrix_faster), which puts the crossover near 1e5 multiply-adds: the
    # small example network by rows, the mnist-size one by products; "matrix" and "rows"
    # force a path (tests, measurements); anything else is refused by name.
    from gradcheck_fast.engines import costmodel

    cases = [((20, 10, 5, 1), 32), ((64, 32, 16, 4), 64), ((784, 256, 128, 10), 64)]
    for sizes, m in cases:
        assert layer_sweep.matrix_pays(sizes, m) == costmodel.matrix_faster(sizes, m)
    assert not layer_sweep.matrix_pays((20, 10, 5, 1), 32)
    assert layer_sweep.matrix_pays((784, 256, 128, 10), 64)
    for forced in ("matrix", "rows"):
        monkeypatch.setattr(layer_sweep, "FULL_SWEEP", forced)
        assert all(layer_sweep.matrix_pays(s, m) == (forced == "matrix") for s, m in cases)
    monkeypatch.setattr(layer_sweep, "FULL_SWEEP", "fastest")
    with pytest.raises(ValueError, match="FULL_SWEEP"):
        layer_sweep.matrix_pays((20, 10, 5, 1), 32)
