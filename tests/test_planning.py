"""A time budget: the network is prepared once and handed to the engine; the expected time
includes the set-up, and the report says so. No timing is asserted here (the benchmarks do)."""

from __future__ import annotations

import re

import numba
import pytest

import gradcheck_fast
from gradcheck_fast.engines import costmodel, incremental
from gradcheck_fast.networks import random_mlp
from tests.conftest import count_calls

#: Deep enough that the plan needs the prepared state (the explicit path's share), large
#: enough for the incremental engine, small enough for a unit test.
SIZES, M = (500, 300, 20, 1), 32


@pytest.fixture(scope="module")
def deep():
    X, Y, parameters, gradients = random_mlp(SIZES, m=M, seed=1)
    gradcheck_fast.check_gradients(parameters, gradients, X, Y)  # kernels loaded before timing
    return X, Y, parameters, gradients


@pytest.fixture
def prepare_calls(monkeypatch):
    """Counts the calls of :func:`gradcheck_fast.engines.incremental.prepare`."""
    return count_calls(monkeypatch, incremental, "prepare")


@pytest.mark.parametrize("method", ["central", "richardson"])
def test_a_budgeted_full_check_prepares_once(deep, prepare_calls, method):
    # Before: the plan's estimate prepared the network, then the engine again for each step.
    X, Y, parameters, gradients = deep
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, budget_s=1e3,
                                            method=method)
    assert report.mode == "full" and report.passed
    assert len(prepare_calls) == 1


def test_a_budgeted_sampled_check_prepares_once(deep, prepare_calls):
    # Before: the binary search over coordinates per block prepared the network at each step
    # (9 times here), and the engine once more.
    X, Y, parameters, gradients = deep
    cost = gradcheck_fast.estimate_cost(parameters, gradients, X, Y)
    budget = cost.full.seconds / 3
    prepare_calls.clear()
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, budget_s=budget)
    # Whatever the preparation measures on a busy machine, the smallest sampled check costs
    # less from then on than the probes, so a sampled check runs on the prepared state.
    assert report.mode == "sampled" and report.passed
    assert len(prepare_calls) == 1


def test_richardson_prepares_once_for_both_steps(deep, prepare_calls):
    # Before: one preparation per step (h and 2h), though the state does not depend on it.
    X, Y, parameters, gradients = deep
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, method="richardson")
    assert report.passed and len(prepare_calls) == 1


def test_a_budget_the_preparation_cannot_fit_skips_it(deep, prepare_calls):
    # The probes need no preparation: when even the smallest sampled check's modelled
    # preparation is over the budget, none is made.
    X, Y, parameters, gradients = deep
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, budget_s=1e-9)
    assert report.mode == "directional" and prepare_calls == []


def test_the_estimate_includes_the_set_up(deep):
    X, Y, parameters, gradients = deep
    cost = gradcheck_fast.estimate_cost(parameters, gradients, X, Y)
    # A deep network is prepared (and timed) for its estimate; the forward pass alone is a
    # lower bound of that, and of the probes' set-up.
    forward = costmodel.forward_seconds(SIZES, M)
    for mode in ("full", "sampled", "directional"):
        assert cost[mode].setup > 0 and cost[mode].seconds > cost[mode].setup
    assert cost.directional.setup >= forward
    assert "set-up" in str(cost)


def test_the_modelled_set_up_counts_the_preparation():
    # A shallow network is not prepared for its estimate: its set-up is modelled, and the
    # model counts the preparation's parts (radii, composed cubics), not only the forward pass.
    sizes = (64, 32, 1)
    X, Y, parameters, gradients = random_mlp(sizes, m=128, seed=0)
    cost = gradcheck_fast.estimate_cost(parameters, gradients, X, Y)
    # Its jitted parts are divided by the parallel speed-up, below the thread count.
    threads = numba.get_num_threads()
    prepare = costmodel.prepare_seconds(sizes, 128, ("relu",), speed=threads)
    assert prepare > costmodel.forward_seconds(sizes, 128)
    assert cost.full.setup >= prepare


def test_the_preparation_model_counts_the_radii_as_the_engine_runs_them():
    # A later ReLU layer wider than SCAN_ALL is taken in rounds of its units nearest their
    # kinks: work per unit of both layers (4096-4096-4096-10: ~10 ms, where the full scan
    # would take seconds); a narrow one is scanned whole, work per pair of units.
    wide = costmodel.radii_sample_seconds((4096, 4096, 4096, 10), [2])
    assert wide == pytest.approx(2 * 4096 * costmodel.RADII_S_PER_UNIT)
    narrow = costmodel.radii_sample_seconds((4096, costmodel.SCAN_ALL, 10), [1])
    assert narrow == 0.0  # the first hidden layer has no earlier hidden layer
    narrow = costmodel.radii_sample_seconds((784, 256, costmodel.SCAN_ALL, 10), [2])
    assert narrow == pytest.approx(256 * costmodel.SCAN_ALL * costmodel.RADII_S_PER_ELEMENT)
    relu = costmodel.prepare_seconds((4096, 4096, 4096, 10), 64, ("relu", "relu"))
    linear = costmodel.prepare_seconds((4096, 4096, 4096, 10), 64, ("linear", "linear"))
    assert relu - linear == pytest.approx(64 * wide)


@pytest.mark.parametrize("budget", [1e3, 1e-9])
def test_the_note_states_set_up_expected_and_budget(deep, budget):
    X, Y, parameters, gradients = deep
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, budget_s=budget)
    note = next(n for n in report.notes if n.startswith(f"budget {budget:g} s"))
    expected = re.search(r"expected ([0-9.e+-]+) s: set-up ([0-9.e+-]+) s", note)
    assert expected, note
    assert float(expected.group(1)) >= float(expected.group(2)) > 0
    assert "validation" in note


def test_a_tiny_budget_takes_fewer_probes():
    # The probes' cost grows with their number: a budget that fits only the fewest gets one
    # probe per block (stated in the note; the report's detectable errors follow from it).
    X, Y, parameters, gradients = random_mlp((40, 30, 20, 1), m=64, seed=0)
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, budget_s=1e-9,
                                            n_directions=8)
    assert report.mode == "directional"
    assert "directional with 1 probe per block" in report.notes[-1]
    assert "over budget" in report.notes[-1]


def test_richardson_under_a_budget_that_only_the_probes_fit_runs_them(deep):
    # Before: the plan fell back to the directional probes, and the check then refused
    # method="richardson" (which the user asked for, not the probes) with a ValueError.
    X, Y, parameters, gradients = deep
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, budget_s=1e-9,
                                            method="richardson")
    assert report.mode == "directional"
    assert report.passed  # correct gradients: the probes' central differences agree
    assert any("central difference" in note and "richardson" in note for note in report.notes)


def test_a_step_sweep_prepares_once(deep, prepare_calls):
    # Before: every step of the sweep prepared the incremental engine again (9 steps here).
    X, Y, parameters, gradients = deep
    sweep = gradcheck_fast.step_sweep(parameters, gradients, X, Y, engine="incremental")
    assert len(sweep.rows) == 9 and sweep.verdict == "fine"
    assert len(prepare_calls) == 1
