"""The check of the built-in network: the numerical gradient by the engine (or the directional
probes), the report built. The entry points (:mod:`gradcheck_fast.api`) validate the inputs and
options and call :func:`run_check`."""

from __future__ import annotations

import dataclasses
import time
import warnings

import numpy as np

from . import modes
from ._threads import n_threads_set, num_threads
from .distributed import Pool, merge_costs, run_sharded, runs_locally, shards_of
from .engines import Costs, all_indices, mlp_costs, prepare_engine
from .engines.incremental import Prepared
from .models import HIDDEN
from .options import Inputs, LowPrecisionWarning, Options
from .planning import coordinate_setup, estimate, plan, thread_speed
from .report import (
    GradientCheckReport,
    Hints,
    build_directional_report,
    build_report,
)
from .rows import engine_indices, user_costs
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
              started: float | None = None, pool: Pool | None = None) -> GradientCheckReport:
    """Run the check ``options`` describe on ``inputs`` and build its report (``started``: the
    ``time.perf_counter()`` at which the call began, so that a budget counts the validation;
    ``pool``: the executor that runs the coordinates' shards, :mod:`gradcheck_fast.distributed`,
    or None)."""
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
    report = _run(inputs, options, notes, prepared, pool)
    if len(report.failed_blocks) == len(layout.grad_names) > 1:
        report = dataclasses.replace(report, notes=report.notes + (model_hint(inputs,
                                                                              options),))
    return report


#: Directional probes per block of the checks that try other hidden activations when every
#: block is wrong (:func:`model_hint`): they need each model's forward pass only, where a
#: sampled check needed the incremental engine's whole set-up for every activation tried (the
#: failing mnist-size tanh check: 69 ms with those, 47 ms with 2 probes, 38 ms with 1). One
#: random direction per block tells a gradient from another activation's: a different
#: gradient passes a probe only if the direction is nearly orthogonal to the difference.
HINT_PROBES = 1


def model_hint(inputs: Inputs, options: Options) -> str:
    """The note for a check whose every block is wrong: which other hidden activations the
    gradients match (:data:`HINT_PROBES` directional probes per block pass with them, central
    differences at the check's epsilon), else what else to suspect. A network checked with
    the wrong ``model=`` fails everywhere; so does a mistake at the output, which backprop
    carries to every block."""
    current = inputs.model.hidden_for(inputs.layout.n_layers)
    probes = dataclasses.replace(options, mode="directional", n_directions=HINT_PROBES,
                                 method="central", seed=0, budget_s=None, progress=False)
    matches = []
    for name in HIDDEN:
        if (name,) * len(current) == current:
            continue
        model = dataclasses.replace(inputs.model, hidden=name)
        if _run(dataclasses.replace(inputs, model=model), probes, (), None).passed:
            matches.append(name)
    if matches:
        names = " or ".join(repr(name) for name in matches)
        probes_pass = ("a directional probe per block passes" if HINT_PROBES == 1
                       else f"{HINT_PROBES} directional probes per block pass")
        return (f"every block is wrong, but the gradients match hidden={names} "
                f"({probes_pass}): a "
                f"{matches[0]} network checked as {'/'.join(sorted(set(current)))}? Pass "
                f"model=MLP(hidden={matches[0]!r}, ...)")
    return ("every block is wrong: does model= match the backward pass (the hidden "
            "activations, the output and its loss, L2)? Otherwise the mistake comes early in "
            "backprop (at the output), which carries it to every block")


def _run(inputs: Inputs, options: Options, notes: tuple[str, ...],
         prepared: Prepared | None, pool: Pool | None = None) -> GradientCheckReport:
    """The check ``options`` describe (mode and engine resolved) and its report, in the
    user's layout (a network written with samples in rows: :mod:`gradcheck_fast.rows`)."""
    layout = inputs.layout
    shown, theta, grad = _user_layout(inputs)
    with n_threads_set(options.n_threads):
        if options.mode == "directional":
            cost, probes = modes.directional_probes(layout, inputs.theta, inputs.grad, inputs.X,
                                                    inputs.Y, options.epsilon,
                                                    options.n_directions, options.seed,
                                                    inputs.model,
                                                    options.epsilon > TRUNCATION_STEP,
                                                    atol=options.atol, rtol=options.rtol)
            if pool is not None:
                notes = notes + ("executor: the directional probes (a few BLAS products per "
                                 "block) ran locally",)
            return build_directional_report(
                shown, grad, probes, cost=cost, epsilon=options.epsilon,
                threshold=options.threshold, rtol=options.rtol, atol=options.atol,
                probability=options.probability, notes=notes, hints=mlp_hints(inputs))
        indices = None
        if options.mode == "sampled":
            # Drawn in the user's layout: the same seed picks the same elements of the user's
            # arrays whichever way the network is written.
            indices = modes.sample_indices(shown, options.n_per_block, options.seed)
            if inputs.rows is not None:
                indices = engine_indices(indices, inputs.rows)
        if pool is None:
            costs = numerical_gradient(inputs, options, indices, prepared=prepared)
        else:
            costs, note = sharded_gradient(inputs, options, indices, prepared, pool)
            notes = notes + (note,)
    if inputs.rows is not None:
        costs = user_costs(costs, inputs.rows)
    return build_report(shown, theta, grad, costs, epsilon=options.epsilon,
                        threshold=options.threshold, rtol=options.rtol, atol=options.atol,
                        mode=options.mode, method=options.method, notes=notes,
                        hints=mlp_hints(inputs))


def sharded_gradient(inputs: Inputs, options: Options, indices: np.ndarray | None,
                     prepared: Prepared | None, pool: Pool) -> tuple[Costs, str]:
    """:func:`numerical_gradient` with the coordinates cut into shards run on ``pool``'s
    workers (:mod:`gradcheck_fast.distributed`), merged by index: bitwise the local values.
    A check the time model expects to take under a second here runs locally."""
    if indices is None:
        indices = all_indices(inputs.layout.n_params)
    one_thread = dataclasses.replace(options, n_threads=1)
    expected = estimate(inputs, one_thread,
                        coordinate_setup(inputs, one_thread, prepare=False))[options.mode]
    local = runs_locally(expected.seconds / _local_speed(options))
    if local is not None:
        return numerical_gradient(inputs, options, indices, prepared=prepared), local
    per_index = (expected.seconds - expected.setup) / max(1, indices.size)
    shards = shards_of(indices, per_index, pool.workers)
    work = NetworkShards(inputs, dataclasses.replace(options, progress=False, budget_s=None,
                                                     n_threads=None))
    run = run_sharded(pool, work, shards, (), options.progress, "the network's data")
    return merge_costs(run.results), run.note()


@dataclasses.dataclass
class NetworkShards:
    """The built-in network's check as the work of a shard (:mod:`gradcheck_fast.distributed`):
    sent once to each worker process and prepared there (the engine's forward pass), then
    :func:`numerical_gradient` of any coordinates, as the local check computes them."""

    inputs: Inputs
    options: Options
    prepared: Prepared | None = None

    def prepare(self) -> NetworkShards:
        engine, prepared = prepare_engine(self.inputs.layout, self.inputs.theta, self.inputs.X,
                                          self.inputs.Y, self.options.engine, self.inputs.model)
        return dataclasses.replace(self, options=dataclasses.replace(self.options,
                                                                     engine=engine),
                                   prepared=prepared)

    def run(self, indices: np.ndarray) -> Costs:
        costs = numerical_gradient(self.inputs, self.options, indices, prepared=self.prepared)
        return dataclasses.replace(costs, noise_source=costs.noise)  # a bound function does
        # not travel back


def _local_speed(options: Options) -> float:
    """How many times faster than one thread the caller's threads run a check."""
    return thread_speed(options.n_threads or num_threads())


def _user_layout(inputs: Inputs):
    """The layout, theta and gradient as the user wrote them (samples in rows: the user's
    blocks and flat order; else the engines' own)."""
    if inputs.rows is None:
        return inputs.layout, inputs.theta, inputs.grad
    to_engine = inputs.rows.to_engine
    return inputs.rows.layout, inputs.theta[to_engine], inputs.grad[to_engine]


def mlp_hints(inputs: Inputs) -> Hints:
    """What names a wrong block of the built-in network: m (a missing or extra 1/m), the L2
    term's weight in each ``dWl``, and the layers (backprop runs from L down)."""
    layout, m = inputs.layout, inputs.m
    l2 = inputs.model.l2_gradient(m)
    return Hints(factors=((float(m), "m"),),
                 l2={f"dW{l}": l2 for l in range(1, layout.n_layers + 1)} if l2 > 0 else {},
                 layers={name: int(name[2:]) for name in layout.grad_names})


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

