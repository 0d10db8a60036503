"""The MLP family: hidden activations, an output with its loss, and L2 regularisation."""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import activations, losses

__all__ = ["MLP", "SEED_MODEL", "HIDDEN", "OUTPUTS"]

#: Hidden activations and their codes in the kernels (the registry: :mod:`.activations`).
HIDDEN = {name: entry.code for name, entry in activations.REGISTRY.items()}

#: Outputs (each with its loss) and their codes in the kernels (the registry: :mod:`.losses`).
OUTPUTS = {name: entry.code for name, entry in losses.REGISTRY.items()}


@dataclass(frozen=True)
class MLP:
    """A fully connected network ``W1, b1, ..., WL, bL``: what its layers compute and its cost.

    Parameters
    ----------
    hidden : str or sequence of str, default "relu"
        The activation of the hidden layers 1..L-1: one name for all, or one per layer, from
        :data:`gradcheck_fast.activations.REGISTRY` (each entry's ``doc`` gives its formula):
        ``"relu"`` max(0, z), ``"leaky_relu"`` z if z > 0 else ``leaky_slope`` * z, ``"tanh"``,
        ``"sigmoid"``, ``"linear"``, and any later entry.
    output : str, default "sigmoid"
        The output layer and its loss, from :data:`gradcheck_fast.losses.REGISTRY`, with
        ``A = AL``, m samples (columns), sums over all output units o and samples j:
        ``"sigmoid"`` (the seed's binary cross-entropy), ``"softmax"`` (categorical
        cross-entropy; Y one-hot, probabilities or integer class labels of shape ``(m,)``),
        ``"linear"`` (squared error ``J = 1/(2m) sum_oj (A - Y)**2``); each entry's ``doc``
        gives its formula.
    l2 : float, default 0.0
        lambda >= 0: adds ``lambda / (2m) * sum_l ||Wl||_F**2`` (biases are not regularised), so
        ``dWl`` gains ``lambda / m * Wl``.
    leaky_slope : float, default 0.01
        The slope of ``"leaky_relu"`` for z <= 0.
    layout : {"columns", "rows"}, default "columns"
        How the network is written. "columns" is the seed's: X ``(n0, m)``, ``Wl`` of shape
        ``(n_l, n_{l-1})``, ``bl`` of shape ``(n_l, 1)``, gradients ``dWl``/``dbl``. "rows" is
        the other widespread convention: X ``(N, D)`` (one sample per row), ``Wl`` of shape
        ``(n_{l-1}, n_l)``, 1-D biases, Y one row (or class label) per sample, gradients keyed
        like the parameters (or with a ``d`` prefix), and L2 written ``l2 * sum_l
        ||Wl||_F**2`` (so ``dWl`` gains ``2 * l2 * Wl``). The report is in the user's layout
        (its shapes and element indices); the engines run on the same numbers, transposed
        (:mod:`gradcheck_fast.rows`).

    Examples
    --------
    >>> MLP()                       # the seed's network
    MLP(hidden='relu', output='sigmoid', l2=0.0, leaky_slope=0.01, layout='columns')
    >>> MLP(hidden=["tanh", "relu"], output="softmax", l2=0.1).hidden_for(3)
    ('tanh', 'relu')
    """

    hidden: str | tuple[str, ...] = "relu"
    output: str = "sigmoid"
    l2: float = 0.0
    leaky_slope: float = 0.01
    layout: str = "columns"

    def __post_init__(self):
        hidden = self.hidden
        if isinstance(hidden, str):
            _check_name(hidden, "hidden", HIDDEN)
        elif isinstance(hidden, Sequence):
            hidden = tuple(hidden)
            for name in hidden:
                _check_name(name, "hidden", HIDDEN)
            object.__setattr__(self, "hidden", hidden)
        else:
            raise TypeError(f"hidden must be an activation name or a sequence of them; got "
                            f"{type(hidden).__name__}")
        _check_name(self.output, "output", OUTPUTS)
        _check_name(self.layout, "layout", {"columns": 0, "rows": 1})
        for name in ("l2", "leaky_slope"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0; got {value!r}")
            object.__setattr__(self, name, float(value))

    def hidden_for(self, n_layers: int) -> tuple[str, ...]:
        """The activations of hidden layers 1..n_layers-1 of a network of n_layers layers."""
        if isinstance(self.hidden, str):
            return (self.hidden,) * (n_layers - 1)
        if len(self.hidden) != n_layers - 1:
            raise ValueError(f"model.hidden names {len(self.hidden)} activation(s) but the "
                             f"network has {n_layers - 1} hidden layer(s)")
        return self.hidden

    def activations(self, n_layers: int) -> tuple[activations.Activation, ...]:
        """The registry entries hidden layers 1..n_layers-1 compute with (a leaky ReLU of slope
        1 is the identity: :func:`gradcheck_fast.activations.resolve`)."""
        return _activations(self, n_layers)

    def l2_gradient(self, m: int) -> float:
        """The weight of the L2 term in each ``dWl``: ``lambda / m``."""
        return self.l2 / m

    @property
    def loss(self) -> losses.Loss:
        """The registry entry of the output and its loss."""
        return losses.REGISTRY[self.output]

    def codes(self, n_layers: int) -> np.ndarray:
        """Activation codes for the kernels: entry l (1 <= l < n_layers) is layer l's
        (read-only, cached: the seed's check runs in microseconds)."""
        return _codes(self, n_layers)

    @property
    def output_code(self) -> int:
        return OUTPUTS[self.output]


@functools.lru_cache(maxsize=256)
def _codes(model: MLP, n_layers: int) -> np.ndarray:
    codes = np.zeros(n_layers + 1, dtype=np.int64)
    codes[1:n_layers] = [entry.code for entry in model.activations(n_layers)]
    codes.flags.writeable = False
    return codes


@functools.lru_cache(maxsize=256)
def _activations(model: MLP, n_layers: int) -> tuple[activations.Activation, ...]:
    return tuple(activations.resolve(name, model.leaky_slope)
                 for name in model.hidden_for(n_layers))


def _check_name(name, what: str, choices: dict) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, one of {tuple(choices)}; got {type(name).__name__}")
    if name not in choices:
        raise ValueError(f"{what} must be one of {tuple(choices)}; got {name!r}")


#: The seed's network: ReLU hidden layers, sigmoid outputs, binary cross-entropy.
SEED_MODEL = MLP()
