"""The seed's API, fast: gradient_check_n, gradient_check and the vector helpers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import reference
from ._threads import n_threads_set
from .checker import low_precision_note, numerical_gradient, run_check
from .layout import SEED_LAYOUT, Layout, is_shape_dict
from .options import prepare_inputs, seed_options
from .report import relative_difference
from .validation import (
    check_epsilon,
    data_array,
    float_parameter_array,
    mlp_layout,
    mlp_layout_of_gradients,
    pack_gradients,
)

ArrayDict = Mapping[str, Any]

__all__ = [
    "gradient_check",
    "gradient_check_n",
    "dictionary_to_vector",
    "vector_to_dictionary",
    "gradients_to_vector",
]


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
    model=None,
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
    difference = relative_difference(inputs.grad, costs.gradapprox)
    if verbose:
        if difference <= 2e-7:
            print(reference.SUCCESS_MESSAGE.format(difference))
        else:
            print(reference.MISTAKE_MESSAGE.format(difference))
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


