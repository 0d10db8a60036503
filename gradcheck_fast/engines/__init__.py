"""The engines: J(theta + eps e_i) and J(theta - eps e_i) for every parameter index i, in parallel.

Two engines compute them for the MLP family from one unperturbed forward pass:

- ``"exact"`` (:mod:`.exact`): recomputes what a perturbation changes with the same
  floating-point operations as a full forward pass, so every J+- is *bitwise* the full pass's
  value — the seed's numbers, rounding noise included.
- ``"incremental"`` (:mod:`.incremental`): propagates the change itself through the network,
  so the work per parameter no longer grows with the layers above it, and J+ - J- is free of
  the cancellation between two nearly equal costs.

A user's cost has its own, :mod:`.blackbox`. Every engine returns :class:`Costs`
(:mod:`._common`, which also runs kernels in pieces); their time model is :mod:`.costmodel`.
``"auto"`` picks the exact engine for small work (the seed's own network and the like, where it
reproduces the seed's published numbers) or a non-finite forward pass, the incremental one
otherwise.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _schedule
from .._threads import single_blas_thread
from ..models import SEED_MODEL
from . import exact, incremental
from ._common import Costs, all_indices, run_kernel  # noqa: F401 (the engines' contract)
from .costmodel import INCREMENTAL_S_PER_SAMPLE

#: Work is counted in units of one (parameter, sample) of the incremental engine's fast path
#: (~12 ns on one thread, costmodel.INCREMENTAL_S_PER_SAMPLE); other engines convert. Below
#: this much work the check runs on one thread (see _schedule.SERIAL_SECONDS).
_SERIAL_WORK = math.ceil(_schedule.SERIAL_SECONDS / INCREMENTAL_S_PER_SAMPLE)

#: "auto" uses the exact engine up to this much work (parameters x samples): microseconds
#: either way, and on the seed's own network it reproduces the published numbers digit for digit.
_EXACT_WORK = 2048


def choose_engine(engine: str, work: int) -> str:
    """The engine "auto" stands for: exact for tiny checks (parameters x samples <= 2048, by
    the network's size: a sample of a network gets the same values as the full check),
    incremental otherwise. Both handle every model of the MLP family."""
    if engine != "auto":
        return engine
    if work <= _EXACT_WORK:
        return "exact"
    return "incremental"


def prepare_engine(net, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, engine: str = "auto",
                   model=SEED_MODEL) -> tuple[str, incremental.Prepared | None]:
    """The engine that will run and, for the incremental one, its prepared state
    (:func:`.incremental.prepare`: the unperturbed pass and what is derived from it,
    which does not depend on the step, so one state serves every step and every set of
    indices). A non-finite forward pass gives ``("exact", None)``: the exact engine reports
    which J+- are NaN/Inf."""
    engine = choose_engine(engine, theta.shape[0] * X.shape[1])
    if engine != "incremental":
        return engine, None
    with single_blas_thread():
        prepared = incremental.prepare(net, theta, X, Y, model)
    return ("incremental", prepared) if prepared is not None else ("exact", None)


def mlp_costs(net, theta: np.ndarray, X: np.ndarray, Y: np.ndarray, epsilon: float,
              engine: str = "auto", progress: bool = False,
              indices: np.ndarray | None = None, model=SEED_MODEL,
              prepared: incremental.Prepared | None = None) -> Costs:
    """Unperturbed cost and both perturbed costs for the parameters ``indices`` (default: all)
    of the MLP ``net`` computing ``model`` (a :class:`gradcheck_fast.MLP`).

    ``net`` is an :class:`~gradcheck_fast.layout.MLPLayout`; theta, X, Y are clean float64
    C-contiguous arrays (validation happens before this; Y one-hot for softmax).
    ``prepared``: the incremental engine's state from :func:`prepare_engine` for these
    inputs, if the caller has it (prepared here otherwise).
    """
    m = X.shape[1]
    if indices is None:
        indices = all_indices(theta.shape[0])
    engine = choose_engine(engine, theta.shape[0] * m)
    if engine == "incremental" and prepared is None:
        engine, prepared = prepare_engine(net, theta, X, Y, engine, model)
    if engine == "incremental":
        return incremental.costs(net, theta, Y, epsilon, prepared, indices, progress, model)
    return exact.costs(net, theta, X, Y, epsilon, indices, progress, model)
