"""Many machines: a check's coordinates cut into shards, each run by the same engine on a
worker of a ``dask.distributed.Client`` or of any ``concurrent.futures.Executor``, and merged
by index.

Why the report is bitwise the local one's: every engine computes each coordinate's J+- on its
own (a coordinate's value never depends on which others are computed with it, nor on the
thread that computes it), the workers receive the very arrays (pickling keeps every bit), and
the report is built once, on the caller's side, from the merged values.

What travels: the data (theta, X, Y, the cost and its arguments) once per worker process (a
dask ``scatter(..., broadcast=True)``; for a plain executor, which has no such call, one file
in shared memory that each worker process reads once), then per shard only its coordinates.
A worker process keeps the data and the engine's state (the forward pass, a compiled cost)
for the shards that follow.

Shards: the time model's seconds per coordinate on one thread give shards of about
:data:`SHARD_SECONDS` each, at least :data:`SHARDS_PER_WORKER` per worker thread: a lost or
slow worker costs little, and the scheduler's overhead per shard (milliseconds) stays far below
a shard's work. A check expected to take less than :data:`LOCAL_SECONDS` runs locally, and the
report says so.

Faults: dask re-runs the shards of a worker that dies (its scheduler's own bookkeeping); a
plain ``ProcessPoolExecutor`` whose worker dies breaks as a whole, and the unfinished shards
are re-run on a fresh pool of the same size and context, at most :data:`MAX_RESUBMITS` times.
The report says how many shards were re-run. A shard that raises in user code stops the check
with that error, its message naming the shard's coordinates; Ctrl-C cancels the outstanding
shards.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
import pickle
import tempfile
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from ._threads import n_threads_set
from .engines import Costs

#: Seconds of one-thread work per shard (the time model's), when there is enough work.
SHARD_SECONDS = 2.0

#: At least this many shards per worker thread (a lost or slow worker then costs little).
SHARDS_PER_WORKER = 4

#: A check expected to take less than this (on the caller's threads) runs locally.
LOCAL_SECONDS = 1.0


def runs_locally(seconds: float) -> str | None:
    """The note for a check expected to take ``seconds`` here, when that is too little to
    send to an executor (under :data:`LOCAL_SECONDS`); else None."""
    if seconds < LOCAL_SECONDS:
        return (f"executor: the check was expected to take ~{seconds:.2g} s here, under "
                f"{LOCAL_SECONDS:g} s: it ran locally")
    return None


#: A plain process pool that breaks (a worker died) is replaced at most this many times.
MAX_RESUBMITS = 3


# ---------------------------------------------------------------------------------------------
# The executors: a dask Client or a concurrent.futures Executor behind one small interface
# ---------------------------------------------------------------------------------------------
class Pool:
    """What a sharded check needs of an executor: its worker threads, a way to send the data
    once per worker, submit, wait, cancel."""

    def __init__(self, executor):
        self.executor = executor
        self.resubmitted = 0
        self.owned: list = []  # pools made here to replace a broken one (shut down after)

    @property
    def workers(self) -> int:
        """Worker threads in total (shards that run at once)."""
        return max(1, int(getattr(self.executor, "_max_workers", None) or os.cpu_count() or 1))

    @property
    def worker_threads(self) -> int:
        """Threads each worker process gives a shard (numba's loop runs on that many)."""
        return 1

    def describe(self) -> str:
        return f"{type(self.executor).__name__} of {self.workers} worker(s)"

    def share(self, data: bytes) -> Any:
        """Send the pickled work ``data`` towards the workers once; returns what the shards
        receive (here the path of a file in shared memory, read once per worker process)."""
        directory = "/dev/shm" if os.path.isdir("/dev/shm") else None
        handle, path = tempfile.mkstemp(prefix="gradcheck_fast-", suffix=".pkl", dir=directory)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        return path

    def release(self, shared) -> None:
        try:
            os.unlink(shared)
        except OSError:
            pass

    def submit(self, fn, *args):
        return self.executor.submit(fn, *args)

    def completed(self, futures):
        return cf.as_completed(futures)

    def cancel(self, futures) -> None:
        for future in futures:
            future.cancel()

    def renew(self) -> bool:
        """After a broken pool: replace it by a fresh one of the same size and context (a
        ``ProcessPoolExecutor``); False if it cannot be renewed."""
        executor = self.executor
        if not isinstance(executor, cf.ProcessPoolExecutor):
            return False
        self.executor = cf.ProcessPoolExecutor(max_workers=executor._max_workers,
                                               mp_context=executor._mp_context)
        self.owned.append(self.executor)
        return True

    def retried(self, token: str) -> int:
        return self.resubmitted

    def close(self) -> None:
        for executor in self.owned:
            executor.shutdown(wait=False, cancel_futures=True)


class DaskPool(Pool):
    """A ``dask.distributed.Client``: data scattered to every worker, the scheduler re-runs
    the shards of a lost worker; each shard logs its start, so re-runs are counted."""

    @property
    def workers(self) -> int:
        return max(1, sum(self.executor.nthreads().values()))

    @property
    def worker_threads(self) -> int:
        return max(1, min(self.executor.nthreads().values(), default=1))

    def describe(self) -> str:
        n = len(self.executor.nthreads())
        return f"dask cluster of {n} worker(s), {self.workers} thread(s)"

    def share(self, data: bytes) -> Any:
        return self.executor.scatter(data, broadcast=True, hash=False)

    def release(self, shared) -> None:
        self.executor.cancel([shared])

    def submit(self, fn, *args):
        return self.executor.submit(fn, *args, pure=False)

    def completed(self, futures):
        from distributed import as_completed

        return as_completed(futures)

    def cancel(self, futures) -> None:
        self.executor.cancel(list(futures))

    def renew(self) -> bool:
        return False

    def retried(self, token: str) -> int:
        starts: dict = {}
        for _, shard in self.executor.get_events(_topic(token)):
            starts[shard] = starts.get(shard, 0) + 1
        return sum(1 for count in starts.values() if count > 1)


def executor_pool(executor) -> Pool | None:
    """``executor=`` checked: None, a ``dask.distributed.Client`` or a
    ``concurrent.futures.Executor``."""
    if executor is None:
        return None
    if type(executor).__name__ == "Client" and hasattr(executor, "scatter"):
        return DaskPool(executor)
    if isinstance(executor, cf.Executor):
        return Pool(executor)
    raise TypeError(f"executor must be a dask.distributed.Client or a "
                    f"concurrent.futures.Executor (e.g. ProcessPoolExecutor with the spawn "
                    f"context); got {type(executor).__name__}")


def _topic(token: str) -> str:
    return f"gradcheck_fast-{token}"


def pickled(work, what: str) -> bytes:
    """``work`` pickled once, for every executor: with cloudpickle when available (closures
    and functions defined in __main__ or a notebook travel by value), else with pickle; a
    clear error, before any shard is sent, when the check's data or cost cannot travel
    (``what`` names them)."""
    try:
        import cloudpickle
    except ImportError:
        try:
            return pickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(f"{what} cannot be sent to the workers ({exc}); define it in an "
                            f"importable module, or install cloudpickle (pip install "
                            f"'gradcheck-fast[dask]'), which carries functions defined in "
                            f"__main__ or a notebook") from exc
    try:
        return cloudpickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(f"{what} cannot be sent to the workers: it cannot be pickled "
                        f"({type(exc).__name__}: {exc})") from exc


# ---------------------------------------------------------------------------------------------
# The workers' side: data loaded once per process, the engine's state kept for later shards
# ---------------------------------------------------------------------------------------------
class ShardInfo(NamedTuple):
    """Where and how long a shard ran: the worker process, its set-up (loading the data,
    preparing the engine, compiling; 0 after the first shard of a check in that process)
    and the shard's own work."""

    pid: int
    setup: float
    seconds: float


#: Per worker process, the data and engine state of the last few checks (by token).
_STATE: OrderedDict = OrderedDict()
_KEPT = 2


def _state(shared, token: str) -> tuple[Any, float]:
    """This process's work for the check ``token``: the shared work (its pickle, as dask
    delivers it, or the path of the file holding it), unpickled and prepared once; and the
    seconds that took (0 when it was there already)."""
    state = _STATE.get(token)
    if state is not None:
        _STATE.move_to_end(token)
        return state, 0.0
    started = time.perf_counter()
    if isinstance(shared, str):
        with open(shared, "rb") as file:
            shared = file.read()
    state = pickle.loads(shared).prepare()
    _STATE[token] = state
    while len(_STATE) > _KEPT:
        _STATE.popitem(last=False)
    return state, time.perf_counter() - started


def _log_start(token: str, shard: int) -> None:
    try:
        from distributed import get_worker

        get_worker().log_event(_topic(token), shard)
    except (ImportError, ValueError):  # not on a dask worker
        pass


def run_shard(shared, token: str, shard: int, indices: np.ndarray, extra: tuple,
              n_threads: int):
    """A shard on a worker: the check's work (``shared``: its pickle, or the path of the file
    holding it, :meth:`Pool.share`; an object with ``prepare()``, returning itself ready,
    e.g. the engine prepared or the cost compiled, and ``run(indices, *extra)``; the built-in
    network's :class:`gradcheck_fast.checker.NetworkShards`, a
    user's cost's :class:`gradcheck_fast.custom.CostShards`), prepared once per process and
    check, run on the coordinates ``indices`` on ``n_threads`` threads."""
    _log_start(token, shard)
    with n_threads_set(n_threads):
        work, setup = _state(shared, token)
        started = time.perf_counter()
        result = work.run(indices, *extra)
    return result, ShardInfo(os.getpid(), setup, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------
# The caller's side: shards, submission, faults, progress, merging
# ---------------------------------------------------------------------------------------------
def shards_of(indices: np.ndarray, seconds_per_index: float, workers: int) -> list[np.ndarray]:
    """``indices`` cut into contiguous shards of about :data:`SHARD_SECONDS` of one-thread
    work each, at least :data:`SHARDS_PER_WORKER` per worker thread (never empty)."""
    n = int(indices.size)
    by_time = math.ceil(n * seconds_per_index / SHARD_SECONDS)
    count = max(1, min(n, max(by_time, SHARDS_PER_WORKER * workers)))
    bounds = [k * n // count for k in range(count + 1)]
    return [indices[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]


@dataclass
class Run:
    """A sharded run's outcome: the shards' results in order and what to report."""

    results: list
    infos: list
    retried: int
    pool: Pool
    seconds: float

    def note(self) -> str:
        setups = [info.setup for info in self.infos if info.setup > 0]
        processes = len({info.pid for info in self.infos})
        work = sum(info.seconds for info in self.infos)
        note = (f"ran on a {self.pool.describe()}: {len(self.results)} shards, {processes} "
                f"worker process(es), {self.seconds:.3g} s in all ({work:.3g} s of work in the "
                f"shards; set-up on each process: loading the data, preparing, compiling, "
                f"up to {max(setups, default=0.0):.3g} s)")
        if self.retried:
            note += f"; {self.retried} shard(s) re-run after a worker was lost"
        if self.pool.owned:
            note += ("; the executor broke when its worker died (it stays broken): the rest "
                     "ran on a fresh pool of the same size")
        return note


def run_sharded(pool: Pool, work, shards: list[np.ndarray], extra: tuple, progress: bool,
                what: str) -> Run:
    """``work.run(shards[k], *extra)`` for every shard on ``pool``'s workers
    (:func:`run_shard`); the results in shard order. ``work`` is sent once per worker and
    prepared there once; ``what`` names the check's data in errors (work that cannot be
    pickled)."""
    started = time.perf_counter()
    data = pickled(work, what)
    token = uuid.uuid4().hex
    shared = pool.share(data)
    results: list = [None] * len(shards)
    infos: list = [None] * len(shards)
    bar = _bar(sum(int(s.size) for s in shards)) if progress else None
    pending: dict = {}
    renewals = 0
    try:
        todo = list(range(len(shards)))
        while todo:
            pending = {pool.submit(run_shard, shared, token, k, shards[k], extra,
                                   pool.worker_threads): k for k in todo}
            todo = []
            for future in pool.completed(list(pending)):
                k = pending.pop(future)
                try:
                    results[k], infos[k] = future.result()
                except cf.process.BrokenProcessPool:
                    todo.append(k)
                    continue
                except Exception as exc:
                    pool.cancel(list(pending))
                    pending = {}
                    shard = shards[k]
                    exc.add_note(f"gradcheck_fast: raised in the shard of {shard.size} "
                                 f"coordinate(s) {int(shard[0])}..{int(shard[-1])} (flat "
                                 f"indices) on a worker")
                    raise
                if bar is not None:
                    bar.update(int(shards[k].size))
            if todo:
                renewals += 1
                if renewals > MAX_RESUBMITS or not pool.renew():
                    raise RuntimeError(f"the executor's worker processes died "
                                       f"{renewals} time(s): {len(todo)} shard(s) could not "
                                       f"be run")
                # The data stays where it is (a file outlives the pool that read it).
                pool.resubmitted += len(todo)
    except KeyboardInterrupt:
        pool.cancel(list(pending))
        raise
    finally:
        if bar is not None:
            bar.close()
        pool.release(shared)
        pool.close()
    return Run(results, infos, pool.retried(token), pool, time.perf_counter() - started)


def _bar(total: int):
    from .engines._common import _progress_bar

    return _progress_bar(total)


def merge_costs(parts: list[Costs]) -> Costs:
    """The shards' :class:`Costs` (contiguous, ascending) as one, as a single engine call on
    all their coordinates gives it."""
    first = parts[0]

    def joined(name):
        return np.concatenate([getattr(part, name) for part in parts])

    return replace(
        first, _J_plus=None if first._J_plus is None else joined("J_plus"),
        _J_minus=None if first._J_minus is None else joined("J_minus"), dJ_plus=joined("dJ_plus"),
        dJ_minus=joined("dJ_minus"), gradapprox=joined("gradapprox"),
        resolution=joined("resolution"), kinks=joined("kinks"), indices=joined("indices"),
        noise_source=np.concatenate([part.noise for part in parts]),
        truncation=None if first.truncation is None else joined("truncation"),
        explicit=None if first.explicit is None else sum(part.explicit for part in parts))


def spread_estimate(estimate, workers: int):
    """A one-thread :class:`~gradcheck_fast.planning.CostEstimate` with the full and sampled
    checks' coordinates spread over ``workers`` worker threads (the set-up, and the
    directional probes, which run locally, unchanged)."""
    def spread(mode):
        return replace(mode, seconds=mode.setup + (mode.seconds - mode.setup) / workers)

    return replace(estimate, full=spread(estimate.full), sampled=spread(estimate.sampled))
