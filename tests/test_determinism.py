"""Bitwise reproducibility: thread counts, repeated calls, memory layouts, dtypes; no side
effects on the caller's arrays or on numba's thread setting."""

from __future__ import annotations

import copy

import numba
import numpy as np
import pytest

import gradcheck_fast
from gradcheck_fast import engines
from gradcheck_fast._threads import n_threads_set


def _parallel_samples(sizes) -> int:
    """Samples enough for the parallel path of the per-coordinate kernel (841 parameters x m
    >= engines._SERIAL_WORK) and of the layer sweep (the time model's seconds >= the serial
    threshold): the engine's own thresholds, read rather than copied, as they have moved
    during development."""
    from gradcheck_fast._schedule import SERIAL_SECONDS
    from gradcheck_fast.engines.costmodel import sweep_row_seconds

    per_sample = sum(sizes[1:]) * sweep_row_seconds(sizes, 1)
    return max(64, -(-engines._SERIAL_WORK // 841), int(SERIAL_SECONDS / per_sample) + 1)


#: Big enough for the parallel path (:func:`_parallel_samples`).
BIG = ((30, 20, 10, 1), _parallel_samples((30, 20, 10, 1)))
MAX_THREADS = numba.config.NUMBA_NUM_THREADS


@pytest.fixture
def big_case(helpers):
    sizes, m = BIG
    X, Y, parameters = helpers.random_network(sizes, m, 40, scale=1.0)
    # A ReLU on its kink too, so that some perturbations take the "activation changed" branch.
    parameters = helpers.place_on_kink(X, parameters, 1, 3, 7, 1e-8)
    gradients = helpers.correct_gradients(X, Y, parameters)
    return X, Y, parameters, gradients


def assert_reports_bitwise_equal(a, b):
    assert a.difference == b.difference or (np.isnan(a.difference) and np.isnan(b.difference))
    assert np.float64(a.difference).view(np.uint64) == np.float64(b.difference).view(np.uint64)
    assert a.cost == b.cost
    assert a.passed == b.passed
    assert list(a.gradapprox) == list(b.gradapprox)
    for name in a.gradapprox:
        assert a.gradapprox[name].tobytes() == b.gradapprox[name].tobytes(), name
        assert a.grad[name].tobytes() == b.grad[name].tobytes(), name
    assert a.blocks == b.blocks


def test_big_case_takes_the_parallel_path(big_case, all_threads, monkeypatch):
    # The row loops' and the per-coordinate kernel's thresholds (the matrix sweep, which a
    # network this size takes otherwise, does this work in a few milliseconds on one thread;
    # its blocks spread over threads are tested in test_layer_sweep and below).
    from gradcheck_fast import _threads
    from gradcheck_fast.engines import layer_sweep

    monkeypatch.setattr(layer_sweep, "FULL_SWEEP", "rows")
    X, Y, parameters, gradients = big_case
    n_params = sum(v.size for v in parameters.values())
    assert n_params * X.shape[1] >= engines._SERIAL_WORK
    before = _threads.launches
    gradcheck_fast.check_gradients(parameters, gradients, X, Y, n_threads=all_threads)
    assert _threads.launches > before


def test_every_parallel_region_gives_the_serial_bits(big_case, all_threads, monkeypatch):
    # With no serial threshold every kernel runs on several threads: the engine's loops as
    # numba regions, and the set-up's radii and composed cubics and the report's summary as
    # pieces on Python threads (which no check of a test-sized network would otherwise run
    # on several); the bits are the serial ones.
    from gradcheck_fast import _schedule, _threads
    from tests.conftest import count_calls

    X, Y, parameters, gradients = big_case
    serial = gradcheck_fast.check_gradients(parameters, gradients, X, Y, n_threads=1)
    monkeypatch.setattr(_schedule, "SERIAL_SECONDS", 0.0)
    spreads = count_calls(monkeypatch, _schedule, "spread")
    pools = count_calls(monkeypatch, _schedule, "_pool")
    before = _threads.launches
    parallel = gradcheck_fast.check_gradients(parameters, gradients, X, Y,
                                              n_threads=all_threads)
    assert _threads.launches - before >= 1  # the engine's loop
    assert len(spreads) >= 3 and len(pools) >= 3  # radii, composed cubics, summary
    assert_reports_bitwise_equal(serial, parallel)


def test_the_blocked_products_of_the_set_up_give_the_serial_bits(all_threads, monkeypatch):
    """The engine's forward pass and sensitivities (V) as products cut into blocks of rows by
    the shapes (_schedule.blocked_matmul), run on one thread and spread over several: the same
    report, bit for bit."""
    from gradcheck_fast import _schedule
    from gradcheck_fast.networks import example

    X, Y, parameters, gradients = example("mnist")
    monkeypatch.setattr(_schedule, "BLOCK_MACS", 2**12)  # every product in blocks
    serial = gradcheck_fast.check_gradients(parameters, gradients, X, Y, n_threads=1)
    monkeypatch.setattr(_schedule, "SERIAL_SECONDS", 0.0)
    calls = []
    original = _schedule.spread
    monkeypatch.setattr(_schedule, "spread", lambda run, blocks, seconds: (
        calls.append(len(blocks)), original(run, blocks, seconds)))
    parallel = gradcheck_fast.check_gradients(parameters, gradients, X, Y,
                                              n_threads=all_threads)
    assert _schedule.MAX_BLOCKS in calls  # the products in blocks (and the pieces of run)
    assert_reports_bitwise_equal(serial, parallel)


def test_one_and_several_threads_give_identical_bits(big_case, all_threads):
    X, Y, parameters, gradients = big_case
    one = gradcheck_fast.check_gradients(parameters, gradients, X, Y, n_threads=1)
    several = gradcheck_fast.check_gradients(parameters, gradients, X, Y,
                                             n_threads=all_threads)
    default = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    assert_reports_bitwise_equal(one, several)
    assert_reports_bitwise_equal(one, default)
    d1 = gradcheck_fast.gradient_check_n(parameters, gradients, X, Y, verbose=False,
                                         n_threads=1)
    d2 = gradcheck_fast.gradient_check_n(parameters, gradients, X, Y, verbose=False,
                                         n_threads=all_threads)
    assert d1 == d2 == one.difference


def test_engine_costs_identical_for_every_thread_count(big_case, all_threads):
    from gradcheck_fast import validation

    X, Y, parameters, _ = big_case
    layout, theta = validation.mlp_layout_and_theta(parameters)
    X, Y = validation.check_data(X, Y, layout)
    for engine_name in ("exact", "incremental"):
        results = []
        for n in range(1, all_threads + 1):
            with n_threads_set(n):
                results.append(engines.mlp_costs(layout, theta, X, Y, 1e-7, engine=engine_name))
        for costs in results[1:]:
            for field in ("J_plus", "J_minus", "gradapprox", "resolution", "kinks"):
                assert getattr(costs, field).tobytes() == getattr(results[0], field).tobytes(), (
                    engine_name, field)


def test_repeated_calls_give_identical_bits(big_case, helpers):
    X, Y, parameters, gradients = big_case
    first = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    for _ in range(3):
        assert_reports_bitwise_equal(first, gradcheck_fast.check_gradients(parameters,
                                                                           gradients, X, Y))
    Xs, Ys, ps = helpers.seed_case()
    faulty = helpers.faulty_gradients(Xs, Ys, ps)
    a = gradcheck_fast.check_gradients(ps, faulty, Xs, Ys)
    b = gradcheck_fast.check_gradients(ps, faulty, Xs, Ys)
    assert_reports_bitwise_equal(a, b)


# ---------------------------------------------------------------------------------------------
# numba's thread count
# ---------------------------------------------------------------------------------------------
def test_thread_count_restored_after_a_call(big_case, all_threads):
    X, Y, parameters, gradients = big_case
    assert numba.get_num_threads() == all_threads
    gradcheck_fast.check_gradients(parameters, gradients, X, Y, n_threads=1)
    assert numba.get_num_threads() == all_threads
    gradcheck_fast.gradient_check_n(parameters, gradients, X, Y, verbose=False, n_threads=1)
    assert numba.get_num_threads() == all_threads
    numba.set_num_threads(1)
    gradcheck_fast.check_gradients(parameters, gradients, X, Y, n_threads=all_threads)
    assert numba.get_num_threads() == 1


def test_thread_count_restored_when_validation_raises(big_case, all_threads):
    X, Y, parameters, gradients = big_case
    bad = dict(gradients, dW2=gradients["dW2"].T)
    with pytest.raises(ValueError, match="dW2"):
        gradcheck_fast.check_gradients(parameters, bad, X, Y, n_threads=1)
    assert numba.get_num_threads() == all_threads
    with pytest.raises(ValueError, match="dW2"):
        gradcheck_fast.gradient_check_n(parameters, bad, X, Y, n_threads=1)
    assert numba.get_num_threads() == all_threads


def test_thread_count_set_during_the_run_and_restored_when_the_engine_raises(
        big_case, all_threads, monkeypatch):
    X, Y, parameters, gradients = big_case
    seen = []

    def failing_engine(*args, **kwargs):
        seen.append(numba.get_num_threads())
        raise RuntimeError("engine failure")

    monkeypatch.setattr(gradcheck_fast.checker, "mlp_costs", failing_engine)
    with pytest.raises(RuntimeError, match="engine failure"):
        gradcheck_fast.check_gradients(parameters, gradients, X, Y, n_threads=1)
    assert seen == [1]
    assert numba.get_num_threads() == all_threads


# ---------------------------------------------------------------------------------------------
# The caller's arrays
# ---------------------------------------------------------------------------------------------
def test_caller_arrays_are_not_modified(big_case, helpers):
    X, Y, parameters, gradients = big_case
    Xs, Ys, ps = helpers.seed_case()
    faulty = helpers.faulty_gradients(Xs, Ys, ps)
    for args in [(parameters, gradients, X, Y), (ps, faulty, Xs, Ys)]:
        before = copy.deepcopy(args)
        gradcheck_fast.check_gradients(*args)
        gradcheck_fast.gradient_check_n(*args, verbose=False)
        gradcheck_fast.dictionary_to_vector(args[0])
        gradcheck_fast.gradients_to_vector(args[1])
        for new, old in zip(args[:2], before[:2]):
            assert new.keys() == old.keys()
            for key in old:
                assert np.array_equal(new[key], old[key]), key
                assert new[key].dtype == old[key].dtype
        for new, old in zip(args[2:], before[2:]):
            assert np.array_equal(new, old) and new.dtype == old.dtype


def test_report_arrays_do_not_alias_the_inputs_and_are_read_only(seed_correct):
    X, Y, parameters, gradients = seed_correct
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    for name in report.grad:
        assert not np.shares_memory(report.grad[name], gradients[name])
        with pytest.raises(ValueError, match="read-only"):
            report.grad[name][...] = 0.0
        with pytest.raises(ValueError, match="read-only"):
            report.gradapprox[name][...] = 0.0


def test_a_flat_gradient_changed_after_a_check_leaves_its_report_alone():
    theta = np.array([1.0, -2.0, 0.5])
    grad = 2.0 * theta  # the gradient of sum(theta**2)
    report = gradcheck_fast.check(lambda t: float(np.sum(t * t)), theta, grad)
    grad[...] = 0.0
    (name,) = report.grad
    assert np.array_equal(report.grad[name], 2.0 * theta), report.grad
    assert [element.analytic for element in report.worst] != [0.0] * len(report.worst)


# ---------------------------------------------------------------------------------------------
# Memory layouts and dtypes
# ---------------------------------------------------------------------------------------------
def _strided(array):
    """A view with the same values, every other element of a bigger array (non-contiguous
    unless it has a single element, where numpy flags any strides as contiguous)."""
    big = np.zeros((2 * array.shape[0], 2 * array.shape[1]), dtype=array.dtype)
    big[::2, ::2] = array
    view = big[::2, ::2]
    assert view.size == 1 or not (view.flags.c_contiguous or view.flags.f_contiguous)
    return view


@pytest.mark.parametrize("order", ["F", "strided"])
def test_memory_layout_does_not_change_the_bits(big_case, order):
    X, Y, parameters, gradients = big_case

    def convert(a):
        return np.asfortranarray(a) if order == "F" else _strided(a)

    expected = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    other_parameters = {k: convert(v) for k, v in parameters.items()}
    other_gradients = {k: convert(v) for k, v in gradients.items()}
    if order == "F":
        assert not other_parameters["W1"].flags.c_contiguous
    for p, g, x, y in [(other_parameters, gradients, X, Y),
                       (parameters, other_gradients, X, Y),
                       (parameters, gradients, convert(X), Y),
                       (parameters, gradients, X, convert(Y)),
                       (other_parameters, other_gradients, convert(X), convert(Y))]:
        assert_reports_bitwise_equal(expected, gradcheck_fast.check_gradients(p, g, x, y))


def test_seed_case_fortran_parameters(seed_faulty):
    X, Y, parameters, gradients = seed_faulty
    fortran = {k: np.asfortranarray(v) for k, v in parameters.items()}
    a = gradcheck_fast.gradient_check_n(parameters, gradients, X, Y, verbose=False)
    b = gradcheck_fast.gradient_check_n(fortran, gradients, np.asfortranarray(X), Y,
                                        verbose=False)
    assert a == b


def test_integer_X_and_Y_equal_the_float_result(helpers):
    rng = np.random.default_rng(41)
    X_int = rng.integers(-3, 4, size=(4, 9))
    _, _, parameters = helpers.random_network((4, 5, 3, 1), 9, 41, scale=0.5)
    Y_int = rng.integers(0, 2, size=9)  # (m,), int: as the seed's Y
    assert X_int.dtype.kind == "i" and Y_int.dtype.kind == "i"
    gradients = helpers.correct_gradients(X_int.astype(float), Y_int.astype(float), parameters)
    as_float = gradcheck_fast.check_gradients(parameters, gradients, X_int.astype(float),
                                              Y_int.astype(float).reshape(1, -1))
    for x, y in [(X_int, Y_int), (X_int, Y_int.reshape(1, -1)), (X_int.astype(float), Y_int),
                 (X_int, Y_int.astype(bool)), (X_int.astype(np.int32), Y_int.astype(np.uint8))]:
        assert_reports_bitwise_equal(as_float, gradcheck_fast.check_gradients(parameters,
                                                                              gradients, x, y))


def test_seed_integer_labels_equal_float_labels(seed_faulty):
    X, Y, parameters, gradients = seed_faulty
    assert Y.dtype.kind == "i"
    a = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    b = gradcheck_fast.check_gradients(parameters, gradients, X, Y.astype(float))
    assert_reports_bitwise_equal(a, b)


def test_list_inputs_equal_array_inputs(seed_faulty):
    X, Y, parameters, gradients = seed_faulty
    a = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    b = gradcheck_fast.check_gradients(parameters, gradients, X.tolist(), Y.tolist())
    assert_reports_bitwise_equal(a, b)
