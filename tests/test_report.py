"""The report package: one builder for coordinates and probes, typed fields, and the text's
structure for every mode (verdict lines, block rows, wrong blocks, worst elements)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcheck_fast
from gradcheck_fast import reference
from gradcheck_fast.layout import Layout
from gradcheck_fast.modes import Probes
from gradcheck_fast.report import GradientCheckReport, build
from gradcheck_fast.report.build import Measurements

ATOL, RTOL = 1e-8, 1e-6


def _seed(faulty: bool):
    X, Y, parameters = reference.seed_case()
    _, cache = reference.forward_propagation_n(X, Y, parameters)
    backward = (reference.backward_propagation_n_faulty if faulty
                else reference.backward_propagation_n)
    return parameters, backward(X, Y, cache), X, Y


# -- the builder on hand-made measurements --------------------------------------------------------
LAYOUT = Layout({"W": (2, 2), "b": (2, 1)})


def _coordinates(analytic, numerical, noise, at_kink=(), nonfinite=(), indices=None):
    """Measurements of the coordinates ``indices`` (default all of LAYOUT)."""
    n = len(analytic)
    numerical = np.array(numerical, dtype=float)
    flags = [np.isin(np.arange(n), list(where)) for where in (at_kink, nonfinite)]
    indices = np.arange(n) if indices is None else np.asarray(indices)
    bounds = np.searchsorted(indices, LAYOUT.offsets)
    return Measurements(
        mode="full" if n == LAYOUT.n_params else "sampled", engine="exact", cost=0.5,
        analytic=np.array(analytic, dtype=float), numerical=numerical,
        tolerance=ATOL + RTOL * np.abs(numerical), noise=np.array(noise, dtype=float),
        at_kink=flags[0], nonfinite=flags[1],
        spans=tuple(slice(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])),
        indices=indices)


def _build(items, grad=None, **options):
    grad = items.analytic if grad is None else grad
    return build(LAYOUT, grad, items, epsilon=1e-7, threshold=2e-7, rtol=RTOL, atol=ATOL,
                 **options)


def test_the_builder_judges_coordinates_and_lists_them():
    # W[0,0] agrees; W[0,1] is twice the numerical value; W[1,0] sits at a kink (off by far
    # more than any tolerance, yet set aside); W[1,1] has a non-finite J+-; b[0] agrees only
    # within a noise bound of half its size (unverified); b[1] agrees within the tolerance
    # 1e-8 + 1e-6 * 3 (an error of 1e-9).
    items = _coordinates(analytic=[1.0, 4.0, 5.0, 0.3, 2.0, 3.0 + 1e-9],
                         numerical=[1.0, 2.0, 1.0, np.nan, 2.5, 3.0],
                         noise=[0.0, 0.0, 0.0, 0.0, 1.0, 0.0], at_kink=[2], nonfinite=[3])
    report = _build(items)
    W, b = report.blocks["dW"], report.blocks["db"]
    assert (W.n_failing, W.n_kinks, W.n_nonfinite, W.n_unverified) == (1, 1, 1, 0)
    assert (b.n_failing, b.n_kinks, b.n_nonfinite, b.n_unverified) == (0, 0, 0, 1)
    assert (W.verdict, b.verdict) == ("wrong", "unverified")
    assert report.failed_blocks == ["dW"] and not report.passed
    assert [e.label for e in report.kinks] == ["dW[1, 0]"]
    assert [e.label for e in report.nonfinite] == ["dW[1, 1]"]
    assert [e.label for e in report.unverified] == ["db[0, 0]"]
    assert [e.label for e in W.worst] == ["dW[0, 1]"] and b.worst == ()
    assert report.worst[0].label == "dW[0, 1]" and report.worst[0].relative_error == 0.5
    # The kink's error counts in the block's largest error; the non-finite element's does not.
    assert W.max_abs_error == 4.0 and W.max_rel_error == 0.8
    assert (W.n_checked, W.n_probes, W.detectable_error) == (4, 0, None)
    assert np.array_equal(report.gradapprox["dW"], [[1.0, 2.0], [1.0, np.nan]],
                          equal_nan=True)
    lines = str(report).splitlines()
    assert lines[0] == ("gradient check FAILED: 1 of 2 blocks disagree with the numerical "
                        "gradient (dW)")
    assert "  dW  1 of 4 elements wrong: no simple pattern (see the worst elements)" in lines
    assert any(line.startswith("note: 1 elements step across a ReLU kink") for line in lines)
    assert any(line.startswith("note: 1 element(s) have a NaN/Inf J(theta +- eps e_i), first "
                               "dW[1, 1]") for line in lines)
    assert any(line.startswith("note: 1 element(s) pass only within an error bound")
               for line in lines)


def test_the_builder_keeps_a_sample_apart_from_the_rest():
    # Coordinates 1, 2 and 5 checked: the others are NaN in gradapprox and unchecked.
    grad = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    items = _coordinates(analytic=grad[[1, 2, 5]], numerical=[2.0, 3.0, -6.0],
                         noise=[0.0, 0.0, 0.0], indices=[1, 2, 5])
    report = _build(items, grad=grad)
    assert report.mode == "sampled" and report.n_checked == 3
    assert report.checked["dW"].tolist() == [[False, True], [True, False]]
    assert report.checked["db"].tolist() == [[False], [True]]
    assert np.isnan(report.gradapprox["dW"][0, 0]) and report.gradapprox["db"][1, 0] == -6.0
    assert report.failed_blocks == ["db"]
    assert report.blocks["db"].diagnosis == "db has the wrong sign: ≈ -1.00 × numerical"
    assert "  block  shape       checked  difference" in str(report)


def _probes(analytic, numerical, kinks, noise=0.0):
    analytic = np.array(analytic, dtype=float)
    return Probes(analytic=analytic, numerical=np.array(numerical, dtype=float),
                  noise=np.full(analytic.size, noise), kinks=np.array(kinks),
                  rank_one=False, size=4, grad_norm=1.0)


def test_probes_go_through_the_same_builder():
    from gradcheck_fast.report.build import measure_probes

    probes = {"dW": _probes([2.0, -4.0, 6.0], [1.0, -2.0, 3.0], [0, 0, 0]),
              "db": _probes([1.0, 7.0], [1.0, 3.0], [1, 2])}  # every probe at a kink
    items = measure_probes(LAYOUT, probes, 0.5, rtol=RTOL, atol=ATOL)
    report = _build(items, grad=np.zeros(6), probability=0.999)
    W, b = report.blocks["dW"], report.blocks["db"]
    assert W.verdict == "wrong" and W.n_failing == 3 and W.n_probes == 3 and W.n_checked == 0
    assert W.diagnosis == "dW ≈ 2.00 × numerical: an extra factor 2? (along random directions)"
    # Every probe of db set aside: it verified nothing, so it is not "ok".
    assert b.verdict == "unverified" and b.n_kinks == 2 and b.n_failing == 0
    assert b.detectable_error == math.inf and math.isfinite(W.detectable_error)
    # A probe at a kink does not count in the largest error (elements at kinks do).
    assert b.max_abs_error == 0.0
    assert report.probes is probes and report.gradapprox == {}
    assert report.worst == report.kinks == report.nonfinite == report.unverified == ()
    assert report.n_checked == 0 and not any(m.any() for m in report.checked.values())
    lines = str(report).splitlines()
    assert lines[0] == ("directional gradient check FAILED: 1 of 2 blocks disagree with the "
                        "numerical gradient (dW)")
    assert "5 directions over 6 parameters" in lines[2] and "engine" not in lines[2]
    assert "note: 2 probes step across a ReLU kink, where the central difference is no " \
           "derivative: not counted as failing" in lines


def test_a_nonfinite_cost_makes_every_probe_nonfinite():
    from gradcheck_fast.report.build import measure_probes

    probes = {"dW": _probes([1.0], [1.0], [0]), "db": _probes([2.0], [2.0], [0])}
    report = _build(measure_probes(LAYOUT, probes, math.inf, rtol=RTOL, atol=ATOL),
                    grad=np.zeros(6), probability=0.999)
    assert all(b.n_nonfinite == 1 and b.verdict == "unverified"
               for b in report.blocks.values())
    assert math.isnan(report.difference)
    assert "note: 2 probes have a NaN/Inf J(theta +- eps v) (J = inf): not verified" in str(
        report).splitlines()


# -- typed fields ------------------------------------------------------------------------------
def test_the_report_has_typed_fields_not_a_bag():
    fields = {f.name: f for f in dataclasses.fields(GradientCheckReport)}
    assert "_flags" not in fields
    private = ["_grad_flat", "_gradapprox_flat", "_checked_indices", "_worst_indices",
               "_kink_indices", "_nonfinite_indices", "_unverified_indices", "_failing_indices"]
    for name in private:
        assert fields[name].type == "np.ndarray" and fields[name].kw_only, name
        assert not fields[name].repr, name
    assert fields["probes"].type == "dict[str, Probes]"
    # The builder must fill every flat field: none has a default to fall back on.
    report = gradcheck_fast.check_gradients(*_seed(faulty=False))
    values = {f.name: getattr(report, f.name) for f in dataclasses.fields(report)
              if f.name not in private}
    with pytest.raises(TypeError, match="_grad_flat"):
        GradientCheckReport(**values)
    rebuilt = GradientCheckReport(**values, **{n: getattr(report, n) for n in private})
    assert str(rebuilt) == str(report)


# -- the text of real checks, every mode ---------------------------------------------------------
def _table_names(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  block "))
    rows = itertools.takewhile(lambda line: line.startswith("  "), lines[start + 1 :])
    return [row.split()[0] for row in rows]


def _worst_lines(report) -> list[str]:
    lines = str(report).splitlines()
    return lines[lines.index("worst elements:") + 1 :]


@pytest.mark.parametrize("mode", ["full", "sampled", "directional"])
def test_the_seed_faulty_report_names_the_wrong_blocks_in_every_mode(mode):
    report = gradcheck_fast.check_gradients(*_seed(faulty=True), mode=mode, n_per_block=15)
    text = str(report)
    lines = text.splitlines()
    what = {"full": "gradient check", "sampled": "sampled gradient check",
            "directional": "directional gradient check"}[mode]
    assert lines[0] == (f"{what} FAILED: 2 of 6 blocks disagree with the numerical gradient "
                        f"(dW2, db1)")
    assert lines[1].startswith("  seed criterion: difference = ") and lines[1].endswith(
        "> threshold 2e-07 (failed)")
    assert lines[3] == "wrong blocks, in backprop order:"
    unit = "probes" if mode == "directional" else "elements"
    suffix = " (along random directions)" if mode == "directional" else ""
    assert lines[4].startswith("  dW2  ") and lines[4].endswith(
        f"{unit} wrong: dW2 ≈ 2.00 × numerical: an extra factor 2?{suffix}")
    assert lines[5].startswith("  db1  ") and lines[5].endswith(
        f"{unit} wrong: db1 ≈ 4.00 × numerical{suffix}")
    assert _table_names(text) == ["dW1", "db1", "dW2", "db2", "dW3", "db3"]
    if mode == "directional":
        assert "worst elements:" not in text and report.worst == ()
        return
    # The worst elements: failing ones, from the wrong blocks, their printed numbers those of
    # the report's arrays.
    worst = _worst_lines(report)
    assert worst == [f"  {e}" for e in report.worst] and len(worst) == 5
    for e in report.worst:
        assert e.block in ("dW2", "db1")
        assert e.analytic == report.grad[e.block][e.index]
        assert e.numerical == report.gradapprox[e.block][e.index]
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert [w["flat_index"] for w in as_dict["worst"]] == [e.flat_index for e in report.worst]


def test_a_passing_tanh_report_lists_its_blocks_and_largest_errors():
    X, Y, parameters = reference.seed_case()
    model = gradcheck_fast.MLP(hidden="tanh")
    _, cache = reference.forward_mlp(X, Y, parameters, model)
    gradients = reference.backward_mlp(X, Y, cache, model)
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, model=model)
    lines = str(report).splitlines()
    assert lines[0] == "gradient check PASSED: all 6 blocks agree with the numerical gradient"
    assert all(line.endswith("  ok") for line in lines[4:10])
    errors = sorted((e.relative_error for e in report.worst), reverse=True)
    assert [e.relative_error for e in report.worst] == errors and errors[0] > 0
    assert report.raise_if_failed() is None


def test_a_custom_check_names_the_kink_of_its_cost():
    import numba

    @numba.njit
    def cost(theta):
        return np.abs(theta[0]) + theta[1] ** 2

    theta = np.array([2e-8, 1.5])
    report = gradcheck_fast.check(cost, theta, np.array([1.0, 3.0]))
    assert report.passed and [e.label for e in report.kinks] == ["dtheta[0]"]
    assert ("note: 1 elements step across a kink of the cost (a ReLU kink or other non-smooth "
            "point), where the central difference is no derivative: not counted as failing "
            "(report.kinks)") in str(report).splitlines()


def test_the_jitted_judgement_is_the_criterion_element_by_element():
    """report.diagnosis.judge (one jitted pass since the mnist-size report took 20 ms) against
    the criterion written out in NumPy, on values with zeros, NaN, infinities, set-aside
    elements, agreements within the noise only, and failures."""
    from gradcheck_fast.report.diagnosis import UNVERIFIABLE_FRACTION, judge

    rng = np.random.default_rng(0)
    n = 4000
    special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-300, 1e300])
    analytic = np.where(rng.random(n) < 0.1, rng.choice(special, n), rng.normal(size=n))
    numerical = np.where(rng.random(n) < 0.5, analytic * (1 + 1e-7 * rng.normal(size=n)),
                         rng.normal(size=n))
    numerical = np.where(rng.random(n) < 0.1, rng.choice(special, n), numerical)
    tolerance = 1e-8 + 1e-6 * np.abs(numerical)
    noise = np.where(rng.random(n) < 0.3, 10 ** rng.uniform(-12, 1, n), 0.0)
    set_aside = rng.random(n) < 0.05
    atol = 1e-8
    judged = judge(analytic, numerical, tolerance, noise, set_aside, atol)

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        error = np.abs(analytic - numerical)
        allowed = tolerance + noise
        valid = ~set_aside
        failing = valid & ~(error <= allowed)
        size = np.maximum(np.abs(analytic), np.abs(numerical))
        unverified = (valid & ~failing & (error > tolerance) & (noise > atol)
                      & (noise > UNVERIFIABLE_FRACTION * size))
        relative = np.where(size > 0, error / np.where(size > 0, size, 1.0),
                            np.where(error == 0, 0.0, error))
        excess = np.where(failing, error / allowed, 0.0)
        excess = np.where(np.isnan(excess), np.inf, excess)
        rank = np.where(failing, excess + 1.0,
                        np.where(valid, np.nan_to_num(relative, nan=0.0) / 2, -1.0))
    for name, expected in (("error", error), ("allowed", allowed), ("valid", valid),
                           ("failing", failing), ("unverified", unverified),
                           ("relative", relative), ("rank", rank)):
        assert np.array_equal(getattr(judged, name), expected, equal_nan=True), name
    assert failing.any() and unverified.any() and np.isnan(relative).any()


# -- the jitted reductions against their NumPy definitions ----------------------------------------
_SPECIALS = st.sampled_from([0.0, -0.0, 1.0, 2.5, 1e-300, 1e300, math.inf, -math.inf, math.nan])
_KEYS = st.lists(st.one_of(_SPECIALS, st.floats(-10, 10), st.integers(-3, 3).map(float)),
                 max_size=40)


@settings(max_examples=200, deadline=None)
@given(key=_KEYS, n=st.integers(0, 7), minimum=st.sampled_from([0.0, -1.0, 1.0]))
def test_top_takes_the_n_largest_keys_largest_first_ties_by_index(key, n, minimum):
    from gradcheck_fast.report.build import _top

    key = np.array(key, dtype=float)
    # The definition: every key >= minimum (NaN never), sorted by (-key, index), the first n.
    expected = sorted((-k, i) for i, k in enumerate(key) if k >= minimum)[:n]
    assert _top(key, n, minimum).tolist() == [i for _, i in expected]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), directional=st.booleans(), chunk=st.sampled_from([1, 3, 1024]))
def test_summary_is_numpys_reductions_of_the_judgement(data, directional, chunk):
    """build.summarise (chunk by chunk, nothing per item kept) against NumPy's reductions of
    judge's arrays: counts, largest errors, eq. (3) (bitwise relative_difference with the
    same chunks), the flagged lists and the worst items, for chunks that cut the blocks
    anywhere."""
    from gradcheck_fast.report.build import summarise
    from gradcheck_fast.report.diagnosis import judge, relative_difference

    n = data.draw(st.integers(1, 30))
    floats = st.one_of(_SPECIALS, st.floats(-5, 5))
    analytic, numerical = (np.array(data.draw(st.lists(floats, min_size=n, max_size=n)))
                           for _ in range(2))
    nonfinite = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    at_kink = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n))) & ~nonfinite
    cuts = sorted(data.draw(st.lists(st.integers(0, n), min_size=1, max_size=3)))
    edges = [0, *cuts, n]
    spans = tuple(slice(a, b) for a, b in zip(edges[:-1], edges[1:]))
    scale = np.array(data.draw(st.lists(st.floats(0, 2), min_size=n, max_size=n)))
    items = Measurements(mode="full", engine="exact", cost=1.0, analytic=analytic,
                         numerical=numerical, tolerance=np.full(n, 1e-3),
                         noise=np.full(n, 1e-9), at_kink=at_kink, nonfinite=nonfinite,
                         spans=spans, indices=None if directional else np.arange(n),
                         probes={} if directional else None,
                         scale=scale if directional else None)
    judged = judge(analytic, numerical, items.tolerance, items.noise, at_kink | nonfinite, 1e-8,
                   items.scale)
    summary = summarise(items, 1e-8, n_worst=3, chunk=chunk)
    for row, span in zip(summary.stats, spans):
        measured = judged.valid[span] if directional else ~nonfinite[span]
        expected = [np.count_nonzero(judged.failing[span]), np.count_nonzero(nonfinite[span]),
                    np.count_nonzero(judged.unverified[span]), np.count_nonzero(at_kink[span]),
                    np.count_nonzero(judged.valid[span]),
                    np.max(judged.error[span][measured], initial=0.0),
                    np.max(judged.relative[span][measured], initial=0.0),
                    relative_difference(analytic[span], numerical[span], chunk=chunk)]
        np.testing.assert_array_equal(row, expected)  # NaN where NumPy's max gives NaN
    assert np.array_equal(summary.stats[-1, -1],
                          relative_difference(analytic, numerical, spans, chunk=chunk),
                          equal_nan=True)
    for listed, flags in zip(summary.lists, (judged.failing, nonfinite, judged.unverified,
                                             at_kink)):
        assert listed.tolist() == np.flatnonzero(flags).tolist()
    expected = sorted((-k, i) for i, k in enumerate(judged.rank) if k >= 0)[:3]
    assert summary.worst.tolist() == [i for _, i in expected]


def test_the_summarys_scan_judges_unverified_by_the_summarys_own_atol():
    """A coordinate 1.0001e-8 from 0 with a noise bound of 3e-10 passes only within that
    bound, which exceeds 1 % of the values and atol = 1e-12 but not 1e-8: unverified under
    the summary's atol of 1e-12, though the source's tolerances take atol = 1e-8 (the
    element-by-element judgement's rule, which the one-pass scan of a clean chunk must
    follow)."""
    from gradcheck_fast.report.build import CoordinateSource, summarise

    analytic, numerical = np.zeros(3), np.array([1.0001e-8, 0.0, 0.0])
    source = CoordinateSource(np.zeros(3, dtype=np.int64), np.ones(3, dtype=bool),
                              np.full(3, 3e-10), np.zeros(1), False, np.full(3, 0.5), 1e-7,
                              1e-6, 1e-8)
    items = Measurements(mode="full", engine="incremental", cost=1.0, analytic=analytic,
                         numerical=numerical, tolerance=None, noise=None, at_kink=None,
                         nonfinite=None, spans=(slice(0, 3),), indices=np.arange(3),
                         source=source)
    assert summarise(items, 1e-12).lists[2].tolist() == [0]  # the unverified list
    assert summarise(items, 1e-8).lists[2].tolist() == []


@settings(max_examples=150, deadline=None)
@given(data=st.data(), chunk=st.sampled_from([1, 4, 16, 1024]), truncated=st.booleans())
def test_summary_from_a_coordinate_source_is_the_summary_of_its_arrays(data, chunk, truncated):
    """A full check's items come as a CoordinateSource, from which summarise forms each
    item's tolerance, noise bound and flags itself, and passes a chunk in one scan where
    none is flagged: the same stats (bitwise), lists and worst items as the arrays
    :func:`.diagnosis.allowance_elements` and the kink and finiteness flags define. Mostly
    plainly passing items (the scan's case), with chunks that hold a failing, unverified,
    non-finite, at-kink or NaN item, a step that rounds to 0, or a huge error."""
    from gradcheck_fast.report.build import CoordinateSource, summarise
    from gradcheck_fast.report.diagnosis import allowance_elements

    n = data.draw(st.integers(1, 40))
    analytic = np.array(data.draw(st.lists(st.one_of(st.floats(-5, 5), st.just(0.0)),
                                           min_size=n, max_size=n)))
    # 1.0001e-8 from 0 with a noise bound of 3e-10: just past atol, passing within the noise
    # bound, which exceeds 1e-12 and 1 % of the values but not 1e-8: unverified or not by
    # the summary's own atol.
    gap = np.array(data.draw(st.lists(st.sampled_from([0.0, 1e-12, -3e-9, 1.0001e-8, 1e-3,
                                                       math.nan, math.inf, 1e300]),
                                      min_size=n, max_size=n)))
    numerical = analytic + gap
    finite = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    finite |= np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))  # mostly
    kinks = np.array(data.draw(st.lists(st.sampled_from([0, 0, 0, 2]), min_size=n,
                                        max_size=n)), dtype=np.int64)
    noise = np.array(data.draw(st.lists(st.sampled_from([1e-10, 3e-10, 1e-4, math.nan]),
                                        min_size=n, max_size=n)))
    truncation = np.array(data.draw(st.lists(st.sampled_from([0.0, 1e-9, 1e-2]), min_size=n,
                                             max_size=n)))
    theta = np.array(data.draw(st.lists(st.sampled_from([0.5, -2.0, 1e12]), min_size=n,
                                        max_size=n)))  # at 1e12 the step rounds to 0
    epsilon, rtol, atol = 1e-7, 1e-6, 1e-8
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=3)))
    edges = [0, *cuts, n]
    spans = tuple(slice(a, b) for a, b in zip(edges[:-1], edges[1:]))
    source = CoordinateSource(kinks, finite, noise, truncation if truncated else np.zeros(1),
                              truncated, theta, epsilon, rtol, atol)
    tolerance, bound = np.empty(n), np.empty(n)
    allowance_elements(numerical, noise, truncation if truncated else np.zeros(1), truncated,
                       theta, epsilon, rtol, atol, (tolerance, bound))
    common = dict(mode="full", engine="incremental", cost=1.0, analytic=analytic,
                  numerical=numerical, spans=spans, indices=np.arange(n))
    from_source = Measurements(**common, tolerance=None, noise=None, at_kink=None,
                               nonfinite=None, source=source)
    from_arrays = Measurements(**common, tolerance=tolerance, noise=bound,
                               at_kink=(kinks > 0) & finite, nonfinite=~finite)
    judged_atol = data.draw(st.sampled_from([atol, 1e-12, 1e-9]))  # the summary's own
    one, other = (summarise(items, judged_atol, n_worst=3, chunk=chunk)
                  for items in (from_source, from_arrays))
    assert np.array_equal(one.stats, other.stats, equal_nan=True)
    assert [a.tolist() for a in one.lists] == [a.tolist() for a in other.lists]
    assert one.worst.tolist() == other.worst.tolist()
