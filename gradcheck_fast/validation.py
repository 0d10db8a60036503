"""Every input check of the package, in one place, with messages that say the fix.

The kernels assume clean input (float64, C-contiguous, finite, consistent shapes); the public
functions pass everything through here first. Wrong types raise ``TypeError``, wrong values
``ValueError``, each naming the argument or key.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
from collections.abc import Mapping

import numpy as np

from .layout import MLPLayout
from .models import MLP, SEED_MODEL

_INTERMEDIATE_KEY = re.compile(r"d[AZ]\d+")

#: numpy's float64 dtype: one object, so ``array.dtype is _FLOAT64`` is a fast exact test.
_FLOAT64 = np.dtype(np.float64)


def _as_array(value, label: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{label} must be a numeric array; got {type(value).__name__}") from exc
    if array.dtype.kind not in "biufc":
        raise TypeError(f"{label} must be a numeric array; got dtype {array.dtype}")
    if array.dtype.kind == "c":
        raise TypeError(f"{label} must be real; got dtype {array.dtype}")
    return array


def float_parameter_array(value, label: str) -> np.ndarray:
    """A floating array for a parameter or gradient block (integers are refused)."""
    array = _as_array(value, label)
    if array.dtype.kind != "f":
        why = (" (a parameter cannot be perturbed by epsilon in integers)"
               if label.startswith("parameters") else "")
        raise TypeError(f"{label} must be a floating-point array; got dtype {array.dtype}{why} "
                        f"— pass it .astype(float)")
    return array


def data_array(value, label: str) -> np.ndarray:
    """A float64 C-contiguous copy-or-view of X or Y; integers and booleans are converted."""
    if type(value) is np.ndarray and value.dtype is _FLOAT64 and value.flags.c_contiguous:
        array = value  # already what the kernels take (the common case, checked fast)
    else:
        raw = _as_array(value, label)
        # np.asarray, not np.ascontiguousarray: that one makes a 0-d array 1-d, and a message
        # would then show a shape the caller never passed.
        array = np.asarray(raw, dtype=np.float64, order="C")
        if raw.dtype.kind != "f":
            return array  # integers and booleans (0/1 labels): finite as floats too
    if not all_finite(array):
        raise ValueError(f"{label} contains NaN or Inf at index {_first_nonfinite(array)}")
    return array


#: Up to this many elements :func:`all_finite` starts with a dot product (a third of the time
#: of the elementwise test on the seed's arrays); beyond, BLAS would wake its threads for it
#: (1.3 ms for the mnist-size theta, against 0.15 ms elementwise).
_DOT_TEST_SIZE = 4096


def all_finite(array: np.ndarray) -> bool:
    """Whether every element of a float64 array is finite. A small array first takes one dot
    product: finite values give a finite sum of squares, NaN or Inf a non-finite one; where the
    sum overflows (values beyond ~1e154) the elementwise test decides."""
    if array.size <= _DOT_TEST_SIZE and math.isfinite(np.vdot(array, array)):
        return True
    return bool(np.isfinite(array).all())


def _first_nonfinite(array: np.ndarray) -> tuple[int, ...]:
    return tuple(int(n) for n in np.argwhere(~np.isfinite(array))[0])


def _shown(value) -> str:
    """``value`` for a message, compactly: an int beyond the float range is not printed digit
    by digit (10**400 has 401 of them)."""
    if isinstance(value, numbers.Integral) and abs(int(value)) > 2**64:
        sign = "-" if value < 0 else ""
        try:
            float(value)
        except OverflowError:
            return (f"an int of about {sign}1e{int(math.log10(abs(int(value))))}, beyond the "
                    f"float range (largest float ~1.8e308)")
        return f"{sign}{abs(float(value)):g}"
    text = repr(value)
    if len(text) <= 40:
        return text
    try:
        return f"{float(value):g}"
    except OverflowError:
        return text[:40] + "..."


def _real(value, name: str, *, allow_zero: bool) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        number = math.inf
    if not math.isfinite(number) or number < 0.0 or (number == 0.0 and not allow_zero):
        expected = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {expected}; got {_shown(value)}")
    return number


def check_epsilon(epsilon, name: str = "epsilon") -> float:
    """epsilon (or another step or duration) as a float: a finite real number > 0."""
    return _real(epsilon, name, allow_zero=False)


def check_probability(probability) -> float:
    """A probability strictly between 0 and 1."""
    p = _real(probability, "probability", allow_zero=False)
    if not p < 1.0:
        raise ValueError(f"probability must be below 1; got {probability!r}")
    return p


def check_count(value, name: str, minimum: int = 1) -> int:
    """An int >= minimum (numpy integers accepted, bools refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {_shown(value)}")
    return int(value)


def check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {choices}; got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}; got {value!r}")
    return value


def check_threshold(threshold) -> float:
    """threshold as a float: a finite real number > 0."""
    return _real(threshold, "threshold", allow_zero=False)


def check_tolerance(value, name: str) -> float:
    """rtol or atol as a float: a finite real number >= 0."""
    return _real(value, name, allow_zero=True)


def check_n_threads(n_threads) -> int | None:
    """None, or an int between 1 and numba's NUMBA_NUM_THREADS."""
    if n_threads is None:
        return None
    if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral):
        raise TypeError(f"n_threads must be an int or None; got {type(n_threads).__name__}")
    import numba

    if not 1 <= n_threads <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(
            f"n_threads must be between 1 and {numba.config.NUMBA_NUM_THREADS} "
            f"(NUMBA_NUM_THREADS); got {_shown(n_threads)}"
        )
    return int(n_threads)


def check_flag(value, name: str) -> bool:
    """A plain bool (numpy bools accepted)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__}")
    return bool(value)


def _require_mapping(value, label: str) -> None:
    if type(value) is not dict and not isinstance(value, Mapping):  # the ABC test is slow
        raise TypeError(f"{label} must be a dict of arrays; got {type(value).__name__}")


def mlp_layout(parameters) -> MLPLayout:
    """The :class:`MLPLayout` of ``parameters`` = ``{'W1': ..., 'b1': ..., ..., 'WL', 'bL'}``.

    Checks the keys (exactly W1, b1, ..., WL, bL), the dtypes (floating) and that the shapes
    chain: ``Wl`` is ``(n_l, n_{l-1})`` and ``bl`` is ``(n_l, 1)``.
    """
    return _mlp_layout_and_blocks(parameters)[0]


def mlp_layout_of_gradients(gradients) -> MLPLayout:
    """The layout read off the ``dWl``/``dbl`` entries of a gradient dict (the seed's
    intermediates dZl/dAl ignored), with messages naming the gradient keys."""
    _require_mapping(gradients, "gradients")
    blocks = {key: value for key, value in gradients.items()
              if isinstance(key, str) and _BLOCK_KEY.fullmatch(key[1:]) and key[0] == "d"}
    return _mlp_layout_and_blocks(blocks, "gradients", prefix="d")[0]


def mlp_layout_and_theta(parameters) -> tuple[MLPLayout, np.ndarray]:
    """:func:`mlp_layout` and theta, a new flat float64 vector of the parameters, which must be
    finite."""
    layout, blocks = _mlp_layout_and_blocks(parameters)
    theta = np.concatenate(blocks, dtype=np.float64)
    if not all_finite(theta):
        name, index = layout.locate(int(np.argmin(np.isfinite(theta))))
        raise ValueError(f"parameters['{name}'] contains NaN or Inf at index {index}")
    return layout, theta


_BLOCK_KEY = re.compile(r"([Wb])([1-9][0-9]*)")


def _mlp_layout_and_blocks(parameters, label: str = "parameters", prefix: str = ""
                           ) -> tuple[MLPLayout, list[np.ndarray]]:
    """Layout and flat blocks of ``{prefix}W1, {prefix}b1, ...`` in ``label`` (the parameters,
    or the gradients when the layout is read off them)."""
    _require_mapping(parameters, label)
    n_layers = _plain_depth(parameters, prefix)
    if n_layers:  # the common case, keys exactly W1, b1, ..., WL, bL: no parsing needed
        return _blocks(parameters, label, prefix, n_layers)
    layers = []  # the layer of every W/b key
    for key in parameters:
        if isinstance(key, str) and key.startswith(prefix):
            match = _BLOCK_KEY.fullmatch(key[len(prefix):])
            if match:
                layers.append(int(match.group(2)))
    if not layers:
        raise ValueError(f"{label} must hold {prefix}W1, {prefix}b1, ..., {prefix}WL, {prefix}bL; "
                         f"got keys {sorted(map(str, parameters))}")
    n_layers = _depth(layers)
    names = _block_names(prefix, n_layers)
    needs = (f"{prefix}W1, {prefix}b1" if n_layers == 1
             else f"{prefix}W1, {prefix}b1, ..., {prefix}W{n_layers}, {prefix}b{n_layers}")
    missing = [name for name in names if name not in parameters]
    if missing:
        top = " and ".join(repr(name) for name in names[-2:] if name in parameters)
        listed = ", ".join(map(repr, missing[:6])) + (", ..." if len(missing) > 6 else "")
        # The top layer may be the stray instead, when nothing between it and the lowest
        # missing key is there.
        lowest = min(int(name[len(prefix) + 1:]) for name in missing)
        fewer = all(f"{prefix}W{l}" in missing and f"{prefix}b{l}" in missing
                    for l in range(lowest, n_layers))
        raise ValueError(
            f"{label} is missing key{'s' if len(missing) > 1 else ''} {listed}: {top} "
            f"make{'' if ' and ' in top else 's'} it a {n_layers}-layer network, which needs "
            f"{needs}" + (f" (if it has fewer layers, remove {top})" if fewer else "")
            + _near_misses(missing, parameters))
    extra = sorted(map(str, set(parameters) - set(names)))
    if extra:
        raise ValueError(f"{label} has unexpected key {extra[0]!r}; expected exactly {needs}")
    return _blocks(parameters, label, prefix, n_layers)


def _near_misses(missing, mapping) -> str:
    """"; did you mean ...": the keys of ``mapping`` that look like the ``missing`` ones once
    stripped of spaces and case ('W1 ', 'w1'), or "" if none does."""
    wanted = {name.lower() for name in missing}
    close = [key for key in mapping
             if isinstance(key, str) and key not in missing and key.strip().lower() in wanted]
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


def _depth(layers: list[int]) -> int:
    """The depth that blames the fewest keys, for the layers the W/b keys name: the highest
    (keys below it missing: W2, b2 of W1, b1, W3, b3) or the end of the run 1, 2, ... (keys
    beyond it unexpected: a stray W9); on a tie the highest, as a missing key is the likelier
    slip."""
    highest = max(layers)
    run = 0
    while run + 1 in layers:
        run += 1
    missing = 2 * highest - len(layers)
    unexpected = sum(layer > run for layer in layers)
    return highest if missing <= unexpected else run


@functools.lru_cache(maxsize=64)
def _block_names(prefix: str, n_layers: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{kind}{l}" for l in range(1, n_layers + 1) for kind in "Wb")


def _plain_depth(parameters, prefix: str) -> int:
    """L if the keys are exactly prefix + W1, b1, ..., WL, bL, else 0."""
    n = len(parameters)
    if n % 2 or not n:
        return 0
    names = _block_names(prefix, n // 2)
    return n // 2 if all(name in parameters for name in names) else 0


def _float_array(value, label: str, key: str) -> np.ndarray:
    """``float_parameter_array`` with the label formatted only when it is needed."""
    if type(value) is np.ndarray and value.dtype.kind == "f":
        return value
    return float_parameter_array(value, f"{label}['{key}']")


def _blocks(parameters, label: str, prefix: str, n_layers: int
            ) -> tuple[MLPLayout, list[np.ndarray]]:
    """Check the arrays of a network whose keys are right; its layout and flat blocks."""
    sizes = []
    blocks = []
    names = _block_names(prefix, n_layers)
    for l in range(1, n_layers + 1):
        Wk, bk = names[2 * l - 2], names[2 * l - 1]
        W = _float_array(parameters[Wk], label, Wk)
        b = _float_array(parameters[bk], label, bk)
        if W.ndim != 2 or 0 in W.shape:
            raise ValueError(f"{label}['{Wk}'] must be a non-empty 2-D array (n{l}, n{l - 1}); "
                             f"got shape {W.shape}")
        if l == 1:
            sizes.append(W.shape[1])
        elif W.shape[1] != sizes[-1]:
            raise ValueError(
                f"{label}['{Wk}'] has shape {W.shape} but {prefix}W{l - 1} has {sizes[-1]} rows: "
                f"{Wk} must have shape ({W.shape[0]}, {sizes[-1]})"
            )
        sizes.append(W.shape[0])
        if b.shape != (W.shape[0], 1):
            _blame_W_or_b(parameters, label, prefix, l, n_layers, W, b)
        blocks += [W.ravel(), b.ravel()]
    return MLPLayout.from_sizes(tuple(sizes)), blocks


def _blame_W_or_b(parameters, label: str, prefix: str, l: int, n_layers: int, W, b) -> None:
    """Raise for layer l, whose bias ``b`` does not match the rows of ``W``: the bias is
    blamed, unless it is a column whose length the next layer's W agrees with (then W's row
    count is the odd one out)."""
    Wk, bk = f"{prefix}W{l}", f"{prefix}b{l}"
    if l < n_layers and b.ndim == 2 and b.shape[1] == 1:
        try:
            following = np.shape(parameters[f"{prefix}W{l + 1}"])
        except ValueError:  # ragged: its own check will say so
            following = ()
        if len(following) == 2 and following[1] == b.shape[0]:
            raise ValueError(
                f"{label}['{Wk}'] has shape {W.shape} but {bk} has {b.shape[0]} rows and "
                f"{prefix}W{l + 1} has {following[1]} columns: {Wk} must have shape "
                f"({b.shape[0]}, {W.shape[1]})")
    if l == n_layers and b.ndim == 2 and b.shape[1] == 1:
        # The output layer: nothing after it says which of the two has the output width.
        raise ValueError(
            f"{label}['{Wk}'] has shape {W.shape} but {bk} has shape {b.shape}: the output "
            f"layer's {Wk} must have as many rows as {bk} has ({Wk} of shape "
            f"({b.shape[0]}, {W.shape[1]}) or {bk} of shape ({W.shape[0]}, 1), whichever is "
            f"the number of outputs)")
    raise ValueError(
        f"{label}['{bk}'] has shape {b.shape} but must be a ({W.shape[0]}, 1) column "
        f"({Wk} has {W.shape[0]} rows)"
    )


def pack_gradients(gradients, layout: MLPLayout) -> np.ndarray:
    """The flat gradient vector of ``gradients`` in ``layout``'s order, checked key by key.

    Keys are ``'d' + name`` for each parameter; the intermediates ``dZl``/``dAl`` that the
    seed's backward pass returns are accepted and ignored; any other key is an error. NaN/Inf
    are allowed: they are a wrong gradient, which the check reports.
    """
    _require_mapping(gradients, "gradients")
    blocks = []
    for name, shape in zip(layout.grad_names, layout.shapes):
        if name not in gradients:
            raise ValueError(f"gradients is missing key {name!r} (the gradient of "
                             f"parameters['{name[1:]}'], shape {shape})"
                             + _near_misses([name], gradients))
        array = _float_array(gradients[name], "gradients", name)
        if array.shape != shape:
            raise ValueError(f"gradients['{name}'] has shape {array.shape} but "
                             f"parameters['{name[1:]}'] has shape {shape}")
        blocks.append(array.ravel())
    if len(gradients) != len(blocks):
        extra = gradients.keys() - set(layout.grad_names)
        if not all(map(_is_intermediate, extra)):  # the seed's dZl/dAl are accepted, ignored
            _refuse_extra_gradients(extra, layout)
    return np.concatenate(blocks, dtype=np.float64)


def _refuse_extra_gradients(extra, layout: MLPLayout) -> None:
    """Raise for the gradients keys ``extra``, which name no parameter of ``layout`` and are
    not all intermediates: a layer the parameters do not have, or any other key."""
    beyond = sorted((key for key in extra if isinstance(key, str) and key[:1] == "d"
                     and _BLOCK_KEY.fullmatch(key[1:])),
                    key=lambda key: (int(key[2:]), key[1] == "b"))
    if beyond:
        names = ", ".join(repr(key[1:]) for key in beyond)
        raise ValueError(
            f"gradients has {', '.join(map(repr, beyond))} but parameters has no {names}: "
            f"the parameters make a {layout.n_layers}-layer network "
            f"({', '.join(layout.names)}); add parameters {names}, or remove the extra "
            f"gradients")
    key = next(key for key in extra if not _is_intermediate(key))
    raise ValueError(
        f"gradients has unexpected key {key!r}; expected {', '.join(layout.grad_names)} (and "
        f"optionally the seed's intermediates dZl/dAl)")


@functools.lru_cache(maxsize=256)
def _is_intermediate(key) -> bool:
    """Whether a gradients key is one of the seed's intermediates dZl/dAl (cached: the same few
    keys come with every call)."""
    return isinstance(key, str) and _INTERMEDIATE_KEY.fullmatch(key) is not None


def all_float64(source, keys) -> bool:
    """Whether ``source[key]`` is a float64 array for every key (the common case, checked
    fast: numpy's float64 dtype is one object)."""
    for key in keys:
        if getattr(source[key], "dtype", None) is not _FLOAT64:
            return False
    return True


def check_model(model, layout: MLPLayout):
    """The model (default: the seed's), which must fit the network's depth."""
    if model is None:
        return SEED_MODEL
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a gradcheck_fast.MLP; got {type(model).__name__}")
    model.hidden_for(layout.n_layers)  # raises ValueError for a wrong number of activations
    return model


def check_data(X, Y, layout: MLPLayout, model=None) -> tuple[np.ndarray, np.ndarray]:
    """X as float64 ``(n0, m)`` and Y as float64 ``(nL, m)`` (``(m,)`` accepted when nL = 1;
    for an output that takes class labels (softmax), integer labels of shape ``(m,)`` become
    one-hot columns)."""
    X = data_array(X, "X")
    n_x, n_out = int(layout.sizes[0]), int(layout.sizes[-1])
    raw = _as_array(Y, "Y")
    labels = model is not None and model.loss.class_labels
    if labels and raw.ndim == 1 and raw.dtype.kind in "iu":
        if raw.size and (raw.min() < 0 or raw.max() >= n_out):
            raise ValueError(f"Y's class labels must lie in 0..{n_out - 1} (the {n_out} "
                             f"outputs); got values from {raw.min()} to {raw.max()}")
        Y = np.zeros((n_out, raw.shape[0]))
        Y[raw, np.arange(raw.shape[0])] = 1.0
    elif labels and raw.ndim == 1 and n_out > 1:
        raise ValueError(f"Y of shape {raw.shape} with a {model.output} output must hold integer "
                         f"class labels in 0..{n_out - 1}; got dtype {raw.dtype} — pass "
                         f"Y.astype(int), or one-hot Y of shape ({n_out}, m)")
    else:
        Y = data_array(Y, "Y")
    y_shape = raw.shape
    if X.ndim != 2 or X.shape[0] != n_x or X.shape[1] == 0:
        raise ValueError(f"X must have shape ({n_x}, m) with m >= 1 samples, since W1 has "
                         f"{n_x} columns; got shape {X.shape}")
    m = X.shape[1]
    if Y.ndim == 1 and n_out == 1:
        Y = Y.reshape(1, -1)
    if Y.shape != (n_out, m):
        extra = " or (m,)" if n_out == 1 else ""
        raise ValueError(f"Y must have shape ({n_out}, {m}){extra} to match the {n_out} "
                         f"output unit(s) and the {m} samples of X; got shape {y_shape}")
    return X, Y
