"""Options and inputs of a check: every default, tolerance and step constant defined once,
the options checked and resolved, the inputs validated into flat vectors.

The bottom room of the package's public side: it imports validation, layout and the model
description only, and every entry point (check_gradients, gradient_check_n, check, step_sweep,
estimate_cost) builds its options here.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .layout import MLPLayout
from .models import MLP, SEED_MODEL
from .rows import RowsView, to_columns
from .truncation import TRUNCATION_STEP  # noqa: F401 (a step constant: re-exported here)
from .validation import (
    all_float64,
    check_choice,
    check_count,
    check_data,
    check_epsilon,
    check_flag,
    check_model,
    check_n_threads,
    check_probability,
    check_threshold,
    check_tolerance,
    mlp_layout_and_theta,
    pack_gradients,
)

#: Default elementwise tolerances, |analytic - numerical| <= atol + rtol |numerical| + noise
#: (torch.autograd.gradcheck's convention, with our noise bound added). For float64 and
#: epsilon = 1e-7 the numerical gradient is accurate to ~1e-9 |J| absolute with the exact
#: engine (rounding of two full costs, divided by 2 eps; that and worse is in `noise`) and to
#: ~1e-15 relative with the incremental one, plus a truncation error eps^2 |J'''| / 6 ~ 2e-15
#: |J'''|. A mistake in a backward pass changes an element by O(1) relative (a factor, a sign,
#: an index, a missing term). RTOL = 1e-6 sits three orders of magnitude from either; ATOL =
#: 1e-8 is the resolution below which an element of a gradient of an O(1) cost counts as zero.
RTOL = 1e-6
ATOL = 1e-8

ArrayDict = Mapping[str, Any]

MODES = ("full", "sampled", "directional")
METHODS = ("central", "richardson")
ENGINES = ("auto", "exact", "incremental")

#: Tolerances used when the parameters or gradients come in float32 (or float16): a float32
#: backward pass rounds every product and sum to 2**-24 relative, which over sums of
#: thousands of terms leaves ~1e-5..1e-4 of relative error in a correct gradient. torch's
#: gradcheck uses these same values; they still catch any O(1) mistake.
RTOL_FLOAT32 = 1e-3
ATOL_FLOAT32 = 1e-5

#: The Richardson (4-point) step for float64: eps_mach ** (1/5) balances the stencil's
#: truncation error O(h**4) against its rounding error O(eps_mach / h).
RICHARDSON_STEP = float(np.finfo(np.float64).eps) ** 0.2


class LowPrecisionWarning(UserWarning):
    """Parameters or gradients in float32/float16: the check runs in float64, tolerances widen."""


# Not frozen (nothing changes one once built): a frozen dataclass's construction costs twice as
# much, on the path of the seed's check, which runs in microseconds.
@dataclass
class Inputs:
    """Validated inputs: the layout, theta and the analytic gradient (flat float64), X and Y."""

    layout: MLPLayout
    theta: np.ndarray
    grad: np.ndarray
    X: np.ndarray
    Y: np.ndarray
    low_precision: tuple[str, ...]  # keys whose arrays were float32/float16
    model: MLP = SEED_MODEL
    rows: RowsView | None = None  # a network written with samples in rows: the user's layout

    @property
    def m(self) -> int:
        return self.X.shape[1]


def prepare_inputs(parameters: ArrayDict, gradients: ArrayDict, X: Any, Y: Any,
                   model: MLP | None = None) -> Inputs:
    """validation -> layout: every input check, then flat float64 vectors (a network written
    with samples in rows, ``MLP(layout="rows")``, read into the engines' columns)."""
    rows = None
    if model is not None and getattr(model, "layout", "columns") == "rows":
        parameters, gradients, X, Y, model, rows = to_columns(parameters, gradients, X, Y,
                                                              model)
    layout, theta = mlp_layout_and_theta(parameters)
    grad = pack_gradients(gradients, layout)
    model = check_model(model, layout)
    X, Y = check_data(X, Y, layout, model)
    low = () if all_float64(parameters, layout.names) and all_float64(
        gradients, layout.grad_names) else tuple(
        key for source, keys in ((parameters, layout.names), (gradients, layout.grad_names))
        for key in keys if _itemsize(source[key]) < 8)
    return Inputs(layout, theta, grad, X, Y, low, model, rows)


def _itemsize(value) -> int:
    dtype = getattr(value, "dtype", None)
    return (dtype if dtype is not None else np.asarray(value).dtype).itemsize


@dataclass(frozen=True)
class Options:
    epsilon: float
    threshold: float
    rtol: float
    atol: float
    mode: str
    n_per_block: int
    n_directions: int
    seed: int
    probability: float
    method: str
    engine: str
    progress: bool
    n_threads: int | None
    budget_s: float | None


def seed_options(*, epsilon, engine, progress, n_threads, low_precision: bool) -> Options:
    """The options of the seed's entry points (gradient_check_n, step_sweep): a full central
    difference at threshold 2e-7; only what they take is checked (they run in microseconds,
    so the options of the last calls are kept: same arguments of the same types, same
    options; anything unhashable is checked afresh and refused with its message)."""
    try:
        return _seed_options(epsilon, engine, progress, n_threads, low_precision)
    except TypeError:
        pass
    return _seed_options.__wrapped__(epsilon, engine, progress, n_threads, low_precision)


@functools.lru_cache(maxsize=32, typed=True)
def _seed_options(epsilon, engine, progress, n_threads, low_precision: bool) -> Options:
    return Options(
        epsilon=1e-7 if epsilon is None else check_epsilon(epsilon), threshold=2e-7,
        rtol=RTOL_FLOAT32 if low_precision else RTOL,
        atol=ATOL_FLOAT32 if low_precision else ATOL, mode="full", n_per_block=1,
        n_directions=1, seed=0, probability=0.5, method="central",
        engine=check_choice(engine, "engine", ENGINES), progress=check_flag(progress, "progress"),
        n_threads=check_n_threads(n_threads), budget_s=None)


def check_options(*, epsilon, threshold, rtol, atol, mode, n_per_block, n_directions, seed,
                  probability, method, engine, progress, n_threads, budget_s,
                  low_precision: bool) -> Options:
    """Every option checked; defaults that depend on others resolved."""
    method = check_choice(method, "method", METHODS)
    if epsilon is None:
        epsilon = RICHARDSON_STEP if method == "richardson" else 1e-7
    if rtol is None:
        rtol = RTOL_FLOAT32 if low_precision else RTOL
    if atol is None:
        atol = ATOL_FLOAT32 if low_precision else ATOL
    return Options(
        epsilon=check_epsilon(epsilon),
        threshold=check_threshold(threshold),
        rtol=check_tolerance(rtol, "rtol"),
        atol=check_tolerance(atol, "atol"),
        mode=check_choice(mode, "mode", MODES),
        n_per_block=check_count(n_per_block, "n_per_block"),
        n_directions=check_count(n_directions, "n_directions"),
        seed=check_count(seed, "seed", minimum=0),
        probability=check_probability(probability),
        method=method,
        engine=check_choice(engine, "engine", ENGINES),
        progress=check_flag(progress, "progress"),
        n_threads=check_n_threads(n_threads),
        budget_s=None if budget_s is None else check_epsilon(budget_s, "budget_s"),
    )


#: The defaults of every option of check_gradients (its signature states the same values; a
#: test holds them equal). Entry points that take fewer options fill the rest from here.
DEFAULTS: dict[str, Any] = dict(
    epsilon=None, threshold=2e-7, rtol=None, atol=None, mode="full", n_per_block=1000,
    n_directions=8, seed=0, probability=0.999, method="central", engine="auto",
    progress=False, n_threads=None, budget_s=None,
)
