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
from typing import NamedTuple

import numpy as np

from .._jit import jit
from .._schedule import run
from .._steps import steps_taken
from ..layout import Layout
from ..modes import Probes, detectable_error
from ..options import ATOL, RTOL
from .diagnosis import (
    NO_HINTS,
    SUM_CHUNK,
    UNVERIFIABLE_FRACTION,
    Hints,
    Judgement,
    _magnitude,
    _rank,
    _relative,
    allowance_elements,
    block_verdict,
    chunk_bounds,
    chunk_sums,
    diagnose,
    difference_of_sums,
    inherited,
    judge_elements,
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
        These four are None when ``source`` gives them instead, a chunk at a time
        (:func:`summarise`): a full check then holds no array of them.
    spans : per block of the layout, the slice of its items.
    indices : coordinates: the flat coordinate of each item (ascending); None for probes.
    probes : probes: per block, its :class:`gradcheck_fast.modes.Probes`; None otherwise.
    explicit : the coordinates the incremental engine's layer sweep left to its
        per-coordinate path (None: another engine, or probes).
    scale : probes: per item the size its noise is held to for "unverified" (its block's RMS
        of ``v . grad``, :func:`.diagnosis.probe_items`); None: the values' own.
    source : coordinates: what their tolerances, noise bounds and flags are computed from
        (:class:`CoordinateSource`), or None (then the arrays above hold them).
    """

    mode: str
    engine: str
    cost: float
    analytic: np.ndarray
    numerical: np.ndarray
    tolerance: np.ndarray | None
    noise: np.ndarray | None
    at_kink: np.ndarray | None
    nonfinite: np.ndarray | None
    spans: tuple[slice, ...]
    indices: np.ndarray | None = None
    probes: dict[str, Probes] | None = None
    explicit: int | None = None
    kink: str = "a ReLU kink"
    scale: np.ndarray | None = None
    source: CoordinateSource | None = None

    @property
    def directional(self) -> bool:
        return self.probes is not None


class ItemParts(NamedTuple):
    """A run of items' parts of the criterion: tolerance, noise bound, at a kink, non-finite
    and the size their noise is held to (NaN: the values' own)."""

    tolerance: np.ndarray
    noise: np.ndarray
    at_kink: np.ndarray
    nonfinite: np.ndarray
    sizes: np.ndarray


class CoordinateSource(NamedTuple):
    """What a coordinate's tolerance, noise bound and flags follow from
    (:func:`.diagnosis.allowance` and the kink and finiteness flags), one item at a time:
    the engine's ``kinks``, ``finite`` (J+- both finite), ``noise`` and ``truncation`` bounds
    (a dummy when ``truncated`` is False), the checked coordinates' ``theta`` and the
    criterion's ``epsilon``, ``rtol`` and ``atol``."""

    kinks: np.ndarray
    finite: np.ndarray
    noise: np.ndarray
    truncation: np.ndarray
    truncated: bool
    theta: np.ndarray
    epsilon: float
    rtol: float
    atol: float


# ---------------------------------------------------------------------------------------------
# The two kinds of measurement
# ---------------------------------------------------------------------------------------------
def measure_coordinates(layout: Layout, theta: np.ndarray, grad: np.ndarray, costs, *,
                        epsilon: float, rtol: float, atol: float, mode: str) -> Measurements:
    """The coordinates ``costs.indices`` (all of them, or a sample) an engine's
    :class:`~gradcheck_fast.engines.Costs` measured, with their tolerances and noise bounds."""
    idx = costs.indices
    every = idx.shape[0] == grad.shape[0]  # ascending, distinct: every coordinate, in order
    truncation = costs.truncation
    source = CoordinateSource(
        costs.kinks, costs.finite(), costs.noise,
        _NO_FLOATS if truncation is None else truncation, truncation is not None,
        theta if every else theta[idx], float(epsilon), float(rtol), float(atol))
    bounds = [np.searchsorted(idx, layout.offsets[k : k + 2]) for k in range(len(layout.names))]
    return Measurements(
        mode=mode, engine=costs.engine, kink=costs.kink, cost=float(costs.J),
        analytic=grad if every else grad[idx], numerical=costs.gradapprox, tolerance=None,
        noise=None, at_kink=None, nonfinite=None,
        spans=tuple(slice(int(lo), int(hi)) for lo, hi in bounds), indices=idx,
        explicit=costs.explicit, source=source,
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
    check measured: every item judged by the elementwise criterion (:func:`.diagnosis.judge`)
    and summed up per block in one pass (:func:`summarise`), a :class:`BlockResult` per
    block, and, for coordinates, the worst and flagged elements. A wrong block (and a block
    of probes) is judged again on its own for its diagnosis and worst elements.

    ``grad`` and ``items.numerical`` become the report's (its ``grad`` and ``gradapprox``
    are read-only views of them): the caller passes arrays no one else writes to.
    ``probability``: directional mode, the detection probability of ``detectable_error``.
    ``hints``: what names a wrong block's mistake (:class:`.diagnosis.Hints`); a wrong block
    under a wrong layer is marked as likely inheriting its error (:func:`.diagnosis.inherited`).
    """
    summary = summarise(items, atol, n_worst)
    if items.indices is not None and items.indices.shape[0] == layout.n_params:
        numerical_full = items.numerical  # every coordinate, in order
    else:
        numerical_full = np.full(layout.n_params, np.nan)
        if items.indices is not None:
            numerical_full[items.indices] = items.numerical
    stats = summary.stats
    blocks = {}
    for k, (name, shape, span) in enumerate(zip(layout.grad_names, layout.shapes, items.spans)):
        judged = (judge_items(items, span, atol)
                  if items.directional or stats[k, _FAILING] else None)
        worst = (() if items.indices is None or judged is None else
                 tuple(element_at(layout, grad, numerical_full, int(i))
                       for i in _worst_of_block(items, judged, span, n_worst)))
        params = (None if hints.theta is None or items.indices is None
                  else hints.theta[items.indices[span]])
        blocks[name] = _block_result(items, judged, stats[k], name, shape, span, worst,
                                     probability, hints, params)
    blocks = _with_inheritance(blocks, hints.layers)
    return GradientCheckReport(
        difference=float(stats[-1, _DIFFERENCE]),
        threshold=threshold, epsilon=epsilon, rtol=rtol, atol=atol, cost=items.cost,
        grad=layout.unpack(grad, prefix="d", copy=False),
        gradapprox=({} if items.directional
                    else layout.unpack(numerical_full, prefix="d", copy=False)),
        blocks=blocks, layout=layout, engine=items.engine, mode=items.mode, method=method,
        probability=probability, notes=tuple(notes), probes=items.probes or {}, kink=items.kink,
        n_explicit=items.explicit, _grad_flat=grad, _gradapprox_flat=numerical_full,
        _checked_indices=_NO_INDICES if items.indices is None else items.indices,
        **_flagged(items, summary),
    )


def judge_items(items: Measurements, span: slice, atol: float) -> Judgement:
    """The :class:`.diagnosis.Judgement` of the items ``span`` (arrays of the span's length):
    the judgement :func:`summarise` makes of them (the same kernel, as one chunk)."""
    n = span.stop - span.start
    scratch = _chunk_scratch(n)
    arrays, source, from_source = _kernel_inputs(items)
    chunk = np.array([[0, span.start, span.stop]], dtype=np.int64)
    _summary_chunks(0, 1, (chunk, items.analytic, items.numerical), arrays, source,
                    (float(atol), UNVERIFIABLE_FRACTION, items.directional, n, from_source,
                     False),
                    (np.empty((1, _PARTS)), np.zeros(items.analytic.shape[0], dtype=np.uint8)),
                    scratch)
    _, set_aside, floats, flags = scratch
    error, allowed, relative, rank = floats
    return Judgement(error, allowed, ~set_aside, flags[0], flags[1], relative, rank)


def _with_inheritance(blocks: dict[str, BlockResult], layers: dict) -> dict[str, BlockResult]:
    """The blocks, a wrong block that likely inherits its error from a layer above it so
    marked in its diagnosis."""
    notes = inherited({name: block.verdict for name, block in blocks.items()}, layers)
    for name, note in notes.items():
        diagnosis = blocks[name].diagnosis
        blocks[name] = replace(blocks[name], diagnosis=(f"{name}: {note}" if diagnosis is None
                                                        else f"{diagnosis}; {note}"))
    return blocks


# ---------------------------------------------------------------------------------------------
# The summary: every item judged and counted in one pass
# ---------------------------------------------------------------------------------------------
# The columns of :attr:`Summary.stats`' rows.
_FAILING, _NONFINITE, _UNVERIFIED, _KINKS, _VALID, _MAX_ABS, _MAX_REL, _DIFFERENCE = range(8)

# The lists of :attr:`Summary.lists`, in the order of the counts above (a chunk's count is its
# list's length).
_LIST_FAILING, _LIST_NONFINITE, _LIST_UNVERIFIED, _LIST_KINKS = range(4)


class Summary(NamedTuple):
    """What the report keeps of every item's judgement (:func:`summarise`).

    stats : per block (a row each, in layout order) and for all items (the last row), the
        counts of failing, non-finite, unverified, at-kink and valid items, the largest
        absolute and relative errors and the relative difference of eq. (3) (columns
        ``_FAILING`` ... ``_DIFFERENCE``).
    worst : the items of the n worst (:attr:`.diagnosis.Judgement.rank` >= 0), worst first,
        ties by position.
    lists : the failing, non-finite, unverified and at-kink items, each ascending.
    """

    stats: np.ndarray
    worst: np.ndarray
    lists: tuple[np.ndarray, ...]


def summarise(items: Measurements, atol: float, n_worst: int = N_WORST,
              chunk: int = SUM_CHUNK) -> Summary:
    """Every item judged (:func:`.diagnosis.judge`, the same bits) and summed up, in chunks
    of ``chunk`` items counted from each block's start (on several threads for a large
    check: the chunks' results are combined in order, so the bits do not depend on the thread
    count): no per-item array is kept but the lists of flagged items (a full check of 33.6M
    coordinates would otherwise hold ten arrays of them).

    The largest errors are taken over the valid items (probes) or the finite ones
    (coordinates: kinks included, the table shows how far off a kink's central difference
    is), NaN if any is NaN (as NumPy's max), 0 for none; the sums of eq. (3) are
    :func:`.diagnosis.relative_difference`'s, chunk by chunk."""
    bounds = np.array([(span.start, span.stop) for span in items.spans],
                      dtype=np.int64).reshape(-1, 2)
    chunks = chunk_bounds(bounds, chunk)
    n_chunks, n = chunks.shape[0], items.analytic.shape[0]
    n_worst = max(n_worst, 0)
    partial = np.empty((n_chunks, _PARTS))
    status = np.zeros(n, dtype=np.uint8)  # written for flagged chunks only: pages untouched
    arrays, source, from_source = _kernel_inputs(items)
    # Flat bundles (a parallel kernel takes tuples of arrays, not tuples of tuples), plain
    # tuples (as the launch passes them: one signature for every kernel that takes them).
    bundles = ((chunks, items.analytic, items.numerical), arrays, source,
               (float(atol), UNVERIFIABLE_FRACTION, items.directional, int(chunk),
                from_source, from_source))
    run(_summary_chunks, n_chunks, chunk * SUMMARY_SECONDS, bundles + ((partial, status),),
        per_thread=lambda: (_chunk_scratch(int(chunk)),))
    stats = np.empty((bounds.shape[0] + 1, 8))
    flat, starts = _combine(chunks, partial, status, stats)
    return Summary(stats, _worst_items(partial[:, _TOP], n_worst, bundles),
                   tuple(flat[starts[k]:starts[k + 1]] for k in range(4)))


def _worst_items(tops: np.ndarray, n_worst: int, bundles: tuple) -> np.ndarray:
    """The n worst items (by :attr:`.diagnosis.Judgement.rank` >= 0, largest first, ties by
    position), from the chunks whose largest rank (``tops``) exceeds the n-th largest of
    those, the floor, and the first n that reach it: n items at least that large exist, so
    no other chunk holds one of them, and of the items at the floor (ties) the first n lie in
    the first n chunks that have one. Those few chunks are judged again, in order
    (``bundles``: as :func:`_summary_chunks` takes them)."""
    n_chunks = tops.shape[0]
    if n_worst <= 0 or n_chunks == 0:
        return _NO_INDICES
    # On a few hundred chunks plain Python beats NumPy's partition and set operations
    # (~90 us in a mnist-size check), and a jitted selection would compile for ~1.5 s.
    top = tops.tolist()
    floor = sorted(top)[max(0, n_chunks - n_worst)]
    at_floor = [c for c, value in enumerate(top) if value == floor][:n_worst]
    candidates = sorted({c for c, value in enumerate(top) if value > floor}.union(at_floor))
    chunks = bundles[0][0]
    scratch = _chunk_scratch(bundles[3][3])
    bundles = bundles[:3] + (bundles[3][:5] + (False,),)  # no scan: every item judged
    out = (np.empty((n_chunks, _PARTS)), np.zeros(bundles[0][1].shape[0], dtype=np.uint8))
    ranks, positions = [], []
    for c in candidates:
        first, last = int(chunks[c, 1]), int(chunks[c, 2])
        _summary_chunks(c, c + 1, *bundles, out, scratch)  # the chunk again: its ranks
        ranks.append(scratch[2][3, : last - first].copy())
        positions.append(np.arange(first, last))
    ranks, positions = np.concatenate(ranks), np.concatenate(positions)
    return positions[_top(ranks, n_worst, minimum=0.0)]


#: One-thread seconds per item of the summary (for the choice between one thread and several;
#: measured on the mnist-size check: 1.2 ms for 235k items, 0.95-1.1 ms since clean chunks
#: take one scan; kept: it only decides between one thread and several, far from 20 ms).
SUMMARY_SECONDS = 5e-9

# The columns of a chunk's partial results: eq. (3)'s three sums, the five counts (the first
# four the lengths of its lists), the two largest errors and its largest rank.
_SUMS, _COUNTS, _LARGEST, _TOP = 0, 3, 8, 10
_PARTS = 11


_NO_FLOATS = np.zeros(1)
_NO_FLAGS = np.zeros(1, dtype=np.bool_)
_NO_KINKS = np.zeros(1, dtype=np.int64)
_NO_ARRAYS = (_NO_FLOATS, _NO_FLOATS, _NO_FLAGS, _NO_FLAGS, _NO_FLOATS, False)
_NO_SOURCE = tuple(CoordinateSource(_NO_KINKS, _NO_FLAGS, _NO_FLOATS, _NO_FLOATS, False,
                                    _NO_FLOATS, 0.0, 0.0, 0.0))


def _kernel_inputs(items: Measurements) -> tuple:
    """``(arrays, source, from_source)``, what :func:`_fill_parts` fills the parts from (the
    unused one a dummy of the same types; the source as a plain tuple, which is how a
    parallel launch passes it: one signature for every caller)."""
    if items.source is not None:
        return _NO_ARRAYS, tuple(items.source), True
    scale = items.scale
    return ((items.tolerance, items.noise, items.at_kink, items.nonfinite,
             _NO_FLOATS if scale is None else scale, scale is not None), _NO_SOURCE, False)


@jit(inline=True)
def _fill_parts(lo, hi, numerical, measured, out):
    """The parts (:class:`ItemParts`) of the items lo <= i < hi into ``out[k]``, k = i - lo
    (``measured``: :func:`_kernel_inputs`): from a :class:`CoordinateSource`
    (:func:`.diagnosis.allowance`'s values, at a kink where the engine counted kinks and J+-
    are finite) or copied from ``arrays`` (tolerance, noise, at_kink, nonfinite, scale,
    whether there is a scale)."""
    arrays, source, from_source = measured
    tolerance, noise, at_kink, nonfinite, sizes = out
    if from_source:
        kinks, finite, bound, truncation, truncated, theta, epsilon, rtol, atol = source
        allowance_elements(numerical[lo:hi], bound[lo:hi], truncation[lo:hi] if truncated
                           else truncation, truncated, theta[lo:hi], epsilon, rtol, atol,
                           (tolerance, noise))
        for k in range(hi - lo):
            nonfinite[k] = not finite[lo + k]
            at_kink[k] = kinks[lo + k] > 0 and finite[lo + k]
            sizes[k] = math.nan
        return
    tolerance_in, noise_in, at_kink_in, nonfinite_in, scale, scaled = arrays
    for k in range(hi - lo):
        tolerance[k] = tolerance_in[lo + k]
        noise[k] = noise_in[lo + k]
        at_kink[k] = at_kink_in[lo + k]
        nonfinite[k] = nonfinite_in[lo + k]
        sizes[k] = scale[lo + k] if scaled else math.nan


@jit
def _summary_chunks(lo, hi, items, arrays, source, criterion, out, scratch):
    """The chunks lo <= c < hi of :func:`summarise` (``items``: the chunks, rows of block,
    first and last + 1 item, and the analytic and numerical values): each judged
    (:func:`_judge_chunk`) into its row of ``out``'s ``partial`` (columns ``_SUMS`` ...) and
    its flagged items marked in ``status`` (bit k: list k; written only for a chunk that has
    any). ``criterion``: atol, the unverifiable fraction, whether the items are probes, the
    chunk size, whether the parts come from ``source`` and whether a chunk may be passed in
    one scan (:func:`_clean_scan`, coordinates only) when none of its items is flagged;
    ``scratch``: the work space (:func:`_chunk_scratch`), which holds the last chunk's parts
    and judgement after the call if it was judged item by item (``scan`` False: always)."""
    chunks, analytic, numerical = items
    directional, size, from_source = criterion[2], criterion[3], criterion[4]
    scan = from_source and criterion[5]
    partial, status = out
    _, set_aside, floats, flags = scratch
    counted = np.empty(size, dtype=np.bool_)  # in the largest errors
    every = np.ones(size, dtype=np.bool_)
    kinks, finite, bound, truncation, truncated, theta, epsilon, rtol, atol = source
    for c in range(lo, hi):
        first, last = chunks[c, 1], chunks[c, 2]
        n = last - first
        row = partial[c]
        row[_SUMS], row[_SUMS + 1], row[_SUMS + 2] = chunk_sums(analytic[first:last],
                                                                numerical[first:last])
        if scan:
            n_flagged, big_error, big_relative = _clean_scan(
                first, last, analytic, numerical, (kinks, finite, bound, truncation, theta),
                (truncated, epsilon, rtol, atol, criterion[0], criterion[1]))
            if n_flagged == 0:  # every item valid, none flagged: the counts are known
                row[_COUNTS:_LARGEST] = 0.0
                row[_COUNTS + 4] = n
                row[_LARGEST] = big_error
                row[_LARGEST + 1] = big_relative
                row[_TOP] = _rank(False, True, 0.0, 1.0, big_relative)  # monotone
                continue
        part = _judge_chunk(first, last, items, (arrays, source, from_source), criterion,
                            scratch)
        at_kink, nonfinite = part[2], part[3]
        n_failing = n_nonfinite = n_unverified = n_kinks = n_valid = 0
        for k in range(n):
            valid = not set_aside[k]
            n_failing += flags[0, k]
            n_nonfinite += nonfinite[k]
            n_unverified += flags[1, k]
            n_kinks += at_kink[k]
            n_valid += valid
            counted[k] = valid if directional else not nonfinite[k]
        row[_COUNTS] = n_failing
        row[_COUNTS + 1] = n_nonfinite
        row[_COUNTS + 2] = n_unverified
        row[_COUNTS + 3] = n_kinks
        row[_COUNTS + 4] = n_valid
        row[_LARGEST] = _largest(floats[0, :n], counted, 0.0)
        row[_LARGEST + 1] = _largest(floats[2, :n], counted, 0.0)
        row[_TOP] = _largest(floats[3, :n], every, -1.0)  # a rank is -1 at least
        if n_failing + n_unverified + n_nonfinite + n_kinks:
            for k in range(n):
                status[first + k] = (flags[0, k] << _LIST_FAILING
                                     | flags[1, k] << _LIST_UNVERIFIED
                                     | at_kink[k] << _LIST_KINKS
                                     | nonfinite[k] << _LIST_NONFINITE)


@jit(inline=True)
def _clean_scan(first, last, analytic, numerical, arrays, criterion):
    """One pass over the coordinates first <= i < last (``arrays``: a
    :class:`CoordinateSource`'s kinks, finite, noise, truncation and theta; ``criterion``:
    whether truncated, the source's epsilon, rtol and atol, the summary's atol and the
    unverifiable fraction): how many are not plainly passing -- at a kink, non-finite,
    failing, unverified (each as :func:`_fill_parts` and :func:`.diagnosis.judge_elements`
    decide it) or with a NaN relative error -- and the largest error and relative error.
    Where none is, these are the chunk's whole summary: every item valid, its rank its
    relative error / 2; else the chunk is judged item by item. It writes nothing per item:
    about half the time of the item-by-item judgement, which writes ten arrays (the running
    maxima keep LLVM from vectorising all of it)."""
    kinks, finite, bound, truncation, theta = arrays
    truncated, epsilon, rtol, atol, judged_atol, fraction = criterion
    n_flagged = 0
    big_error = big_relative = 0.0
    for i in range(first, last):
        a = analytic[i]
        x = numerical[i]
        t = theta[i]
        tolerance = atol + rtol * abs(x)
        noise = bound[i] + truncation[i] if truncated else bound[i]
        d_plus, d_minus = steps_taken(t, epsilon)
        noise = noise if d_plus - d_minus > 0.0 else math.inf
        noise = 0.0 if noise != noise else noise
        error = abs(a - x)
        magnitude = _magnitude(a, x)
        relative = _relative(error, magnitude)
        flagged = ((not finite[i]) | (kinks[i] > 0) | (not error <= tolerance + noise)
                   | ((error > tolerance) & (noise > judged_atol)
                      & (noise > fraction * magnitude))
                   | (relative != relative))
        n_flagged += flagged
        big_error = error if error > big_error else big_error
        big_relative = relative if relative > big_relative else big_relative
    return n_flagged, big_error, big_relative


@jit(inline=True)
def _chunk_scratch(size):
    """A chunk's work space: its parts (:class:`ItemParts`), set-aside flags, judgement
    (error, allowed, relative, rank) and flags (failing, unverified)."""
    return (ItemParts(np.empty(size), np.empty(size), np.empty(size, dtype=np.bool_),
                      np.empty(size, dtype=np.bool_), np.empty(size)),
            np.empty(size, dtype=np.bool_), np.empty((4, size)),
            np.empty((2, size), dtype=np.bool_))


@jit(inline=True)
def _judge_chunk(first, last, items, measured, criterion, scratch):
    """The items first <= i < last judged into ``scratch`` (:func:`_chunk_scratch`, from
    position 0): their parts (:func:`_fill_parts`), then :func:`.diagnosis.judge_elements`;
    returns the parts."""
    analytic, numerical = items[1], items[2]
    atol, fraction = criterion[0], criterion[1]
    buffers, set_aside, floats, flags = scratch
    n = last - first
    part = ItemParts(buffers[0][:n], buffers[1][:n], buffers[2][:n], buffers[3][:n],
                     buffers[4][:n])
    _fill_parts(first, last, numerical, measured, part)
    for k in range(n):
        set_aside[k] = part[2][k] or part[3][k]
    judge_elements(analytic[first:last], numerical[first:last], part[0], part[1],
                   set_aside[:n], atol, fraction, part[4],
                   (floats[0, :n], floats[1, :n], floats[2, :n], floats[3, :n]),
                   (flags[0, :n], flags[1, :n]))
    return part


@jit
def _combine(chunks, partial, status, stats):
    """The chunks' results in order into ``stats`` (per block, then all items); returns the
    four lists one after the other and where each starts (each ascending, from the ``status``
    bits of the chunks that have flagged items)."""
    stats[:, :] = 0.0
    n_blocks = stats.shape[0] - 1
    sums = np.zeros((n_blocks + 1, 3))
    listed = np.zeros(4, dtype=np.int64)
    for c in range(chunks.shape[0]):
        b = chunks[c, 0]
        row = partial[c]
        for k in range(3):
            sums[b, k] += row[_SUMS + k]
            sums[n_blocks, k] += row[_SUMS + k]
        for k in range(5):
            stats[b, k] += row[_COUNTS + k]
        stats[b, _MAX_ABS] = _larger(stats[b, _MAX_ABS], row[_LARGEST])
        stats[b, _MAX_REL] = _larger(stats[b, _MAX_REL], row[_LARGEST + 1])
        for k in range(4):
            listed[k] += int(row[_COUNTS + k])
    for b in range(n_blocks + 1):
        stats[b, _DIFFERENCE] = difference_of_sums(sums[b, 0], sums[b, 1], sums[b, 2])
    starts = np.zeros(5, dtype=np.int64)  # list k: flat[starts[k]:starts[k + 1]]
    for k in range(4):
        starts[k + 1] = starts[k] + listed[k]
    flat = np.empty(starts[4], dtype=np.int64)
    listed[:] = 0
    for c in range(chunks.shape[0]):
        row = partial[c]
        if row[_COUNTS] + row[_COUNTS + 1] + row[_COUNTS + 2] + row[_COUNTS + 3] > 0:
            for i in range(chunks[c, 1], chunks[c, 2]):
                bits = status[i]
                for k in range(4):
                    if bits >> k & 1:
                        flat[starts[k] + listed[k]] = i
                        listed[k] += 1
    return flat, starts


@jit
def _largest(values, mask, initial):
    """The largest of ``values`` where ``mask`` and ``initial`` (``initial`` for none), NaN
    if any is NaN (as NumPy's max): four running maxima in registers (a max is exact in any
    order, and four chains run four times as fast as one), a NaN kept once met."""
    m0 = m1 = m2 = m3 = initial
    n = values.shape[0]
    for i in range(0, n - n % 4, 4):
        m0 = _keep_larger(m0, values[i] if mask[i] else initial)
        m1 = _keep_larger(m1, values[i + 1] if mask[i + 1] else initial)
        m2 = _keep_larger(m2, values[i + 2] if mask[i + 2] else initial)
        m3 = _keep_larger(m3, values[i + 3] if mask[i + 3] else initial)
    for i in range(n - n % 4, n):
        m0 = _keep_larger(m0, values[i] if mask[i] else initial)
    return _keep_larger(_keep_larger(m0, m1), _keep_larger(m2, m3))


@jit(inline=True)
def _keep_larger(largest, value):
    """:func:`_larger` as one select (a NaN on either side wins)."""
    return value if (value > largest) | (value != value) else largest


@jit(inline=True)
def _larger(largest, value):
    """The running maximum, NaN once any value is NaN (as NumPy's max)."""
    if value != value:
        return value
    return value if value > largest else largest


def _block_result(items: Measurements, judged: Judgement | None, stats: np.ndarray, name: str,
                  shape: tuple[int, ...], span: slice, worst: tuple,
                  probability: float | None, hints: Hints = NO_HINTS,
                  params: np.ndarray | None = None) -> BlockResult:
    """One block's result from its items ``span``, their statistics (a row of
    :attr:`Summary.stats`) and, for a wrong block or probes, their judgement (``judged``,
    :func:`judge_items`; ``params``: the parameters they perturb, for coordinates)."""
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
                                    judged.valid, judged.failing, judged.allowed, hints,
                                    params)
        if diagnosis is not None and items.directional:
            diagnosis += " (along random directions)"
    detectable = None
    if items.directional:
        verified = judged.valid & ~judged.unverified
        p = items.probes[name]
        detectable = (detectable_error(float(np.max(judged.allowed[verified])), p.size,
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
    allowed error), worst first; empty if none fails (``judged``: the block's items)."""
    failing = judged.failing
    if not np.any(failing):
        return _NO_INDICES
    with np.errstate(invalid="ignore", divide="ignore"):
        excess = np.where(failing, judged.error / judged.allowed, -1.0)
    excess = np.where(np.isnan(excess), np.inf, excess)
    return items.indices[_top(excess, n_worst, minimum=0.0) + span.start]


def _flagged(items: Measurements, summary: Summary) -> dict[str, np.ndarray]:
    """The flat coordinates of the report's element lists (none for probes)."""
    if items.indices is None:
        return {"_worst_indices": _NO_INDICES, "_kink_indices": _NO_INDICES,
                "_nonfinite_indices": _NO_INDICES, "_unverified_indices": _NO_INDICES,
                "_failing_indices": _NO_INDICES}
    idx = items.indices
    lists = summary.lists
    # Worst overall: failing elements by how far past their allowed error, then the rest by
    # relative error (kinks and non-finite ones have their own lists): Judgement.rank.
    return {"_worst_indices": idx[summary.worst],
            "_kink_indices": idx[lists[_LIST_KINKS]],
            "_nonfinite_indices": idx[lists[_LIST_NONFINITE]],
            "_unverified_indices": idx[lists[_LIST_UNVERIFIED]],
            "_failing_indices": idx[lists[_LIST_FAILING]]}


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
