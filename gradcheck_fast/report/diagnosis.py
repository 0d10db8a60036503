"""The judgement of the numbers: how far a correct gradient may sit from the central
difference (noise bounds, tolerances), which elements or probes fail or are unverified, a
block's verdict, and what a wrong block's mistake looks like.

Everything here works on plain arrays, one value per element (or per probe); the report's
types and their assembly live in :mod:`.types` and :mod:`.build`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .._jit import jit
from .._steps import steps_taken
from ..noise import SIGMA_FACTOR  # noqa: F401 (the report's safety factor, named here too)

#: Unit roundoff of float64.
_U = 2.0**-53

#: An element that passes only thanks to a noise bound above this fraction of its size is "not
#: verified": a mistake of that relative size could hide in the noise.
UNVERIFIABLE_FRACTION = 0.01

#: A block's scale fit analytic ~ s * numerical is "tight" when the residual is below this
#: fraction of the analytic block's norm.
TIGHT_FIT = 1e-3


#: Eq. (3)'s sums of squares run over chunks of this many items counted from each block's
#: start, each chunk's in a fixed order (:func:`chunk_sums`), the chunks' sums then added in
#: order: a large report sums its chunks on several threads and combines them with the same
#: bits.
SUM_CHUNK = 1024


def relative_difference(grad: np.ndarray, gradapprox: np.ndarray,
                        spans: tuple[slice, ...] | np.ndarray | None = None, *,
                        chunk: int = SUM_CHUNK) -> float:
    """The seed's eq. (3): ``||grad - gradapprox|| / (||grad|| + ||gradapprox||)``.

    Two all-zero vectors agree exactly: their difference is 0.0 (the seed would print nan).
    NaN or Inf anywhere gives nan, which never passes. The sums run in chunks of ``chunk``
    items from the start of each of the consecutive ``spans`` (the blocks of a layout, as
    slices or as a layout's :attr:`~gradcheck_fast.layout.Layout.bounds`; default one), as a
    report sums them: the report's ``difference`` is this, bit for bit.
    """
    if spans is None:
        bounds = np.array([[0, grad.shape[0]]], dtype=np.int64)
    elif isinstance(spans, np.ndarray):
        bounds = spans
    else:
        bounds = np.array([(span.start, span.stop) for span in spans], dtype=np.int64)
    return float(_relative_difference(grad, gradapprox, bounds.reshape(-1, 2), int(chunk)))


@jit
def _relative_difference(grad, gradapprox, bounds, size):
    # Jitted: one pass, and no floating-point warnings for inf/nan (on the seed's 47
    # parameters NumPy's call overheads would cost more than the check).
    error2 = grad2 = approx2 = 0.0
    chunks = chunk_bounds(bounds, size)
    for c in range(chunks.shape[0]):
        first, last = chunks[c, 1], chunks[c, 2]
        e, g, a = chunk_sums(grad[first:last], gradapprox[first:last])
        error2 += e
        grad2 += g
        approx2 += a
    return difference_of_sums(error2, grad2, approx2)


@jit
def chunk_sums(analytic, numerical):
    """One chunk's sums of squares of ``analytic - numerical``, ``analytic`` and
    ``numerical``: four running sums each (item i in sum i mod 4, the last n mod 4 items in
    sum 0), added as (s0 + s1) + (s2 + s3). Four chains run four times as fast as one, and
    the order is fixed. One compiled function for both callers (the report's summary and
    :func:`relative_difference`), not inlined into each."""
    e0 = e1 = e2 = e3 = a0 = a1 = a2 = a3 = x0 = x1 = x2 = x3 = 0.0
    n = analytic.shape[0]
    for i in range(0, n - n % 4, 4):
        d0 = analytic[i] - numerical[i]
        d1 = analytic[i + 1] - numerical[i + 1]
        d2 = analytic[i + 2] - numerical[i + 2]
        d3 = analytic[i + 3] - numerical[i + 3]
        e0 += d0 * d0
        e1 += d1 * d1
        e2 += d2 * d2
        e3 += d3 * d3
        a0 += analytic[i] * analytic[i]
        a1 += analytic[i + 1] * analytic[i + 1]
        a2 += analytic[i + 2] * analytic[i + 2]
        a3 += analytic[i + 3] * analytic[i + 3]
        x0 += numerical[i] * numerical[i]
        x1 += numerical[i + 1] * numerical[i + 1]
        x2 += numerical[i + 2] * numerical[i + 2]
        x3 += numerical[i + 3] * numerical[i + 3]
    for i in range(n - n % 4, n):
        d0 = analytic[i] - numerical[i]
        e0 += d0 * d0
        a0 += analytic[i] * analytic[i]
        x0 += numerical[i] * numerical[i]
    return (e0 + e1) + (e2 + e3), (a0 + a1) + (a2 + a3), (x0 + x1) + (x2 + x3)


@jit
def chunk_bounds(bounds, size):
    """The chunks of ``size`` items counted from each block's start (``bounds``: each block's
    first and last + 1 item) as rows ``(block, first, last + 1)``: the chunks
    :func:`relative_difference` and a report's summary sum, in that order."""
    n_chunks = 0
    for b in range(bounds.shape[0]):
        n_chunks += (bounds[b, 1] - bounds[b, 0] + size - 1) // size
    chunks = np.empty((n_chunks, 3), dtype=np.int64)
    c = 0
    for b in range(bounds.shape[0]):
        for first in range(bounds[b, 0], bounds[b, 1], size):
            chunks[c, 0] = b
            chunks[c, 1] = first
            chunks[c, 2] = min(first + size, bounds[b, 1])
            c += 1
    return chunks


@jit(inline=True)
def difference_of_sums(error2, grad2, approx2):
    """Eq. (3) from the sums of squares of ``grad - gradapprox``, ``grad`` and
    ``gradapprox``: nan if the numerator is (or the denominator infinite), 0 for two zero
    vectors."""
    numerator = math.sqrt(error2)
    denominator = math.sqrt(grad2) + math.sqrt(approx2)
    if math.isnan(numerator) or math.isinf(denominator):
        return math.nan
    if denominator == 0.0:
        return 0.0
    return numerator / denominator


def noise_bound(costs, epsilon: float, theta: np.ndarray) -> np.ndarray:
    """Per coordinate, how far a correct gradient may sit from ``gradapprox``: the engine's own
    rounding bound (``costs.noise``, each engine knows what its J+- carry) plus the truncation
    bound of a large step (``costs.truncation``). Where the step rounds to 0 (epsilon below
    theta_i's spacing) nothing can be claimed: the bound is infinite (unverified). A NaN
    bound counts as 0 (the value itself is then NaN, which fails or is set aside)."""
    return allowance(costs, theta, epsilon=epsilon, rtol=0.0, atol=0.0)[1]


def allowance(costs, theta: np.ndarray, *, epsilon: float, rtol: float,
              atol: float) -> tuple[np.ndarray, np.ndarray]:
    """The elementwise criterion's two parts per coordinate of ``costs``: the tolerance
    ``atol + rtol |numerical|`` and the noise bound (:func:`noise_bound`); an element fails
    when ``|analytic - numerical|`` exceeds their sum (``theta``: the checked coordinates).
    One jitted pass."""
    truncation = costs.truncation
    parts = np.empty((2, theta.shape[0]))
    allowance_elements(costs.gradapprox, costs.noise, _NO_TRUNCATION if truncation is None
                       else truncation, truncation is not None, theta, float(epsilon),
                       float(rtol), float(atol), (parts[0], parts[1]))
    return parts[0], parts[1]


_NO_TRUNCATION = np.zeros(1)


@jit
def allowance_elements(numerical, noise, truncation, truncated, theta, epsilon, rtol, atol,
                       parts):
    """:func:`allowance` element by element into ``parts`` (tolerance, noise bound: two
    arrays)."""
    tolerance, bounds = parts
    for i in range(theta.shape[0]):
        tolerance[i] = atol + rtol * abs(numerical[i])
        bound = noise[i] + truncation[i] if truncated else noise[i]
        d_plus, d_minus = steps_taken(theta[i], epsilon)
        if not d_plus - d_minus > 0.0:
            bound = math.inf
        bounds[i] = 0.0 if bound != bound else bound


class ProbeItems(NamedTuple):
    """One block's directional probes as the criterion takes them (:func:`probe_items`)."""

    numerical: np.ndarray  # the central difference, NaN where the probe is non-finite
    tolerance: np.ndarray  # atol + rtol |numerical|
    at_kink: np.ndarray  # its steps cross a kink (and it is finite): set aside
    nonfinite: np.ndarray  # a J(theta +- eps v) is NaN or Inf: set aside, not verified
    scale: np.ndarray  # the size a probe's noise is held to: the block's RMS of v . grad


def probe_items(numerical: np.ndarray, kinks: np.ndarray, cost: float, *, rtol: float,
                atol: float, grad_norm: float, size: int) -> ProbeItems:
    """A block's probes ready for :func:`judge`: a probe whose ``J(theta +- eps v)`` is NaN
    or Inf (a non-finite J, or a change that is) is non-finite and its numerical value NaN,
    as in the full check (the probes' changes are formed without J, so they stay finite when
    J is not); a finite probe whose steps cross a kink is set aside as one.

    A probe is unverified when its noise exceeds ``UNVERIFIABLE_FRACTION`` of the block's RMS
    of ``v . grad`` over random unit directions, ``||grad|| / sqrt(size)``, not of its own
    ``|v . grad|``: a direction that happens to be nearly orthogonal to the gradient is no less
    a test of the block (the detectable error says how strong), and judging it by its own
    small projection left most correct checks of a large block inconclusive."""
    nonfinite = ~np.isfinite(numerical) | (not math.isfinite(cost))
    numerical = np.where(nonfinite, np.nan, numerical)
    scale = np.full(numerical.shape, grad_norm / math.sqrt(max(size, 1)))
    return ProbeItems(numerical, atol + rtol * np.abs(numerical), (kinks != 0) & ~nonfinite,
                      nonfinite, scale)


class Judgement(NamedTuple):
    """Each element's (or probe's) standing under the elementwise criterion."""

    error: np.ndarray  # |analytic - numerical|
    allowed: np.ndarray  # tolerance + noise: the largest error the criterion accepts
    valid: np.ndarray  # judged at all: not set aside (a kink in the step, a non-finite J)
    failing: np.ndarray  # error > allowed (a NaN analytic value fails)
    unverified: np.ndarray  # passes only within a noise bound too large to prove anything
    relative: np.ndarray  # |analytic - numerical| / max(|analytic|, |numerical|)
    rank: np.ndarray  # the order of the worst elements: failing ones first, by how far past
    # their allowed error (1 + error / allowed), then valid ones by relative error / 2, -1 else


def judge(analytic: np.ndarray, numerical: np.ndarray, tolerance: np.ndarray,
          noise: np.ndarray, set_aside: np.ndarray, atol: float,
          scale: np.ndarray | None = None) -> Judgement:
    """The elementwise criterion ``|analytic - numerical| <= tolerance + noise`` per element
    (or probe), ``tolerance`` being ``atol + rtol |numerical|``; elements in ``set_aside``
    are neither failing nor unverified (their own lists say why). An element that passes only
    because its noise bound exceeds ``UNVERIFIABLE_FRACTION`` of the values' size (and
    ``atol``) is unverified: a mistake that large could hide in it; ``scale`` gives that size
    per item instead (directional probes: :func:`probe_items`). One jitted pass (on the
    mnist-size check, ten NumPy passes took 8 ms)."""
    n = analytic.shape[0]
    floats = np.empty((4, n))
    flags = np.empty((2, n), dtype=np.bool_)
    sizes = np.full(n, np.nan) if scale is None else scale
    judge_elements(analytic, numerical, tolerance, noise, set_aside, float(atol),
                   UNVERIFIABLE_FRACTION, sizes, (floats[0], floats[1], floats[2], floats[3]),
                   (flags[0], flags[1]))
    error, allowed, relative, rank = floats
    failing, unverified = flags
    return Judgement(error, allowed, ~set_aside, failing, unverified, relative, rank)


@jit
def judge_elements(analytic, numerical, tolerance, noise, set_aside, atol, fraction, sizes,
                   floats, flags):
    """:func:`judge` element by element, into ``floats`` (error, allowed, relative, rank:
    four arrays) and ``flags`` (failing, unverified: two); ``sizes[i]`` the size the noise is
    held to (NaN: the values' own); comparisons with NaN are false, as in NumPy. Selects
    rather than branches, so that LLVM vectorises the loop."""
    error_out, allowed_out, relative_out, rank_out = floats
    failing_out, unverified_out = flags
    for i in range(analytic.shape[0]):
        a = analytic[i]
        x = numerical[i]
        error = abs(a - x)
        allowed = tolerance[i] + noise[i]
        magnitude = _magnitude(a, x)
        relative = _relative(error, magnitude)
        valid = not set_aside[i]
        failing = valid & (not error <= allowed)
        size = sizes[i]
        size = magnitude if size != size else size
        error_out[i] = error
        allowed_out[i] = allowed
        relative_out[i] = relative
        rank_out[i] = _rank(failing, valid, error, allowed, relative)
        failing_out[i] = failing
        unverified_out[i] = (valid & (not failing) & (error > tolerance[i])
                             & (noise[i] > atol) & (noise[i] > fraction * size))


@jit(inline=True)
def _rank(failing, valid, error, allowed, relative):
    """An element's place among the worst: a failing one ``1 + error / allowed`` (infinite if
    that is NaN), a valid one ``relative / 2`` (NaN as 0, infinities as the largest floats),
    one set aside -1."""
    excess = error / allowed
    excess = excess if allowed != 0.0 else (math.inf if error != 0.0 else math.nan)
    failed = math.inf if excess != excess else excess + 1.0
    kept = 0.0 if relative != relative else max(min(relative, _LARGEST), -_LARGEST) / 2.0
    return failed if failing else (kept if valid else -1.0)


#: The largest float64 (NumPy's nan_to_num maps an infinity to it).
_LARGEST = 1.7976931348623157e308


@jit(inline=True)
def _magnitude(a, x):
    """``max(|a|, |x|)``, NaN if either is (as NumPy's maximum)."""
    largest = max(abs(a), abs(x))
    return math.nan if (a != a) | (x != x) else largest


@jit(inline=True)
def _relative(error, magnitude):
    """``error / magnitude`` (``|a - x| / max(|a|, |x|)``): 0 when both are 0, the error
    itself when the magnitude is 0 or NaN (so NaN for NaN)."""
    quotient = error / magnitude
    return quotient if magnitude > 0.0 else (0.0 if error == 0.0 else error)


def relative_error(analytic: float, numerical: float) -> float:
    """``|a - n| / max(|a|, |n|)`` of one element: 0 when both are 0, 1 when one of them is,
    nan for nan (as :func:`judge` gives it per element)."""
    a, x = float(analytic), float(numerical)
    return float(_relative(abs(a - x), _magnitude(a, x)))


def relative_errors(analytic: np.ndarray, numerical: np.ndarray) -> np.ndarray:
    """:func:`relative_error` of each element of two equal-length 1-D float64 arrays (NaN
    where either is NaN, e.g. a coordinate a sampled check did not take)."""
    out = np.empty(analytic.shape[0])
    _relative_errors(analytic, numerical, out)
    return out


@jit
def _relative_errors(analytic, numerical, out):
    for i in range(analytic.shape[0]):
        a = analytic[i]
        x = numerical[i]
        out[i] = _relative(abs(a - x), _magnitude(a, x))


def block_verdict(n_failing: int, n_nonfinite: int, n_unverified: int,
                  nothing_verified: bool = False) -> str:
    """A block's verdict from its counts: "wrong" if any element fails, else "unverified" if
    any is non-finite or unverified (or ``nothing_verified``), else "ok"."""
    if n_failing:
        return "wrong"
    if n_nonfinite or n_unverified or nothing_verified:
        return "unverified"
    return "ok"


class Hints(NamedTuple):
    """What the caller knows that can name a wrong block's mistake (:func:`diagnose`).

    Attributes
    ----------
    factors : ``(value, label)`` pairs a scale may equal besides 2 and 1/2: the number of
        samples ``(64.0, "m")``, an input's batch size ``(32.0, "x.shape[0]")``.
    theta : the parameters, flat in layout order (an error proportional to a block's own
        parameters is a regularisation term), or None.
    l2 : per block name, the gradient weight of the cost's L2 term on that block (the
        built-in MLP: ``lambda / m`` on each ``Wl``): an error of exactly minus, plus or minus
        half that is named; empty when there is no known L2 term.
    layers : per block name, its layer's number, backprop running from the highest (a wrong
        block under a wrong layer may inherit its error); empty when unknown.
    """

    factors: tuple[tuple[float, str], ...] = ()
    theta: np.ndarray | None = None
    l2: dict = {}
    layers: dict = {}


def shape_factors(arrays) -> tuple[tuple[float, str], ...]:
    """:attr:`Hints.factors` from the data a cost or layer takes (``arrays``: label to
    value, non-arrays ignored): the lengths of the first axis (a batch in rows) and, of 2-D
    arrays, of the last (a batch in columns), above 2, each value once (its first label)."""
    factors, seen = [], set()
    for label, value in arrays.items():
        shape = getattr(value, "shape", None)
        if not shape:
            continue
        axes = [0] if len(shape) != 2 else [0, 1]
        for axis in axes:
            size = int(shape[axis])
            if size > 2 and size not in seen:
                seen.add(size)
                factors.append((float(size), f"{label}.shape[{axis}]"))
    return tuple(factors)


def layer_numbers(names) -> dict[str, int]:
    """:attr:`Hints.layers` from block names that end in a layer number (``dW1``, ``db1``,
    ``dW2``, ...; at least two layers), else empty."""
    layers = {}
    for name in names:
        digits = len(name) - len(name.rstrip("0123456789"))
        if digits == 0 or digits == len(name):
            return {}
        layers[name] = int(name[len(name) - digits:])
    return layers if len(set(layers.values())) > 1 else {}


#: No hints: nothing known beyond the numbers.
NO_HINTS = Hints()

#: A fitted scale or factor "equals" a named value within this relative distance.
NAMED_FACTOR_RTOL = 0.01

#: An error is "proportional to the parameters" when a multiple of them leaves at most this
#: fraction of it unexplained.
PROPORTIONAL_FIT = 0.02


def _named_scale(s: float, factors) -> str:
    """What a fitted scale ``s`` likely is, when it equals a factor people drop or add: m,
    1/m (or another named size), 2 or 1/2; else ''."""
    def near(value):
        return abs(s - value) <= NAMED_FACTOR_RTOL * abs(value)

    for value, label in factors:
        if value > 2.0 and near(value):
            return f" = {label}: a missing 1/{label}?"
        if value > 2.0 and near(1.0 / value):
            return f" = 1/{label}: an extra 1/{label}?"
    if near(2.0):
        return ": an extra factor 2?"
    if near(0.5):
        return ": a missing factor 2 (or an extra 1/2)?"
    return ""


def _regularisation(name: str, a: np.ndarray, n: np.ndarray, w: np.ndarray | None,
                    l2: float | None) -> str | None:
    """The error ``a - n`` as a multiple of the block's own parameters ``w`` (a regularisation
    term with the wrong factor), named against the known L2 weight ``l2`` when there is one."""
    if w is None:
        return None
    r = a - n
    ww = float(w @ w)
    rr = float(r @ r)
    if ww == 0.0 or rr == 0.0:
        return None
    c = float(r @ w) / ww
    left = r - c * w
    if float(left @ left) > PROPORTIONAL_FIT**2 * rr:
        return None
    param = name[1:] if name.startswith("d") else name
    if l2:
        for ratio, text in ((-1.0, "lacks the L2 term"), (1.0, "counts the L2 term twice"),
                            (-0.5, "has half the L2 term")):
            if abs(c - ratio * l2) <= NAMED_FACTOR_RTOL * l2:
                return (f"{name} {text}: analytic - numerical ≈ {c:.3g} × {param} "
                        f"(the L2 term's gradient is {l2:.3g} × {param})")
    return (f"{name} - numerical ≈ {c:.3g} × {param}: a regularisation term with the wrong "
            f"factor (reg·{param} where 2·reg·{param} is due, or the reverse)?")


def diagnose(name: str, shape: tuple[int, ...], analytic: np.ndarray, numerical: np.ndarray,
             usable: np.ndarray, failing: np.ndarray, allowed: np.ndarray,
             hints: Hints = NO_HINTS, params: np.ndarray | None = None
             ) -> tuple[str | None, float | None]:
    """What a wrong block's mistake looks like, when the evidence supports it.

    Tried in order, on the block's finite, kink-free elements:

    1. a constant factor: the least-squares ``s`` of ``analytic ≈ s * numerical`` with a
       residual below ``TIGHT_FIT`` of the analytic norm (s ≈ -1: a sign flip; s ≈ 0: zeros);
       a factor equal to 2, 1/2 or one of ``hints.factors`` (m, 1/m) is named;
    2. an error proportional to the block's own parameters ``params``: a regularisation term
       with the wrong factor (named against ``hints.l2`` when known);
    3. a transposition: a square block equal to the numerical block's transpose, or any 2-D
       block equal to it transposed and reshaped (a ravel-order mix-up);
    4. zeros: the analytic block is 0 wherever it fails;
    5. a few wrong elements among many.

    Returns ``(diagnosis, scale)``; either may be None.

    Examples
    --------
    >>> n = np.array([1.0, -2.0, 3.0])
    >>> ok = np.ones(3, bool)
    >>> text, scale = diagnose("dW2", (3,), 2 * n, n, ok, ok, np.full(3, 1e-8))
    >>> text, round(scale, 12)
    ('dW2 ≈ 2.00 × numerical: an extra factor 2?', 2.0)
    >>> diagnose("db1", (3,), -n, n, ok, ok, np.full(3, 1e-8))[0]
    'db1 has the wrong sign: ≈ -1.00 × numerical'
    >>> diagnose("dW1", (3,), 64 * n, n, ok, ok, np.full(3, 1e-8), Hints(((64.0, "m"),)))[0]
    'dW1 ≈ 64.00 × numerical = m: a missing 1/m?'
    >>> W = np.array([0.5, 0.1, -0.3])
    >>> print(diagnose("dW1", (3,), n + 0.1 * W, n, ok, ok, np.full(3, 1e-8), params=W)[0])
    ... # doctest: +NORMALIZE_WHITESPACE
    dW1 - numerical ≈ 0.1 × W1: a regularisation term with the wrong factor
    (reg·W1 where 2·reg·W1 is due, or the reverse)?
    """
    if not np.all(np.isfinite(analytic[failing])):
        bad = int(np.count_nonzero(~np.isfinite(analytic)))
        return f"{name} has {bad} NaN/Inf element(s)", None
    usable = usable & np.isfinite(analytic) & np.isfinite(numerical)
    a = np.where(usable, analytic, 0.0)
    n = np.where(usable, numerical, 0.0)
    norm_a = math.sqrt(float(a @ a))
    nn = float(n @ n)
    if nn > 0.0 and norm_a > 0.0:
        s = float(a @ n) / nn
        residual = a - s * n
        # s ~ 1 with a tight fit means the failing elements are too few to move the fit: no
        # scale to report, the later rules say what they are.
        if math.sqrt(residual @ residual) <= TIGHT_FIT * norm_a and abs(s - 1.0) > TIGHT_FIT:
            if abs(s + 1.0) <= 0.01:
                return f"{name} has the wrong sign: ≈ {s:.2f} × numerical", s
            return f"{name} ≈ {s:.2f} × numerical{_named_scale(s, hints.factors)}", s
    w = None if params is None else np.where(usable, params, 0.0)
    regularisation = _regularisation(name, a, n, w, hints.l2.get(name))
    if regularisation is not None:
        return regularisation, None
    if len(shape) == 2 and nn > 0.0:
        n2 = n.reshape(shape)
        candidates = []
        if shape[0] == shape[1]:
            candidates.append(("is transposed: it matches the numerical gradient's transpose",
                               n2.T))
        if shape[0] > 1 and shape[1] > 1:
            candidates.append(("matches the numerical gradient transposed and reshaped "
                               "(a row/column-order mix-up)", n2.T.reshape(shape)))
        for text, candidate in candidates:
            residual = np.abs(a.reshape(shape) - candidate).ravel()
            if np.all(residual <= allowed + TIGHT_FIT * np.abs(candidate.ravel())):
                return f"{name} {text}", None
    zero_failing = failing & (analytic == 0.0)
    n_failing = int(np.count_nonzero(failing))
    if n_failing and np.count_nonzero(zero_failing) == n_failing:
        total = analytic.size
        where = "everywhere" if n_failing == total else f"at {n_failing} of {total} elements"
        return f"{name} is 0 where the numerical gradient is not ({where})", None
    if n_failing <= 10 and n_failing * 10 <= analytic.size:
        return f"{n_failing} of {analytic.size} elements of {name} are wrong", None
    return None, None


def inherited(verdicts: dict[str, str], layers: dict[str, int]) -> dict[str, str]:
    """Per wrong block that likely inherits its error from a layer backprop reaches first:
    the note to add. When every block of the highest layer k with a wrong block is wrong (the
    error of dZ_k, which backprop carries down), each layer below k whose blocks are all wrong
    too, down to the first that is not, inherits from layer k. ``verdicts``: per block name
    its verdict; ``layers``: per block name its layer (backprop runs from the highest).

    Examples
    --------
    >>> notes = inherited({"dW1": "wrong", "db1": "wrong", "dW2": "wrong", "db2": "wrong",
    ...                    "dW3": "ok", "db3": "ok"},
    ...                   {"dW1": 1, "db1": 1, "dW2": 2, "db2": 2, "dW3": 3, "db3": 3})
    >>> sorted(notes)
    ['dW1', 'db1']
    >>> notes["dW1"]
    'likely inherited from layer 2 (dW2, db2 are wrong too): fix that layer first'
    """
    if not layers or set(layers) != set(verdicts):
        return {}
    by_layer: dict[int, list[str]] = {}
    for name, layer in layers.items():
        by_layer.setdefault(layer, []).append(name)

    def all_wrong(layer):
        return all(verdicts[name] == "wrong" for name in by_layer.get(layer, ()))

    wrong_layers = [layer for layer in by_layer
                    if any(verdicts[name] == "wrong" for name in by_layer[layer])]
    if not wrong_layers:
        return {}
    top = max(wrong_layers)
    if not all_wrong(top):
        return {}
    origin = ", ".join(by_layer[top])
    notes = {}
    for layer in sorted((layer for layer in by_layer if layer < top), reverse=True):
        if not all_wrong(layer):
            break
        for name in by_layer[layer]:
            notes[name] = (f"likely inherited from layer {top} ({origin} are wrong too): fix "
                           f"that layer first")
    return notes
