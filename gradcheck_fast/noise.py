"""How noisy the computed cost is: Moré & Wild's ECnoise estimate of J's rounding noise.

A central difference divides the rounding errors of J(theta + eps e_i) and J(theta - eps e_i) by
2 eps, so a correct gradient can disagree with it by much more than "a few ulps of J": the
seed's own case loses ~100 ulps in ``log(1 - sigmoid(z))`` when a sample's output saturates.
Rather than guess a constant, we measure the noise of J where it is computed: J is evaluated at
``theta + t h v`` for t = 0..8 along one fixed random direction v with a tiny relative step h.
There the smooth part of J is a low-degree polynomial in t, so its high-order differences
vanish, and what remains of the k-th differences is noise. ECnoise (J. J. Moré and S. M. Wild,
"Estimating computational noise", SIAM J. Sci. Comput. 33(3), 2011) turns them into

    sigma_k**2 = gamma_k / (n - k) * sum_t (Delta^k J_t)**2,   gamma_k = (k!)**2 / (2k)!

which estimates the standard deviation of the rounding error of one evaluation of J.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

#: Safety factor on the ECnoise estimate sigma of J's rounding noise. The noise of a central
#: difference (e+ - e-) / (2 eps) has a standard deviation of about sigma / (sqrt(2) eps); 8 sigma
#: / eps is over 11 of them, and sigma itself comes from only a few differences.
SIGMA_FACTOR = 8.0

#: Points along the direction (Moré and Wild use 7 to 9).
N_POINTS = 9

#: The step, relative to max(|theta_i|, 2**-10): small enough that no ReLU kink is likely to be
#: crossed and the smooth part's differences of order >= 3 are far below rounding, large enough
#: that every perturbed entry really moves (1e-9 >> 2**-53). Not a power of two: with a dyadic
#: step, theta + t h v is exact and J can come out as an exact arithmetic progression in t,
#: whose differences (and so the estimate) are 0 although J's rounding is not.
REL_STEP = 1e-9

#: The fixed seed of the direction: the estimate, like the check, is deterministic.
_SEED = 20111


@functools.lru_cache(maxsize=16)
def _direction(n: int) -> np.ndarray:
    """The fixed random +-1 direction for n parameters (read-only, cached)."""
    direction = np.random.default_rng(_SEED).choice((-1.0, 1.0), size=n)
    direction.flags.writeable = False
    return direction


def ecnoise_step(theta: np.ndarray) -> np.ndarray:
    """The step ``h v`` between ECnoise points: ``REL_STEP * max(|theta_i|, 2**-10) * (+-1)``."""
    return REL_STEP * np.maximum(np.abs(theta), 2.0**-10) * _direction(theta.shape[0])


def sigma_from_values(values) -> float:
    """The ECnoise estimate from costs at ``N_POINTS`` equally spaced points.

    The largest of the estimates of orders 3..6 (erring on the side of calling a correct
    gradient correct); NaN if any value is not finite. Plain Python: the table is tiny.
    """
    row = [float(v) for v in values]
    if not all(math.isfinite(v) for v in row):
        return math.nan
    sigma = 0.0
    for k in range(1, 7):
        row = [b - a for a, b in zip(row, row[1:])]
        if k >= 3:
            gamma = math.factorial(k) ** 2 / math.factorial(2 * k)
            sigma = max(sigma, math.sqrt(gamma * sum(d * d for d in row) / len(row)))
    return sigma


def cost_noise(cost: Callable[[np.ndarray], float], theta: np.ndarray) -> float:
    """The estimated standard deviation of the rounding noise of ``cost`` near ``theta``.

    Parameters
    ----------
    cost : callable
        ``cost(theta) -> float`` on a flat float64 vector.
    theta : ndarray
        The point (not modified).

    Returns
    -------
    float
        See :func:`sigma_from_values`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> noise = np.float64(1e-12) * rng.standard_normal(N_POINTS)
    >>> def cost(theta):  # a smooth function plus artificial noise of size 1e-12
    ...     k = int(round((theta[0] - 1.0) / REL_STEP))
    ...     return float(np.sin(theta[0]) + noise[abs(k)])
    >>> 2e-13 < cost_noise(cost, np.array([1.0])) < 5e-12
    True
    """
    step = ecnoise_step(theta)
    return sigma_from_values([cost(theta + t * step) for t in range(N_POINTS)])
