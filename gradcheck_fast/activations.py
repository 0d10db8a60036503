"""Hidden activations: one registry entry per activation, holding everything of it that any
engine, mode, the cost model and the reference need.

An entry (:class:`Activation`) owns:

- its kernel **code** (a named constant below) and its jitted **value** ``f(z)``;
- its exact, cancellation-free **change** ``f(z + dz) - f(z)`` (the incremental engine and the
  directional probes carry a perturbation through the network as changes), formed from z, dz,
  ``f(z)`` and up to two **complements** per unit and sample that the unperturbed pass stores
  (e.g. sech(z)**2 for tanh), so that the hot path needs no transcendental function;
- its **Taylor coefficients** ``(f', f''/2, f'''/6)`` (the forward-mode series behind a curved
  layer) with a bound on ``|f''''|`` (how far that series is exact) and its **gain**, a bound on
  ``|f'|`` (how far a change can travel);
- whether it has a **kink** (not differentiable at 0: crossings are counted, radii computed);
- its plain NumPy **forward** and **derivative** (the reference's known-good passes).

The jitted dispatchers :func:`value`, :func:`change` and :func:`has_kink` select by code; an
unknown code raises inside a kernel as well as in Python (:func:`resolve`), never falls through
to another activation. A new activation is one entry here (its functions, its registry line, a
branch in each dispatcher) plus its test data in ``tests/activation_data.py``: every engine,
mode and test picks it up from :data:`REGISTRY`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._jit import jit

__all__ = ["Activation", "REGISTRY", "BY_CODE", "resolve", "value", "change", "has_kink"]

#: Kernel codes, one per activation.
RELU = 0
LEAKY_RELU = 1
TANH = 2
SIGMOID = 3
LINEAR = 4
GELU = 5
SOFTPLUS = 6

#: Below this |dz| a curved activation's change is its Taylor series to dz**4 (no
#: transcendental function per sample); the next term is below 2e-19 relative (see each entry).
DZ_SERIES = 2.0**-15

#: Beyond this |dz| a change has nothing to cancel (a huge step, unscaled inputs): the plain
#: difference f(z + dz) - f(z), which also survives the overflow of the addition theorems.
DZ_PLAIN = 1.0

#: max |sigmoid''''(z)| = 0.1276839... at |z| = 0.8426, rounded up: bounds the remainder of
#: the logistic function's series (and of softplus's and the sigmoid cross-entropy's, one
#: degree higher).
LOGISTIC_FOURTH = 0.12769

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

#: 10-point Gauss-Legendre nodes and weights on [-1, 1]: the integral of the normal density over
#: an interval across which it changes by less than a factor ~2 (see :func:`_normal_mass`),
#: where the rule is exact to rounding (its error term, (h/2)**21 2**21 (10!)**4 / (21 (20!)**3)
#: |phi^(20)|, is below 1e-20 of the integral there).
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(10)


# ---------------------------------------------------------------------------------------------
# ReLU and leaky ReLU: piecewise linear, a kink at 0
# ---------------------------------------------------------------------------------------------
@jit
def _relu(z):
    # NaN stays NaN (the comparison is false), like np.maximum(0, z).
    return 0.0 if z <= 0.0 else z


@jit(inline=True)
def _relu_change(z, dz):
    """``(relu(z + dz) - relu(z), crossed)``: formed explicitly when the kink is crossed."""
    zn = z + dz
    if z > 0.0:
        if zn > 0.0:
            return dz, False
        return -z, True
    if zn > 0.0:
        return zn, True
    return 0.0, False


@jit(inline=True)
def _leaky_change(z, dz, slope):
    """``(f(z + dz) - f(z), crossed)`` of a leaky ReLU of slope ``slope`` below 0."""
    zn = z + dz
    if z > 0.0:
        if zn > 0.0:
            return dz, False
        return slope * zn - z, True
    if zn > 0.0:
        return zn - slope * z, True
    return slope * dz, False


# ---------------------------------------------------------------------------------------------
# tanh and the logistic sigmoid: their addition theorems
# ---------------------------------------------------------------------------------------------
@jit(inline=True)
def _tanh_change(z, dz, a, b):
    """``tanh(dz) b / (1 + a tanh(dz))`` with ``a = tanh(z)``, ``b = sech(z)**2``: never a
    difference of nearly equal values. For |dz| <= 2**-15, tanh(dz) to dz**3 (the next term is
    2 dz**4 / 15 relative, < 2e-19)."""
    if abs(dz) > DZ_PLAIN:
        return math.tanh(z + dz) - math.tanh(z)
    td = dz * (1.0 - dz * dz / 3.0) if abs(dz) <= DZ_SERIES else math.tanh(dz)
    return td * b / (1.0 + a * td)


@jit(inline=True)
def _sigmoid_change(z, dz, a, b):
    """``a b e / (1 + a e)``, ``e = expm1(dz)``, ``a = sigmoid(z)``, ``b = sigmoid(-z)``. For
    |dz| <= 2**-15, expm1 to dz**4 (the next term is dz**4 / 120 relative, < 1e-21)."""
    if abs(dz) > DZ_PLAIN:
        return 1.0 / (1.0 + math.exp(-(z + dz))) - 1.0 / (1.0 + math.exp(-z))
    if abs(dz) <= DZ_SERIES:
        e = dz * (1.0 + dz * (0.5 + dz * (1.0 / 6.0 + dz / 24.0)))
    else:
        e = math.expm1(dz)
    return a * b * e / (1.0 + a * e)


def _sigmoid_np(z):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def _sigmoid_pair(z):
    """``(sigmoid(z), sigmoid(-z))``, each formed directly (not as 1 - the other)."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z)), 1.0 / (1.0 + np.exp(z))


def _tanh_taylor(z, slope):
    f = np.tanh(z)
    with np.errstate(over="ignore"):
        f1 = 1.0 / np.cosh(z) ** 2  # 1 - tanh**2 without cancellation
    return f1, -f * f1, -f1 * (f1 - 2.0 * f * f) / 3.0


def _sigmoid_taylor(z, slope):
    s, sbar = _sigmoid_pair(z)
    s1 = s * sbar
    return s1, s1 * (sbar - s) / 2.0, s1 * (1.0 - 6.0 * s1) / 6.0


def _tanh_complements(z):
    with np.errstate(over="ignore"):
        return 1.0 / np.cosh(z) ** 2, None


def _sigmoid_complements(z):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(z)), None


# ---------------------------------------------------------------------------------------------
# softplus(z + t) - softplus(z), the change of log(1 + e^z) (the sigmoid cross-entropy's too)
# ---------------------------------------------------------------------------------------------
@jit
def softplus_change(t, s, sbar):
    """``softplus(z + t) - softplus(z)`` from ``s = sigmoid(z)``, ``sbar = sigmoid(-z)``, for
    |t| beyond the series: ``log1p(s expm1(t)) = t + log1p(sbar expm1(-t))``, the form whose
    argument stays away from -1; past expm1's overflow (|t| > 700) ``log(sbar + s e^t)`` or
    ``t + log(s + sbar e^-t)``, sums of positive terms. Returns ``(change, scale)``: the change
    is accurate to ``8 u (|change| + scale)`` (the cross-entropy of a sigmoid output is this
    change minus ``y t``, see :mod:`gradcheck_fast.losses`)."""
    if abs(t) > 700.0:
        if t < 0.0:
            change = math.log(sbar + s * math.exp(t))
        else:
            change = t + math.log(s + sbar * math.exp(-t))
        return change, abs(t)
    if s <= 0.5:
        return math.log1p(s * math.expm1(t)), 0.0
    # The addition cancels where the result ends near its start (t = -40 from z = 0.3): its
    # rounding is relative to |t|, not to the change.
    return t + math.log1p(sbar * math.expm1(-t)), abs(t)


# ---------------------------------------------------------------------------------------------
# softplus: log(1 + e^z), a smooth ReLU
# ---------------------------------------------------------------------------------------------
@jit
def _softplus(z):
    # max(z, 0) + log1p(e^-|z|): no overflow, accurate for z << 0 (where it is e^z).
    if z > 0.0:
        return z + math.log1p(math.exp(-z))
    return math.log1p(math.exp(z))


@jit(inline=True)
def _softplus_change(dz, s, sbar):
    """softplus's change: its Taylor series ``s dz + s' dz**2/2 + s'' dz**3/6 + s''' dz**4/24``
    for |dz| <= 2**-15 (the remainder is at most ``LOGISTIC_FOURTH / 120 |dz|**5``, below 1e-24
    |dz|), else :func:`softplus_change`."""
    if abs(dz) <= DZ_SERIES:
        d1 = s * sbar
        return dz * (s + dz * (d1 / 2.0 + dz * (d1 * (sbar - s) / 6.0
                                                + dz * d1 * (1.0 - 6.0 * d1) / 24.0)))
    return softplus_change(dz, s, sbar)[0]


def _softplus_np(z):
    return np.logaddexp(0.0, z)


def _softplus_taylor(z, slope):
    s, sbar = _sigmoid_pair(z)
    s1 = s * sbar
    return s, s1 / 2.0, s1 * (sbar - s) / 6.0


def _softplus_complements(z):
    return _sigmoid_pair(z)


# ---------------------------------------------------------------------------------------------
# GELU, exact: z Phi(z) with Phi(z) = erfc(-z / sqrt 2) / 2
# ---------------------------------------------------------------------------------------------
@jit
def _gelu(z):
    return z * (0.5 * math.erfc(-z * _SQRT_HALF))


@jit
def _normal_mass(z, dz):
    """``Phi(z + dz) - Phi(z)`` without a difference of nearly equal values.

    With a <= b the ends: the two tail values on the side where they are small (Phi below 0,
    1 - Phi above, Phi(a) and Phi(b) across 0), each from erfc; where the smaller is at most
    half the larger their difference loses at most an ulp of itself. Otherwise the density
    changes by less than a factor ~2 across [a, b], and its integral is taken with 10-point
    Gauss-Legendre."""
    a = min(z, z + dz)
    b = max(z, z + dz)
    if a >= 0.0:
        big = 0.5 * math.erfc(a * _SQRT_HALF)
        small = 0.5 * math.erfc(b * _SQRT_HALF)
    else:
        big = 0.5 * math.erfc(-b * _SQRT_HALF)
        small = 0.5 * math.erfc(-a * _SQRT_HALF)
    if small <= 0.5 * big:
        return big - small if dz > 0.0 else small - big
    half = 0.5 * dz
    centre = z + half
    total = 0.0
    for k in range(_GL_NODES.shape[0]):
        x = centre + half * _GL_NODES[k]
        total += _GL_WEIGHTS[k] * math.exp(-0.5 * x * x)
    return half * total * _INV_SQRT_2PI


@jit(inline=True)
def _gelu_change(z, dz, cdf, pdf):
    """GELU's change from ``cdf = Phi(z)``, ``pdf = phi(z)``: its Taylor series to dz**4 for
    |dz| <= 2**-15 (f' = Phi + z phi, f'' = (2 - z**2) phi, f''' = (z**3 - 4 z) phi,
    f'''' = (7 z**2 - z**4 - 4) phi; the remainder |f^(5)| |dz|**5 / 120 with
    |f^(5)| = |z**5 - 11 z**3 + 18 z| phi < 3 is below 1e-24 |dz|); up to |dz| = 1
    ``dz Phi(z + dz) + z (Phi(z + dz) - Phi(z))`` with the second difference formed without
    cancellation (:func:`_normal_mass`); beyond, the plain difference."""
    if abs(dz) > DZ_PLAIN:
        return _gelu(z + dz) - _gelu(z)
    if abs(dz) <= DZ_SERIES:
        z2 = z * z
        f1 = cdf + z * pdf
        f2 = (2.0 - z2) * pdf / 2.0
        f3 = (z2 - 4.0) * z * pdf / 6.0
        f4 = (7.0 * z2 - z2 * z2 - 4.0) * pdf / 24.0
        return dz * (f1 + dz * (f2 + dz * (f3 + dz * f4)))
    mass = _normal_mass(z, dz)
    return dz * (cdf + mass) + z * mass


@jit
def _gelu_parts(z, cdf, pdf):
    """``Phi(z)``, ``phi(z)`` elementwise into cdf, pdf (flat arrays; NumPy has no erfc)."""
    for k in range(z.shape[0]):
        cdf[k] = 0.5 * math.erfc(-z[k] * _SQRT_HALF)
        pdf[k] = math.exp(-0.5 * z[k] * z[k]) * _INV_SQRT_2PI


def _gelu_complements(z):
    z = np.ascontiguousarray(z, dtype=np.float64)
    cdf = np.empty(z.size)
    pdf = np.empty(z.size)
    _gelu_parts(z.ravel(), cdf, pdf)
    return cdf.reshape(z.shape), pdf.reshape(z.shape)


def _gelu_np(z):
    cdf, _ = _gelu_complements(z)
    return z * cdf


def _gelu_taylor(z, slope):
    cdf, pdf = _gelu_complements(z)
    z2 = z * z
    return cdf + z * pdf, (2.0 - z2) * pdf / 2.0, (z2 - 4.0) * z * pdf / 6.0


# ---------------------------------------------------------------------------------------------
# The dispatchers the kernels call
# ---------------------------------------------------------------------------------------------
@jit
def value(code, z, slope):
    """``f(z)`` of the activation with kernel code ``code`` (``slope``: leaky ReLU's)."""
    if code == RELU:
        return _relu(z)
    if code == LEAKY_RELU:
        return z if z > 0.0 else slope * z
    if code == TANH:
        return math.tanh(z)
    if code == SIGMOID:
        return 1.0 / (1.0 + math.exp(-z))
    if code == LINEAR:
        return z
    if code == GELU:
        return _gelu(z)
    if code == SOFTPLUS:
        return _softplus(z)
    raise ValueError("gradcheck_fast: unknown activation code")


@jit(inline=True)
def change(code, z, dz, slope, a, c1, c2):
    """``(f(z + dz) - f(z), crossed)``: the exact change where no kink is crossed, formed without
    cancellation from ``a = f(z)`` and the complements ``c1``, ``c2`` of the unperturbed pass
    (each entry's ``complements``); ``crossed``: a kink was crossed."""
    if code == LINEAR:
        return dz, False
    if code == TANH:
        return _tanh_change(z, dz, a, c1), False
    if code == SIGMOID:
        return _sigmoid_change(z, dz, a, c1), False
    if code == RELU:
        return _relu_change(z, dz)
    if code == LEAKY_RELU:
        return _leaky_change(z, dz, slope)
    if code == GELU:
        return _gelu_change(z, dz, c1, c2), False
    if code == SOFTPLUS:
        return _softplus_change(dz, c1, c2), False
    raise ValueError("gradcheck_fast: unknown activation code")


@jit(inline=True)
def series(code, z, slope, a, c1, c2):
    """``(f'(z), f''(z) / 2, f'''(z) / 6)`` of the activation with kernel code ``code``, from
    ``a = f(z)`` and the complements ``c1``, ``c2`` the unperturbed pass stores for
    :func:`change` (the NumPy ``taylor`` of each entry, per element); a piecewise-linear f has
    only the first, taken on z's side of its kink (the slope below it at z = 0)."""
    if code == RELU:
        return (1.0 if z > 0.0 else 0.0), 0.0, 0.0
    if code == LEAKY_RELU:
        return (1.0 if z > 0.0 else slope), 0.0, 0.0
    if code == LINEAR:
        return 1.0, 0.0, 0.0
    if code == TANH:  # c1 = sech(z)**2
        return c1, -a * c1, -c1 * (c1 - 2.0 * a * a) / 3.0
    if code == SIGMOID:  # a = sigmoid(z), c1 = sigmoid(-z)
        s1 = a * c1
        return s1, s1 * (c1 - a) / 2.0, s1 * (1.0 - 6.0 * s1) / 6.0
    if code == GELU:  # c1 = Phi(z), c2 = phi(z)
        z2 = z * z
        return c1 + z * c2, (2.0 - z2) * c2 / 2.0, (z2 - 4.0) * z * c2 / 6.0
    if code == SOFTPLUS:  # c1 = sigmoid(z), c2 = sigmoid(-z)
        s1 = c1 * c2
        return c1, s1 / 2.0, s1 * (c2 - c1) / 6.0
    raise ValueError("gradcheck_fast: unknown activation code")


@jit
def has_kink(code):
    """Whether the activation is not differentiable at 0 (ReLU and leaky ReLU)."""
    return code == RELU or code == LEAKY_RELU


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------
def _identity_taylor(z, slope):
    return np.ones_like(z), None, None


@dataclass(frozen=True)
class Activation:
    """Everything the package knows of one hidden activation f.

    Attributes
    ----------
    name, code : the user's name and the kernels' code.
    kink : f is not differentiable at 0 (ReLU-type): crossings are counted and kept out of the
        series; radii say how far a unit may move before a later one crosses.
    curved : f has non-zero higher derivatives: outputs behind it move by a cubic, not a
        multiple, of a unit's change, and a +-step's changes are not symmetric.
    gain : ``gain(slope)`` bounds ``|f'|`` (how far a change can travel through the layer).
    fourth : bounds ``|f''''|`` (curved only): behind the layer the cubic series of the outputs'
        change is exact to rounding while pre-activations move by at most T_SMOOTH
        (:mod:`gradcheck_fast.engines.incremental`), since ``fourth / 24 * T_SMOOTH**3 < 1e-18``.
    forward : NumPy ``f(Z, slope)``.
    derivative : NumPy ``f'(Z, A, slope)`` with ``A = f(Z)`` (the reference's backward pass).
    taylor : NumPy ``(f', f''/2, f'''/6)`` at Z, elementwise (None: zero).
    complements : NumPy ``(c1, c2)`` at Z (None: unused), stored by the unperturbed pass for
        :func:`change`; None when :func:`change` needs none.
    """

    name: str
    code: int
    kink: bool
    curved: bool
    gain: Callable[[float], float]
    fourth: float
    forward: Callable
    derivative: Callable
    taylor: Callable
    complements: Callable | None
    doc: str


REGISTRY: dict[str, Activation] = {
    entry.name: entry for entry in (
        Activation(
            "relu", RELU, kink=True, curved=False, gain=lambda slope: 1.0, fourth=0.0,
            forward=lambda Z, slope: np.maximum(Z, 0.0),
            derivative=lambda Z, A, slope: (Z > 0).astype(np.float64),
            taylor=lambda Z, slope: ((Z > 0.0).astype(np.float64), None, None),
            complements=None, doc="max(0, z)"),
        Activation(
            "leaky_relu", LEAKY_RELU, kink=True, curved=False,
            gain=lambda slope: max(1.0, slope), fourth=0.0,
            forward=lambda Z, slope: np.where(Z > 0.0, Z, slope * Z),
            derivative=lambda Z, A, slope: np.where(Z > 0, 1.0, slope),
            taylor=lambda Z, slope: (np.where(Z > 0.0, 1.0, slope), None, None),
            complements=None, doc="z if z > 0 else leaky_slope * z"),
        Activation(
            "tanh", TANH, kink=False, curved=True, gain=lambda slope: 1.0, fourth=4.1,
            forward=lambda Z, slope: np.tanh(Z),
            derivative=lambda Z, A, slope: 1 - A**2,
            taylor=_tanh_taylor, complements=_tanh_complements, doc="tanh(z)"),
        Activation(
            "sigmoid", SIGMOID, kink=False, curved=True, gain=lambda slope: 0.25,
            fourth=LOGISTIC_FOURTH,
            forward=lambda Z, slope: _sigmoid_np(Z),
            derivative=lambda Z, A, slope: A * (1 - A),
            taylor=_sigmoid_taylor, complements=_sigmoid_complements,
            doc="1 / (1 + exp(-z))"),
        Activation(
            "linear", LINEAR, kink=False, curved=False, gain=lambda slope: 1.0, fourth=0.0,
            forward=lambda Z, slope: Z + 0.0,
            derivative=lambda Z, A, slope: np.ones_like(Z),
            taylor=_identity_taylor, complements=None, doc="z"),
        Activation(
            # max f' = f'(sqrt 2) = 1.12896...; |f''''| <= 4 phi(0) = 1.596 at z = 0.
            "gelu", GELU, kink=False, curved=True, gain=lambda slope: 1.129, fourth=1.6,
            forward=lambda Z, slope: _gelu_np(Z),
            derivative=lambda Z, A, slope: _gelu_taylor(Z, slope)[0],
            taylor=_gelu_taylor, complements=_gelu_complements,
            doc="z Phi(z), Phi the standard normal distribution function (exact, with erf)"),
        Activation(
            "softplus", SOFTPLUS, kink=False, curved=True, gain=lambda slope: 1.0, fourth=0.125,
            forward=lambda Z, slope: _softplus_np(Z),
            derivative=lambda Z, A, slope: _sigmoid_np(Z),
            taylor=_softplus_taylor, complements=_softplus_complements,
            doc="log(1 + exp(z))"),
    )
}

#: Entries by kernel code.
BY_CODE: dict[int, Activation] = {entry.code: entry for entry in REGISTRY.values()}


def resolve(name: str, slope: float) -> Activation:
    """The entry a layer of activation ``name`` computes with: a leaky ReLU of slope 1 is the
    identity, without a kink (``"linear"``). Unknown names raise ValueError."""
    if name not in REGISTRY:
        raise ValueError(f"unknown activation {name!r}; the registry has {tuple(REGISTRY)}")
    if name == "leaky_relu" and slope == 1.0:
        return REGISTRY["linear"]
    return REGISTRY[name]
