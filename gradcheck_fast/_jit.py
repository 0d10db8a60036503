"""The one place that sets numba options for every kernel of the package."""

from __future__ import annotations

import numba

#: fastmath flags used by the kernels: none. The engine promises that every perturbed cost is
#: bitwise the value a plain forward pass would give, which needs the same rounding in the
#: vectorised full pass and the scalar per-sample pass; 'contract' (FMA) or 'reassoc' would let
#: LLVM round the two differently. 'nnan'/'ninf' are excluded in any case: a gradient checker
#: must see NaN and Inf.
FASTMATH: frozenset[str] = frozenset()

#: error_model="numpy": 1/0 gives inf and 0/0 nan (as in NumPy) instead of raising inside a
#: kernel, so non-finite costs reach the report instead of aborting the check.
_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": set(FASTMATH)}


def jit(func=None, *, parallel: bool = False, inline: bool = False, cache: bool = True):
    """``numba.njit`` with the package's options; ``parallel=True`` for prange kernels.

    Every kernel is cached on disk (``cache=True``): later processes load it in milliseconds
    instead of compiling it again. ``inline=True`` inlines a helper into its callers at numba's
    IR level: a call between jitted functions increments and decrements the reference count of
    every array argument, which costs more than the arithmetic of a small layer.
    ``cache=False`` where caching cannot work (see the kernel's comment).
    """
    options = dict(_OPTIONS, inline="always") if inline else dict(_OPTIONS)
    options["cache"] = cache
    decorator = numba.njit(parallel=parallel, **options)
    return decorator if func is None else decorator(func)
