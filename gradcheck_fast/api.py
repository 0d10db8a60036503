"""Every public entry point: each validates its inputs, resolves its options and calls the room
that does the work (checker, planning, sweep, custom; the seed's helpers through Layout).

Data flows one way: this module imports the rooms, and no room imports it (only the package's
``__init__`` and ``__main__`` do).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from . import _memory, reference
from ._console import coloured
from ._threads import n_threads_set
from .checker import low_precision_note, numerical_gradient, run_check
from .custom import estimate_cost_check, run_cost_check
from .distributed import executor_pool, spread_estimate
from .engines.blackbox import is_njit
from .layers import (
    check_dout,
    draw_dout,
    gradients_dict,
    inputs_dict,
    njit_vjp_cost,
    outputs,
    split_forward,
    vjp_cost,
)
from .layout import SEED_LAYOUT, Layout, is_shape_dict
from .models import MLP
from .options import (
    DEFAULTS,
    ArrayDict,
    check_options,
    prepare_inputs,
    seed_options,
)
from .parameters import DictCost, flatten, pack_grads, params_layout, restoring
from .planning import CostEstimate, estimate
from .reference import backward_propagation_n, forward_propagation_n
from .report import (
    NO_HINTS,
    GradientCheckReport,
    Hints,
    layer_numbers,
    relative_difference,
    shape_factors,
)
from .sweep import DEFAULT_STEPS, SweepReport, check_steps, run_sweep
from .validation import (
    check_count,
    check_epsilon,
    check_flag,
    data_array,
    float_parameter_array,
    mlp_layout,
    mlp_layout_of_gradients,
    pack_gradients,
)

__all__ = [
    "check_gradients",
    "assert_gradients_close",
    "estimate_cost",
    "step_sweep",
    "gradient_check",
    "gradient_check_n",
    "check",
    "check_layer",
    "dictionary_to_vector",
    "vector_to_dictionary",
    "gradients_to_vector",
    "release_memory",
    # The seed's forward and backward passes: defined, as the baseline, in reference.
    "forward_propagation_n",
    "backward_propagation_n",
]


# ---------------------------------------------------------------------------------------------
# The built-in network: the check, its assertion, its cost, the step sweep
# ---------------------------------------------------------------------------------------------
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
    executor: Any = None,
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
        Show a tqdm progress bar (needs ``tqdm``: ``pip install 'gradcheck-fast[progress]'``):
        redrawn in place on a terminal, one output updated in place in a notebook (no
        ipywidgets needed), a line every 10 s in a pipe or a log file. Large checks run in
        ~100 pieces either way, so Ctrl-C stops them within a piece.
    model : MLP, optional
        The network's activations, output, loss and L2 (:class:`gradcheck_fast.MLP`); default
        the seed's. Y for a softmax output may be integer class labels of shape (m,). Every
        engine and mode handles every model.
    executor : dask.distributed.Client or concurrent.futures.Executor, optional
        Run the full or sampled check's coordinates in shards on the executor's workers
        (:mod:`gradcheck_fast.distributed`): the data is sent once per worker, each shard runs
        the local engine, and the report is bitwise the local one's. A check expected to take
        under a second here runs locally (the report's notes say so), as do directional
        probes. Install with ``pip install 'gradcheck-fast[dask]'`` for a dask cluster.

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
    'dW2 ≈ 2.00 × numerical: an extra factor 2?'
    """
    started = time.perf_counter()
    inputs = prepare_inputs(parameters, gradients, X, Y, model)
    options = check_options(epsilon=epsilon, threshold=threshold, rtol=rtol, atol=atol,
                            mode=mode, n_per_block=n_per_block, n_directions=n_directions,
                            seed=seed, probability=probability, method=method, engine=engine,
                            progress=progress, n_threads=n_threads, budget_s=budget_s,
                            low_precision=bool(inputs.low_precision))
    return run_check(inputs, options, low_precision_note(inputs, options), started,
                     executor_pool(executor))


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


def estimate_cost(*arguments: Any, **options: Any) -> CostEstimate:
    """The expected cost of a check in each mode, before running it.

    Takes the arguments of the check to estimate, in one of three forms:

    - ``estimate_cost(parameters, gradients, X, Y, **options)``: :func:`check_gradients`
      (the built-in network);
    - ``estimate_cost(cost, theta, grad=None, args=(), **options)``: :func:`check` (a
      user's cost, flat or a dict of parameters, ``in_place`` included);
    - ``estimate_cost(forward, backward, inputs, **options)``: :func:`check_layer`.

    The mode is ignored: every mode is estimated. Returns the number of cost evaluations and
    the expected seconds of the ``"full"``, ``"sampled"`` and ``"directional"`` modes, each
    with its ``setup`` (the part spent before the first coordinate or probe); ``print`` shows
    a table. For the built-in network the set-up is validation and the engine's preparation
    or the forward pass (a deep network is prepared here and the preparation timed, as the
    explicit path's share depends on the data). For a user's cost the model is "evaluations
    x one evaluation's measured time / threads": the cost is evaluated (and an njit cost
    compiled) here; the threads are the parallel loop's for an njit cost, one for a Python
    cost and for the directional probes.

    Examples
    --------
    >>> from gradcheck_fast import estimate_cost
    >>> from gradcheck_fast.networks import random_mlp
    >>> X, Y, parameters, gradients = random_mlp((1000, 500, 1), m=32)
    >>> cost = estimate_cost(parameters, gradients, X, Y, n_per_block=100)
    >>> cost.full.evaluations, cost.sampled.coordinates, cost.directional.evaluations
    (1002002, 301, 64)
    >>> cost.directional.seconds < cost.full.seconds
    True

    A user's cost (here a Python function of a dict of parameters):

    >>> import numpy as np
    >>> params = {"w": np.ones((30, 20)), "b": np.zeros(20)}
    >>> def loss(p):
    ...     return float(np.sum(np.tanh(p["w"]) ** 2) + p["b"] @ p["b"])
    >>> cost = estimate_cost(loss, params, n_per_block=10)
    >>> cost.full.evaluations, cost.sampled.evaluations, cost.directional.evaluations
    (1240, 40, 32)
    >>> cost.full.seconds > cost.sampled.seconds
    True
    """
    if arguments and callable(arguments[0]):
        if len(arguments) > 1 and callable(arguments[1]):
            return _estimate_layer(*arguments, **options)
        return _estimate_check(*arguments, **options)
    return _estimate_network(*arguments, **options)


def _estimate_network(parameters: ArrayDict, gradients: ArrayDict, X: Any, Y: Any, *,
                      model: MLP | None = None, executor: Any = None,
                      **options: Any) -> CostEstimate:
    """:func:`estimate_cost` of :func:`check_gradients`."""
    inputs = prepare_inputs(parameters, gradients, X, Y, model)
    resolved = check_options(low_precision=bool(inputs.low_precision),
                             **_known_options(options, DEFAULTS))
    pool = executor_pool(executor)
    if pool is None:
        return estimate(inputs, resolved)
    return spread_estimate(estimate(inputs, dataclasses.replace(resolved, n_threads=1)),
                           pool.workers)


def _known_options(options: dict, defaults: Mapping) -> dict:
    """``defaults`` updated with ``options``, refused by name if one is not an option."""
    unknown = set(options) - set(defaults)
    if unknown:
        raise TypeError(f"estimate_cost() got an unexpected keyword argument "
                        f"{sorted(unknown)[0]!r}")
    return {**defaults, **options}


#: The options of check and check_layer that estimate_cost takes (the rest are the check's
#: arguments).
_COST_OPTIONS = ("epsilon", "threshold", "rtol", "atol", "mode", "n_per_block",
                 "n_directions", "seed", "method", "budget_s", "n_threads", "progress")


def _estimate_check(cost, theta, grad=None, args=(), *, in_place=False, layout=None,
                    executor=None, **options: Any) -> CostEstimate:
    """:func:`estimate_cost` of :func:`check`."""
    problem = _cost_problem(cost, theta, grad, args, in_place, layout, need_grad=False)
    return _estimate_problem(problem, options, executor)


def _estimate_layer(forward, backward, inputs, *, dout=None, seed=0, args=(), executor=None,
                    **options: Any) -> CostEstimate:
    """:func:`estimate_cost` of :func:`check_layer`."""
    problem = _layer_problem(forward, backward, inputs, dout, seed, args)
    return _estimate_problem(problem, {**options, "seed": seed}, executor)


def _estimate_problem(problem: _CostProblem, options: dict, executor) -> CostEstimate:
    settings = _known_options(options, {name: DEFAULTS[name] for name in _COST_OPTIONS})
    pool = executor_pool(executor)
    with problem.guard:
        return estimate_cost_check(problem.cost, problem.theta, problem.args,
                                   problem.layout, _cost_options(problem, settings),
                                   None if pool is None else pool.workers)


def step_sweep(
    parameters: ArrayDict,
    gradients: ArrayDict,
    X: Any,
    Y: Any,
    *,
    steps: Sequence[float] = DEFAULT_STEPS,
    threshold: float = 2e-7,
    engine: str = "exact",
    n_threads: int | None = None,
    model: MLP | None = None,
) -> SweepReport:
    """The seed's check at every step in ``steps``, and a verdict on what the curve shows.

    For a correct gradient the difference falls like epsilon² while truncation dominates,
    then rises like 1/epsilon once rounding does (with the seed's arithmetic): it dips below
    the threshold somewhere, and the bottom is the step to use. For a wrong gradient it stays
    high at every step. The default ``engine="exact"`` shows the seed's own rounding; the
    incremental engine has far less of it, so its curve flattens instead of rising.

    Parameters
    ----------
    parameters, gradients, X, Y : as for :func:`gradcheck_fast.check_gradients`.
    steps : sequence of float, default 1e-2 ... 1e-10
    threshold : float, default 2e-7
    engine : {"exact", "incremental", "auto"}, default "exact"
    n_threads : int, optional
    model : MLP, optional

    Returns
    -------
    SweepReport
        ``rows``, ``verdict`` ("fine", "wrong" or "inconclusive"), ``best_epsilon``;
        ``print`` shows a table.

    Examples
    --------
    >>> from gradcheck_fast import reference, step_sweep
    >>> X, Y, parameters = reference.seed_case()
    >>> _, cache = reference.forward_propagation_n(X, Y, parameters)
    >>> step_sweep(parameters, reference.backward_propagation_n(X, Y, cache), X, Y).verdict
    'fine'
    >>> step_sweep(parameters, reference.backward_propagation_n_faulty(X, Y, cache), X, Y).verdict
    'wrong'
    """
    inputs = prepare_inputs(parameters, gradients, X, Y, model)
    steps = check_steps(steps)
    base = check_options(**{**DEFAULTS, "epsilon": steps[0], "threshold": threshold,
                            "engine": engine, "n_threads": n_threads},
                         low_precision=bool(inputs.low_precision))
    low_precision_note(inputs, base)
    return run_sweep(inputs, base, steps)


# ---------------------------------------------------------------------------------------------
# The seed's checks, fast
# ---------------------------------------------------------------------------------------------
def gradient_check_n(
    parameters: ArrayDict,
    gradients: ArrayDict,
    X: Any,
    Y: Any,
    epsilon: float = 1e-7,
    *,
    verbose: bool = True,
    n_threads: int | None = None,
    engine: str = "auto",
    progress: bool = False,
    model: MLP | None = None,
) -> float:
    """The seed's ``gradient_check_n``, fast: returns eq. (3)'s difference and prints the verdict.

    Same arguments, checks and engine as :func:`check_gradients`. Prints the seed's message
    (threshold 2e-7 on the difference) unless ``verbose=False``; when that fails, the report's
    table follows the message. NaN never counts as a pass (the seed would call it fine).

    Examples
    --------
    >>> from gradcheck_fast import gradient_check_n, reference
    >>> X, Y, parameters = reference.seed_case()
    >>> cost, cache = reference.forward_propagation_n(X, Y, parameters)
    >>> gradients = reference.backward_propagation_n(X, Y, cache)
    >>> difference = gradient_check_n(parameters, gradients, X, Y, verbose=False)
    >>> difference < 2e-7
    True
    """
    inputs = prepare_inputs(parameters, gradients, X, Y, model)
    options = seed_options(epsilon=epsilon, engine=engine, progress=progress,
                           n_threads=n_threads, low_precision=bool(inputs.low_precision))
    if inputs.low_precision:
        low_precision_note(inputs, options)
    with n_threads_set(options.n_threads):
        costs = numerical_gradient(inputs, options, truncation=False)
    difference = relative_difference(inputs.grad, costs.gradapprox, inputs.layout.bounds)
    if verbose:
        if difference <= 2e-7:
            print(coloured(reference.SUCCESS_MESSAGE.format(difference)))
        else:
            print(coloured(reference.MISTAKE_MESSAGE.format(difference)))
            print(run_check(inputs, options))
    return difference


def gradient_check(x: Any, theta: Any, epsilon: float = 1e-7, *, verbose: bool = True) -> float:
    """The seed's 1-D check of ``J(theta) = theta * x``, eq. (2); prints the verdict (1e-7).

    ``x`` and ``theta`` may be scalars or arrays of the same shape (checked elementwise).

    Examples
    --------
    >>> from gradcheck_fast import gradient_check
    >>> gradient_check(2, 4)
    The gradient is correct!
    2.919335883291695e-10
    """
    epsilon = check_epsilon(epsilon)
    x = data_array(x, "x")
    theta = data_array(theta, "theta")
    if x.shape != theta.shape:
        raise ValueError(f"x and theta must have the same shape; got {x.shape} and {theta.shape}")
    with np.errstate(invalid="ignore", over="ignore"):
        difference = float(reference.gradient_check(x, theta, epsilon, verbose=False))
    if math.isnan(difference) and np.all(x == 0):
        # 0/0: the derivative x and its estimate are both exactly 0 and agree (as eq. (3) is
        # taken for two zero vectors in gradient_check_n).
        difference = 0.0
    if verbose:
        print("The gradient is correct!" if difference < 1e-7 else "The gradient is wrong!")
    return difference


# ---------------------------------------------------------------------------------------------
# Any cost: the black-box engine
# ---------------------------------------------------------------------------------------------
def check(
    cost: Callable[..., float],
    theta: Any,
    grad: Any = None,
    args: tuple = (),
    *,
    in_place: bool = False,
    layout: Layout | Mapping | None = None,
    mode: str = "full",
    n_per_block: int = 1000,
    n_directions: int = 8,
    seed: int = 0,
    epsilon: float | None = None,
    threshold: float = 2e-7,
    rtol: float | None = None,
    atol: float | None = None,
    method: str = "central",
    budget_s: float | None = None,
    n_threads: int | None = None,
    progress: bool = False,
    executor: Any = None,
) -> GradientCheckReport:
    """Check the gradient ``grad`` of any cost ``cost(theta, *args) -> float`` at ``theta``.

    ``cost`` is best a ``@numba.njit`` function of a flat float64 vector: the central
    differences ``(cost(theta + eps e_i) - cost(theta - eps e_i)) / 2 eps`` are then evaluated
    for all i in a parallel loop, each thread perturbing and restoring its own copy of theta.
    Compiling the cost and that loop takes a few seconds, once per cost function and process.
    A plain Python callable works too, one evaluation at a time (the report says so).

    With ``epsilon`` above 1e-5 the central differences at epsilon/2 and epsilon/4 are taken
    too (4 evaluations per coordinate): they bound the truncation error, or leave the element
    unverified where no bound holds. An element that still fails is looked at once more (the
    costs at smaller steps along it): when the cost has a kink within its step (a ReLU, abs,
    max) that explains the disagreement, it is reported as a kink (``report.kinks``); where a
    kink might explain it (several kinks, or one hidden in rounding) it is unverified; else it
    is wrong.

    Parameters may also come as a dict of arrays of any names and shapes (``{'W1': (D, H),
    'b1': (H,), ...}``, the course convention): the cost is then called with a dict of arrays
    (views into a private copy, the caller's arrays untouched) and ``grad`` is a dict keyed
    like the parameters or with a ``d`` prefix. An ``@numba.njit`` cost is called with the
    flat vector instead (the dict's arrays one after the other, each in C order), in
    parallel; the report's blocks still carry the dict's names. With ``in_place=True`` the
    check perturbs the caller's own arrays, one element at a time, and calls ``cost()`` with
    no parameters argument (``lambda: net.loss(X, y)``); every array is put back to its exact
    bits afterwards, also when the cost raises or Ctrl-C interrupts. A cost may return
    ``(loss, grads)``: with ``grad=None`` the gradient is the one it returns at the given point.

    Parameters
    ----------
    cost : callable
        ``cost(theta, *args) -> float``; must not modify theta. With a dict of parameters,
        ``cost(params, *args)``, or ``cost(*args)`` in place; a scalar or ``(loss, grads)``.
    theta, grad : array_like of float, shape (P,) or (P, 1), or dicts of arrays
        The point and the gradient to check (theta finite; NaN in grad is reported). ``grad``
        None: the gradient the cost returns with its loss at theta.
    args : tuple
        Further arguments of ``cost`` (data arrays, sizes, ...).
    in_place : bool
        A dict's arrays are perturbed where they are (float64 NumPy arrays, writable), for a
        cost that reads them itself (a method of the model that holds them).
    mode, n_per_block, n_directions, seed
        ``"full"`` (every coordinate), ``"sampled"`` (``n_per_block`` coordinates of each
        block, all of a smaller one) or ``"directional"`` (``n_directions`` unit directions
        per block, two evaluations each whatever the block's size, compared with the gradient
        along the steps really taken), drawn with ``seed``, as for
        :func:`gradcheck_fast.check_gradients`.
    layout : Layout or dict of arrays, optional
        Names the blocks of theta (a dict is read for its keys and shapes, in order): the
        report then has a row per block (``'dW1'`` for ``'W1'``); default one block, 'theta'.
    epsilon, threshold, rtol, atol, method, n_threads, progress
        As for :func:`gradcheck_fast.check_gradients` (``method="richardson"``: two central
        differences, at epsilon and 2 epsilon, extrapolated).
    budget_s : float, optional
        A time budget in seconds: the most thorough mode expected to fit runs (full, else
        sampled with as many coordinates per block as fit, else directional), by the time
        model "evaluations x one evaluation's measured time / threads" of
        :func:`estimate_cost`; the report's ``notes`` say what was chosen and why.
    executor : dask.distributed.Client or concurrent.futures.Executor, optional
        As for :func:`check_gradients`: the evaluations in shards on the executor's workers.
        The cost and its arguments must pickle: a cost defined in an importable module
        travels by reference; one defined in ``__main__`` or a notebook by value
        (cloudpickle, which ``gradcheck-fast[dask]`` brings). An njit cost is compiled once
        per worker process.

    Returns
    -------
    GradientCheckReport
        The same report as for the built-in network, ``engine`` being "numba" or "python".

    Raises
    ------
    TypeError
        ``cost`` not callable, failing to compile, or returning a non-scalar; arrays of the
        wrong type.
    ValueError
        A non-finite cost at theta, theta with NaN/Inf, grad of another size.

    Examples
    --------
    >>> import numba, numpy as np
    >>> @numba.njit
    ... def cost(theta, A, y):          # least squares: 1/2 ||A theta - y||^2
    ...     r = (A * theta).sum(axis=1) - y
    ...     return 0.5 * np.sum(r * r)
    >>> A = np.arange(6.0).reshape(3, 2); y = np.ones(3); theta = np.array([0.5, -1.0])
    >>> grad = A.T @ (A @ theta - y)    # the gradient worked out by hand
    >>> check(cost, theta, grad, (A, y)).passed
    True
    >>> check(cost, theta, 2 * grad, (A, y)).blocks["dtheta"].diagnosis
    'dtheta ≈ 2.00 × numerical: an extra factor 2?'

    A model that holds its parameters in a dict, with a ``loss`` method returning the loss
    and its gradients, checked in place in one call:

    >>> class Linear:
    ...     def __init__(self):
    ...         self.params = {"w": np.array([[0.5], [-1.0]]), "b": np.array([0.1])}
    ...     def loss(self, X, y):
    ...         r = X @ self.params["w"][:, 0] + self.params["b"][0] - y
    ...         return 0.5 * r @ r, {"w": (X.T @ r)[:, None], "b": np.array([r.sum()])}
    >>> model = Linear()
    >>> check(lambda: model.loss(A, y), model.params, in_place=True).passed
    True
    """
    started = time.perf_counter()
    settings = _cost_settings(locals())
    return _run_problem(_cost_problem(cost, theta, grad, args, in_place, layout), settings,
                        started, executor)


def _cost_settings(arguments: dict) -> dict:
    """The options among a check's ``arguments`` (its ``locals()``)."""
    return {name: arguments[name] for name in _COST_OPTIONS}


def _run_problem(problem: _CostProblem, settings: dict, started: float, executor=None
                 ) -> GradientCheckReport:
    """Check a user's cost: the options resolved, arrays perturbed in place restored."""
    options = _cost_options(problem, settings)
    pool = executor_pool(executor)
    with problem.guard:
        problem = problem.with_gradient()
        return run_cost_check(problem.cost, problem.theta, problem.grad, problem.args,
                              problem.layout, options, problem.low_precision, started,
                              problem.hints, pool)


class _CostProblem(NamedTuple):
    """A user's cost ready for the black-box engine: ``cost`` called as ``cost(theta,
    *args)`` (a dict cost adapted), the flat ``theta`` and ``grad`` (None: the cost's own, by
    :meth:`with_gradient`), the ``layout``, the arguments that came in float32/float16, the
    context that restores arrays perturbed in place, and the hints that name a wrong block's
    mistake (the data's batch sizes, the layers the block names give)."""

    cost: Callable
    theta: np.ndarray
    grad: np.ndarray | None
    args: tuple
    layout: Layout
    low_precision: tuple[str, ...]
    guard: Any
    hints: Hints = NO_HINTS

    def with_gradient(self) -> _CostProblem:
        """The problem with its gradient: the one given, else the one the cost returns with
        its loss at theta (inside the guard: an in-place cost reads the caller's arrays)."""
        if self.grad is not None:
            return self
        loss, grads = self.cost.loss_and_grads(*self.args)
        if grads is None:
            raise TypeError("grad is None, so the cost must return (loss, grads), grads a dict "
                            f"keyed like params; it returned {type(loss).__name__}")
        return self._replace(grad=pack_grads(grads, self.layout, "the cost's grads"))


def _cost_options(problem: _CostProblem, settings: dict):
    """The options of a check of a user's cost (``settings``: check's keywords)."""
    return check_options(**{**DEFAULTS, **settings}, low_precision=bool(problem.low_precision))


def _cost_problem(cost, theta, grad, args, in_place, layout,
                  need_grad: bool = True) -> _CostProblem:
    """:func:`check`'s arguments validated: a flat theta, or a dict of parameters (on copies
    or in place); ``need_grad`` False: a flat theta's gradient may be missing (an
    estimate)."""
    if isinstance(theta, Mapping):
        return _params_problem(cost, theta, grad, args, in_place, need_grad)
    if in_place:
        raise TypeError("in_place=True perturbs a dict of parameter arrays where they are; "
                        f"theta is a {type(theta).__name__}: pass the model's dict of arrays")
    if grad is None and not need_grad:
        grad = np.zeros(np.shape(theta))
    if grad is None:
        raise TypeError("grad is None: pass the gradient to check (or give the parameters as "
                        "a dict and a cost that returns (loss, grads))")
    if not callable(cost):
        raise TypeError(f"cost must be callable, cost(theta, *args) -> float; got "
                        f"{type(cost).__name__}")
    low_precision = tuple(name for name, value in (("theta", theta), ("grad", grad))
                          if np.asarray(value).dtype.kind == "f"
                          and np.asarray(value).dtype.itemsize < 8)
    theta, grad = _point_and_gradient(theta, grad)
    args = _as_args(args)
    layout = _layout_for(layout, theta.size)
    return _CostProblem(cost, theta, grad, args, layout, low_precision,
                        contextlib.nullcontext(), _hints(layout, _labelled_args(args)))


def check_layer(
    forward: Callable[..., Any],
    backward: Callable[..., Any],
    inputs: Any,
    *,
    dout: Any = None,
    seed: int = 0,
    args: tuple = (),
    mode: str = "full",
    n_per_block: int = 1000,
    n_directions: int = 8,
    epsilon: float | None = None,
    threshold: float = 2e-7,
    rtol: float | None = None,
    atol: float | None = None,
    method: str = "central",
    budget_s: float | None = None,
    n_threads: int | None = None,
    progress: bool = False,
    executor: Any = None,
) -> GradientCheckReport:
    """Check a layer's backward pass: each gradient it returns against the numerical
    vector-Jacobian product ``d(sum(dout * forward(*inputs))) / d input``.

    ``forward(*inputs, *args)`` returns ``out`` or ``(out, cache)`` (a layer with several
    outputs returns a tuple ``out`` with its cache: ``((h, c), cache)``); ``backward(dout,
    cache)`` returns one gradient per input, in order or as a dict keyed like the inputs. The
    upstream gradient ``dout`` (a tuple for several outputs) is drawn from a standard normal
    with ``seed`` when not given. The report has one block per input, ``dx``, ``dw``, ... for a
    dict of inputs ``{'x': ..., 'w': ...}``, ``dx0``, ``dx1``, ... for a tuple. The inputs
    are copied: the caller's arrays are never modified.

    Parameters
    ----------
    forward, backward : callables
        The layer, as described above.
    inputs : array, tuple of arrays or dict of arrays
        The float arrays the gradients are taken with respect to.
    dout : array or tuple of arrays, optional
        The upstream gradient, shaped like the output(s).
    seed : int
        Seed of the drawn ``dout`` and of the sampled coordinates or probes.
    args : tuple
        Further arguments of ``forward`` that are not checked (a stride, labels, ...).
    mode, n_per_block, n_directions
        As for :func:`check`: every coordinate, ``n_per_block`` of each input, or
        ``n_directions`` probes of each input.
    epsilon, threshold, rtol, atol, method, budget_s, n_threads, progress, executor
        As for :func:`check`.

    Examples
    --------
    >>> import numpy as np
    >>> def affine_forward(x, w, b):
    ...     out = x @ w + b
    ...     return out, (x, w)
    >>> def affine_backward(dout, cache):
    ...     x, w = cache
    ...     return dout @ w.T, x.T @ dout, dout.sum(axis=0)
    >>> rng = np.random.default_rng(0)
    >>> inputs = {"x": rng.normal(size=(4, 3)), "w": rng.normal(size=(3, 2)),
    ...           "b": rng.normal(size=2)}
    >>> report = check_layer(affine_forward, affine_backward, inputs)
    >>> report.passed, list(report.blocks)
    (True, ['dx', 'dw', 'db'])
    >>> def wrong_backward(dout, cache):
    ...     dx, dw, db = affine_backward(dout, cache)
    ...     return dx, dw, db / 4
    >>> check_layer(affine_forward, wrong_backward, inputs).failed_blocks
    ['db']
    """
    started = time.perf_counter()
    settings = _cost_settings(locals())
    return _run_problem(_layer_problem(forward, backward, inputs, dout, seed, args), settings,
                        started, executor)


def _layer_problem(forward, backward, inputs, dout, seed, args) -> _CostProblem:
    """:func:`check_layer`'s arguments as the problem of checking the cost ``sum(dout *
    forward(*inputs))``: forward and backward run once, ``dout`` drawn if not given."""
    if not callable(forward) or not callable(backward):
        raise TypeError("forward and backward must be callable")
    seed = check_count(seed, "seed", minimum=0)
    args = _as_args(args)
    params = inputs_dict(inputs)
    result = forward(*params.values(), *args)
    out, cache = split_forward(result)
    out = outputs(out)
    dout = draw_dout(out, seed) if dout is None else check_dout(dout, out)
    grads = gradients_dict(backward(dout if len(dout) > 1 else dout[0], cache), list(params))
    problem = _params_problem(vjp_cost(forward, dout, args), params, grads, (), False)
    if is_njit(forward):
        # Compiled: the cost of the flat vector, evaluated in the engine's parallel loop.
        kernel, kernel_args = njit_vjp_cost(forward, dout, args, problem.layout.shapes,
                                            problem.layout.offsets, cache is not None)
        problem = problem._replace(cost=kernel, args=kernel_args)
    return problem._replace(hints=_hints(problem.layout,
                                         {**params, **_labelled_args(args)}))


def _params_problem(cost, params: Mapping, grads, args, in_place,
                    need_grad: bool = True) -> _CostProblem:
    """:func:`check`'s problem for a dict of parameters, on copies or in place."""
    if not callable(cost):
        raise TypeError(f"cost must be callable; got {type(cost).__name__}")
    in_place = check_flag(in_place, "in_place")
    args = _as_args(args)
    layout = params_layout(params, in_place)
    theta = flatten(params, layout)
    low_precision = tuple(name for name, value in params.items()
                          if np.asarray(value).dtype.itemsize < 8)
    grad = None if grads is None else pack_grads(grads, layout)
    if is_njit(cost):
        # Compiled code takes no dict: an njit cost reads the flat vector (the parameters in
        # the dict's order, each in C order), evaluated in parallel as with a flat theta.
        if in_place or (grads is None and need_grad):
            raise TypeError("an @numba.njit cost takes the flat parameter vector (the dict's "
                            "arrays one after the other, each in C order): it cannot be "
                            "checked in place nor return its gradients as a dict; pass grads")
        return _CostProblem(cost, theta, grad, args, layout, low_precision,
                            contextlib.nullcontext(), _hints(layout, _labelled_args(args)))
    guard = restoring(params) if in_place else contextlib.nullcontext()
    return _CostProblem(DictCost(cost, layout, theta, in_place, params), theta, grad, args,
                        layout, low_precision, guard, _hints(layout, _labelled_args(args)))


def _labelled_args(args: tuple) -> dict:
    """A cost's further arguments by the names a diagnosis gives them: ``args[0]``, ..."""
    return {f"args[{k}]": value for k, value in enumerate(args)}


def _hints(layout: Layout, data: Mapping) -> Hints:
    """What names a wrong block of a user's cost: the batch sizes of its ``data`` (label to
    array), and layers read off block names that end in a number."""
    return Hints(factors=shape_factors(data), layers=layer_numbers(layout.grad_names))


def _as_args(args) -> tuple:
    """The further arguments of a cost as a tuple (a list's items; anything else alone)."""
    if isinstance(args, tuple):
        return args
    return tuple(args) if isinstance(args, list) else (args,)


def _point_and_gradient(theta: Any, grad: Any) -> tuple[np.ndarray, np.ndarray]:
    """``check``'s theta and grad as flat float64 vectors of one size, theta finite."""
    # The shape is checked before np.ascontiguousarray, which makes a 0-d theta 1-d.
    theta = float_parameter_array(theta, "theta")
    if theta.ndim == 2 and theta.shape[1] == 1:
        theta = theta[:, 0]
    if theta.ndim != 1 or theta.size == 0:
        hint = " (a scalar): pass np.atleast_1d(theta)" if theta.ndim == 0 else ""
        raise ValueError(f"theta must be a non-empty vector, shape (P,) or (P, 1); got shape "
                         f"{theta.shape}{hint}")
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    if not np.isfinite(theta).all():
        raise ValueError(f"theta contains NaN or Inf at index {int(np.argmin(np.isfinite(theta)))}")
    # A copy: the report keeps it (the caller's array may change after the check).
    grad = np.array(float_parameter_array(grad, "grad"), dtype=np.float64).ravel()
    if grad.size != theta.size:
        raise ValueError(f"grad has {grad.size} elements but theta has {theta.size}")
    return theta, grad


def _layout_for(layout, n_params: int) -> Layout:
    """``check``'s layout argument as a Layout of ``n_params`` parameters."""
    if layout is None:
        return Layout({"theta": (n_params,)})
    if isinstance(layout, Mapping):
        layout = Layout(layout if is_shape_dict(layout)
                        else {name: np.shape(value) for name, value in layout.items()})
    if not isinstance(layout, Layout):
        raise TypeError(f"layout must be a Layout, a dict of arrays or None; got "
                        f"{type(layout).__name__}")
    if layout.n_params != n_params:
        raise ValueError(f"layout has {layout.n_params} parameters but theta has {n_params}")
    return layout


# ---------------------------------------------------------------------------------------------
# The seed's vector helpers, through Layout
# ---------------------------------------------------------------------------------------------
def dictionary_to_vector(parameters: ArrayDict) -> tuple[np.ndarray, list[str]]:
    """Flatten ``W1, b1, ..., WL, bL`` into a new ``(P, 1)`` float64 column, as the seed does.

    Returns the column and the list of keys, one per entry (the seed's ``keys``).

    Examples
    --------
    >>> from gradcheck_fast import dictionary_to_vector, reference
    >>> theta, keys = dictionary_to_vector(reference.seed_case()[2])
    >>> theta.shape, keys[19], keys[20]
    ((47, 1), 'W1', 'b1')
    """
    layout = mlp_layout(parameters)
    theta = layout.pack(parameters).reshape(-1, 1)
    keys = [name for name, shape in zip(layout.names, layout.shapes)
            for _ in range(int(np.prod(shape)))]
    return theta, keys


def gradients_to_vector(gradients: ArrayDict,
                        layout: Layout | ArrayDict | None = None) -> np.ndarray:
    """Flatten ``dW1, db1, ..., dWL, dbL`` into a new ``(P, 1)`` column; other keys are ignored.

    ``layout`` (a :class:`Layout` or the parameters dict) fixes the blocks and checks shapes;
    by default they are read off the ``dWl``/``dbl`` keys.

    Examples
    --------
    >>> from gradcheck_fast import gradients_to_vector, reference
    >>> X, Y, parameters = reference.seed_case()
    >>> _, cache = reference.forward_propagation_n(X, Y, parameters)
    >>> gradients = reference.backward_propagation_n(X, Y, cache)
    >>> grad = gradients_to_vector(gradients)
    >>> grad.shape, bool(grad[0, 0] == gradients["dW1"][0, 0])
    ((47, 1), True)
    """
    if isinstance(layout, Mapping):
        layout = mlp_layout(layout)
    elif layout is None:
        layout = mlp_layout_of_gradients(gradients)
    elif not isinstance(layout, Layout):
        raise TypeError(f"layout must be a Layout, a parameters dict or None; got "
                        f"{type(layout).__name__}")
    return pack_gradients(gradients, layout).reshape(-1, 1)


def vector_to_dictionary(theta: Any,
                         layout: Layout | ArrayDict | None = None) -> dict[str, np.ndarray]:
    """Rebuild the parameter dict from a flat ``theta`` (shape ``(P, 1)`` or ``(P,)``).

    With one argument, the seed's 47-parameter network (4-5-3-1). ``layout`` gives any other:
    a :class:`Layout`, a parameters dict (its shapes are used) or a dict of name to shape.

    Examples
    --------
    >>> import numpy as np
    >>> from gradcheck_fast import vector_to_dictionary
    >>> p = vector_to_dictionary(np.arange(47.0).reshape(-1, 1))
    >>> p["W2"].shape, float(p["b3"][0, 0])
    ((3, 5), 46.0)
    """
    if layout is None:
        layout = SEED_LAYOUT
    elif isinstance(layout, Mapping):
        layout = Layout(layout) if is_shape_dict(layout) else mlp_layout(layout)
    elif not isinstance(layout, Layout):
        raise TypeError(f"layout must be a Layout, a parameters dict or a dict of shapes; "
                        f"got {type(layout).__name__}")
    theta = np.asarray(theta)
    if theta.dtype.kind in "iub":  # the seed accepts integer vectors; so do we
        theta = theta.astype(np.float64)
    theta = float_parameter_array(theta, "theta")
    if theta.size != layout.n_params or theta.ndim > 2 or (theta.ndim == 2 and theta.shape[1] != 1):
        hint = (" (without a layout, the seed's 4-5-3-1 network)" if layout is SEED_LAYOUT
                else "")
        raise ValueError(f"theta must have shape ({layout.n_params}, 1) or ({layout.n_params},) "
                         f"for {layout!r}{hint}; got shape {theta.shape}")
    return layout.unpack(theta)




def release_memory() -> int:
    """Give back to the system the large work arrays kept between checks; returns how many
    bytes were kept.

    A full check of a large network writes a few arrays of one float64 per parameter (five
    for the built-in network's engine). Those of 64 MiB or more are kept after the check (at
    most 2 GiB) and reused by the next one: memory given back and touched again costs page
    faults, up to seconds per GB on some virtual machines. Arrays a report still holds (its
    ``gradapprox``) are never reused, and live on as long as the report.

    Examples
    --------
    >>> from gradcheck_fast import release_memory
    >>> release_memory() >= 0
    True
    """
    kept = _memory.kept_bytes()
    _memory.release()
    return kept
