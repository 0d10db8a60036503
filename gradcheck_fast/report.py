"""The report of a gradient check: verdicts, per-block results, diagnoses, formatting."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ._jit import jit
from .layout import Layout
from .modes import detectable_error
from .options import ATOL, RTOL

#: Unit roundoff of float64.
_U = 2.0**-53

#: Safety factor on the ECnoise estimate sigma of J's rounding noise. The noise of a central
#: difference (e+ - e-) / (2 eps) has a standard deviation of about sigma / (sqrt(2) eps); 8 sigma
#: / eps is over 11 of them, and sigma itself comes from only a few differences.
SIGMA_FACTOR = 8.0

#: An element that passes only thanks to a noise bound above this fraction of its size is "not
#: verified": a mistake of that relative size could hide in the noise.
UNVERIFIABLE_FRACTION = 0.01

#: How many worst elements the report keeps, overall and per failing block.
N_WORST = 5

#: A block's scale fit analytic ~ s * numerical is "tight" when the residual is below this
#: fraction of the analytic block's norm.
TIGHT_FIT = 1e-3


def relative_difference(grad: np.ndarray, gradapprox: np.ndarray) -> float:
    """The seed's eq. (3): ``||grad - gradapprox|| / (||grad|| + ||gradapprox||)``.

    Two all-zero vectors agree exactly: their difference is 0.0 (the seed would print nan).
    NaN or Inf anywhere gives nan, which never passes.
    """
    return float(_relative_difference(grad, gradapprox))


@jit
def _relative_difference(grad, gradapprox):
    # Jitted: one pass, and no floating-point warnings for inf/nan (on the seed's 47
    # parameters NumPy's call overheads would cost more than the check).
    error2 = 0.0
    grad2 = 0.0
    approx2 = 0.0
    for i in range(grad.shape[0]):
        d = grad[i] - gradapprox[i]
        error2 += d * d
        grad2 += grad[i] * grad[i]
        approx2 += gradapprox[i] * gradapprox[i]
    numerator = math.sqrt(error2)
    denominator = math.sqrt(grad2) + math.sqrt(approx2)
    if math.isnan(numerator) or math.isinf(denominator):
        return math.nan
    if denominator == 0.0:
        return 0.0
    return numerator / denominator


def noise_bound(costs, sigma: float, epsilon: float, theta: np.ndarray, m: int) -> np.ndarray:
    """Per coordinate, how far a correct gradient may sit from ``gradapprox`` through rounding.

    - ``resolution[i] / (2 epsilon)``: the worst case from the losses the two perturbations
      changed (large where an output saturates);
    - for the exact engine, whose J+- are two full costs: their final sums of m per-sample
      losses round differently after the first changed sample, at most (m + 1) ulps of each
      J (a bound, which ECnoise cannot give when J happens to round regularly), and
      ``SIGMA_FACTOR * sigma / epsilon`` for the rest (pre-activations), measured by ECnoise.
      The incremental engine's changes carry none of this;
    - the step (exact engine, a user's cost): the seed divides by 2 epsilon, but the steps
      really taken are ``fl(theta_i +- epsilon) - theta_i``, off by up to an ulp of theta_i
      each; where they round to 0 (epsilon below theta_i's spacing) the bound is infinite.
    """
    gradapprox = costs.gradapprox
    if not np.isfinite(sigma):
        sigma = 0.0
    bound = costs.resolution / (2.0 * epsilon)
    step = ((theta + epsilon) - theta) - ((theta - epsilon) - theta)
    if costs.engine != "incremental":
        # Two full costs (the exact engine, a user's cost): the seed divides by 2 epsilon, but
        # the steps taken are fl(theta_i +- epsilon) - theta_i. (The incremental engine divides
        # by the steps taken.) A step that rounds to 0 gives an infinite bound: unverified.
        with np.errstate(divide="ignore", invalid="ignore"):
            step_error = np.where(step > 0, np.abs(step - 2.0 * epsilon) / step, np.inf)
        bound = bound + step_error * np.abs(gradapprox)
        sums = (m + 1) * _U * (np.abs(costs.J_plus) + np.abs(costs.J_minus)) / (2.0 * epsilon)
        bound = bound + costs.noise_factor * (sums + SIGMA_FACTOR * sigma / epsilon)
    if costs.truncation is not None:
        bound = bound + costs.truncation
    bound = np.where(step > 0, bound, np.inf)
    return np.where(np.isnan(bound), 0.0, bound)


def allowance(costs, sigma: float, theta: np.ndarray, *, m: int, epsilon: float, rtol: float,
              atol: float) -> tuple[np.ndarray, np.ndarray]:
    """The elementwise criterion's two parts per coordinate of ``costs``: the tolerance
    ``atol + rtol |numerical|`` and the noise bound (:func:`noise_bound`); an element fails
    when ``|analytic - numerical|`` exceeds their sum (``theta``: the checked coordinates)."""
    with np.errstate(invalid="ignore", over="ignore"):
        noise = noise_bound(costs, sigma, epsilon, theta, m)
    return atol + rtol * np.abs(costs.gradapprox), noise


def _within_noise_only(analytic, numerical, error, tolerance, noise, atol: float) -> np.ndarray:
    """Where an agreement rests on a noise bound above ``UNVERIFIABLE_FRACTION`` of the
    values' size (beyond the plain tolerance): a mistake that large could hide in it, so the
    element (or probe) is unverified, not ok."""
    magnitude = np.maximum(np.abs(analytic), np.abs(numerical))
    return ((error > tolerance) & (noise > atol)
            & (noise > UNVERIFIABLE_FRACTION * magnitude))


def _relative_error(analytic: np.ndarray, numerical: np.ndarray) -> np.ndarray:
    """``|a - n| / max(|a|, |n|)``: 0 when both are 0, 1 when one of them is, nan for nan."""
    error = np.abs(analytic - numerical)
    size = np.maximum(np.abs(analytic), np.abs(numerical))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = error / np.where(size > 0, size, 1.0)
        return np.where(size > 0, ratio, np.where(error == 0, 0.0, error))


@dataclass(frozen=True)
class Element:
    """One coordinate of the gradient: where it is and how the two gradients compare."""

    block: str
    index: tuple[int, ...]
    flat_index: int
    analytic: float
    numerical: float
    relative_error: float

    @property
    def label(self) -> str:
        """``'dW2[1, 3]'``."""
        return f"{self.block}[{', '.join(map(str, self.index))}]"

    def to_dict(self) -> dict:
        return {"block": self.block, "index": list(self.index), "flat_index": self.flat_index,
                "analytic": self.analytic, "numerical": self.numerical,
                "relative_error": self.relative_error}

    def __str__(self) -> str:
        return (f"{self.label}: analytic {self.analytic:.6g}, numerical {self.numerical:.6g}, "
                f"relative error {self.relative_error:.3g}")


@dataclass(frozen=True)
class BlockResult:
    """The check restricted to one gradient block (``'dW1'``, ``'db1'``, ...).

    Attributes
    ----------
    name, shape : the gradient key and its shape.
    difference : the seed's eq. (3) over this block alone.
    max_abs_error, max_rel_error : over the block's elements with finite J+- (the relative
        error of an element is ``|a - n| / max(|a|, |n|)``).
    n_failing : elements with ``|a - n| > atol + rtol |n| + noise``, ``noise`` being the
        element's rounding-noise bound, kinks and non-finite J+- excepted.
    n_kinks : elements whose +-epsilon steps move a ReLU across its kink on some sample (for a
        custom cost: failing elements whose disagreement a kink of the cost within the step
        explains, see :mod:`gradcheck_fast.custom`): the central difference there is no
        derivative, so they never count as failing.
    n_nonfinite : elements whose J(theta +- epsilon e_i) is NaN or Inf (e.g. log(0) of a
        saturated sigmoid): they are not verified.
    n_unverified : elements that pass only within a noise bound larger than a tenth of their
        size (saturated outputs): a mistake could hide there.
    verdict : "wrong" if any element fails, else "unverified" if any element is non-finite or
        unverified, else "ok".
    diagnosis : for a wrong block, what the mistake looks like when the evidence supports it
        ("dW2 ≈ 2.00 × numerical", a sign flip, a transposition, zeros), else None.
    scale : the fitted s of ``analytic ≈ s * numerical`` when the fit is tight, else None.
    worst : the block's worst elements (for a wrong block), worst first.
    n_checked : how many of its elements were checked (all of them unless ``mode="sampled"``;
        0 in directional mode, which checks directions instead).
    n_probes : directional mode: how many directions probed the block (n_failing and n_kinks
        then count probes, not elements).
    detectable_error : directional mode: the smallest relative error ``||E|| / ||G||`` of the
        block that the probes catch with the report's ``probability``; None otherwise.
    """

    name: str
    shape: tuple[int, ...]
    difference: float
    max_abs_error: float
    max_rel_error: float
    n_failing: int
    n_kinks: int
    n_nonfinite: int
    n_unverified: int
    verdict: str
    diagnosis: str | None = None
    scale: float | None = None
    worst: tuple[Element, ...] = ()
    n_checked: int = 0
    n_probes: int = 0
    detectable_error: float | None = None

    @property
    def passed(self) -> bool:
        return self.verdict == "ok"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def to_dict(self) -> dict:
        return {
            "name": self.name, "shape": list(self.shape), "difference": self.difference,
            "max_abs_error": self.max_abs_error, "max_rel_error": self.max_rel_error,
            "n_failing": self.n_failing, "n_kinks": self.n_kinks,
            "n_nonfinite": self.n_nonfinite, "n_unverified": self.n_unverified,
            "verdict": self.verdict, "passed": self.passed, "diagnosis": self.diagnosis,
            "scale": self.scale, "worst": [e.to_dict() for e in self.worst],
            "n_checked": self.n_checked, "n_probes": self.n_probes,
            "detectable_error": self.detectable_error,
        }


def _backprop_order(names) -> list[str]:
    """The order a backward pass computes gradient blocks: the last layer first, and within
    a layer (names sharing a number: dWl, dbl) in layout order. Names without a layer number
    keep their layout order, after the numbered ones."""
    names = list(names)

    def layer(item):
        position, name = item
        digits = "".join(ch for ch in name if ch.isdigit())
        return (0, -int(digits), position) if digits else (1, 0, position)

    return [name for _, name in sorted(enumerate(names), key=layer)]


class GradientCheckFailed(AssertionError):
    """Raised by :meth:`GradientCheckReport.raise_if_failed`; the message is the report."""


@dataclass(frozen=True, eq=False)
class GradientCheckReport:
    """What :func:`gradcheck_fast.check_gradients` found.

    Two criteria are reported:

    - ``passed`` — the elementwise criterion, which decides: every block's verdict is "ok",
      i.e. every element satisfies ``|analytic - numerical| <= atol + rtol |numerical| +
      noise`` (kinks excepted) and none is non-finite or unverifiable. One wrong element among
      millions fails it.
    - ``seed_passed`` — the seed's criterion, ``difference <= threshold`` on eq. (3) over all
      parameters (what ``gradient_check_n`` prints). It can hide a single wrong element.

    Attributes
    ----------
    difference, threshold, seed_passed : the seed's criterion.
    rtol, atol, epsilon : the settings the check ran with.
    cost : J at the unperturbed parameters.
    grad, gradapprox : dict of str to ndarray
        Analytic and numerical gradient keyed ``'dW1', 'db1', ...``, shaped like the parameters.
    blocks : dict of str to BlockResult, in layout order.
    failed_blocks : names of the wrong blocks in the order the backward pass computes them
        (output layer first), so the first is the earliest place the backward pass goes wrong.
    worst : the worst elements overall (failing ones first, then the largest relative errors).
    kinks, nonfinite, unverified : the flagged elements.
    engine : "exact" or "incremental" (see :func:`gradcheck_fast.check_gradients`).
    mode : "full", "sampled" (``checked`` says which coordinates; ``gradapprox`` is NaN
        elsewhere; nothing is scaled up) or "directional" (``probes`` holds the probes).
    method : "central" (the seed's) or "richardson".
    probability : directional mode: the detection probability of ``detectable_error``.
    notes : what the check decided on its own (a mode picked for a time budget, float32 input).
    """

    difference: float
    threshold: float
    epsilon: float
    rtol: float
    atol: float
    cost: float
    grad: dict[str, np.ndarray] = field(repr=False)
    gradapprox: dict[str, np.ndarray] = field(repr=False)
    blocks: dict[str, BlockResult] = field(repr=False)
    layout: Layout = field(repr=False)
    engine: str = "exact"
    mode: str = "full"
    method: str = "central"
    probability: float | None = None
    notes: tuple[str, ...] = ()
    _flags: dict = field(default_factory=dict, repr=False)

    # -- verdicts ------------------------------------------------------------------------------
    @property
    def passed(self) -> bool:
        return all(block.passed for block in self.blocks.values())

    @property
    def seed_passed(self) -> bool:
        return bool(self.difference <= self.threshold)

    @property
    def n_params(self) -> int:
        return self.layout.n_params

    @property
    def n_checked(self) -> int:
        """Coordinates checked one by one (0 in directional mode)."""
        return sum(block.n_checked for block in self.blocks.values())

    @cached_property
    def checked(self) -> dict[str, np.ndarray]:
        """Per block, a boolean array (shaped like it): which coordinates were checked."""
        mask = np.zeros(self.n_params, dtype=bool)
        mask[self._flags.get("indices", np.arange(0))] = True
        layout = self.layout
        return {"d" + name: mask[layout.offsets[k] : layout.offsets[k + 1]].reshape(shape)
                for k, (name, shape) in enumerate(zip(layout.names, layout.shapes))}

    @property
    def probes(self) -> dict:
        """Directional mode: per block, its :class:`gradcheck_fast.modes.Probes`."""
        return self._flags.get("probes", {})

    @property
    def failed_blocks(self) -> list[str]:
        return [name for name in _backprop_order(self.blocks)
                if self.blocks[name].verdict == "wrong"]

    # -- flagged elements ----------------------------------------------------------------------
    @cached_property
    def worst(self) -> tuple[Element, ...]:
        return self._elements(self._flags["worst"])

    @cached_property
    def kinks(self) -> tuple[Element, ...]:
        return self._elements(self._flags["kinks"])

    @cached_property
    def nonfinite(self) -> tuple[Element, ...]:
        return self._elements(self._flags["nonfinite"])

    @cached_property
    def unverified(self) -> tuple[Element, ...]:
        return self._elements(self._flags["unverified"])

    def _elements(self, flat_indices) -> tuple[Element, ...]:
        return tuple(_element(self.layout, self._flags["grad"], self._flags["gradapprox"], int(i))
                     for i in flat_indices)

    # -- output --------------------------------------------------------------------------------
    def raise_if_failed(self) -> None:
        """Raise :class:`GradientCheckFailed` (an AssertionError) with the table if not passed."""
        if not self.passed:
            raise GradientCheckFailed(str(self))

    def to_dict(self) -> dict:
        """Plain Python types only (JSON-ready; NaN stays a float NaN); arrays as nested lists."""
        return {
            "passed": self.passed, "seed_passed": self.seed_passed,
            "difference": self.difference, "threshold": self.threshold,
            "epsilon": self.epsilon, "rtol": self.rtol, "atol": self.atol, "cost": self.cost,
            "n_params": self.n_params, "engine": self.engine, "mode": self.mode,
            "method": self.method, "probability": self.probability, "notes": list(self.notes),
            "n_checked": self.n_checked,
            "failed_blocks": self.failed_blocks,
            "blocks": {name: block.to_dict() for name, block in self.blocks.items()},
            "worst": [e.to_dict() for e in self.worst],
            "kinks": [e.to_dict() for e in self.kinks],
            "nonfinite": [e.to_dict() for e in self.nonfinite],
            "unverified": [e.to_dict() for e in self.unverified],
            "grad": {k: v.tolist() for k, v in self.grad.items()},
            "gradapprox": {k: v.tolist() for k, v in self.gradapprox.items()},
        }

    def __str__(self) -> str:
        return _format(self)


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------
def build_report(layout: Layout, theta: np.ndarray, grad: np.ndarray, costs, sigma: float, *,
                 m: int, epsilon: float, threshold: float, rtol: float = RTOL,
                 atol: float = ATOL, n_worst: int = N_WORST, mode: str = "full",
                 method: str = "central", notes: tuple[str, ...] = ()) -> GradientCheckReport:
    """Assemble the report from the analytic gradient (flat, ``layout`` order) and the engine's
    :class:`~gradcheck_fast.engine.Costs` for the coordinates ``costs.indices`` (all of them, or
    a sample) of a check on m samples; sigma is J's ECnoise estimate (0 if not needed)."""
    idx = costs.indices
    g = grad[idx]
    numerical = costs.gradapprox
    nonfinite = ~(np.isfinite(costs.J_plus) & np.isfinite(costs.J_minus))
    at_kink = (costs.kinks > 0) & ~nonfinite
    tolerance, noise = allowance(costs, sigma, theta[idx], m=m, epsilon=epsilon, rtol=rtol,
                                 atol=atol)
    error = np.abs(g - numerical)
    checked = ~nonfinite & ~at_kink
    failing = checked & ~(error <= tolerance + noise)  # a NaN analytic value fails
    unverified = checked & ~failing & _within_noise_only(g, numerical, error, tolerance, noise,
                                                         atol)
    relative = _relative_error(g, numerical)
    numerical_full = np.full(layout.n_params, np.nan)
    numerical_full[idx] = numerical

    blocks = {}
    for k, (name, shape) in enumerate(zip(layout.grad_names, layout.shapes)):
        lo, hi = np.searchsorted(idx, layout.offsets[k : k + 2])
        blocks[name] = _block(layout, name, shape, slice(int(lo), int(hi)), idx, grad,
                              numerical_full, g, numerical, error, relative, failing, at_kink,
                              nonfinite, unverified, tolerance + noise, n_worst)

    # Worst overall: failing elements by how far past their tolerance, then the rest by
    # relative error (kinks and non-finite ones have their own lists).
    with np.errstate(invalid="ignore", divide="ignore"):
        excess = np.where(failing, error / (tolerance + noise), 0.0)
    excess = np.where(np.isnan(excess), np.inf, excess)
    others = np.where(checked, np.nan_to_num(relative, nan=0.0) / 2, -1.0)
    key = np.where(failing, excess + 1.0, others)
    flags = {
        "worst": idx[_top(key, n_worst, minimum=0.0)],
        "kinks": idx[np.flatnonzero(at_kink)],
        "nonfinite": idx[np.flatnonzero(nonfinite)],
        "unverified": idx[np.flatnonzero(unverified)],
        "grad": grad,
        "gradapprox": numerical_full,
        "indices": idx,
    }
    return GradientCheckReport(
        difference=relative_difference(g, numerical),
        threshold=threshold, epsilon=epsilon, rtol=rtol, atol=atol, cost=float(costs.J),
        grad=layout.unpack(grad, prefix="d"), gradapprox=layout.unpack(numerical_full, prefix="d"),
        blocks=blocks, layout=layout, engine=costs.engine, mode=mode, method=method,
        notes=tuple(notes), _flags=flags,
    )


def build_directional_report(layout: Layout, grad: np.ndarray, probes: dict, *, cost: float,
                             epsilon: float,
                             threshold: float, rtol: float, atol: float, probability: float,
                             notes: tuple[str, ...] = ()) -> GradientCheckReport:
    """The report of a directional check from its :class:`gradcheck_fast.modes.Probes`.

    A probe fails when ``|v.grad - numerical| > atol + rtol |numerical| + noise`` (the
    elementwise criterion, applied to a unit direction); a probe whose steps cross a ReLU kink
    is set aside, and so, as in the full check, is a probe whose ``J(theta +- eps v)`` is NaN
    or Inf (a non-finite J, or a change that is): its numerical value is NaN, the block
    "unverified". One that passes only within a noise bound above ``UNVERIFIABLE_FRACTION`` of
    its size (a large step) is unverified. ``detectable_error`` follows from the largest
    tolerance among the block's verified probes (:func:`gradcheck_fast.modes.detectable_error`).
    """
    blocks = {}
    analytic_all, numerical_all = [], []
    for name, shape in zip(layout.grad_names, layout.shapes):
        p = probes[name]
        # The probes' changes are formed without J, so they stay finite when J is not.
        nonfinite = ~np.isfinite(p.numerical) | (not math.isfinite(cost))
        numerical = np.where(nonfinite, np.nan, p.numerical)
        valid = (p.kinks == 0) & ~nonfinite
        tolerance = atol + rtol * np.abs(numerical) + p.noise
        error = np.abs(p.analytic - numerical)
        failing = valid & ~(error <= tolerance)
        # As for elements: a probe that passes only within a noise bound above 1 % of its size
        # (a large step's truncation; inf where no bound holds) verifies nothing.
        unverified = valid & ~failing & _within_noise_only(
            p.analytic, numerical, error, atol + rtol * np.abs(numerical), p.noise, atol)
        verified = valid & ~unverified
        n_failing = int(np.count_nonzero(failing))
        n_valid = int(np.count_nonzero(valid))
        n_unverified = int(np.count_nonzero(unverified))
        n_verified = n_valid - n_unverified
        n_nonfinite = int(np.count_nonzero(nonfinite))
        verdict = ("wrong" if n_failing
                   else "unverified" if n_unverified or n_nonfinite or not n_valid else "ok")
        diagnosis, scale = None, None
        if n_failing:
            diagnosis, scale = diagnose(name, (p.analytic.size,), p.analytic, numerical, valid,
                                        failing, tolerance)
            if diagnosis is not None:
                diagnosis += " (along random directions)"
        detectable = (detectable_error(float(np.max(tolerance[verified])), p.size, p.grad_norm,
                                       n_verified, p.rank_one, probability)
                      if n_verified else math.inf)
        blocks[name] = BlockResult(
            name=name, shape=shape,
            difference=relative_difference(p.analytic, numerical),
            max_abs_error=float(np.max(error[valid], initial=0.0)),
            max_rel_error=float(np.max(_relative_error(p.analytic, numerical)[valid],
                                       initial=0.0)),
            n_failing=n_failing, n_kinks=int(np.count_nonzero((p.kinks != 0) & ~nonfinite)),
            n_nonfinite=n_nonfinite, n_unverified=n_unverified, verdict=verdict,
            diagnosis=diagnosis, scale=scale, n_probes=int(p.analytic.size),
            detectable_error=detectable,
        )
        analytic_all.append(p.analytic)
        numerical_all.append(numerical)
    flags = {"worst": np.arange(0), "kinks": np.arange(0), "nonfinite": np.arange(0),
             "unverified": np.arange(0), "grad": grad, "gradapprox": np.full(grad.size, np.nan),
             "indices": np.arange(0), "probes": probes}
    return GradientCheckReport(
        difference=relative_difference(np.concatenate(analytic_all),
                                       np.concatenate(numerical_all)),
        threshold=threshold, epsilon=epsilon, rtol=rtol, atol=atol, cost=float(cost),
        grad=layout.unpack(grad, prefix="d"), gradapprox={}, blocks=blocks, layout=layout,
        engine="incremental", mode="directional", probability=probability, notes=tuple(notes),
        _flags=flags,
    )


def _top(key: np.ndarray, n: int, minimum: float) -> np.ndarray:
    """Indices of the n largest keys (>= minimum), largest first; ties by index."""
    candidates = np.flatnonzero(key >= minimum)
    if candidates.size > n:
        part = np.argpartition(-key[candidates], n - 1)[:n]
        candidates = candidates[part]
    order = np.lexsort((candidates, -key[candidates]))
    return candidates[order]


def _element(layout: Layout, grad, numerical, i: int) -> Element:
    name, index = layout.locate(i)
    a, n = float(grad[i]), float(numerical[i])
    return Element(block="d" + name, index=index, flat_index=i, analytic=a, numerical=n,
                   relative_error=float(_relative_error(np.array(a), np.array(n))))


def _block(layout, name, shape, s, idx, grad_full, numerical_full, grad, numerical, error,
           relative, failing, at_kink, nonfinite, unverified, allowed, n_worst) -> BlockResult:
    """One block's result from the checked positions ``s`` (of coordinates ``idx[s]``)."""
    finite = ~nonfinite[s]
    n_checked = s.stop - s.start
    n_failing = int(np.count_nonzero(failing[s]))
    n_nonfinite = int(np.count_nonzero(nonfinite[s]))
    n_unverified = int(np.count_nonzero(unverified[s]))
    if n_failing:
        verdict = "wrong"
    elif n_nonfinite or n_unverified:
        verdict = "unverified"
    else:
        verdict = "ok"
    diagnosis, scale, worst = None, None, ()
    if n_failing:
        usable = finite & ~at_kink[s]
        whole = n_checked == int(np.prod(shape, dtype=np.int64))
        # A transposition can only be recognised on a whole block.
        diagnosis, scale = diagnose(name, shape if whole else (n_checked,), grad[s],
                                    numerical[s], usable, failing[s], allowed[s])
        with np.errstate(invalid="ignore", divide="ignore"):
            excess = np.where(failing[s], error[s] / allowed[s], -1.0)
        excess = np.where(np.isnan(excess), np.inf, excess)
        positions = _top(excess, n_worst, minimum=0.0) + s.start
        worst = tuple(_element(layout, grad_full, numerical_full, int(idx[p]))
                      for p in positions)
    err = np.where(finite, error[s], 0.0)
    rel = np.where(finite, relative[s], 0.0)
    return BlockResult(
        name=name, shape=shape,
        difference=relative_difference(grad[s], numerical[s]),
        max_abs_error=float(np.max(err)) if err.size else 0.0,
        max_rel_error=float(np.max(rel)) if rel.size else 0.0,
        n_failing=n_failing, n_kinks=int(np.count_nonzero(at_kink[s])),
        n_nonfinite=n_nonfinite, n_unverified=n_unverified, verdict=verdict,
        diagnosis=diagnosis, scale=scale, worst=worst, n_checked=n_checked,
    )


# ---------------------------------------------------------------------------------------------
# Diagnosis
# ---------------------------------------------------------------------------------------------
def diagnose(name: str, shape: tuple[int, ...], analytic: np.ndarray, numerical: np.ndarray,
             usable: np.ndarray, failing: np.ndarray, allowed: np.ndarray
             ) -> tuple[str | None, float | None]:
    """What a wrong block's mistake looks like, when the evidence supports it.

    Tried in order, on the block's finite, kink-free elements:

    1. a constant factor: the least-squares ``s`` of ``analytic ≈ s * numerical`` with a
       residual below ``TIGHT_FIT`` of the analytic norm (s ≈ -1: a sign flip; s ≈ 0: zeros);
    2. a transposition: a square block equal to the numerical block's transpose, or any 2-D
       block equal to it transposed and reshaped (a ravel-order mix-up);
    3. zeros: the analytic block is 0 wherever it fails;
    4. a few wrong elements among many.

    Returns ``(diagnosis, scale)``; either may be None.

    Examples
    --------
    >>> n = np.array([1.0, -2.0, 3.0])
    >>> ok = np.ones(3, bool)
    >>> text, scale = diagnose("dW2", (3,), 2 * n, n, ok, ok, np.full(3, 1e-8))
    >>> text, round(scale, 12)
    ('dW2 ≈ 2.00 × numerical', 2.0)
    >>> diagnose("db1", (3,), -n, n, ok, ok, np.full(3, 1e-8))[0]
    'db1 has the wrong sign: ≈ -1.00 × numerical'
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
            return f"{name} ≈ {s:.2f} × numerical", s
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


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------
def _format(report: GradientCheckReport) -> str:
    blocks = report.blocks
    wrong = report.failed_blocks
    n_unverified = sum(b.verdict == "unverified" for b in blocks.values())
    what = {"full": "gradient check", "sampled": "sampled gradient check",
            "directional": "directional gradient check"}[report.mode]
    if report.passed:
        agree = "the block agrees" if len(blocks) == 1 else f"all {len(blocks)} blocks agree"
        head = f"{what} PASSED: {agree} with the numerical gradient"
    elif wrong:
        head = (f"{what} FAILED: {len(wrong)} of {len(blocks)} blocks disagree with the "
                f"numerical gradient ({', '.join(wrong)})")
    else:
        head = (f"{what} INCONCLUSIVE: {n_unverified} of {len(blocks)} blocks could not be "
                f"verified everywhere")
    seed = "<=" if report.seed_passed else ">"
    over = {"full": f"{report.n_params} parameters",
            "sampled": f"{report.n_checked} of {report.n_params} parameters",
            "directional": f"{sum(b.n_probes for b in blocks.values())} directions over "
                           f"{report.n_params} parameters"}[report.mode]
    method = "" if report.method == "central" else f", {report.method}"
    engine = "" if report.mode == "directional" else f", {report.engine} engine"
    lines = [
        head,
        f"  seed criterion: difference = {report.difference:.10g} {seed} threshold "
        f"{report.threshold:g} ({'passed' if report.seed_passed else 'failed'})",
        f"  elementwise: |analytic - numerical| <= {report.atol:g} + {report.rtol:g} |numerical| "
        f"+ noise; epsilon {report.epsilon:g}{method}, {over}{engine}",
    ]
    lines += [f"  note: {note}" for note in report.notes]
    unit = "probes" if report.mode == "directional" else "elements"
    if wrong:
        lines.append("wrong blocks, in backprop order:")
        width = max(len(name) for name in wrong)
        for name in wrong:
            b = blocks[name]
            total = b.n_probes if report.mode == "directional" else (
                b.n_checked if report.mode == "sampled" else b.size)
            text = b.diagnosis or "no simple pattern (see the worst elements)"
            lines.append(f"  {name:<{width}}  {b.n_failing} of {total} {unit} wrong: {text}")
    width = max(5, *(len(name) for name in blocks))
    if report.mode == "directional":
        detects = f"detects (p={report.probability:g})"
        lines.append(f"  {'block':<{width}}  {'shape':<10} {'difference':>11} {'probes':>7} "
                     f"{'failing':>8} {'kinks':>6}  {detects:>16}  verdict")
        for name, b in blocks.items():
            shape = "x".join(map(str, b.shape))
            detects = f">= {b.detectable_error:.1e}" if math.isfinite(b.detectable_error) else "-"
            lines.append(f"  {name:<{width}}  {shape:<10} {b.difference:>11.3e} {b.n_probes:>7} "
                         f"{b.n_failing:>8} {b.n_kinks:>6}  {detects:>16}  {b.verdict}")
        lines.append("note: 'detects' is the smallest relative error ||E|| / ||G|| of the block "
                     "the probes catch with that probability (rank-one errors, the hardest case "
                     "for rank-one probes, for weight blocks)")
    else:
        checked = report.mode == "sampled"
        extra = f" {'checked':>8}" if checked else ""
        lines.append(f"  {'block':<{width}}  {'shape':<10}{extra} {'difference':>11} "
                     f"{'max abs err':>11} {'max rel err':>11} {'failing':>8} {'kinks':>6}  "
                     f"verdict")
        for name, b in blocks.items():
            shape = "x".join(map(str, b.shape))
            extra = f" {b.n_checked:>8}" if checked else ""
            lines.append(f"  {name:<{width}}  {shape:<10}{extra} {b.difference:>11.3e} "
                         f"{b.max_abs_error:>11.3e} {b.max_rel_error:>11.3e} {b.n_failing:>8} "
                         f"{b.n_kinks:>6}  {b.verdict}")
    notes = []
    n_kinks = sum(b.n_kinks for b in blocks.values())
    if n_kinks:
        kink = ("a ReLU kink" if report.engine in ("exact", "incremental")
                else "a kink of the cost (a ReLU kink or other non-smooth point)")
        notes.append(f"{n_kinks} {unit} step across {kink}, where the central difference "
                     f"is no derivative: not counted as failing"
                     + (" (report.kinks)" if report.mode != "directional" else ""))
    n_nonfinite = sum(b.n_nonfinite for b in blocks.values())
    if n_nonfinite and report.mode == "directional":
        notes.append(f"{n_nonfinite} probes have a NaN/Inf J(theta +- eps v) "
                     f"(J = {report.cost:g}): not verified")
    elif n_nonfinite:
        first = report.nonfinite[0].label
        notes.append(f"{n_nonfinite} element(s) have a NaN/Inf J(theta +- eps e_i), first {first} "
                     f"(report.nonfinite): not verified")
    n_noisy = sum(b.n_unverified for b in blocks.values())
    if n_noisy:
        notes.append(f"{n_noisy} element(s) pass only within an error bound larger than 1 % of "
                     f"their size (saturated outputs, a step that rounds away, a coarse cost): "
                     f"not verified (report.unverified)")
    lines += ["note: " + note for note in notes]
    worst = [e for e in report.worst if not report.passed or e.relative_error > 0]
    if worst:
        lines.append("worst elements:")
        lines += [f"  {e}" for e in worst]
    return "\n".join(lines)
