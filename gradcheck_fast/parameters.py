"""A user's parameters as a dict of arrays (any names and shapes) for :func:`gradcheck_fast.check`.

The check itself runs on a flat float64 vector (:mod:`gradcheck_fast.engines.blackbox`). This
room turns a dict into that vector and its :class:`~gradcheck_fast.layout.Layout`, packs the
gradients keyed like the parameters (or with a ``d`` prefix), and adapts the cost
(:class:`DictCost`): it sees a dict of arrays, views into a private copy of the parameters,
or, ``in_place``, the caller's own arrays, perturbed one element at a time and restored bitwise
afterwards whatever happens (:func:`restoring`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import numpy as np

from .layout import Layout
from .validation import all_finite, float_parameter_array

#: What a cost may return besides its value: ``(loss, grads)``, the gradients as a dict.
_PAIR = (tuple, list)


def float_arrays(named: Mapping, label: str) -> dict[str, np.ndarray]:
    """Each value of ``named`` as a floating array (not copied), its key a str; refused, with
    ``label[key]`` named, otherwise."""
    arrays = {}
    for name, value in named.items():
        if not isinstance(name, str):
            raise TypeError(f"{label} keys must be str; got {name!r}")
        arrays[name] = float_parameter_array(value, f"{label}[{name!r}]")
    return arrays


def params_layout(params: Mapping, in_place: bool) -> Layout:
    """The layout of a dict of parameter arrays (its keys in order, their shapes); each value
    a non-empty floating array, float64 and writable when it is to be perturbed in place."""
    if not params:
        raise ValueError("params is an empty dict: nothing to check")
    shapes = {}
    for name, array in float_arrays(params, "params").items():
        value = params[name]
        if array.size == 0:
            raise ValueError(f"params[{name!r}] is empty (shape {array.shape})")
        if in_place:
            if type(value) is not np.ndarray or value.dtype != np.float64:
                raise TypeError(f"in_place=True perturbs params[{name!r}] itself by epsilon, "
                                f"which needs a float64 NumPy array; got "
                                f"{getattr(value, 'dtype', type(value).__name__)}")
            if not value.flags.writeable:
                raise ValueError(f"in_place=True needs params[{name!r}] writable; it is "
                                 f"read-only")
        shapes[name] = array.shape
    return Layout(shapes)


def flatten(params: Mapping, layout: Layout) -> np.ndarray:
    """A new flat float64 vector of the parameters in ``layout``'s order, which must be
    finite."""
    theta = np.concatenate([np.asarray(params[name], dtype=np.float64).ravel()
                            for name in layout.names])
    if not all_finite(theta):
        name, index = layout.locate(int(np.argmin(np.isfinite(theta))))
        raise ValueError(f"params[{name!r}] contains NaN or Inf at index {index}")
    return theta


def pack_grads(grads: Mapping, layout: Layout, label: str = "grads") -> np.ndarray:
    """The flat gradient of a dict keyed like the parameters, or with a ``d`` prefix (``dW1``
    for ``W1``), each of its parameter's shape; NaN/Inf allowed (a wrong gradient)."""
    if not isinstance(grads, Mapping):
        raise TypeError(f"{label} must be a dict of arrays keyed like params; got "
                        f"{type(grads).__name__}")
    blocks = []
    for name, shape in zip(layout.names, layout.shapes):
        key = name if name in grads else "d" + name
        if key not in grads:
            raise ValueError(f"{label} has no {name!r} (nor {'d' + name!r}): the gradient of "
                             f"params[{name!r}], shape {shape}, is missing")
        array = float_parameter_array(grads[key], f"{label}[{key!r}]")
        if array.shape != shape:
            hint = (" (the same size: a transposed or reshaped gradient?)"
                    if array.size == int(np.prod(shape)) else "")
            raise ValueError(f"{label}[{key!r}] has shape {array.shape} but params[{name!r}] "
                             f"has shape {shape}{hint}")
        blocks.append(np.asarray(array, dtype=np.float64).ravel())
    known = set(layout.names) | {"d" + name for name in layout.names}
    extra = [key for key in grads if key not in known]
    if extra:
        raise ValueError(f"{label} has {extra[0]!r}, which names no parameter (params has "
                         f"{', '.join(map(repr, layout.names))})")
    return np.concatenate(blocks)


def split(value) -> tuple[object, Mapping | None]:
    """A cost's return value as ``(loss, grads)``: a pair whose second item is a dict is the
    loss with its gradients; anything else is the loss alone."""
    if isinstance(value, _PAIR) and len(value) == 2 and isinstance(value[1], Mapping):
        return value[0], value[1]
    return value, None


class DictCost:
    """``cost`` as the black-box engine calls a cost: ``adapted(theta, *args)`` for a whole
    vector, and ``adapted.at(i, value, *args)`` for theta with only coordinate i set to
    ``value`` (one element written and restored, instead of the whole dict).

    The cost is called as ``cost(params, *args)``, ``params`` a dict of views into a private
    copy of theta, or, ``in_place``, as ``cost(*args)`` with the caller's own ``arrays``
    holding the point. Its value is a scalar or ``(loss, grads)``; the loss is returned.
    """

    def __init__(self, cost: Callable, layout: Layout, theta: np.ndarray, in_place: bool,
                 arrays: Mapping | None = None):
        self.cost = cost
        self.layout = layout
        self.theta = theta
        self.in_place = in_place
        if in_place:
            self.targets = [arrays[name] for name in layout.names]
            self.params = None
        else:
            self.buffer = theta.copy()
            self.params = layout.unpack(self.buffer)
            self.targets = [self.params[name] for name in layout.names]

    def loss_and_grads(self, *args):
        """The cost's ``(loss, grads)`` at the point its arrays hold (theta unless an
        evaluation is under way; grads None for a cost that returns its value alone)."""
        return split(self.cost(*args) if self.in_place else self.cost(self.params, *args))

    def _call(self, args: tuple):
        return self.loss_and_grads(*args)[0]

    def __call__(self, theta: np.ndarray, *args):
        self._write(theta)
        try:
            return self._call(args)
        finally:
            self._write(self.theta)

    def at(self, i: int, value: float, *args):
        k = int(np.searchsorted(self.layout.offsets, i, side="right")) - 1
        target = self.targets[k]
        j = i - int(self.layout.offsets[k])
        old = target.flat[j]
        target.flat[j] = value
        try:
            return self._call(args)
        finally:
            target.flat[j] = old

    def _write(self, theta: np.ndarray) -> None:
        for target, start, stop in zip(self.targets, self.layout.offsets[:-1],
                                       self.layout.offsets[1:]):
            np.copyto(target, theta[start:stop].reshape(target.shape))


@contextlib.contextmanager
def restoring(arrays: Mapping):
    """Run the body, then put every array of ``arrays`` back to its bits on entry, whether the
    body returns, raises, or is interrupted (Ctrl-C)."""
    saved = {name: np.array(value, copy=True) for name, value in arrays.items()}
    try:
        yield
    finally:
        for name, value in saved.items():
            np.copyto(arrays[name], value)
