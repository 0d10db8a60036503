"""The one place that sets numba options for every kernel of the package."""

from __future__ import annotations

import os
import warnings

import numba

from ._threads import serialised_launches

#: fastmath flags used by the kernels: none. The engine promises that every perturbed cost is
#: bitwise the value a plain forward pass would give, which needs the same rounding in the
#: vectorised full pass and the scalar per-sample pass; 'contract' (FMA) or 'reassoc' would let
#: LLVM round the two differently. 'nnan'/'ninf' are excluded in any case: a gradient checker
#: must see NaN and Inf.
FASTMATH: frozenset[str] = frozenset()

#: error_model="numpy": 1/0 gives inf and 0/0 nan (as in NumPy) instead of raising inside a
#: kernel, so non-finite costs reach the report instead of aborting the check.
_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": set(FASTMATH)}

#: numba's message when no cache locator can write anywhere (read-only package directory and
#: no writable user cache directory): it raises at decoration, i.e. at import of the package.
_NO_LOCATOR = "no locator available"

#: Set once caching turned out to be impossible: later kernels skip the attempt (and the
#: warning is given once per process).
_cache_unavailable = False


class CacheUnavailableWarning(UserWarning):
    """numba cannot cache the compiled kernels: every process compiles them again."""


def jit(func=None, *, parallel: bool = False, inline: bool = False, cache: bool = True,
        nrt: bool = True):
    """``numba.njit`` with the package's options; ``parallel=True`` for prange kernels.

    Every kernel is cached on disk (``cache=True``): later processes load it in milliseconds
    instead of compiling it again. Where numba finds no writable cache location (a read-only
    install run by an unprivileged user), the kernels are compiled without a cache and one
    :class:`CacheUnavailableWarning` says how to enable it. ``inline=True`` inlines a helper
    into its callers at numba's IR level: a call between jitted functions increments and
    decrements the reference count of every array argument, which costs more than the
    arithmetic of a small layer. ``cache=False`` where caching cannot work (see the kernel's
    comment).

    ``nrt=False`` compiles a loop that allocates nothing without numba's reference counting
    (its ``_nrt`` target option): every array a jitted function binds is otherwise increfed and
    decrefed with an atomic instruction, and where LLVM cannot pair them up (loops with several
    exits) that happens on every pass. On the seed network that was two thirds of the exact
    engine's time (perf: ``NRT_incref``/``NRT_decref``); the hot loop now runs in such a
    function and its caller allocates the work space. Such a function cannot create arrays.
    """
    options = dict(_OPTIONS, inline="always") if inline else dict(_OPTIONS)
    if not nrt:
        options["_nrt"] = False

    def decorate(function):
        kernel = _njit(function, parallel, options, cache)
        # Every parallel kernel: launches serialised where the threading layer needs it.
        return serialised_launches(kernel) if parallel else kernel

    return decorate if func is None else decorate(func)


def _njit(function, parallel: bool, options: dict, cache: bool):
    """numba.njit(function) with ``options``; cached unless numba has nowhere to cache."""
    if cache and not _cache_unavailable:
        try:
            return numba.njit(parallel=parallel, **dict(options, cache=True))(function)
        except RuntimeError as exc:
            if _NO_LOCATOR not in str(exc):
                raise
            _warn_cache_unavailable(function)
    return numba.njit(parallel=parallel, **dict(options, cache=False))(function)


def _warn_cache_unavailable(function) -> None:
    global _cache_unavailable
    _cache_unavailable = True
    directory = os.path.dirname(function.__code__.co_filename)
    warnings.warn(
        f"gradcheck_fast: numba found no writable place to cache its compiled kernels (the "
        f"package directory {directory} is read-only and the user cache directory is not "
        f"writable), so every process compiles them again (seconds to tens of seconds before "
        f"the first check). Set the environment variable NUMBA_CACHE_DIR to a writable "
        f"directory to cache them.",
        CacheUnavailableWarning,
        stacklevel=2,
    )
