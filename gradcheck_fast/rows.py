"""The other convention: samples in rows (``MLP(layout="rows")``).

Course code writes a network with ``X`` of shape ``(N, D)``, ``W1`` of shape ``(D, H)``, 1-D
biases, gradients keyed like the parameters (``grads['W1']``) and L2 as ``reg * sum ||W||**2``.
The engines work with samples in columns (the seed's convention): this module reads such a
network into it exactly (transposes and reshapes, no arithmetic) and writes the measurements
back in the user's layout, so that the report's blocks, shapes and element indices are the
user's own.

The L2 term maps exactly: ``reg * sum ||W||**2 = lambda / (2m) * sum ||W||**2`` with
``lambda = 2 m reg``; each ``dW`` gains ``2 reg W``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from .engines import Costs
from .layout import Layout
from .validation import float_parameter_array

#: The layouts an :class:`~gradcheck_fast.MLP` may be written in.
LAYOUTS = ("columns", "rows")


class RowsView(NamedTuple):
    """How the user's samples-in-rows network maps onto the engines' columns.

    ``layout``: the user's blocks (``W1`` of shape ``(D, H)``, ``b1`` of shape ``(H,)``, ...);
    ``to_user[i]``: the user's flat coordinate of the engines' coordinate i; ``to_engine``
    its inverse.
    """

    layout: Layout
    to_user: np.ndarray
    to_engine: np.ndarray


def _n_layers(parameters: Mapping) -> int:
    if not isinstance(parameters, Mapping):
        raise TypeError(f"parameters must be a dict of arrays; got {type(parameters).__name__}")
    L = 0
    while f"W{L + 1}" in parameters:
        L += 1
    expected = {f"{kind}{l}" for l in range(1, L + 1) for kind in "Wb"}
    if L == 0 or set(parameters) != expected:
        extra = sorted(set(parameters) - expected, key=str)
        missing = sorted(expected - set(parameters))
        detail = (f"missing {missing[0]!r}" if missing else
                  f"unexpected {extra[0]!r}" if extra else "no 'W1'")
        raise ValueError(f"parameters must hold exactly W1, b1, ..., WL, bL (samples in rows: "
                         f"Wl of shape (n_(l-1), n_l), bl of shape (n_l,)); {detail}")
    return L


def _weights_and_biases(parameters: Mapping, L: int) -> list[np.ndarray]:
    """``W1, b1, ..., WL, bL`` of ``parameters``, validated for the rows layout: ``Wl``
    (n_(l-1), n_l), ``bl`` (n_l,) or (1, n_l)."""
    label = "parameters"

    def key(name):
        return name

    arrays = []
    for l in range(1, L + 1):
        W = float_parameter_array(parameters[key(f"W{l}")], f"{label}[{key(f'W{l}')!r}]")
        b = float_parameter_array(parameters[key(f"b{l}")], f"{label}[{key(f'b{l}')!r}]")
        if W.ndim != 2:
            raise ValueError(f"{label}[{key(f'W{l}')!r}] must be 2-D, (n_{l - 1}, n_{l}) with "
                             f"samples in rows; got shape {W.shape}")
        if b.shape not in ((W.shape[1],), (1, W.shape[1])):
            raise ValueError(f"{label}[{key(f'b{l}')!r}] must have shape ({W.shape[1]},) to "
                             f"match W{l} of shape {W.shape} (samples in rows); got shape "
                             f"{b.shape}")
        if arrays and W.shape[0] != arrays[-2].shape[1]:
            raise ValueError(f"{label}[{key(f'W{l}')!r}] has {W.shape[0]} rows but W{l - 1} "
                             f"has {arrays[-2].shape[1]} columns (samples in rows: Wl is "
                             f"(n_(l-1), n_l))")
        arrays += [W, b]
    return arrays


def _gradient_key(gradients: Mapping, name: str) -> str:
    if name in gradients:
        return name
    if "d" + name in gradients:
        return "d" + name
    raise ValueError(f"gradients has no {name!r} (nor {'d' + name!r}): keyed like the "
                     f"parameters, or with a 'd' prefix")


def _gradient_like(gradients: Mapping, key: str, p: np.ndarray) -> np.ndarray:
    """``gradients[key]``, shaped like its parameter ``p`` (a bias also as (1, n))."""
    g = float_parameter_array(gradients[key], f"gradients[{key!r}]")
    if g.shape == p.shape or (p.ndim == 1 and g.shape == (1, p.size)):
        return g
    hint = (" (the same size: a transposed gradient?)"
            if g.size == p.size and g.ndim == 2 else "")
    raise ValueError(f"gradients[{key!r}] has shape {g.shape} but its parameter has shape "
                     f"{p.shape}{hint}")


def to_columns(parameters: Mapping, gradients: Mapping, X, Y, model):
    """The network in the engines' convention: ``(parameters, gradients, X, Y, model, view)``
    with ``Wl`` transposed to (n_l, n_(l-1)), ``bl`` as a column, X transposed to (D, N), Y
    transposed when 2-D (class labels and single outputs stay 1-D), the L2 weight as lambda
    = 2 N reg, and the :class:`RowsView` that maps coordinates back. Nothing is copied
    beyond what the engines' validation copies; nothing is rounded."""
    L = _n_layers(parameters)
    if not isinstance(gradients, Mapping):
        raise TypeError(f"gradients must be a dict of arrays; got {type(gradients).__name__}")
    names = [f"{kind}{l}" for l in range(1, L + 1) for kind in "Wb"]
    params = _weights_and_biases(parameters, L)
    keys = {name: _gradient_key(gradients, name) for name in names}
    for name in gradients:
        if name not in keys.values():
            raise ValueError(f"gradients has {name!r}, which names no parameter (samples in "
                             f"rows: W1, b1, ..., WL, bL, or dW1, db1, ...)")
    grads = [_gradient_like(gradients, keys[name], p) for name, p in zip(names, params)]
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, (N, D) with samples in rows; got shape {X.shape}")
    D = params[0].shape[0]
    if X.shape[1] != D:
        raise ValueError(f"X has {X.shape[1]} features (columns) but W1 has {D} rows: with "
                         f"samples in rows X is (N, D) and W1 is (D, H)")
    N = X.shape[0]
    Y = np.asarray(Y)
    if Y.ndim == 0 or Y.shape[0] != N:
        raise ValueError(f"Y must have one row (or label) per sample of X, ({N}, ...); got "
                         f"shape {Y.shape}")
    columns = {}
    for name, p in zip(names, params):
        columns[name] = p.T if name[0] == "W" else p.reshape(-1, 1)
    grad_columns = {}
    for name, g in zip(names, grads):
        grad_columns["d" + name] = g.T if name[0] == "W" else g.reshape(-1, 1)
    engine_model = dataclasses.replace(model, layout="columns", l2=2.0 * N * model.l2)
    return (columns, grad_columns, X.T, Y.T if Y.ndim == 2 else Y, engine_model,
            _view(names, params))


def _view(names: list[str], params: list[np.ndarray]) -> RowsView:
    """The user's layout and the coordinate maps between it and the engines'."""
    shapes = {name: (p.shape if name[0] == "W" else (p.size,)) for name, p in zip(names, params)}
    layout = Layout(shapes)
    to_engine = []
    for name, start in zip(names, layout.offsets[:-1]):
        shape = shapes[name]
        if name[0] == "W":  # the user's (k, j) is the engines' (j, k), C order both
            block = np.arange(shape[0] * shape[1]).reshape(shape[1], shape[0]).T.ravel()
        else:
            block = np.arange(shape[0])
        to_engine.append(block + int(start))
    to_engine = np.concatenate(to_engine).astype(np.int64)
    to_user = np.empty_like(to_engine)
    to_user[to_engine] = np.arange(to_engine.size, dtype=np.int64)
    return RowsView(layout, to_user, to_engine)


def user_costs(costs: Costs, view: RowsView) -> Costs:
    """The engine's :class:`Costs` with its coordinates renumbered in the user's layout and
    put in ascending order (every per-coordinate array reordered alike)."""
    user = view.to_user[costs.indices]
    order = np.argsort(user, kind="stable")
    noise = costs.noise[order]
    return dataclasses.replace(
        costs, _J_plus=_taken(costs._J_plus, order), _J_minus=_taken(costs._J_minus, order),
        dJ_plus=costs.dJ_plus[order], dJ_minus=costs.dJ_minus[order],
        gradapprox=costs.gradapprox[order], resolution=costs.resolution[order],
        kinks=costs.kinks[order], indices=user[order], noise_source=noise,
        truncation=None if costs.truncation is None else costs.truncation[order])


def _taken(values: np.ndarray | None, order: np.ndarray) -> np.ndarray | None:
    """``values[order]``, None kept (a Costs' J+- formed from its changes when read)."""
    return None if values is None else values[order]


def engine_indices(user_indices: np.ndarray, view: RowsView) -> np.ndarray:
    """The engines' coordinates of the user's ``user_indices``, ascending."""
    return np.sort(view.to_engine[user_indices])
