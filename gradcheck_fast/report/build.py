"""Assembly of a report, one builder for every mode: what a check measured (coordinates in the
full and sampled modes, probes in the directional mode) becomes blocks, verdicts and the
flagged elements.

The modes differ only in what they measured, which :class:`Measurements` holds in one form
(one value per item, an item being a coordinate or a probe); :func:`build` judges the items
and assembles the report once for all of them. :func:`build_report` and
:func:`build_directional_report` are the two front doors, one per kind of measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .._jit import jit
from ..layout import Layout
from ..modes import Probes, detectable_error
from ..options import ATOL, RTOL
from .diagnosis import (
    NO_HINTS,
    Hints,
    Judgement,
    allowance,
    block_verdict,
    diagnose,
    difference_of_sums,
    inherited,
    judge,
    probe_items,
)
from .types import BlockResult, GradientCheckReport, element_at

#: How many worst elements the report keeps, overall and per failing block.
N_WORST = 5

_NO_INDICES = np.arange(0)


@dataclass(frozen=True)
class Measurements:
    """What a check measured, one value per item in layout order: an item is a coordinate
    (full and sampled modes) or a probe direction (directional mode).

    Attributes
    ----------
    mode, engine, kink : as the report states them.
    cost : J at the unperturbed parameters.
    analytic, numerical : per item, the analytic value (``grad_i``, or ``v . grad``) and the
        central difference.
    tolerance : per item, ``atol + rtol |numerical|``.
    noise : per item, the bound on the rounding (and truncation) error of ``numerical``.
    at_kink : per item, its steps cross a kink: set aside, counted in ``kinks``.
    nonfinite : per item, a J(theta +- eps ...) is NaN or Inf: set aside, not verified.
    spans : per block of the layout, the slice of its items.
    indices : coordinates: the flat coordinate of each item (ascending); None for probes.
    probes : probes: per block, its :class:`gradcheck_fast.modes.Probes`; None otherwise.
    explicit : the coordinates the incremental engine's layer sweep left to its
        per-coordinate path (None: another engine, or probes).
    scale : probes: per item the size its noise is held to for "unverified" (its block's RMS
        of ``v . grad``, :func:`.diagnosis.probe_items`); None: the values' own.
    """

    mode: str
    engine: str
    cost: float
    analytic: np.ndarray
    numerical: np.ndarray
    tolerance: np.ndarray
    noise: np.ndarray
    at_kink: np.ndarray
    nonfinite: np.ndarray
    spans: tuple[slice, ...]
    indices: np.ndarray | None = None
    probes: dict[str, Probes] | None = None
    explicit: int | None = None
    kink: str = "a ReLU kink"
    scale: np.ndarray | None = None

    @property
    def directional(self) -> bool:
        return self.probes is not None


# ---------------------------------------------------------------------------------------------
# The two kinds of measurement
# ---------------------------------------------------------------------------------------------
def measure_coordinates(layout: Layout, theta: np.ndarray, grad: np.ndarray, costs, *,
                        epsilon: float, rtol: float, atol: float, mode: str) -> Measurements:
    """The coordinates ``costs.indices`` (all of them, or a sample) an engine's
    :class:`~gradcheck_fast.engines.Costs` measured, with their tolerances and noise bounds."""
    idx = costs.indices
    every = idx.shape[0] == grad.shape[0]  # ascending, distinct: every coordinate, in order
    finite = costs.finite()
    tolerance, noise = allowance(costs, theta if every else theta[idx], epsilon=epsilon,
                                 rtol=rtol, atol=atol)
    bounds = [np.searchsorted(idx, layout.offsets[k : k + 2]) for k in range(len(layout.names))]
    return Measurements(
        mode=mode, engine=costs.engine, kink=costs.kink, cost=float(costs.J),
        analytic=grad if every else grad[idx], numerical=costs.gradapprox, tolerance=tolerance,
        noise=noise, at_kink=(costs.kinks > 0) & finite, nonfinite=~finite,
        spans=tuple(slice(int(lo), int(hi)) for lo, hi in bounds), indices=idx,
        explicit=costs.explicit,
    )


def measure_probes(layout: Layout, probes: dict[str, Probes], cost: float, *, rtol: float,
                   atol: float, engine: str = "incremental",
                   kink: str = "a ReLU kink") -> Measurements:
    """The directional probes of every block, in layout order, each block's as
    :func:`.diagnosis.probe_items` takes them (a non-finite probe's numerical value NaN)."""
    parts = []
    for name in layout.grad_names:
        p = probes[name]
        items = probe_items(p.numerical, p.kinks, cost, rtol=rtol, atol=atol,
                            grad_norm=p.grad_norm, size=p.size)
        parts.append((p.analytic, items.numerical, items.tolerance, p.noise, items.at_kink,
                      items.nonfinite, items.scale))
    analytic, numerical, tolerance, noise, at_kink, nonfinite, scale = (
        np.concatenate(column) for column in zip(*parts))
    ends = np.cumsum([part[0].size for part in parts]).tolist()
    return Measurements(
        mode="directional", engine=engine, kink=kink, cost=float(cost), analytic=analytic,
        numerical=numerical, tolerance=tolerance, noise=noise,
        at_kink=at_kink, nonfinite=nonfinite,
        spans=tuple(slice(lo, hi) for lo, hi in zip([0, *ends[:-1]], ends)), probes=probes,
        scale=scale,
    )


# ---------------------------------------------------------------------------------------------
# The builder
# ---------------------------------------------------------------------------------------------
def build(layout: Layout, grad: np.ndarray, items: Measurements, *, epsilon: float,
          threshold: float, rtol: float, atol: float, method: str = "central",
          probability: float | None = None, notes: tuple[str, ...] = (),
          n_worst: int = N_WORST, hints: Hints = NO_HINTS) -> GradientCheckReport:
    """The report of a check from the analytic gradient (flat, ``layout`` order) and what the
    check measured: every item judged by the elementwise criterion (:func:`.diagnosis.judge`),
    a :class:`BlockResult` per block, and, for coordinates, the worst and flagged elements.

    ``probability``: directional mode, the detection probability of ``detectable_error``.
    ``hints``: what names a wrong block's mistake (:class:`.diagnosis.Hints`); a wrong block
    under a wrong layer is marked as likely inheriting its error (:func:`.diagnosis.inherited`).
    """
    judged = judge(items.analytic, items.numerical, items.tolerance, items.noise,
                   items.at_kink | items.nonfinite, atol, items.scale)
    if items.indices is not None and items.indices.shape[0] == layout.n_params:
        numerical_full = items.numerical  # every coordinate, in order
    else:
        numerical_full = np.full(layout.n_params, np.nan)
        if items.indices is not None:
            numerical_full[items.indices] = items.numerical
    stats = _block_statistics(items, judged)
    blocks = {}
    for k, (name, shape, span) in enumerate(zip(layout.grad_names, layout.shapes, items.spans)):
        worst = (() if items.indices is None else
                 tuple(element_at(layout, grad, numerical_full, int(i))
                       for i in _worst_of_block(items, judged, span, n_worst)))
        params = (None if hints.theta is None or items.indices is None
                  else hints.theta[items.indices[span]])
        blocks[name] = _block_result(items, judged, stats[k], name, shape, span, worst,
                                     probability, hints, params)
    blocks = _with_inheritance(blocks, hints.layers)
    flagged = _flagged(items, judged, n_worst)
    return GradientCheckReport(
        difference=float(stats[-1, _DIFFERENCE]),
        threshold=threshold, epsilon=epsilon, rtol=rtol, atol=atol, cost=items.cost,
        grad=layout.unpack(grad, prefix="d"),
        gradapprox={} if items.directional else layout.unpack(numerical_full, prefix="d"),
        blocks=blocks, layout=layout, engine=items.engine, mode=items.mode, method=method,
        probability=probability, notes=tuple(notes), probes=items.probes or {}, kink=items.kink,
        n_explicit=items.explicit, _grad_flat=grad, _gradapprox_flat=numerical_full,
        _checked_indices=_NO_INDICES if items.indices is None else items.indices, **flagged,
    )


def _with_inheritance(blocks: dict[str, BlockResult], layers: dict) -> dict[str, BlockResult]:
    """The blocks, a wrong block that likely inherits its error from a layer above it so
    marked in its diagnosis."""
    notes = inherited({name: block.verdict for name, block in blocks.items()}, layers)
    for name, note in notes.items():
        diagnosis = blocks[name].diagnosis
        blocks[name] = replace(blocks[name], diagnosis=(f"{name}: {note}" if diagnosis is None
                                                        else f"{diagnosis}; {note}"))
    return blocks


# The columns of :func:`_block_statistics`' rows.
_FAILING, _NONFINITE, _UNVERIFIED, _KINKS, _VALID, _MAX_ABS, _MAX_REL, _DIFFERENCE = range(8)


def _block_statistics(items: Measurements, judged: Judgement) -> np.ndarray:
    """Per block (a row each, in layout order) and for all items (the last row): the counts
    of failing, non-finite, unverified, at-kink and valid items, the largest absolute and
    relative errors over the measured items and the relative difference of eq. (3). One
    jitted pass (NumPy's per-block reductions took 0.7 ms of the mnist-size report's 4.4 ms,
    cProfile)."""
    bounds = np.array([(span.start, span.stop) for span in items.spans], dtype=np.int64)
    stats = np.empty((len(items.spans) + 1, 8))
    _statistics(bounds.reshape(-1, 2),
                (items.analytic, items.numerical, judged.error, judged.relative),
                (judged.failing, judged.unverified, items.nonfinite, items.at_kink),
                items.directional, stats)
    return stats


@jit
def _statistics(bounds, values, flags, directional, stats):
    """:func:`_block_statistics` into ``stats`` (``values``: the analytic and numerical
    values, the errors and the relative errors; ``flags``: failing, unverified, non-finite,
    at a kink; ``bounds``: each block's first and last + 1 item). The largest errors are
    taken over the valid items (probes) or the finite ones (coordinates: kinks included, the
    table shows how far off a kink's central difference is), NaN if any is NaN (as NumPy's
    max), 0 for none; the relative differences sum in item order, as
    :func:`.diagnosis.relative_difference`."""
    analytic, numerical, error, relative = values
    failing, unverified, nonfinite, at_kink = flags
    n_blocks = bounds.shape[0]
    stats[:, :] = 0.0
    total_error2 = total_analytic2 = total_numerical2 = 0.0
    for b in range(n_blocks):
        n_failing = n_nonfinite = n_unverified = n_kinks = n_valid = 0
        largest_abs = largest_rel = 0.0
        error2 = analytic2 = numerical2 = 0.0
        for i in range(bounds[b, 0], bounds[b, 1]):
            valid = not (at_kink[i] or nonfinite[i])
            n_failing += failing[i]
            n_nonfinite += nonfinite[i]
            n_unverified += unverified[i]
            n_kinks += at_kink[i]
            n_valid += valid
            if valid if directional else not nonfinite[i]:
                largest_abs = _larger(largest_abs, error[i])
                largest_rel = _larger(largest_rel, relative[i])
            a = analytic[i]
            x = numerical[i]
            d = a - x
            error2 += d * d
            analytic2 += a * a
            numerical2 += x * x
            total_error2 += d * d
            total_analytic2 += a * a
            total_numerical2 += x * x
        stats[b, _FAILING] = n_failing
        stats[b, _NONFINITE] = n_nonfinite
        stats[b, _UNVERIFIED] = n_unverified
        stats[b, _KINKS] = n_kinks
        stats[b, _VALID] = n_valid
        stats[b, _MAX_ABS] = largest_abs
        stats[b, _MAX_REL] = largest_rel
        stats[b, _DIFFERENCE] = difference_of_sums(error2, analytic2, numerical2)
    stats[n_blocks, _DIFFERENCE] = difference_of_sums(total_error2, total_analytic2,
                                                       total_numerical2)


@jit(inline=True)
def _larger(largest, value):
    """The running maximum, NaN once any value is NaN (as NumPy's max)."""
    if value != value:
        return value
    return value if value > largest else largest


def _block_result(items: Measurements, judged: Judgement, stats: np.ndarray, name: str,
                  shape: tuple[int, ...], span: slice, worst: tuple,
                  probability: float | None, hints: Hints = NO_HINTS,
                  params: np.ndarray | None = None) -> BlockResult:
    """One block's result from its items ``span`` and their statistics (a row of
    :func:`_block_statistics`; ``params``: the parameters they perturb, for coordinates)."""
    analytic, numerical = items.analytic[span], items.numerical[span]
    n_items = span.stop - span.start
    n_failing, n_nonfinite, n_unverified, n_kinks, n_valid = (int(c) for c in stats[:_MAX_ABS])
    # A block whose every probe was set aside has verified nothing. (Elements set aside at
    # kinks leave their block "ok", the kinks being reported.)
    nothing_verified = items.directional and n_valid == 0
    diagnosis, scale = None, None
    if n_failing:
        # A transposition can only be recognised on a whole block of coordinates.
        whole = not items.directional and n_items == int(np.prod(shape, dtype=np.int64))
        diagnosis, scale = diagnose(name, shape if whole else (n_items,), analytic, numerical,
                                    judged.valid[span], judged.failing[span],
                                    judged.allowed[span], hints, params)
        if diagnosis is not None and items.directional:
            diagnosis += " (along random directions)"
    detectable = None
    if items.directional:
        verified = judged.valid[span] & ~judged.unverified[span]
        p = items.probes[name]
        detectable = (detectable_error(float(np.max(judged.allowed[span][verified])), p.size,
                                       p.grad_norm, int(np.count_nonzero(verified)),
                                       p.rank_one, probability)
                      if np.any(verified) else math.inf)
    return BlockResult(
        name=name, shape=shape,
        difference=float(stats[_DIFFERENCE]), max_abs_error=float(stats[_MAX_ABS]),
        max_rel_error=float(stats[_MAX_REL]), n_failing=n_failing, n_kinks=n_kinks,
        n_nonfinite=n_nonfinite, n_unverified=n_unverified,
        verdict=block_verdict(n_failing, n_nonfinite, n_unverified, nothing_verified),
        diagnosis=diagnosis, scale=scale, worst=worst,
        n_checked=0 if items.directional else n_items,
        n_probes=n_items if items.directional else 0, detectable_error=detectable,
    )


def _worst_of_block(items: Measurements, judged: Judgement, span: slice,
                    n_worst: int) -> np.ndarray:
    """The flat coordinates of a block's worst failing elements (by how far past their
    allowed error), worst first; empty if none fails."""
    failing = judged.failing[span]
    if not np.any(failing):
        return _NO_INDICES
    with np.errstate(invalid="ignore", divide="ignore"):
        excess = np.where(failing, judged.error[span] / judged.allowed[span], -1.0)
    excess = np.where(np.isnan(excess), np.inf, excess)
    return items.indices[_top(excess, n_worst, minimum=0.0) + span.start]


def _flagged(items: Measurements, judged: Judgement,
             n_worst: int) -> dict[str, np.ndarray]:
    """The flat coordinates of the report's element lists (none for probes)."""
    if items.indices is None:
        return {"_worst_indices": _NO_INDICES, "_kink_indices": _NO_INDICES,
                "_nonfinite_indices": _NO_INDICES, "_unverified_indices": _NO_INDICES,
                "_failing_indices": _NO_INDICES}
    idx = items.indices
    # Worst overall: failing elements by how far past their allowed error, then the rest by
    # relative error (kinks and non-finite ones have their own lists): judged.rank.
    return {"_worst_indices": idx[_top(judged.rank, n_worst, minimum=0.0)],
            "_kink_indices": idx[np.flatnonzero(items.at_kink)],
            "_nonfinite_indices": idx[np.flatnonzero(items.nonfinite)],
            "_unverified_indices": idx[np.flatnonzero(judged.unverified)],
            "_failing_indices": idx[np.flatnonzero(judged.failing)]}


def _top(key: np.ndarray, n: int, minimum: float) -> np.ndarray:
    """Indices of the n largest keys (>= minimum; NaN never), largest first; ties by index.
    One jitted pass that keeps the n best so far."""
    best = np.empty(max(n, 0), dtype=np.int64)
    return best[:_top_keys(key, float(minimum), best)]


@jit
def _top_keys(key, minimum, best):
    """:func:`_top` into ``best`` (its length is n); returns how many were found."""
    n = best.shape[0]
    count = 0
    for i in range(key.shape[0]):
        k = key[i]
        if not k >= minimum or n == 0 or (count == n and not k > key[best[n - 1]]):
            continue
        place = count if count < n else n - 1  # the new one's slot, the last one dropped
        # Equal keys keep their index order: the new one (a larger index) goes after them.
        while place > 0 and key[best[place - 1]] < k:
            best[place] = best[place - 1]
            place -= 1
        best[place] = i
        count = min(count + 1, n)
    return count


# ---------------------------------------------------------------------------------------------
# The front doors, one per kind of measurement
# ---------------------------------------------------------------------------------------------
def build_report(layout: Layout, theta: np.ndarray, grad: np.ndarray, costs, *,
                 epsilon: float, threshold: float, rtol: float = RTOL,
                 atol: float = ATOL, n_worst: int = N_WORST, mode: str = "full",
                 method: str = "central", notes: tuple[str, ...] = (),
                 hints: Hints = NO_HINTS) -> GradientCheckReport:
    """The report of a full or sampled check: the analytic gradient (flat, ``layout`` order)
    and the engine's :class:`~gradcheck_fast.engines.Costs` for the coordinates
    ``costs.indices`` (all of them, or a sample), each with the engine's own noise bound;
    ``hints`` name mistakes (theta is added to them)."""
    items = measure_coordinates(layout, theta, grad, costs, epsilon=epsilon, rtol=rtol,
                                atol=atol, mode=mode)
    return build(layout, grad, items, epsilon=epsilon, threshold=threshold, rtol=rtol,
                 atol=atol, method=method, notes=notes, n_worst=n_worst,
                 hints=hints._replace(theta=theta))


def build_directional_report(layout: Layout, grad: np.ndarray, probes: dict, *, cost: float,
                             epsilon: float, threshold: float, rtol: float, atol: float,
                             probability: float, notes: tuple[str, ...] = (),
                             engine: str = "incremental", kink: str = "a ReLU kink",
                             hints: Hints = NO_HINTS) -> GradientCheckReport:
    """The report of a directional check from its :class:`gradcheck_fast.modes.Probes`.

    A probe fails when ``|v.grad - numerical| > atol + rtol |numerical| + noise`` (the
    elementwise criterion, applied to a unit direction); a probe whose steps cross a ReLU kink
    is set aside, and so, as in the full check, is a probe whose ``J(theta +- eps v)`` is NaN
    or Inf (a non-finite J, or a change that is): its numerical value is NaN, the block
    "unverified". One that passes only within a noise bound above ``UNVERIFIABLE_FRACTION`` of
    its block's RMS of ``v . grad`` (a large step, a coarse cost) is unverified
    (:func:`.diagnosis.probe_items`). ``detectable_error`` follows from the largest
    tolerance among the block's verified probes (:func:`gradcheck_fast.modes.detectable_error`).
    ``engine`` and ``kink`` name the engine that took the probes and what a kink is for it;
    ``hints`` name mistakes (:class:`.diagnosis.Hints`).
    """
    items = measure_probes(layout, probes, cost, rtol=rtol, atol=atol, engine=engine,
                           kink=kink)
    return build(layout, grad, items, epsilon=epsilon, threshold=threshold, rtol=rtol,
                 atol=atol, probability=probability, notes=notes, hints=hints)
