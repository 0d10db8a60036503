"""The truncation error of a large step's central difference: bounded from two smaller steps,
or declared unknown.

For a function smooth on [theta - h, theta + h] the central difference is
``D(h) = f' + t1 + t2 + t3 + ...`` with ``tk = f^(2k+1) h^(2k) / (2k+1)!``. Its truncation
error ``E(h) = D(h) - f'`` is what a large step adds to the noise bound of an element, and it
has to be *bounded*: an estimate that comes out small by cancellation calls a correct gradient
wrong (the old ``|D(h) - D(2h)| / 3`` did for ~2.7 % of random tanh networks at h = 1e-2 and
for all of them at h = 5e-2).

The bound here uses the two smaller steps h/2 and h/4, never a larger one: it is the series at
the user's step h that must converge, and the smaller steps stay inside the interval the check
already evaluates (no new kinks crossed, no new domain left). With ``e1 = D(h) - D(h/2)`` and
``e2 = D(h/2) - D(h/4)``,

    e1 = 3/4 t1 + 15/16 t2 + (1 - 4**-k) tk ...,   e2 = 3/16 t1 + 15/256 t2 + (4**-k - 16**-k) tk

so the first two terms solve to ``t2^ = 64/45 (e1 - 4 e2)``, ``t1^ = 4/3 e1 - 5/4 t2^``, and

    E^ = t1^ + t2^ = 44/45 e1 + 64/45 e2.

The weight of each later term tk (k >= 3) in ``E^`` is 1 - w_k with 1/64 <= w_k < 1/45, so
``|E - E^| <= (|t3| + |t4| + ...) / 45``, and t2^ is off by at most 64/45 times that tail.
If from t2 on the terms shrink at least geometrically, ``|t(k+1)| <= q |tk|``, the tail is at
most ``|t2^| q / (1 - (1 + 64/45) q)``, which is at most ``45 |t2^|`` for every q <= 0.408.
Hence the bound ``|E^| + |t2^|`` for such q. Whether the series is in that regime at step h is
read off the two fitted terms: ``|t2^| <= REGIME_RATIO |t1^|`` (a ratio of 1/4 leaves a margin of
1.6 to 0.408 for later ratios larger than the first). Where it is not (the step reaches beyond
the function's smooth neighbourhood, a kink lies within it, or t1 happens to vanish), no bound is
claimed: the bound is infinite and the element, unless it agrees within the plain tolerance
anyway, is "unverified" — never "wrong".

The bound is formed from rounded differences: each central difference's rounding enters it
with the weights ``ROUNDING_WEIGHTS`` (|coefficients| of D(h), D(h/2), D(h/4) in E^ and t2^),
and the check adds that much rounding to the element's noise bound (:func:`with_truncation`).

One exception keeps exactly quadratic coordinates (a linear output's last layer: D is exact and
e1, e2 are rounding) from all turning unverified: when the three differences agree within
``FLAT_FRACTION`` of the elementwise tolerance, or within their own rounding (a cost computed
in float32, whose rounding is far above the tolerance), the sequence shows nothing the check
could see, and ``|E^| + |t2^|`` (of the size of that agreement) is used.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

#: Above this step the central difference's truncation error (h**2 times the third
#: derivative, over 6) can reach the elementwise tolerance; it is then bounded by
#: :func:`truncation_bound` (two more central differences per coordinate, at h/2 and h/4).
TRUNCATION_STEP = 1e-5

#: The series counts as converging at the step h when its fitted second term is at most this
#: fraction of its first (see the module docstring for the margin it leaves).
REGIME_RATIO = 0.25

#: Central differences at h, h/2 and h/4 that agree within this fraction of the elementwise
#: tolerance show no truncation the check could resolve (see the module docstring).
FLAT_FRACTION = 0.1

#: The steps, as fractions of epsilon, whose central differences :func:`truncation_bound` takes.
SMALLER_STEPS = (0.5, 0.25)

#: How the rounding errors of D(h), D(h/2), D(h/4) enter ``|E^| + |t2^|``: the sums of the
#: absolute coefficients, (44 + 64) / 45, (20 + 320) / 45 and (64 + 256) / 45.
ROUNDING_WEIGHTS = (108.0 / 45.0, 340.0 / 45.0, 320.0 / 45.0)


def propagated_rounding(noise_h, noise_half, noise_quarter):
    """The rounding of the bound, from the rounding bounds of the three central differences
    (in gradient units)."""
    w_h, w_half, w_quarter = ROUNDING_WEIGHTS
    return w_h * noise_h + w_half * noise_half + w_quarter * noise_quarter


def with_truncation(first, half, quarter, atol: float, rtol: float):
    """``first`` (the engine's :class:`~gradcheck_fast.engines.Costs` at step h) with the
    truncation bound from ``half`` and ``quarter`` (the same at h/2 and h/4), and the rounding
    of that bound, from the three differences' own noise bounds, added to its noise."""
    noise = first.noise + propagated_rounding(first.noise, half.noise, quarter.noise)
    tolerance = atol + rtol * np.abs(first.gradapprox)
    rounding = first.noise + 2.0 * half.noise + quarter.noise
    with np.errstate(invalid="ignore"):
        rounding = np.where(np.isnan(rounding), 0.0, rounding)
    return replace(first, noise_source=noise,
                   truncation=truncation_bound(first.gradapprox, half.gradapprox,
                                               quarter.gradapprox, tolerance, rounding))


def truncation_bound(d_h: np.ndarray, d_half: np.ndarray, d_quarter: np.ndarray,
                     tolerance: np.ndarray, rounding=0.0) -> np.ndarray:
    """A bound on ``|D(h) - f'|`` per coordinate from the central differences at h, h/2, h/4.

    Parameters
    ----------
    d_h, d_half, d_quarter : ndarray
        The central differences at the steps h, h/2 and h/4 (same shape).
    tolerance : ndarray or float
        The elementwise tolerance ``atol + rtol |D(h)|`` the bound will be compared with (only
        used to recognise a sequence flat within what the check can see).
    rounding : ndarray or float, default 0
        A bound on the rounding of ``|e1| + |e2|`` (from the differences' own rounding): a
        sequence flat within it is flat too.

    Returns
    -------
    ndarray
        ``|E^| + |t2^|`` where the series is in its asymptotic regime (or flat), ``inf`` where
        no bound can be claimed (including NaN differences).

    Examples
    --------
    ``sin`` at 1 with h = 0.4: the true error of D(h) is 0.0143; the bound holds it tightly.

    >>> import numpy as np
    >>> D = lambda h: (np.sin(1 + h) - np.sin(1 - h)) / (2 * h)
    >>> error = abs(D(0.4) - np.cos(1.0))
    >>> bound = truncation_bound(D(0.4), D(0.2), D(0.1), 1e-8)
    >>> bool(error <= bound <= 1.01 * error)
    True

    A kink inside the step (|x| at 0.1, h = 0.4) leaves the regime: no bound.

    >>> D = lambda h: (abs(0.1 + h) - abs(0.1 - h)) / (2 * h)
    >>> float(truncation_bound(D(0.4), D(0.2), D(0.1), 1e-8))
    inf
    """
    with np.errstate(invalid="ignore", over="ignore"):
        e1 = d_h - d_half
        e2 = d_half - d_quarter
        t2 = 64.0 / 45.0 * (e1 - 4.0 * e2)
        t1 = 4.0 / 3.0 * e1 - 1.25 * t2
        bound = np.abs(t1 + t2) + np.abs(t2)
        asymptotic = np.abs(t2) <= REGIME_RATIO * np.abs(t1)
        flat = np.abs(e1) + np.abs(e2) <= FLAT_FRACTION * tolerance + rounding
    return np.where((asymptotic | flat) & np.isfinite(bound), bound, np.inf)


#: Richardson extrapolation: the second central difference is taken at this multiple of the
#: step (see :func:`richardson`).
RICHARDSON_FACTOR = 2.0


def richardson(first, second):
    """The Richardson extrapolation of two central differences, ``first`` at step h and
    ``second`` at 2h (:class:`~gradcheck_fast.engines.Costs` of the same coordinates):
    ``(4 D(h) - D(2h)) / 3 = (8 (J+h - J-h) - (J+2h - J-2h)) / 12h`` cancels the h**2 term of
    the central difference; what remains is O(h**4). Its rounding bound is the same
    combination of the two differences' bounds; J+- are those at h (at 2h where h's are not
    finite), and the kinks crossed by either step count."""
    finite = second.finite()
    return replace(
        first,
        _J_plus=np.where(finite, first.J_plus, second.J_plus),
        _J_minus=np.where(finite, first.J_minus, second.J_minus),
        gradapprox=(4.0 * first.gradapprox - second.gradapprox) / 3.0,
        # In J units at step h: (4 R1 / 2h + R2 / 4h) / 3 = R / 2h with
        resolution=(4.0 * first.resolution + 0.5 * second.resolution) / 3.0,
        noise_source=(4.0 * first.noise + second.noise) / 3.0,
        kinks=first.kinks + second.kinks,
    )
