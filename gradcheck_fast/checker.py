"""The check of the built-in network: the numerical gradient by the engine (or the directional
probes), the report built. The entry points (:mod:`gradcheck_fast.api`) validate the inputs and
options and call :func:`run_check`."""

from __future__ import annotations

import time
import warnings

import numpy as np

from . import modes
from ._threads import n_threads_set
from .engines import Costs, mlp_costs, prepare_engine
from .engines.incremental import Prepared
from .options import Inputs, LowPrecisionWarning, Options
from .planning import plan
from .report import (
    GradientCheckReport,
    build_directional_report,
    build_report,
)
from .truncation import (
    RICHARDSON_FACTOR,
    SMALLER_STEPS,
    TRUNCATION_STEP,
    richardson,
    with_truncation,
)


# ---------------------------------------------------------------------------------------------
# The numerical gradient
# ---------------------------------------------------------------------------------------------
def numerical_gradient(inputs: Inputs, options: Options,
                       indices: np.ndarray | None = None, truncation: bool = True,
                       prepared: Prepared | None = None) -> Costs:
    """The engine's costs for the coordinates ``indices`` (default all), by the seed's central
    difference or by Richardson extrapolation of two of them.

    A central difference with a step above ``TRUNCATION_STEP`` also gets a bound on its
    truncation error from the central differences at h/2 and h/4
    (:func:`gradcheck_fast.truncation.truncation_bound`; infinite where the series at h is not
    in its asymptotic regime), which the report adds to each coordinate's noise bound: a large
    step then makes elements unverified, never wrong.

    ``prepared``: the incremental engine's state for ``options.engine`` (from
    :func:`gradcheck_fast.planning.plan`), if the caller has it; prepared here otherwise.
    """
    layout, theta, X, Y = inputs.layout, inputs.theta, inputs.X, inputs.Y
    h = options.epsilon
    model = inputs.model
    engine = options.engine
    if prepared is None:
        # Prepared once for every step below: the state does not depend on the step.
        engine, prepared = prepare_engine(layout, theta, X, Y, engine, model)
    first = mlp_costs(layout, theta, X, Y, h, engine, options.progress, indices, model,
                      prepared)
    if options.method == "central":
        if not truncation or h <= TRUNCATION_STEP:
            return first
        half, quarter = (mlp_costs(layout, theta, X, Y, f * h, first.engine, options.progress,
                                   indices, model, prepared) for f in SMALLER_STEPS)
        return with_truncation(first, half, quarter, options.atol, options.rtol)
    second = mlp_costs(layout, theta, X, Y, RICHARDSON_FACTOR * h, first.engine,
                       options.progress, indices, model, prepared)
    return richardson(first, second)


def run_check(inputs: Inputs, options: Options, notes: tuple[str, ...] = (),
              started: float | None = None) -> GradientCheckReport:
    """Run the check ``options`` describe on ``inputs`` and build its report (``started``: the
    ``time.perf_counter()`` at which the call began, so that a budget counts the validation)."""
    layout = inputs.layout
    prepared = None
    if options.budget_s is not None:
        spent = None if started is None else time.perf_counter() - started
        with n_threads_set(options.n_threads):  # a preparation runs as the engine's would
            options, note, prepared = plan(inputs, options, spent)
        notes = notes + (note,)
    if options.mode == "directional" and options.method != "central":
        raise ValueError("method='richardson' applies to mode='full' and mode='sampled'; the "
                         "directional probes use the central difference (their steps are "
                         "formed exactly, so epsilon=1e-7 leaves no truncation to remove)")
    with n_threads_set(options.n_threads):
        if options.mode == "directional":
            cost, probes = modes.directional_probes(layout, inputs.theta, inputs.grad, inputs.X,
                                                    inputs.Y, options.epsilon,
                                                    options.n_directions, options.seed,
                                                    inputs.model,
                                                    options.epsilon > TRUNCATION_STEP,
                                                    atol=options.atol, rtol=options.rtol)
            return build_directional_report(
                layout, inputs.grad, probes, cost=cost, epsilon=options.epsilon,
                threshold=options.threshold, rtol=options.rtol, atol=options.atol,
                probability=options.probability, notes=notes)
        indices = None
        if options.mode == "sampled":
            indices = modes.sample_indices(layout, options.n_per_block, options.seed)
        costs = numerical_gradient(inputs, options, indices, prepared=prepared)
    return build_report(layout, inputs.theta, inputs.grad, costs, epsilon=options.epsilon,
                        threshold=options.threshold, rtol=options.rtol, atol=options.atol,
                        mode=options.mode, method=options.method, notes=notes)


def low_precision_note(inputs: Inputs, options: Options) -> tuple[str, ...]:
    """Warn (LowPrecisionWarning) about float32/float16 inputs; the note for the report."""
    if not inputs.low_precision:
        return ()
    keys = ", ".join(inputs.low_precision[:4]) + (", ..." if len(inputs.low_precision) > 4
                                                   else "")
    note = (f"{keys} in float32/float16: the check's forward passes run in float64 (in float32 "
            f"a step of {options.epsilon:g} would drown in rounding: ulp(J) / epsilon ~ 1), and "
            f"the elementwise tolerance is rtol={options.rtol:g}, atol={options.atol:g} to allow "
            f"for a float32 backward pass")
    warnings.warn(note, LowPrecisionWarning, stacklevel=3)
    return (note,)

