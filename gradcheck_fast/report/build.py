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
    inherited,
    judge,
    probe_items,
    relative_difference,
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
    nonfinite = ~(np.isfinite(costs.J_plus) & np.isfinite(costs.J_minus))
    tolerance, noise = allowance(costs, theta[idx], epsilon=epsilon, rtol=rtol, atol=atol)
    bounds = [np.searchsorted(idx, layout.offsets[k : k + 2]) for k in range(len(layout.names))]
    return Measurements(
        mode=mode, engine=costs.engine, kink=costs.kink, cost=float(costs.J), analytic=grad[idx],
        numerical=costs.gradapprox, tolerance=tolerance, noise=noise,
        at_kink=(costs.kinks > 0) & ~nonfinite, nonfinite=nonfinite,
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
    relative = judged.relative
    numerical_full = np.full(layout.n_params, np.nan)
    if items.indices is not None:
        numerical_full[items.indices] = items.numerical
    blocks = {}
    for name, shape, span in zip(layout.grad_names, layout.shapes, items.spans):
        worst = (() if items.indices is None else
                 tuple(element_at(layout, grad, numerical_full, int(i))
                       for i in _worst_of_block(items, judged, span, n_worst)))
        params = (None if hints.theta is None or items.indices is None
                  else hints.theta[items.indices[span]])
        blocks[name] = _block_result(items, judged, relative, name, shape, span, worst,
                                     probability, hints, params)
    blocks = _with_inheritance(blocks, hints.layers)
    flagged = _flagged(items, judged, n_worst)
    return GradientCheckReport(
        difference=relative_difference(items.analytic, items.numerical),
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


def _block_result(items: Measurements, judged: Judgement, relative: np.ndarray, name: str,
                  shape: tuple[int, ...], span: slice, worst: tuple,
                  probability: float | None, hints: Hints = NO_HINTS,
                  params: np.ndarray | None = None) -> BlockResult:
    """One block's result from its items ``span`` (``params``: the parameters they perturb,
    for coordinates)."""
    analytic, numerical = items.analytic[span], items.numerical[span]
    valid, failing = judged.valid[span], judged.failing[span]
    unverified = judged.unverified[span]
    n_items = span.stop - span.start
    n_failing = int(np.count_nonzero(failing))
    n_nonfinite = int(np.count_nonzero(items.nonfinite[span]))
    n_unverified = int(np.count_nonzero(unverified))
    # A block whose every probe was set aside has verified nothing. (Elements set aside at
    # kinks leave their block "ok", the kinks being reported.)
    nothing_verified = items.directional and not np.any(valid)
    diagnosis, scale = None, None
    if n_failing:
        # A transposition can only be recognised on a whole block of coordinates.
        whole = not items.directional and n_items == int(np.prod(shape, dtype=np.int64))
        diagnosis, scale = diagnose(name, shape if whole else (n_items,), analytic, numerical,
                                    valid, failing, judged.allowed[span], hints, params)
        if diagnosis is not None and items.directional:
            diagnosis += " (along random directions)"
    # The largest errors: of elements, over those with finite J+- (kinks included: the table
    # shows how far off a kink's central difference is); of probes, over the judged ones.
    measured = valid if items.directional else ~items.nonfinite[span]
    detectable = None
    if items.directional:
        verified = valid & ~unverified
        p = items.probes[name]
        detectable = (detectable_error(float(np.max(judged.allowed[span][verified])), p.size,
                                       p.grad_norm, int(np.count_nonzero(verified)),
                                       p.rank_one, probability)
                      if np.any(verified) else math.inf)
    return BlockResult(
        name=name, shape=shape,
        difference=relative_difference(analytic, numerical),
        max_abs_error=float(np.max(judged.error[span][measured], initial=0.0)),
        max_rel_error=float(np.max(relative[span][measured], initial=0.0)),
        n_failing=n_failing, n_kinks=int(np.count_nonzero(items.at_kink[span])),
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
    """Indices of the n largest keys (>= minimum), largest first; ties by index."""
    candidates = np.flatnonzero(key >= minimum)
    if candidates.size > n:
        part = np.argpartition(-key[candidates], n - 1)[:n]
        candidates = candidates[part]
    order = np.lexsort((candidates, -key[candidates]))
    return candidates[order]


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
