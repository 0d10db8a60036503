"""A layer's check: its backward pass against the numerical vector-Jacobian product.

A layer ``forward(*inputs) -> out`` (or ``(out, cache)``) with ``backward(dout, cache) ->
(dx, dw, ...)`` is right when each gradient it returns is ``d(sum(dout * forward(*inputs))) /
d input`` for the upstream gradient ``dout``. That is a scalar function of the inputs, so the
check is :func:`gradcheck_fast.check` of a dict of the inputs (:mod:`gradcheck_fast.parameters`)
with that scalar as the cost: one report block per input.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import numba
import numpy as np

from .parameters import float_arrays
from .validation import float_parameter_array


def inputs_dict(inputs) -> dict[str, np.ndarray]:
    """The layer's inputs as a dict of float64 copies (the caller's arrays are never touched):
    a dict's own names, else ``x0, x1, ...`` in order; a single array is ``x``."""
    if isinstance(inputs, Mapping):
        named = dict(inputs)
    elif isinstance(inputs, (tuple, list)):
        named = {f"x{k}": value for k, value in enumerate(inputs)}
    else:
        named = {"x": inputs}
    if not named:
        raise ValueError("inputs is empty: the layer needs at least one input to check")
    return {name: np.array(array, dtype=np.float64, copy=True)
            for name, array in float_arrays(named, "inputs").items()}


def split_forward(value) -> tuple[object, object]:
    """A forward's return value as ``(out, cache)``: a pair is read as ``(out, cache)``
    (a layer with several outputs returns ``((out1, out2), cache)``), anything else as the
    output alone (``cache`` None)."""
    if isinstance(value, tuple) and len(value) == 2:
        return value[0], value[1]
    return value, None


def outputs(out) -> tuple[np.ndarray, ...]:
    """A layer's output(s) as a tuple of float arrays."""
    parts = out if isinstance(out, (tuple, list)) else (out,)
    arrays = []
    for k, part in enumerate(parts):
        array = np.asarray(part)
        if array.dtype.kind not in "fiu":
            raise TypeError(f"forward must return real arrays; output {k} is "
                            f"{type(part).__name__} of dtype {array.dtype}")
        arrays.append(array)
    return tuple(arrays)


def draw_dout(out: tuple[np.ndarray, ...], seed: int) -> tuple[np.ndarray, ...]:
    """An upstream gradient for each output, standard normal from ``seed``."""
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(part.shape) for part in out)


def check_dout(dout, out: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """The caller's upstream gradient, one float array per output, each of its shape."""
    parts = dout if isinstance(dout, (tuple, list)) else (dout,)
    if len(parts) != len(out):
        raise ValueError(f"dout has {len(parts)} part(s) but forward returns {len(out)} "
                         f"output(s)")
    arrays = []
    for k, (part, o) in enumerate(zip(parts, out)):
        array = np.asarray(float_parameter_array(part, f"dout[{k}]"), dtype=np.float64)
        if array.shape != o.shape:
            raise ValueError(f"dout[{k}] has shape {array.shape} but output {k} has shape "
                             f"{o.shape}")
        arrays.append(array)
    return tuple(arrays)


def gradients_dict(grads, names: Sequence[str]) -> dict[str, object]:
    """backward's return value as a dict keyed like the inputs: one gradient per input, in
    order (a tuple or list), keyed by name (a dict), or a single array for a single input."""
    if isinstance(grads, Mapping):
        return dict(grads)
    if isinstance(grads, (tuple, list)):
        if len(grads) != len(names):
            raise ValueError(f"backward returned {len(grads)} gradient(s) for {len(names)} "
                             f"input(s) ({', '.join(names)}): one per input, in order")
        return dict(zip(names, grads))
    if len(names) == 1:
        return {names[0]: grads}
    raise TypeError(f"backward must return one gradient per input ({', '.join(names)}) as a "
                    f"tuple or a dict; got {type(grads).__name__}")


def vjp_cost(forward: Callable, dout: tuple[np.ndarray, ...], args: tuple) -> Callable:
    """The scalar ``sum_k sum(dout_k * out_k)`` of the inputs, ``out = forward(*inputs,
    *args)``: its gradient with respect to each input is what backward must return."""
    def cost(params: Mapping) -> float:
        out = outputs(split_forward(forward(*params.values(), *args))[0])
        return float(sum(np.sum(d * o) for d, o in zip(dout, out)))

    return cost


# ---------------------------------------------------------------------------------------------
# An njit forward: the vector-Jacobian cost compiled, for the black-box engine's parallel loop
# ---------------------------------------------------------------------------------------------
# Compiled code takes no dict and no variable number of inputs: the cost is generated for the
# layer's arity (the inputs' dimensions, the outputs, the further arguments, whether forward
# returns a cache) and compiled by numba, once per forward function; it splits the flat
# vector into the inputs (views of the thread's private copy), runs forward and sums
# dout * out.
_VJP_SOURCE = """
def vjp_cost(theta, shapes, offsets, {douts}{args}):
{inputs}
    result = forward({names}{args})
{outputs}
    total = 0.0
{sums}
    return total
"""


@functools.lru_cache(maxsize=64)
def _vjp_kernel(forward, ndims: tuple[int, ...], n_outputs: int, n_args: int, cached: bool):
    """The compiled ``sum_k sum(dout_k * out_k)`` of a flat vector, for ``forward`` of inputs
    of ``ndims`` dimensions, ``n_outputs`` outputs and ``n_args`` further arguments, returning
    ``(out, cache)`` if ``cached``. ``forward`` is a global of the generated code (a constant
    to numba: called directly, where an argument would be a first-class function value, an
    experimental numba feature). Every other argument is passed on its own: a parallel
    kernel cannot pass nested tuples (numba 0.68), so shapes are the rows of an int64
    array."""
    inputs = "\n".join(
        f"    x{k} = theta[offsets[{k}]:offsets[{k + 1}]].reshape(("
        + "".join(f"shapes[{k}, {d}], " for d in range(ndim)) + "))"
        for k, ndim in enumerate(ndims))
    out = "result[0]" if cached else "result"
    if n_outputs == 1:
        outputs = f"    out0 = {out}"
    else:
        outputs = "\n".join(f"    out{k} = {out}[{k}]" for k in range(n_outputs))
    sums = "\n".join(f"    total += np.sum(dout{k} * out{k})" for k in range(n_outputs))
    args = "".join(f", arg{k}" for k in range(n_args))
    source = _VJP_SOURCE.format(
        douts=", ".join(f"dout{k}" for k in range(n_outputs)), args=args, inputs=inputs,
        names=", ".join(f"x{k}" for k in range(len(ndims))), outputs=outputs, sums=sums)
    namespace = {"np": np, "forward": forward}
    exec(compile(source, f"<gradcheck_fast vjp cost {ndims}-{n_outputs}-{n_args}>", "exec"),
         namespace)
    return numba.njit(namespace["vjp_cost"])


def njit_vjp_cost(forward, dout: tuple[np.ndarray, ...], args: tuple,
                  shapes: Sequence[tuple[int, ...]], offsets: np.ndarray,
                  cached: bool) -> tuple[Callable, tuple]:
    """For an njit ``forward``: the compiled cost of the flat vector (the inputs one after
    the other, each in C order) and the further arguments the black-box engine passes it."""
    ndims = tuple(len(shape) for shape in shapes)
    if 0 in ndims:
        raise TypeError("an @numba.njit forward takes array inputs: pass each input as an "
                        "array of at least one dimension (a 0-d input cannot be a view of the "
                        "flat parameter vector)")
    kernel = _vjp_kernel(forward, ndims, len(dout), len(args), cached)
    table = np.zeros((len(shapes), max(max(ndims), 1)), dtype=np.int64)
    for k, shape in enumerate(shapes):
        table[k, :len(shape)] = shape
    # A scalar output's dout goes in as one element (numba's 0-d arrays are limited).
    douts = tuple(np.ascontiguousarray(d).reshape(-1) if d.ndim == 0
                  else np.ascontiguousarray(d) for d in dout)
    return kernel, (table, np.asarray(offsets, dtype=np.int64), *douts, *args)
