"""The result types of a gradient check: an element, a block's result, the report, and the
exception that carries it. Data and plain views of it; the judgement of the numbers lives in
:mod:`.diagnosis`, the text in :mod:`.formatting`, the assembly in :mod:`.build`."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from ..layout import Layout
from .diagnosis import relative_error
from .formatting import block_repr, element_repr, format_report, report_repr
from .html import report_html

if TYPE_CHECKING:
    from ..modes import Probes


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

    def __repr__(self) -> str:
        return element_repr(self)

    def __str__(self) -> str:
        return (f"{self.label}: analytic {self.analytic:.6g}, numerical {self.numerical:.6g}, "
                f"relative error {self.relative_error:.3g}")


def element_at(layout: Layout, grad: np.ndarray, gradapprox: np.ndarray, i: int) -> Element:
    """The :class:`Element` at flat coordinate ``i`` of the flat ``grad`` and ``gradapprox``."""
    name, index = layout.locate(i)
    a, n = float(grad[i]), float(gradapprox[i])
    return Element(block="d" + name, index=index, flat_index=i, analytic=a, numerical=n,
                   relative_error=relative_error(a, n))


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

    def __repr__(self) -> str:
        return block_repr(self)


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
        Analytic and numerical gradient keyed ``'dW1', 'db1', ...``, shaped like the parameters:
        read-only views of the report's own flat arrays (never of the caller's; ``.copy()``
        one to change it).
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
    probes : dict of str to :class:`gradcheck_fast.modes.Probes`
        Directional mode: per block, its probes (empty otherwise).
    kink : what a kink is for the engine that found it: "a ReLU kink" for the built-in
        network, any non-smooth point of a user's cost.
    n_explicit : the incremental engine: how many checked coordinates its layer sweep left to
        the per-coordinate path, because one of their samples moved beyond the range of its
        cubic (a kink crossed, a large step); None for the other engines and directional mode.

    The builder (:mod:`gradcheck_fast.report.build`) also fills keyword-only private fields,
    flat in layout order, from which the element lists are made on first access:
    ``_grad_flat`` (the analytic gradient), ``_gradapprox_flat`` (the numerical one, NaN where
    not checked), ``_checked_indices`` (the coordinates checked, ascending; empty in
    directional mode) and ``_worst_indices``, ``_kink_indices``, ``_nonfinite_indices``,
    ``_unverified_indices`` (the flat coordinates of ``worst``, ``kinks``, ``nonfinite``,
    ``unverified``, in their order) and ``_failing_indices`` (every failing coordinate,
    ascending: the pictures outline them).
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
    probes: dict[str, Probes] = field(default_factory=dict, repr=False)
    kink: str = field(default="a ReLU kink", repr=False)
    n_explicit: int | None = None
    _: KW_ONLY
    _grad_flat: np.ndarray = field(repr=False)
    _gradapprox_flat: np.ndarray = field(repr=False)
    _checked_indices: np.ndarray = field(repr=False)
    _worst_indices: np.ndarray = field(repr=False)
    _kink_indices: np.ndarray = field(repr=False)
    _nonfinite_indices: np.ndarray = field(repr=False)
    _unverified_indices: np.ndarray = field(repr=False)
    _failing_indices: np.ndarray = field(repr=False)

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
        mask[self._checked_indices] = True
        layout = self.layout
        return {"d" + name: mask[layout.offsets[k] : layout.offsets[k + 1]].reshape(shape)
                for k, (name, shape) in enumerate(zip(layout.names, layout.shapes))}

    @property
    def failed_blocks(self) -> list[str]:
        return [name for name in _backprop_order(self.blocks)
                if self.blocks[name].verdict == "wrong"]

    # -- flagged elements ----------------------------------------------------------------------
    @cached_property
    def worst(self) -> tuple[Element, ...]:
        return self._elements(self._worst_indices)

    @cached_property
    def kinks(self) -> tuple[Element, ...]:
        return self._elements(self._kink_indices)

    @cached_property
    def nonfinite(self) -> tuple[Element, ...]:
        return self._elements(self._nonfinite_indices)

    @cached_property
    def unverified(self) -> tuple[Element, ...]:
        return self._elements(self._unverified_indices)

    def _elements(self, flat_indices) -> tuple[Element, ...]:
        return tuple(element_at(self.layout, self._grad_flat, self._gradapprox_flat, int(i))
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
            "n_checked": self.n_checked, "n_explicit": self.n_explicit,
            "failed_blocks": self.failed_blocks,
            "blocks": {name: block.to_dict() for name, block in self.blocks.items()},
            "worst": [e.to_dict() for e in self.worst],
            "kinks": [e.to_dict() for e in self.kinks],
            "nonfinite": [e.to_dict() for e in self.nonfinite],
            "unverified": [e.to_dict() for e in self.unverified],
            "grad": {k: v.tolist() for k, v in self.grad.items()},
            "gradapprox": {k: v.tolist() for k, v in self.gradapprox.items()},
        }

    def __repr__(self) -> str:
        return report_repr(self)

    def __str__(self) -> str:
        return format_report(self)

    def _repr_html_(self) -> str:
        return report_html(self)

    # -- pictures (optional matplotlib, see gradcheck_fast.report.plot) -------------------------
    def plot(self, blocks=None, ax=None):
        """Per block, a heat map of each element's relative error: :func:`.plot.plot_report`."""
        from .plot import plot_report
        return plot_report(self, blocks=blocks, ax=ax)

    def plot_scatter(self, blocks=None, ax=None):
        """Per block, analytic against numerical: :func:`.plot.plot_scatter`."""
        from .plot import plot_scatter
        return plot_scatter(self, blocks=blocks, ax=ax)
