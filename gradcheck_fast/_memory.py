"""Large per-parameter arrays, kept between checks and handed out again.

A full check of a large network writes a few arrays of one value per parameter (the layer
sweep's changes, the numerical gradient and its noise bound): 1.3 GB for 33.6M parameters.
Memory the process has freed goes back to the system, and touching it again costs page
faults: ~70 ms per GB on an ordinary Linux machine with transparent huge pages, and up to
~2 s per GB measured on this project's sandboxed machine once the memory has been idle for a
second -- twice the whole check. So buffers of at least :data:`MIN_BYTES` are kept here after
use (at most :data:`KEEP_BYTES` of them) and handed out again once nothing refers to them any
more: CPython counts the references to a kept buffer, and every array made from it (a view,
e.g. a report's numerical gradient) holds one, so a buffer still in use is never handed out
twice. :func:`release` (public: :func:`gradcheck_fast.release_memory`) gives them all
back to the system.

Smaller arrays come from ``np.empty`` as usual: the allocator keeps those itself, once
:func:`raise_allocator_thresholds` has told glibc's to (done at import).
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np

#: Arrays of at least this many bytes come from the kept buffers.
MIN_BYTES = 2**26

#: At most this many bytes of buffers are kept (the oldest are let go first; one still in use
#: then lives on until its last view goes).
KEEP_BYTES = 2**31

_kept: list[np.ndarray] = []
_lock = threading.Lock()

#: The widest item of the dtypes asked for (complex128), for the quick test of a small
#: array (an array of a wider dtype may then come from np.empty: a missed reuse, no more).
_WIDEST = 16

#: ``sys.getrefcount`` of a kept buffer that nothing else refers to, in :func:`empty`'s loop:
#: the list's reference, the loop variable's and the call's own argument.
_UNUSED = 3


def empty(shape: int | tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """A new C-contiguous array of ``shape`` and ``dtype``, uninitialised (as ``np.empty``),
    made from a kept buffer that nothing uses when it is large (see the module's text).

    >>> import numpy as np
    >>> from gradcheck_fast import _memory
    >>> a = _memory.empty((2, 3))
    >>> a.shape, a.dtype, a.flags.c_contiguous
    ((2, 3), dtype('float64'), True)
    """
    count = shape if isinstance(shape, (int, np.integer)) else math.prod(shape)
    if count * _WIDEST < MIN_BYTES:  # small for any dtype: no further Python work (the
        return np.empty(shape, dtype)  # small networks' checks make several per call)
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    with _lock:
        for base in _kept:
            # A buffer at most twice the size asked for: a small request does not pin a large
            # buffer that a later large one could have used.
            if nbytes <= base.nbytes <= 2 * nbytes and sys.getrefcount(base) == _UNUSED:
                return base[:nbytes].view(dtype).reshape(shape)
        base = np.empty(nbytes, dtype=np.uint8)
        _kept.append(base)
        while sum(kept.nbytes for kept in _kept) > KEEP_BYTES and len(_kept) > 1:
            _kept.pop(0)
        return base.view(dtype).reshape(shape)


def zeros(shape: int | tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """:func:`empty`, filled with zeros."""
    array = empty(shape, dtype)
    array.fill(0)
    return array


#: glibc's malloc serves a block above its mmap threshold (128 KiB at start) with fresh pages
#: from the system and unmaps them when the block is freed. It raises the threshold to the
#: size of the largest such block freed (up to 32 MiB), and then keeps up to twice that of
#: freed memory at the top of its heap. A check's temporaries (2-16 MB each at mnist size,
#: ~35 MB in all, many allocated inside the kernels) therefore came as fresh pages -- page
#: faults: 17 MB per mnist-size check measured, which doubled its time -- or not, depending
#: on which block happened to be freed first and on how the heap's top was laid out. One block
#: just below the ceiling, made and freed at import (its pages are never touched), sets both
#: for the process, as any program that once made a 31 MiB array would: blocks up to 31 MiB
#: come from the heap, which keeps up to 62 MiB of freed memory. Arrays of :data:`MIN_BYTES`
#: and more are this module's; those in between are still fresh pages each time (measured on
#: 1024-1024-512-10: 0.2-2.2 MB of page faults per check). Other allocators: a malloc and a
#: free, nothing else.
RAISE_BYTES = 31 * 2**20


def raise_allocator_thresholds() -> None:
    """Make and free one block of :data:`RAISE_BYTES` (see there)."""
    np.empty(RAISE_BYTES, dtype=np.uint8)


raise_allocator_thresholds()


def release() -> None:
    """Let go of every kept buffer (those still in use live on until their last view goes)."""
    with _lock:
        _kept.clear()


def kept_bytes() -> int:
    """How many bytes of buffers are kept."""
    with _lock:
        return sum(base.nbytes for base in _kept)
