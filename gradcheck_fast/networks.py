"""Example networks for demos, tests and benchmarks: seeded random MLPs in the seed's format."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import reference

__all__ = ["random_mlp", "example", "NAMED_SIZES"]

#: The networks the benchmarks and the README talk about: (layer widths, samples m).
NAMED_SIZES: dict[str, tuple[tuple[int, ...], int]] = {
    "seed": ((4, 5, 3, 1), 3),
    "small": ((20, 10, 5, 1), 32),
    "medium": ((64, 32, 16, 1), 128),
    "wide": ((256, 128, 64, 1), 128),
    "mnist": ((784, 256, 128, 10), 64),
}


def random_mlp(sizes: Sequence[int], m: int, seed: int = 0, *, correct: bool = True):
    """A random network with data and its backprop gradients, in the seed's dict format.

    Weights are He-initialised (``N(0, 2 / n_prev)``), biases ``N(0, 0.01)``, inputs
    ``N(0, 1)`` and labels 0/1, all from ``numpy.random.default_rng(seed)``.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths ``n0, n1, ..., nL`` (``n0`` inputs, ``nL`` sigmoid outputs).
    m : int
        Number of samples.
    seed : int
    correct : bool, default True
        The gradients of :func:`reference.backward_propagation_n`; with False, those of the seed's
        faulty backward pass (which needs at least two layers to show both mistakes).

    Returns
    -------
    X, Y, parameters, gradients

    Examples
    --------
    >>> X, Y, parameters, gradients = random_mlp((3, 2, 1), m=5)
    >>> X.shape, Y.shape, parameters["W2"].shape, gradients["db1"].shape
    ((3, 5), (1, 5), (1, 2), (2, 1))
    """
    rng = np.random.default_rng(seed)
    parameters = {}
    for l in range(1, len(sizes)):
        parameters[f"W{l}"] = rng.standard_normal((sizes[l], sizes[l - 1])) * np.sqrt(
            2.0 / sizes[l - 1]
        )
        parameters[f"b{l}"] = 0.1 * rng.standard_normal((sizes[l], 1))
    X = rng.standard_normal((sizes[0], m))
    Y = (rng.random((sizes[-1], m)) < 0.5).astype(np.float64)
    _, cache = reference.forward_propagation_n(X, Y, parameters)
    backward = (reference.backward_propagation_n if correct
                else reference.backward_propagation_n_faulty)
    return X, Y, parameters, backward(X, Y, cache)


def example(name: str):
    """``(X, Y, parameters, gradients)`` of a network named in :data:`NAMED_SIZES`.

    ``'seed'`` is the seed's published case with the seed's *faulty* backward pass; the others
    are :func:`random_mlp` networks (seed 0) with correct gradients.

    Examples
    --------
    >>> X, Y, parameters, gradients = example("seed")
    >>> float(gradients["dW2"][0, 0]) == 2 * float(reference.backward_propagation_n(
    ...     X, Y, reference.forward_propagation_n(X, Y, parameters)[1])["dW2"][0, 0])
    True
    """
    if name == "seed":
        X, Y, parameters = reference.seed_case()
        _, cache = reference.forward_propagation_n(X, Y, parameters)
        return X, Y, parameters, reference.backward_propagation_n_faulty(X, Y, cache)
    if name not in NAMED_SIZES:
        raise ValueError(f"unknown network {name!r}; expected one of {sorted(NAMED_SIZES)}")
    sizes, m = NAMED_SIZES[name]
    return random_mlp(sizes, m, seed=0)
