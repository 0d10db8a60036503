"""The steps a central difference really takes: the one home of their formula.

The seed perturbs ``theta_i`` to ``fl(theta_i + epsilon)`` and ``fl(theta_i - epsilon)``, so
the steps it really takes are ``fl(theta_i +- epsilon) - theta_i``: each difference is exact in
floating point (Sterbenz), off from +-epsilon by up to an ulp of theta_i, and 0 where epsilon
is below half of theta_i's spacing (the parameter did not move). The engines divide by these
steps, bound the changes they cause, and mark a coordinate whose steps round to 0 unverified.
"""

from __future__ import annotations

from ._jit import jit


def numpy_steps(t, epsilon):
    """``(fl(t + epsilon) - t, fl(t - epsilon) - t)`` for an array ``t`` (or a float), in
    NumPy; :func:`steps_taken` is the same formula in a kernel.

    >>> numpy_steps(1.0, 1e-7)[0] == 1e-7   # an ulp of 1.0 is 2.2e-16: not exactly 1e-7
    False
    >>> numpy_steps(1e12, 1e-7)             # below half of 1e12's spacing: no step at all
    (0.0, 0.0)
    """
    return (t + epsilon) - t, (t - epsilon) - t


#: :func:`numpy_steps` in a kernel (inlined: the same operations, the same bits).
steps_taken = jit(inline=True)(numpy_steps)
