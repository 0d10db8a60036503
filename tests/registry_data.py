"""Test data of the registries (gradcheck_fast.activations, gradcheck_fast.losses): for every
entry, definitions written independently of the library — 50-digit (mpmath) and complex
(complex-step derivatives) — that the tests hold the library's kernels, NumPy passes and
bounds against, and a way to draw labels. A registry entry without its data here fails
tests/test_registry.py; with it, every test that iterates over the registries covers it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mpmath
import numpy as np

mpmath.mp.dps = 50

@dataclass(frozen=True)
class ActivationData:
    """``mp(z, slope)``: f in 50 digits (z an mpf); ``complex(Z, slope)``: f on a complex array
    (for complex-step derivatives; kinks decided on the real part); ``terms(z, slope)``: the
    magnitude of the terms that make up f'(z) in the entry's formulas, times the relative
    error their stored values carry beyond an ulp (the rounding of a change dz is a few ulps
    of ``|dz| terms``). For GELU, whose f' = Phi + z phi vanishes at z = -0.75, that is
    ``(Phi + |z| phi) (1 + z**2)``, not |f'|: Phi and phi are erfc and exp of the rounded
    argument -z / sqrt 2, resp. -z**2 / 2, whose rounding they amplify ~z**2 times."""

    mp: Callable
    complex: Callable
    terms: Callable


_SQRT2 = mpmath.sqrt(2)


def _normal_cdf(z):
    return mpmath.erfc(-mpmath.mpf(z) / _SQRT2) / 2


def _complex_gelu(Z, slope):
    erfc = np.vectorize(lambda z: complex(mpmath.erfc(-mpmath.mpc(z) / _SQRT2)),
                        otypes=[complex])
    return Z * erfc(Z) / 2


def _gelu_terms(z, slope):
    pdf = mpmath.exp(-mpmath.mpf(z) ** 2 / 2) / mpmath.sqrt(2 * mpmath.pi)
    return float((_normal_cdf(z) + abs(z) * pdf) * (1 + z * z))


def _sech2(z):
    return float(1 / mpmath.cosh(z) ** 2)


def _logistic(z):
    return float(1 / (1 + mpmath.exp(-z)))


ACTIVATIONS: dict[str, ActivationData] = {
    "relu": ActivationData(
        mp=lambda z, slope: z if z > 0 else mpmath.mpf(0),
        complex=lambda Z, slope: np.where(Z.real > 0, Z, 0),
        terms=lambda z, slope: 1.0),
    "leaky_relu": ActivationData(
        mp=lambda z, slope: z if z > 0 else mpmath.mpf(slope) * z,
        complex=lambda Z, slope: np.where(Z.real > 0, Z, slope * Z),
        terms=lambda z, slope: max(1.0, slope)),
    "tanh": ActivationData(mp=lambda z, slope: mpmath.tanh(z),
                           complex=lambda Z, slope: np.tanh(Z),
                           terms=lambda z, slope: _sech2(z)),
    "sigmoid": ActivationData(mp=lambda z, slope: 1 / (1 + mpmath.exp(-z)),
                              complex=lambda Z, slope: 1 / (1 + np.exp(-Z)),
                              terms=lambda z, slope: _logistic(z) * _logistic(-z)),
    "linear": ActivationData(mp=lambda z, slope: z, complex=lambda Z, slope: Z,
                             terms=lambda z, slope: 1.0),
    "gelu": ActivationData(mp=lambda z, slope: z * _normal_cdf(z), complex=_complex_gelu,
                           terms=_gelu_terms),
    "softplus": ActivationData(mp=lambda z, slope: mpmath.log(1 + mpmath.exp(z)),
                               complex=lambda Z, slope: np.log(1 + np.exp(Z)),
                               terms=lambda z, slope: _logistic(z)),
}


@dataclass(frozen=True)
class LossData:
    """``mp_sample(z, y)``: one sample's loss in 50 digits (z, y sequences of mpf);
    ``complex_sum(Z, Y)``: the summed loss of complex output pre-activations (n_out, m);
    ``labels(rng, n_out, m)``: Y as the tests draw it (what the user passes)."""

    mp_sample: Callable
    complex_sum: Callable
    labels: Callable


def _complex_softmax_sum(Z, Y):
    shift = Z.real.max(axis=0, keepdims=True)
    log_A = Z - shift - np.log(np.sum(np.exp(Z - shift), axis=0, keepdims=True))
    return -np.sum(Y * log_A)


LOSSES: dict[str, LossData] = {
    "sigmoid": LossData(
        mp_sample=lambda z, y: sum(mpmath.log(1 + mpmath.exp(a)) - b * a for a, b in zip(z, y)),
        complex_sum=lambda Z, Y: np.sum(-Y * np.log(1 / (1 + np.exp(-Z)))
                                        - (1 - Y) * np.log(1 - 1 / (1 + np.exp(-Z)))),
        labels=lambda rng, n_out, m: (rng.random((n_out, m)) < 0.5).astype(float)),
    "softmax": LossData(
        mp_sample=lambda z, y: sum(y) * mpmath.log(sum(mpmath.exp(a) for a in z))
        - sum(b * a for a, b in zip(z, y)),
        complex_sum=_complex_softmax_sum,
        labels=lambda rng, n_out, m: rng.integers(n_out, size=m)),
    "linear": LossData(
        mp_sample=lambda z, y: sum((a - b) ** 2 for a, b in zip(z, y)) / 2,
        complex_sum=lambda Z, Y: 0.5 * np.sum((Z - Y) ** 2),
        labels=lambda rng, n_out, m: rng.standard_normal((n_out, m))),
}


def one_hot_labels(model, Y, n_out):
    """Y as a float (n_out, m) matrix: class labels of a loss that takes them become one-hot."""
    Y = np.asarray(Y)
    if Y.ndim == 1 and Y.dtype.kind in "iu":
        out = np.zeros((n_out, Y.shape[0]))
        out[Y, np.arange(Y.shape[0])] = 1.0
        return out
    return Y.reshape(n_out, -1) if Y.ndim == 1 else Y
