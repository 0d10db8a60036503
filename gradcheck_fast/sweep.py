"""The step sweep: the check at steps from 1e-2 to 1e-10, to tell a bad epsilon from a wrong
gradient."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ._threads import n_threads_set
from .checker import numerical_gradient
from .engines import prepare_engine
from .report import relative_difference
from .report.html import sweep_html
from .validation import check_epsilon

#: The default steps: 1e-2, 1e-3, ..., 1e-10.
DEFAULT_STEPS = tuple(10.0**-k for k in range(2, 11))


@dataclass(frozen=True)
class SweepRow:
    epsilon: float
    difference: float  # the seed's eq. (3) at this step
    max_rel_error: float  # the largest elementwise relative error at this step
    slope: float | None  # d log(difference) / d log(epsilon) from the previous (larger) step
    blocks: dict[str, float] = field(default_factory=dict)  # eq. (3) of each block at this step


@dataclass(frozen=True)
class SweepReport:
    """The difference at each step and what it says.

    Attributes
    ----------
    rows : one :class:`SweepRow` per step, largest step first.
    verdict : "fine" (the difference falls below the threshold at some step: a correct
        gradient; ``best_epsilon`` is where it is smallest), "wrong" (it stays above the
        threshold at every step, about flat: the gradient is wrong, not the step) or
        "inconclusive".
    best_epsilon : the step with the smallest difference.
    explanation : one sentence saying why.
    """

    rows: tuple[SweepRow, ...]
    verdict: str
    best_epsilon: float
    explanation: str
    threshold: float
    engine: str

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "best_epsilon": self.best_epsilon,
                "explanation": self.explanation, "threshold": self.threshold,
                "engine": self.engine,
                "rows": [row.__dict__ for row in self.rows]}

    def plot(self, ax=None):
        """The V-curve of each block against epsilon: :func:`.report.plot.plot_sweep`."""
        from .report.plot import plot_sweep
        return plot_sweep(self, ax=ax)

    def __str__(self) -> str:
        lines = [f"step sweep ({self.engine} engine): {self.verdict.upper()} — {self.explanation}",
                 f"  {'epsilon':>9}  {'difference':>11}  {'max rel err':>11}  {'slope':>6}"]
        for row in self.rows:
            slope = "" if row.slope is None else f"{row.slope:+.1f}"
            mark = "  <- best" if row.epsilon == self.best_epsilon else ""
            lines.append(f"  {row.epsilon:>9.0e}  {row.difference:>11.3e}  "
                         f"{row.max_rel_error:>11.3e}  {slope:>6}{mark}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        best = [row for row in self.rows if row.epsilon == self.best_epsilon]
        at = (f"difference {best[0].difference:.3g} at epsilon {self.best_epsilon:.0e}"
              if best else "no finite difference")
        return f"<SweepReport {self.verdict.upper()}: {at} (best of {len(self.rows)} steps)>"

    def _repr_html_(self) -> str:
        return sweep_html(self)


def _verdict(rows, threshold: float) -> tuple[str, float, str]:
    differences = np.array([row.difference for row in rows])
    finite = np.isfinite(differences)
    if not finite.any():
        return "inconclusive", math.nan, "the difference is NaN at every step"
    best = int(np.nanargmin(np.where(finite, differences, np.nan)))
    best_eps = rows[best].epsilon
    low = differences[best]
    if low <= threshold:
        shape = []
        big = [r.slope for r in rows[1 : best + 1] if r.slope is not None]
        small = [r.slope for r in rows[best + 1 :] if r.slope is not None]
        if big and np.median(big) > 1.0:
            shape.append(f"the error falls like epsilon^{np.median(big):.1f} (truncation) down to "
                         f"epsilon = {best_eps:.0e}")
        if small and np.median(small) < -0.5:
            shape.append(f"then rises like epsilon^{np.median(small):.1f} (rounding)")
        text = (", ".join(shape) + ": " if shape else "") + (
            f"the gradient is fine; choose epsilon ~ {best_eps:.0e} "
            f"(difference {low:.2e})")
        return "fine", best_eps, text
    high = np.nanmax(differences[finite])
    if high <= 10.0 * low:
        return "wrong", best_eps, (f"the difference stays between {low:.2e} and {high:.2e} at "
                                   f"every step: the gradient is wrong, not epsilon")
    return "inconclusive", best_eps, (f"the difference never falls below {threshold:g} (lowest "
                                      f"{low:.2e} at epsilon = {best_eps:.0e}) but varies with "
                                      f"the step: try other steps or method='richardson'")


def check_steps(steps) -> list[float]:
    """steps as distinct finite positive floats, largest first."""
    if isinstance(steps, (str, bytes)) or not hasattr(steps, "__len__"):
        raise TypeError(f"steps must be a sequence of positive numbers; got "
                        f"{type(steps).__name__}")
    values = []
    for step in steps:
        values.append(check_epsilon(step, "steps"))
    if not values:
        raise ValueError("steps must hold at least one step")
    if len(set(values)) != len(values):
        raise ValueError(f"steps must be distinct; got {list(steps)}")
    return sorted(values, reverse=True)


def run_sweep(inputs, base, steps: list[float]) -> SweepReport:
    """The sweep of :func:`gradcheck_fast.api.step_sweep` on validated inputs: ``base`` the
    resolved options (its epsilon replaced by each step), ``steps`` from :func:`check_steps`."""
    rows = []
    used = "exact"
    spans = inputs.layout.spans
    with n_threads_set(base.n_threads):
        # One preparation serves every step (the engine's state does not depend on it).
        engine_used, prepared = prepare_engine(inputs.layout, inputs.theta, inputs.X, inputs.Y,
                                               base.engine, inputs.model)
        base = replace(base, engine=engine_used)
        for k, step in enumerate(steps):
            options = replace(base, epsilon=check_epsilon(step, "steps"))
            costs = numerical_gradient(inputs, options, truncation=False, prepared=prepared)
            used = costs.engine
            difference = relative_difference(inputs.grad, costs.gradapprox, spans)
            error = np.abs(inputs.grad - costs.gradapprox)
            size = np.maximum(np.abs(inputs.grad), np.abs(costs.gradapprox))
            with np.errstate(invalid="ignore", divide="ignore"):
                relative = np.where(size > 0, error / np.where(size > 0, size, 1.0), 0.0)
            slope = None
            if k and difference > 0 and rows[-1].difference > 0:
                slope = (math.log(rows[-1].difference) - math.log(difference)) / (
                    math.log(rows[-1].epsilon) - math.log(step))
            blocks = {name: relative_difference(inputs.grad[span], costs.gradapprox[span])
                      for name, span in zip(inputs.layout.grad_names, spans)}
            rows.append(SweepRow(step, difference, float(np.nanmax(relative)), slope, blocks))
    verdict, best, text = _verdict(rows, base.threshold)
    return SweepReport(tuple(rows), verdict, best, text, base.threshold, used)

