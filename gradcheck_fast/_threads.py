"""Thread settings: numba's thread count for a call, and BLAS held to one thread."""

from __future__ import annotations

import contextlib
import functools

import numba


@contextlib.contextmanager
def n_threads_set(n_threads: int | None):
    """Run the body with ``numba.set_num_threads(n_threads)``; restore the old value after."""
    if n_threads is None:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


@functools.lru_cache(maxsize=1)
def _controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextlib.contextmanager
def single_blas_thread():
    """Hold BLAS to one thread in the body.

    The set-up of the incremental engine and the directional mode use BLAS matrix products. A
    multi-threaded BLAS may split a product differently for another thread count and round
    differently; on one thread the result is the same whatever the machine's BLAS settings, so
    a check stays bitwise reproducible. (It also keeps BLAS threads from competing with numba's
    on a small machine.)
    """
    with _controller().limit(limits=1, user_api="blas"):
        yield
