"""Sampled and directional modes against the full check, and the directional mode's stated
detection power against experiment."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradcheck_fast
from gradcheck_fast import modes
from gradcheck_fast.networks import random_mlp

N_SEEDS = 1000


@pytest.fixture(scope="module")
def net():
    return random_mlp((30, 20, 10, 2), m=24, seed=4)


def _scaled(gradients, key, factor):
    wrong = dict(gradients)
    wrong[key] = gradients[key] * factor
    return wrong


# -- sampled ------------------------------------------------------------------------------------
def test_sampled_checks_a_stratified_seeded_sample(net):
    X, Y, parameters, gradients = net
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, mode="sampled",
                                            n_per_block=15, seed=3)
    assert report.mode == "sampled" and report.passed
    for name, block in report.blocks.items():
        assert block.n_checked == min(15, block.size)
        assert int(report.checked[name].sum()) == block.n_checked
        # Unchecked coordinates carry no made-up number.
        assert np.all(np.isnan(report.gradapprox[name][~report.checked[name]]))
        assert np.all(np.isfinite(report.gradapprox[name][report.checked[name]]))
    again = gradcheck_fast.check_gradients(parameters, gradients, X, Y, mode="sampled",
                                           n_per_block=15, seed=3)
    other = gradcheck_fast.check_gradients(parameters, gradients, X, Y, mode="sampled",
                                           n_per_block=15, seed=4)
    assert all(np.array_equal(report.checked[k], again.checked[k]) for k in report.checked)
    assert any(not np.array_equal(report.checked[k], other.checked[k]) for k in report.checked)


def test_sampled_values_are_the_full_checks_values(net):
    X, Y, parameters, gradients = net
    full = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    sampled = gradcheck_fast.check_gradients(parameters, gradients, X, Y, mode="sampled",
                                             n_per_block=15)
    for name in full.gradapprox:
        mask = sampled.checked[name]
        # Each coordinate is computed on its own, from the same unperturbed pass: bitwise equal.
        assert np.array_equal(full.gradapprox[name][mask], sampled.gradapprox[name][mask])


@pytest.mark.parametrize("key,factor", [("dW2", 1.1), ("db1", -1.0), ("dW3", 0.0)])
def test_sampled_and_full_find_the_same_wrong_block(net, key, factor):
    X, Y, parameters, gradients = net
    wrong = _scaled(gradients, key, factor)
    full = gradcheck_fast.check_gradients(parameters, wrong, X, Y)
    sampled = gradcheck_fast.check_gradients(parameters, wrong, X, Y, mode="sampled",
                                             n_per_block=15)
    assert full.failed_blocks == sampled.failed_blocks == [key]
    assert (full.blocks[key].scale is None) == (sampled.blocks[key].scale is None)


# -- directional --------------------------------------------------------------------------------
def test_directional_probes_are_directional_derivatives(net):
    X, Y, parameters, gradients = net
    full = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, mode="directional",
                                            n_directions=5)
    assert report.mode == "directional" and report.passed
    for name, probes in report.probes.items():
        assert probes.analytic.shape == (5,) and report.blocks[name].n_probes == 5
        # v . grad and the central difference along v agree to rounding for a correct
        # gradient: ~1e-15 relative in delta space, 1e-10 leaves room.
        scale = np.abs(probes.analytic).max()
        assert np.all(np.abs(probes.analytic - probes.numerical) <= 1e-10 * scale + 1e-18)
        # ... and the central difference along v is v . (the full check's gradapprox), the
        # full check's own ~1e-10 relative error aside.
        assert np.allclose(probes.numerical, probes.analytic, rtol=1e-9, atol=1e-15)
    assert full.passed


@pytest.mark.parametrize("key,factor,expect", [
    ("dW2", 1.1, "dW2 ≈ 1.10 × numerical"),
    ("db2", -1.0, "wrong sign"),
    ("dW1", 0.0, None),
])
def test_directional_and_full_find_the_same_wrong_block(net, key, factor, expect):
    X, Y, parameters, gradients = net
    wrong = _scaled(gradients, key, factor)
    full = gradcheck_fast.check_gradients(parameters, wrong, X, Y)
    directional = gradcheck_fast.check_gradients(parameters, wrong, X, Y, mode="directional")
    assert full.failed_blocks == directional.failed_blocks == [key]
    if expect is not None:
        assert expect in directional.blocks[key].diagnosis


def test_directional_detects_a_ten_percent_scale_error_in_any_block():
    """The issue's target: x1.1 in a single block is caught in >= 99.9 % of seeds.

    Each seed draws its own network, block and probes; a block whose gradient is exactly 0
    (all its units dead) is not drawn, since scaling it changes nothing.
    """
    detected = 0
    trials = 0
    for seed in range(N_SEEDS):
        X, Y, parameters, gradients = random_mlp((8, 6, 5, 2), m=12, seed=seed)
        rng = np.random.default_rng(seed)
        keys = [k for k in ("dW1", "db1", "dW2", "db2", "dW3", "db3")
                if np.any(gradients[k] != 0)]
        key = keys[rng.integers(len(keys))]
        report = gradcheck_fast.check_gradients(parameters, _scaled(gradients, key, 1.1), X, Y,
                                                mode="directional", seed=seed)
        trials += 1
        detected += key in report.failed_blocks
    rate = detected / trials
    print(f"\nx1.1 scale error detected by the directional mode in {detected} of {trials} "
          f"seeds ({rate:.2%})")
    assert rate >= 0.999


@pytest.mark.parametrize("key", ["db1", "dW1"])
def test_stated_detection_power_holds(key):
    """An error E of the size the report says is caught with probability p is caught in
    about that fraction of seeds (p = 0.9 here so that 400 seeds measure it; the binomial
    standard deviation is 0.015, and 4 of them are allowed). For the weight block E is
    rank-one, the pattern the statement is computed for."""
    p = 0.9
    X, Y, parameters, gradients = random_mlp((12, 10, 1), m=16, seed=1)
    caught = 0
    n = 400
    for seed in range(n):
        correct = gradcheck_fast.check_gradients(parameters, gradients, X, Y,
                                                 mode="directional", seed=seed, probability=p)
        size = correct.blocks[key].detectable_error * np.linalg.norm(gradients[key])
        rng = np.random.default_rng(10_000 + seed)
        shape = gradients[key].shape
        if key.startswith("dW"):
            E = np.outer(rng.standard_normal(shape[0]), rng.standard_normal(shape[1]))
        else:
            E = rng.standard_normal(shape)
        E *= size / np.linalg.norm(E)
        wrong = dict(gradients)
        wrong[key] = gradients[key] + E
        report = gradcheck_fast.check_gradients(parameters, wrong, X, Y, mode="directional",
                                                seed=seed, probability=p)
        caught += key in report.failed_blocks
    rate = caught / n
    print(f"\n{key}: an error of the stated size caught in {rate:.1%} of seeds (stated {p:.0%})")
    assert rate >= p - 4 * math.sqrt(p * (1 - p) / n)


def test_product_normal_distribution_matches_sampling():
    rng = np.random.default_rng(0)
    n = 400_000
    z = np.abs(rng.standard_normal(n) * rng.standard_normal(n))
    for s in (0.05, 0.3, 1.0, 3.0):
        empirical = float(np.mean(z <= s))
        sd = math.sqrt(empirical * (1 - empirical) / n)
        assert abs(modes._miss_probability(s, True) - empirical) <= 5 * sd + 1e-6


# -- planning -----------------------------------------------------------------------------------
def test_estimate_counts_evaluations(net):
    X, Y, parameters, gradients = net
    cost = gradcheck_fast.estimate_cost(parameters, gradients, X, Y, n_per_block=15,
                                        n_directions=4)
    P = sum(v.size for k, v in parameters.items())
    assert cost.full.evaluations == 2 * P and cost.full.coordinates == P
    sampled = sum(min(15, v.size) for v in parameters.values())
    assert cost.sampled.coordinates == sampled and cost.sampled.evaluations == 2 * sampled
    assert cost.directional.evaluations == 2 * 4 * len(parameters)
    richardson = gradcheck_fast.estimate_cost(parameters, gradients, X, Y, method="richardson")
    assert richardson.full.evaluations == 4 * P
    assert "evaluations" in str(cost)


@pytest.mark.parametrize("budget,mode", [(1e3, "full"), (1e-9, "directional")])
def test_budget_picks_the_most_thorough_mode_that_fits(net, budget, mode):
    X, Y, parameters, gradients = net
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, budget_s=budget)
    assert report.mode == mode
    assert any(note.startswith(f"budget {budget:g} s") for note in report.notes)


def test_budget_between_modes_samples():
    # Large enough that a full check costs several times a sampled one (the layer sweep made
    # full checks cheap): a budget between the two samples.
    X, Y, parameters, gradients = random_mlp((1000, 300, 1), m=64, seed=2)
    cost = gradcheck_fast.estimate_cost(parameters, gradients, X, Y)
    cheaper = max(cost.sampled.seconds, cost.directional.seconds)
    budget = (cheaper * cost.full.seconds) ** 0.5
    assert cheaper < budget < cost.full.seconds
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, budget_s=budget)
    assert report.mode == "sampled" and report.passed
    assert 16 <= report.blocks["dW1"].n_checked < 300_000
    assert "sampled" in report.notes[0]


@pytest.mark.parametrize("option,value,error", [
    ("mode", "all", ValueError), ("mode", 1, TypeError), ("n_per_block", 0, ValueError),
    ("n_directions", 2.5, TypeError), ("probability", 1.0, ValueError),
    ("method", "forward", ValueError), ("budget_s", -1.0, ValueError), ("seed", -1, ValueError),
])
def test_bad_options(net, option, value, error):
    X, Y, parameters, gradients = net
    with pytest.raises(error, match=option):
        gradcheck_fast.check_gradients(parameters, gradients, X, Y, **{option: value})
