"""Which work runs on how many threads, and the dynamic hand-out of chunks inside a region.

A busy machine is the normal case: another process may hold one of the cores, and a parallel
region then ends only when its descheduled worker has had its time slice (the omp and
workqueue layers join every thread of the region). Three rules follow.

- Serial below the work where a region pays for a late thread (:func:`threads_for`).
- Inside a region, chunks are claimed one at a time from a shared counter (:func:`claim`)
  rather than split between the threads in advance (numba's prange splits statically under
  the omp and workqueue layers): a thread that runs late simply claims fewer chunks, so the
  region waits for at most one chunk of it, not for its whole share.
- Measured progress decides: a region in which some thread claimed no chunk at all waited for
  a late thread and gained nothing. The machine is then taken as busy: for
  :data:`BUSY_MEMORY` seconds, work below :data:`BUSY_SERIAL_SECONDS` runs serially, and a
  long check runs its pieces serially, trying the threads again every
  :data:`PROBE_EVERY` pieces.

Which thread computes a chunk never changes a result: every index writes only its own slots.

BLAS products run on Python threads instead (:func:`spread`, :func:`blocked_matmul`): cut
into blocks by their shapes alone, each block a product on one BLAS thread, so that the
rounding never depends on how many threads ran them. The threads, the calling one included,
claim the blocks one at a time as a region's workers claim chunks, and the call waits only
for the blocks claimed: a helper that starts late takes none.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba.core import cgutils, types
from numba.core.extending import intrinsic

from ._jit import jit
from ._threads import num_threads

#: Below this much work (seconds on one thread) everything runs on one thread. A second thread
#: saves at most ~1/3 of the work on 2 cores (measured gain ~1.45x), but when another process
#: holds a core a region ends only after its descheduled worker's next time slice, 5-25 ms
#: measured here: a region pays for that only on longer work. At the threshold a serial
#: check on a loaded machine takes ~1.5 x 1.45 ~ 2.2x the parallel time on an idle one.
SERIAL_SECONDS = 0.02

#: Chunks per thread in a region: small enough that a late thread holds the region back by
#: little (one chunk), large enough that claiming costs nothing (one atomic add per chunk).
CHUNKS_PER_THREAD = 16


#: After a region that waited for a late thread, the machine counts as busy this long (s).
BUSY_MEMORY = 2.0

#: While the machine counts as busy, work below this (seconds on one thread) runs serially:
#: a late thread costs a time slice (5-30 ms measured), a loss on shorter work.
BUSY_SERIAL_SECONDS = 0.25

#: A long check on a busy machine runs its pieces serially and tries the threads again on
#: every PROBE_EVERY-th piece (~0.1 s of work each): a failed try costs one late thread.
PROBE_EVERY = 5

#: A region in which some thread claimed no chunk waited for a late thread only if it took
#: longer than this multiple of its expected one-thread time: on an idle machine a thread may
#: simply start after the others have claimed everything (tbb may even run both workers'
#: loops on one thread), which costs nothing; on a busy one the region ends a time slice
#: (5-30 ms) after its work.
LATE_FACTOR = 1.5

#: time.monotonic() of the last region that waited for a late thread.
_last_late = -math.inf


def busy() -> bool:
    """Whether a region waited for a late thread in the last :data:`BUSY_MEMORY` seconds."""
    return time.monotonic() - _last_late < BUSY_MEMORY


def threads_for(seconds: float) -> int:
    """The threads for ``seconds`` of one-thread work: 1 below :data:`SERIAL_SECONDS` (or below
    :data:`BUSY_SERIAL_SECONDS` on a machine seen busy), else numba's current thread count."""
    limit = BUSY_SERIAL_SECONDS if busy() else SERIAL_SECONDS
    return 1 if seconds < limit else num_threads()


def counter(n_workers: int) -> np.ndarray:
    """A fresh schedule for one region: ``[next chunk, chunks claimed by worker 0, 1, ...]``
    (see :func:`claim`)."""
    return np.zeros(1 + n_workers, dtype=np.int64)


@intrinsic
def _fetch_add(typingctx, array, value):
    """``array[0] += value`` atomically; returns the old value (``array``: int64[:])."""
    if not (isinstance(array, types.Array) and array.dtype == types.int64):
        return None
    sig = types.int64(array, types.int64)

    def codegen(context, builder, signature, args):
        ary_type = signature.args[0]
        ary = context.make_array(ary_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, ary_type, ary,
                                           [context.get_constant(types.intp, 0)])
        # Only the uniqueness of each claimed number matters: the results of a chunk are read
        # after the region's join, which orders them.
        return builder.atomic_rmw("add", pointer, args[1], "monotonic")

    return sig, codegen


@jit
def claim(schedule, worker, n_chunks):
    """The next unclaimed chunk number of a region (0, 1, 2, ... across all its threads, each
    number handed out once), counted for ``worker`` in ``schedule[1 + worker]`` (its own slot);
    ``n_chunks`` or more when none is left, and the worker stops."""
    chunk = _fetch_add(schedule, 1)
    if chunk < n_chunks:
        schedule[1 + worker] += 1
    return chunk


def bare(bundle):
    """A bundle as the plain tuple a kernel is launched with (anything else as it is): numba
    types a plain tuple's fields in C, a NamedTuple's in Python, ~0.1 us more per field at
    every launch (the kernels unpack their bundles by position, so either works)."""
    return tuple(bundle) if isinstance(bundle, tuple) and type(bundle) is not tuple else bundle


def run(serial, n: int, seconds: float, args: tuple, per_thread=None) -> None:
    """``serial(lo, hi, *args)`` (a jitted kernel that releases the GIL) over [0, n) in
    pieces on Python threads, which claim the pieces one at a time, the calling thread
    included (:func:`spread`: a thread that starts late takes none and is not waited for); in
    one call on one thread when ``n * seconds`` (one-thread work) is below the threshold of
    :func:`threads_for`. ``per_thread()``: more arguments that each thread makes for itself
    (a work space), appended to ``args``. No parallel kernel is compiled: the serial one runs
    on every thread."""
    args = tuple(map(bare, args))
    n_threads = max(1, min(threads_for(n * seconds), n))
    if n_threads == 1:
        serial(0, n, *args, *(per_thread() if per_thread else ()))
        return
    n_pieces = min(n, CHUNKS_PER_THREAD * n_threads)
    pieces = [(k * n // n_pieces, (k + 1) * n // n_pieces) for k in range(n_pieces)]

    def work(claimed):
        own = per_thread() if per_thread else ()
        for lo, hi in claimed:
            serial(lo, hi, *args, *own)

    spread(work, pieces, n * seconds)


def run_on(serial, parallel, lo: int, hi: int, n_threads: int, args: tuple,
           seconds: float) -> bool:
    """[lo, hi) on ``n_threads`` threads: serially for 1, else as one region of
    ``CHUNKS_PER_THREAD`` chunks per thread (fewer if there are fewer items); ``seconds``: the
    expected one-thread time of the work. Returns False if the region waited for a late
    thread (one claimed no chunk, and the region took over ``LATE_FACTOR`` times ``seconds``),
    and then marks the machine as busy (:func:`busy`)."""
    global _last_late
    if n_threads <= 1:
        serial(lo, hi, *args)
        return True
    schedule = counter(n_threads)
    started = time.perf_counter()
    parallel(lo, hi, min(hi - lo, CHUNKS_PER_THREAD * n_threads), n_threads, schedule, *args)
    if np.all(schedule[1:] > 0) or time.perf_counter() - started <= LATE_FACTOR * seconds:
        return True
    _last_late = time.monotonic()
    return False


# ---------------------------------------------------------------------------------------------
# Blocks of BLAS products on Python threads
# ---------------------------------------------------------------------------------------------
#: Seconds per multiply-add of a BLAS product on one thread (for the choice between one thread
#: and several, and the time model's rate: measured 22-27 ps on the sweep's and the
#: sensitivities' shapes, up to 36 ps on a 4096 x 4096 matrix times 64 samples).
PRODUCT_SECONDS = 2.5e-11

#: :func:`blocked_matmul` cuts a product into blocks of rows from this many multiply-adds on
#: (~2 ms on one thread), into at most MAX_BLOCKS.
BLOCK_MACS = 2**26
MAX_BLOCKS = 8


def spread(run, blocks: list, seconds: float) -> None:
    """``run(claimed)`` on each of the threads for ``seconds`` of one-thread work
    (:func:`threads_for`: one thread for small work), the calling thread included;
    ``claimed`` yields the blocks that thread claims, one at a time from a shared counter, so
    that a thread that starts late claims fewer (none if the others took every block) and the
    call waits only for the blocks claimed. One thread takes ``blocks`` itself. Which thread
    runs a block never changes its values."""
    n_threads = min(len(blocks), threads_for(seconds))
    if n_threads <= 1:
        run(blocks)
        return
    shared = _Claims(blocks)
    futures = [_pool(n_threads - 1).submit(shared.work, run) for _ in range(n_threads - 1)]
    try:
        shared.work(run)
    finally:
        shared.finished.wait()  # every claimed block done (or abandoned by an error)
    for future in futures:
        if future.done():
            future.result()  # a helper's error (it claimed a block), raised here
    if shared.errors:
        raise shared.errors[0]


class _Claims:
    """The blocks of one :func:`spread`, handed out one at a time (``next`` on a count is
    atomic under the GIL), and the count of claimed blocks not yet done: ``finished`` is set
    when every block is done, or when a thread's ``run`` raised (its error kept)."""

    def __init__(self, blocks: list):
        self.blocks = blocks
        self.counter = itertools.count()
        self.left = len(blocks)
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.errors: list = []

    def claimed(self):
        """The blocks this thread claims; each counted as done when the next is asked for."""
        while (k := next(self.counter)) < len(self.blocks):
            yield self.blocks[k]
            with self.lock:
                self.left -= 1
                if self.left == 0:
                    self.finished.set()

    def work(self, run) -> None:
        try:
            run(self.claimed())
        except BaseException as error:
            self.errors.append(error)
            self.finished.set()
            raise


def blocked_matmul(A: np.ndarray, B: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = A @ B`` (2-D, ``out`` C-contiguous), in blocks of A's rows fixed by the shapes
    alone (one block below :data:`BLOCK_MACS` multiply-adds), spread over threads
    (:func:`spread`): bitwise the same for any thread count. Call under
    :func:`gradcheck_fast._threads.single_blas_thread`."""
    M, K = A.shape
    macs = M * K * B.shape[1]
    n_blocks = int(min(MAX_BLOCKS, M, max(1, macs // BLOCK_MACS)))
    if n_blocks == 1:
        return np.matmul(A, B, out=out)
    cuts = [M * k // n_blocks for k in range(n_blocks + 1)]

    def run(group):
        for lo, hi in group:
            np.matmul(A[lo:hi], B, out=out[lo:hi])

    spread(run, list(zip(cuts[:-1], cuts[1:])), macs * PRODUCT_SECONDS)
    return out


#: The threads that run blocks of products (made on first use, again after a fork).
_POOLS: dict = {}


def _pool(n_threads: int) -> ThreadPoolExecutor:
    pool = _POOLS.get(n_threads)
    if pool is None:
        pool = _POOLS[n_threads] = ThreadPoolExecutor(n_threads,
                                                      thread_name_prefix="gradcheck_fast")
    return pool


def _forget_pools() -> None:
    """In a forked child the parent's threads do not exist: make new ones when needed."""
    _POOLS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)
