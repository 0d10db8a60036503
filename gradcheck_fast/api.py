"""The public functions: the seed's API, fast, and the richer :func:`check_gradients`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import reference
from .engine import mlp_cost_noise, mlp_costs, n_threads_set
from .layout import SEED_LAYOUT, Layout
from .report import ATOL, RTOL, GradientCheckReport, build_report, relative_difference
from .validation import (
    check_data,
    check_engine,
    check_epsilon,
    check_flag,
    check_n_threads,
    check_threshold,
    check_tolerance,
    data_array,
    float_parameter_array,
    mlp_layout,
    mlp_layout_and_theta,
    mlp_layout_of_gradients,
    pack_gradients,
)

ArrayDict = Mapping[str, Any]

__all__ = [
    "assert_gradients_close",
    "check_gradients",
    "gradient_check",
    "gradient_check_n",
    "dictionary_to_vector",
    "vector_to_dictionary",
    "gradients_to_vector",
]


def _run(parameters, gradients, X, Y, epsilon, n_threads, engine, progress):
    """validation -> layout -> engine; returns what the report is built from."""
    epsilon = check_epsilon(epsilon)
    n_threads = check_n_threads(n_threads)
    engine = check_engine(engine)
    progress = check_flag(progress, "progress")
    layout, theta = mlp_layout_and_theta(parameters)
    grad = pack_gradients(gradients, layout)
    X, Y = check_data(X, Y, layout)
    with n_threads_set(n_threads):
        costs = mlp_costs(layout, theta, X, Y, epsilon, engine, progress)
    return layout, theta, grad, costs.gradapprox, costs, X, Y, epsilon


def _report(layout, theta, grad, gradapprox, costs, X, Y, epsilon, threshold, rtol=RTOL,
            atol=ATOL):
    # The exact engine's J+- carry the rounding noise of whole forward passes, which ECnoise
    # measures; the incremental engine's changes carry only their own, bounded in resolution.
    sigma = mlp_cost_noise(layout, theta, X, Y) if costs.engine == "exact" else 0.0
    return build_report(layout, theta, grad, costs, sigma, m=X.shape[1], epsilon=epsilon,
                        threshold=threshold, rtol=rtol, atol=atol)


def check_gradients(
    parameters: ArrayDict,
    gradients: ArrayDict,
    X: Any,
    Y: Any,
    *,
    epsilon: float = 1e-7,
    threshold: float = 2e-7,
    rtol: float = RTOL,
    atol: float = ATOL,
    n_threads: int | None = None,
    engine: str = "auto",
    progress: bool = False,
) -> GradientCheckReport:
    """Check a backward pass of the seed's network against central differences; full report.

    The network is ``LINEAR -> RELU -> ... -> LINEAR -> SIGMOID`` of any depth with the seed's
    cross-entropy cost ``J = 1/m * sum(-log(AL)*Y - log(1-AL)*(1-Y))``. For every parameter
    ``theta_i`` the costs ``J(theta + epsilon e_i)`` and ``J(theta - epsilon e_i)`` are computed in
    parallel by jitted kernels, bitwise equal to a full forward pass at the perturbed parameters,
    and ``gradapprox_i = (J+ - J-) / (2 epsilon)`` is compared with the analytic gradient.

    Parameters
    ----------
    parameters : dict of str to ndarray
        ``W1, b1, ..., WL, bL``; ``Wl`` of shape ``(n_l, n_{l-1})``, ``bl`` of shape ``(n_l, 1)``,
        floating point and finite. Any memory order; never modified.
    gradients : dict of str to ndarray
        ``dW1, db1, ..., dWL, dbL`` shaped like the parameters. The intermediates ``dZl``/``dAl``
        the seed's backward pass returns are allowed and ignored.
    X : array_like, shape (n0, m)
        Inputs, one sample per column. Integer or boolean input is converted to float64.
    Y : array_like, shape (nL, m), or (m,) when nL = 1
        Labels (converted to float64 likewise).
    epsilon : float, default 1e-7
        The step, finite and > 0.
    threshold : float, default 2e-7
        The seed's threshold on the global difference eq. (3): ``report.seed_passed``.
    rtol, atol : float, default 1e-6 and 1e-8
        The elementwise criterion ``|analytic - numerical| <= atol + rtol |numerical| + noise``
        (torch's convention plus the element's rounding-noise bound), which decides
        ``report.passed``; see :mod:`gradcheck_fast.report` for why these defaults.
    n_threads : int, optional
        Threads for the parallel loop (default: numba's current setting, which is restored
        afterwards). The result is bitwise the same for every thread count.
    engine : {"auto", "exact", "incremental"}, default "auto"
        How J(theta +- epsilon e_i) is computed from the unperturbed forward pass. "exact"
        recomputes what changed with the very operations of a full forward pass (bitwise its
        values: the seed's numbers, rounding noise included); "incremental" carries the change
        itself through the network (the same values up to rounding, with far less rounding in
        J+ - J-, and far faster on large networks). "auto" takes "exact" for tiny networks
        (parameters x samples <= 2048, the seed's among them) and "incremental" otherwise.
    progress : bool, default False
        Show a tqdm progress bar (needs ``tqdm``: ``pip install 'gradcheck-fast[progress]'``).
        Large checks run in ~100 pieces either way, so Ctrl-C stops them within a piece.

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
        arrays, non-numeric X/Y, or a non-real ``epsilon``.
    ValueError
        Missing or unexpected keys, inconsistent shapes, NaN/Inf in X, Y or the parameters,
        ``epsilon`` or ``threshold`` not finite and positive.

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
    threshold = check_threshold(threshold)
    rtol = check_tolerance(rtol, "rtol")
    atol = check_tolerance(atol, "atol")
    run = _run(parameters, gradients, X, Y, epsilon, n_threads, engine, progress)
    return _report(*run, threshold, rtol, atol)


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
    run = _run(parameters, gradients, X, Y, epsilon, n_threads, engine, progress)
    _, _, grad, gradapprox, *_ = run
    difference = relative_difference(grad, gradapprox)
    if verbose:
        if difference <= 2e-7:
            print(reference.SUCCESS_MESSAGE.format(difference))
        else:
            print(reference.MISTAKE_MESSAGE.format(difference))
            print(_report(*run, 2e-7))
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
    with np.errstate(invalid="ignore"):
        difference = float(reference.gradient_check(x, theta, epsilon, verbose=False))
    if math.isnan(difference) and np.all(x == 0):
        # 0/0: the derivative x and its estimate are both exactly 0 and agree (as eq. (3) is
        # taken for two zero vectors in gradient_check_n).
        difference = 0.0
    if verbose:
        print("The gradient is correct!" if difference < 1e-7 else "The gradient is wrong!")
    return difference


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
    """
    if isinstance(layout, Mapping):
        layout = mlp_layout(layout)
    if layout is None:
        layout = mlp_layout_of_gradients(gradients)
    return pack_gradients(gradients, layout).reshape(-1, 1)


def _is_shape_dict(mapping: Mapping) -> bool:
    """True for ``{'W1': (5, 4), ...}``: every value a tuple or list of ints."""
    def is_shape(value):
        return isinstance(value, (tuple, list)) and all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in value)
    return len(mapping) > 0 and all(is_shape(v) for v in mapping.values())


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
        layout = Layout(layout) if _is_shape_dict(layout) else mlp_layout(layout)
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


