"""check_gradients: inputs and options checked, a mode chosen, the engine or the probes run,
the report built."""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from typing import Any

import numpy as np

from . import modes
from ._threads import n_threads_set
from .delta import Prepared
from .engine import Costs, mlp_cost_noise, mlp_costs, prepare_engine
from .models import MLP
from .options import (
    ArrayDict,
    Inputs,
    LowPrecisionWarning,
    Options,
    check_options,
    prepare_inputs,
)
from .planning import plan
from .report import (
    GradientCheckReport,
    build_directional_report,
    build_report,
    noise_bound,
)
from .truncation import SMALLER_STEPS, TRUNCATION_STEP, with_truncation


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
        # The differences' own rounding (ECnoise aside, which run_check measures later).
        noise = tuple(noise_bound(c, 0.0, f * h, theta[c.indices], inputs.m)
                      for c, f in ((first, 1.0), (half, SMALLER_STEPS[0]),
                                   (quarter, SMALLER_STEPS[1])))
        return with_truncation(first, half, quarter, options.atol, options.rtol, noise)
    # Richardson: (4 D(h) - D(2h)) / 3 = (8 (J+h - J-h) - (J+2h - J-2h)) / 12h cancels the
    # h**2 term of the central difference D; what remains is O(h**4).
    second = mlp_costs(layout, theta, X, Y, 2 * h, first.engine, options.progress, indices,
                       model, prepared)
    finite = np.isfinite(second.J_plus) & np.isfinite(second.J_minus)
    return replace(
        first,
        J_plus=np.where(finite, first.J_plus, second.J_plus),
        J_minus=np.where(finite, first.J_minus, second.J_minus),
        gradapprox=(4.0 * first.gradapprox - second.gradapprox) / 3.0,
        # In gradient units the rounding is (4 R1 / 2h + R2 / 4h) / 3 = R / 2h with:
        resolution=(4.0 * first.resolution + 0.5 * second.resolution) / 3.0,
        kinks=first.kinks + second.kinks,
        noise_factor=1.5,
    )


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
    # The exact engine's J+- carry the rounding noise of whole forward passes, which ECnoise
    # measures; the incremental engine's changes carry only their own, bounded in resolution.
    sigma = (mlp_cost_noise(layout, inputs.theta, inputs.X, inputs.Y, inputs.model)
             if costs.engine == "exact" else 0.0)
    return build_report(layout, inputs.theta, inputs.grad, costs, sigma, m=inputs.m,
                        epsilon=options.epsilon, threshold=options.threshold,
                        rtol=options.rtol, atol=options.atol, mode=options.mode,
                        method=options.method, notes=notes)


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


def check_gradients(
    parameters: ArrayDict,
    gradients: ArrayDict,
    X: Any,
    Y: Any,
    *,
    epsilon: float | None = None,
    threshold: float = 2e-7,
    rtol: float | None = None,
    atol: float | None = None,
    mode: str = "full",
    n_per_block: int = 1000,
    n_directions: int = 8,
    seed: int = 0,
    probability: float = 0.999,
    method: str = "central",
    budget_s: float | None = None,
    n_threads: int | None = None,
    engine: str = "auto",
    progress: bool = False,
    model: MLP | None = None,
) -> GradientCheckReport:
    """Check a backward pass of a fully connected network against finite differences.

    By default the network is the seed's, ``LINEAR -> RELU -> ... -> LINEAR -> SIGMOID`` of any
    depth with the cross-entropy cost ``J = 1/m * sum(-log(AL)*Y - log(1-AL)*(1-Y))``;
    ``model=gradcheck_fast.MLP(...)`` chooses other activations, outputs, losses and L2. For
    every parameter
    ``theta_i`` the costs ``J(theta + epsilon e_i)`` and ``J(theta - epsilon e_i)`` are computed in
    parallel by jitted kernels from one unperturbed forward pass, and
    ``gradapprox_i = (J+ - J-) / (2 epsilon)`` is compared with the analytic gradient.

    Parameters
    ----------
    parameters : dict of str to ndarray
        ``W1, b1, ..., WL, bL``; ``Wl`` of shape ``(n_l, n_{l-1})``, ``bl`` of shape ``(n_l, 1)``,
        floating point and finite. Any memory order; never modified. float32 is accepted (see
        *Notes*).
    gradients : dict of str to ndarray
        ``dW1, db1, ..., dWL, dbL`` shaped like the parameters. The intermediates ``dZl``/``dAl``
        the seed's backward pass returns are allowed and ignored.
    X : array_like, shape (n0, m)
        Inputs, one sample per column. Integer or boolean input is converted to float64.
    Y : array_like, shape (nL, m), or (m,) when nL = 1
        Labels (converted to float64 likewise).
    epsilon : float, optional
        The step: 1e-7 (the seed's) for ``method="central"``, ``eps_mach ** (1/5)`` (7.4e-4) for
        ``method="richardson"``.
    threshold : float, default 2e-7
        The seed's threshold on the global difference eq. (3): ``report.seed_passed``.
    rtol, atol : float, optional
        The elementwise criterion ``|analytic - numerical| <= atol + rtol |numerical| + noise``
        (torch's convention plus the element's rounding-noise bound), which decides
        ``report.passed``: 1e-6 and 1e-8 by default, 1e-3 and 1e-5 for float32 input; see
        :mod:`gradcheck_fast.report` for why.
    mode : {"full", "sampled", "directional"}, default "full"
        "full" checks every coordinate. "sampled" checks ``n_per_block`` random coordinates of
        each block (all of a smaller block; ``seed`` fixes them); the report says which and
        scales nothing up. "directional" compares ``v . grad`` with the central difference
        along ``n_directions`` random unit directions per block (2 evaluations each, whatever
        the block's size), and states per block the smallest relative error the probes catch
        with ``probability``.
    n_per_block, n_directions, seed : int
        For the sampled and directional modes.
    probability : float, default 0.999
        Directional mode: the detection probability of ``blocks[k].detectable_error``.
    method : {"central", "richardson"}, default "central"
        "richardson" extrapolates two central differences (steps h and 2h) to an O(h**4)
        error: correct and wrong gradients then lie many orders of magnitude apart.
    budget_s : float, optional
        A time budget in seconds: the most thorough mode that :func:`estimate_cost` expects to
        fit is run (full, else sampled with as many coordinates as fit, else directional with
        as many of the ``n_directions`` probes as fit). The budget covers the work after the
        validation of the inputs, the network's preparation or forward pass included; the
        network is prepared once, for the plan and the engine. The report's ``notes`` say
        what was chosen, the expected time and the set-up (validation and preparation).
    n_threads : int, optional
        Threads for the parallel loop (default: numba's current setting, which is restored
        afterwards). The result is bitwise the same for every thread count.
    engine : {"auto", "exact", "incremental"}, default "auto"
        How J(theta +- epsilon e_i) is computed from the unperturbed forward pass. "exact"
        recomputes what changed with the very operations of a full forward pass (bitwise its
        values: the seed's numbers, rounding noise included); "incremental" carries the change
        itself through the network (the same values up to rounding, with far less rounding in
        J+ - J-, and far faster on large networks). "auto" takes "exact" for tiny checks
        (coordinates x samples <= 2048, the seed's among them) and "incremental" otherwise.
    progress : bool, default False
        Show a tqdm progress bar (needs ``tqdm``: ``pip install 'gradcheck-fast[progress]'``).
        Large checks run in ~100 pieces either way, so Ctrl-C stops them within a piece.
    model : MLP, optional
        The network's activations, output, loss and L2 (:class:`gradcheck_fast.MLP`); default
        the seed's. Y for a softmax output may be integer class labels of shape (m,). Every
        engine and mode handles every model.

    Returns
    -------
    GradientCheckReport
        ``passed`` (elementwise, per block), ``difference`` and ``seed_passed`` (the seed's
        eq. (3) and threshold), ``blocks`` (per-gradient results with a diagnosis of what is
        wrong), ``failed_blocks``, ``worst``, ``kinks``, ``nonfinite``, ``gradapprox`` (dict);
        ``print(report)`` shows a table, ``report.raise_if_failed()`` raises with it.

    Raises
    ------
    TypeError
        A non-mapping ``parameters``/``gradients``, non-numeric or integer parameter or gradient
        arrays, non-numeric X/Y, or an option of the wrong type.
    ValueError
        Missing or unexpected keys, inconsistent shapes, NaN/Inf in X, Y or the parameters, an
        option out of range.

    Warns
    -----
    LowPrecisionWarning
        Parameters or gradients in float32/float16.

    Notes
    -----
    float32: the forward passes of the check always run in float64 — in float32 a step of 1e-7
    is below the resolution of J (ulp(J)/epsilon ~ 1) — on the float32 values converted
    exactly; the analytic gradient is compared as given, with tolerances for a float32
    backward pass (``RTOL_FLOAT32``, ``ATOL_FLOAT32``) unless rtol/atol are passed.

    Examples
    --------
    >>> from gradcheck_fast import check_gradients, reference
    >>> X, Y, parameters = reference.seed_case()
    >>> cost, cache = reference.forward_propagation_n(X, Y, parameters)
    >>> gradients = reference.backward_propagation_n_faulty(X, Y, cache)
    >>> report = check_gradients(parameters, gradients, X, Y)
    >>> report.passed, round(report.difference, 8)
    (False, 0.28509316)
    >>> report.failed_blocks
    ['dW2', 'db1']
    >>> report.blocks["dW2"].diagnosis
    'dW2 ≈ 2.00 × numerical'
    """
    started = time.perf_counter()
    inputs = prepare_inputs(parameters, gradients, X, Y, model)
    options = check_options(epsilon=epsilon, threshold=threshold, rtol=rtol, atol=atol,
                            mode=mode, n_per_block=n_per_block, n_directions=n_directions,
                            seed=seed, probability=probability, method=method, engine=engine,
                            progress=progress, n_threads=n_threads, budget_s=budget_s,
                            low_precision=bool(inputs.low_precision))
    return run_check(inputs, options, low_precision_note(inputs, options), started)


def assert_gradients_close(
    parameters: ArrayDict,
    gradients: ArrayDict,
    X: Any,
    Y: Any,
    **options: Any,
) -> GradientCheckReport:
    """For test suites: raise ``AssertionError`` (the report's table) unless the check passes.

    Takes the arguments of :func:`check_gradients` and returns its report when it passes.

    Examples
    --------
    >>> from gradcheck_fast import assert_gradients_close, reference
    >>> X, Y, parameters = reference.seed_case()
    >>> cost, cache = reference.forward_propagation_n(X, Y, parameters)
    >>> _ = assert_gradients_close(parameters, reference.backward_propagation_n(X, Y, cache), X, Y)
    >>> faulty = reference.backward_propagation_n_faulty(X, Y, cache)
    >>> try:
    ...     assert_gradients_close(parameters, faulty, X, Y)
    ... except AssertionError as error:
    ...     print(str(error).splitlines()[0])
    gradient check FAILED: 2 of 6 blocks disagree with the numerical gradient (dW2, db1)
    """
    report = check_gradients(parameters, gradients, X, Y, **options)
    report.raise_if_failed()
    return report

