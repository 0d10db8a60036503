"""The report of a gradient check: global verdict, per-block results, formatting."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .layout import Layout

#: Safety factor on the ECnoise estimate sigma of J's rounding noise. The noise of a central
#: difference (e+ - e-) / (2 eps) has a standard deviation of about sigma / (sqrt(2) eps); 8 sigma
#: / eps is over 11 of them, and sigma itself comes from only a few differences.
SIGMA_FACTOR = 8.0


def relative_difference(grad: np.ndarray, gradapprox: np.ndarray) -> float:
    """The seed's eq. (3): ``||grad - gradapprox|| / (||grad|| + ||gradapprox||)``.

    Two all-zero vectors agree exactly: their difference is 0.0 (the seed would print nan).
    NaN or Inf anywhere gives nan, which never passes.
    """
    error = grad - gradapprox
    # sqrt(x @ x) is np.linalg.norm's own formula for 1-D float vectors, at a third of its
    # call overhead (which dominates on the seed's 47 parameters).
    numerator = math.sqrt(error @ error)
    denominator = math.sqrt(grad @ grad) + math.sqrt(gradapprox @ gradapprox)
    if denominator == 0.0:
        return 0.0
    return numerator / denominator


def noise_bound(resolution: np.ndarray, sigma: float, epsilon: float, theta: np.ndarray,
                gradapprox: np.ndarray) -> np.ndarray:
    """Per coordinate, how far a correct gradient may sit from ``gradapprox`` through rounding.

    - ``resolution[i] / (2 epsilon)``: the worst case from the losses the two perturbations
      changed (large where an output saturates);
    - ``SIGMA_FACTOR * sigma / epsilon``: the rest of the rounding of two full forward passes
      (pre-activations, sums), measured by ECnoise (0 for the incremental engine, whose
      changes carry no such noise);
    - the step: the seed divides by 2 epsilon, but the steps really taken are
      ``fl(theta_i +- epsilon) - theta_i``, off by up to an ulp of theta_i each.
    """
    if not np.isfinite(sigma):
        sigma = 0.0
    step = ((theta + epsilon) - theta) - ((theta - epsilon) - theta)
    step_error = np.abs(step - 2.0 * epsilon) / (2.0 * epsilon) * np.abs(gradapprox)
    return resolution / (2.0 * epsilon) + SIGMA_FACTOR * sigma / epsilon + step_error


@dataclass(frozen=True)
class BlockResult:
    """The check restricted to one gradient block (``'dW1'``, ``'db1'``, ...).

    Attributes
    ----------
    name, shape : the gradient key and its shape.
    difference : the seed's eq. (3) over this block alone.
    max_abs_error : ``max |grad - gradapprox|`` over the block.
    n_failing : elements with ``|grad - gradapprox| > threshold * (|grad| + |gradapprox|) + noise``,
        ``noise`` being the coordinate's rounding-noise bound (:func:`noise_bound`).
    n_within_noise : elements that miss the threshold but lie within their noise bound: the
        finite difference is too coarse there to confirm or refute them (saturated outputs).
    n_kinks : elements whose +-epsilon steps move some ReLU across its kink on some sample: the
        central difference there is not a derivative, so they are never counted as failing.
    passed : True when no element fails.
    """

    name: str
    shape: tuple[int, ...]
    difference: float
    max_abs_error: float
    n_failing: int
    n_within_noise: int
    n_kinks: int
    passed: bool

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "difference": self.difference,
            "max_abs_error": self.max_abs_error,
            "n_failing": self.n_failing,
            "n_within_noise": self.n_within_noise,
            "n_kinks": self.n_kinks,
            "passed": self.passed,
        }


@dataclass(frozen=True)
class GradientCheckReport:
    """What :func:`gradcheck_fast.check_gradients` found.

    Attributes
    ----------
    difference : float
        The seed's eq. (3) over all parameters.
    passed : bool
        ``difference <= threshold`` (the seed's criterion; NaN never passes).
    threshold, epsilon : float
        The settings the check ran with.
    cost : float
        J at the unperturbed parameters.
    grad, gradapprox : dict of str to ndarray
        The analytic and the numerical gradient, keyed ``'dW1', 'db1', ...``, shaped like the
        parameters.
    blocks : dict of str to BlockResult
        Per gradient block, in layout order.
    layout : Layout
    engine : str
        The engine that computed the costs: "exact" or "incremental".
    """

    difference: float
    passed: bool
    threshold: float
    epsilon: float
    cost: float
    grad: dict[str, np.ndarray] = field(repr=False)
    gradapprox: dict[str, np.ndarray] = field(repr=False)
    blocks: dict[str, BlockResult] = field(repr=False)
    layout: Layout = field(repr=False)
    engine: str = "exact"

    @property
    def n_params(self) -> int:
        return self.layout.n_params

    @property
    def failed_blocks(self) -> list[str]:
        """Names of the blocks that disagree, in layout order."""
        return [name for name, block in self.blocks.items() if not block.passed]

    def to_dict(self) -> dict:
        """Plain Python types only (JSON-ready); arrays as nested lists."""
        return {
            "difference": self.difference,
            "passed": self.passed,
            "threshold": self.threshold,
            "epsilon": self.epsilon,
            "cost": self.cost,
            "n_params": self.n_params,
            "engine": self.engine,
            "failed_blocks": self.failed_blocks,
            "blocks": {name: block.to_dict() for name, block in self.blocks.items()},
            "grad": {k: v.tolist() for k, v in self.grad.items()},
            "gradapprox": {k: v.tolist() for k, v in self.gradapprox.items()},
        }

    def __str__(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"gradient check {verdict}: difference = {self.difference:.10g} "
            f"(threshold {self.threshold:g}, epsilon {self.epsilon:g}, {self.n_params} parameters)"
        ]
        failed = self.failed_blocks
        if failed:
            lines.append("blocks that disagree: " + ", ".join(failed))
        width = max(5, *(len(name) for name in self.blocks))
        lines.append(f"  {'block':<{width}}  {'shape':<12} {'difference':>12} "
                     f"{'max |error|':>12} {'failing':>8} {'kinks':>6}  verdict")
        for name, b in self.blocks.items():
            shape = "x".join(map(str, b.shape))
            lines.append(
                f"  {name:<{width}}  {shape:<12} {b.difference:>12.3e} {b.max_abs_error:>12.3e} "
                f"{b.n_failing:>8} {b.n_kinks:>6}  {'ok' if b.passed else 'WRONG'}"
            )
        n_noisy = sum(b.n_within_noise for b in self.blocks.values())
        if n_noisy:
            lines.append(
                f"note: {n_noisy} coordinate(s) miss the threshold but lie within the rounding "
                f"noise of the finite difference (e.g. saturated outputs): not verified"
            )
        n_kinks = sum(b.n_kinks for b in self.blocks.values())
        if n_kinks:
            lines.append(
                f"note: the steps of {n_kinks} coordinate(s) cross a ReLU kink, where the central "
                f"difference is no derivative: they are not counted as failing"
            )
        return "\n".join(lines)


def build_report(layout: Layout, theta: np.ndarray, grad: np.ndarray, costs, sigma: float, *,
                 epsilon: float, threshold: float) -> GradientCheckReport:
    """Assemble the report from flat vectors in ``layout`` order and the engine's
    :class:`~gradcheck_fast.engine.Costs`; sigma is J's ECnoise estimate (0 if not needed)."""
    gradapprox = costs.gradapprox
    noise = noise_bound(costs.resolution, sigma, epsilon, theta, gradapprox)
    at_kink = costs.kinks > 0
    error = np.abs(grad - gradapprox)
    relative_allowance = threshold * (np.abs(grad) + np.abs(gradapprox))
    failing = ~(error <= relative_allowance + noise) & ~at_kink  # NaN fails
    # "Not verified": the element misses the threshold and its noise bound is large both next to
    # its own size and on the scale of the whole gradient (so ~0 entries of a healthy gradient,
    # whose relative error is naturally large at epsilon = 1e-7, are not listed).
    magnitude = np.abs(grad) + np.abs(gradapprox)
    scale = float(np.max(magnitude, initial=0.0))
    within_noise = (~failing & (error > relative_allowance) & (noise > 0.01 * magnitude)
                    & (noise > 1e-4 * scale))
    blocks = {}
    for k, (name, shape) in enumerate(zip(layout.grad_names, layout.shapes)):
        s = slice(int(layout.offsets[k]), int(layout.offsets[k + 1]))
        n_failing = int(np.count_nonzero(failing[s]))
        blocks[name] = BlockResult(
            name=name,
            shape=shape,
            difference=relative_difference(grad[s], gradapprox[s]),
            max_abs_error=float(np.max(error[s])),
            n_failing=n_failing,
            n_within_noise=int(np.count_nonzero(within_noise[s])),
            n_kinks=int(np.count_nonzero(at_kink[s])),
            passed=n_failing == 0,
        )
    difference = relative_difference(grad, gradapprox)
    return GradientCheckReport(
        difference=difference,
        passed=bool(difference <= threshold),
        threshold=threshold,
        epsilon=epsilon,
        cost=float(costs.J),
        grad=layout.unpack(grad, prefix="d"),
        gradapprox=layout.unpack(gradapprox, prefix="d"),
        blocks=blocks,
        layout=layout,
        engine=costs.engine,
    )
