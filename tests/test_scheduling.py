"""Scheduling on a busy machine: which checks launch parallel regions, how many, and how the
work of a region is shared between its threads (issue 9, items 3 and 4).

Nothing here is timed: the tests assert the scheduling decisions, which are what make a check
robust when another process holds a core (a parallel region then waits for its descheduled
worker; benchmarks/test_bench_loaded.py measures the effect).
"""

from __future__ import annotations

import importlib
import math
import pkgutil

import numba
import numpy as np
import pytest

import gradcheck_fast
from gradcheck_fast import _schedule, engines
from gradcheck_fast.engines import costmodel
from gradcheck_fast.networks import example, random_mlp

MAX_THREADS = numba.config.NUMBA_NUM_THREADS

needs_threads = pytest.mark.skipif(MAX_THREADS < 2, reason="a parallel region needs 2 threads")


def _parallel_kernels():
    """(module, name) of every ``parallel=True`` kernel of the package (each is reached through
    its launch wrapper, :func:`gradcheck_fast._threads.serialised_launches`)."""
    found = []
    for info in pkgutil.walk_packages(gradcheck_fast.__path__, "gradcheck_fast."):
        if info.name == "gradcheck_fast.__main__":
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            kernel = getattr(value, "kernel", value)
            if (isinstance(kernel, numba.core.dispatcher.Dispatcher)
                    and kernel.targetoptions.get("parallel")):
                found.append((module, name))
    return found


@pytest.fixture
def regions(monkeypatch):
    """Record every launch of a parallel kernel: a list of (kernel name, arguments), with
    numba's thread count at its maximum for the test."""
    launched = []
    for module, name in _parallel_kernels():
        kernel = getattr(module, name)

        def recording(*args, _kernel=kernel, _name=name):
            launched.append((_name, args))
            return _kernel(*args)

        monkeypatch.setattr(module, name, recording)
    previous = numba.get_num_threads()
    numba.set_num_threads(MAX_THREADS)
    yield launched
    numba.set_num_threads(previous)


def test_the_package_has_parallel_kernels_to_watch():
    # The recording fixture sees the kernels it has to: the engines' loops at least.
    names = {name for _, name in _parallel_kernels()}
    assert {"_costs_parallel", "_deltas_parallel", "_sweep_parallel"} <= names


@needs_threads
@pytest.mark.parametrize("name", ["seed", "small"])
@pytest.mark.parametrize("mode", ["full", "sampled", "directional"])
def test_a_small_check_launches_no_parallel_region(regions, name, mode):
    # A millisecond of work: a parallel region could only lose (it waits for a descheduled
    # worker on a busy machine). Before the fix the incremental engine's set-up launched two
    # (the output coefficients and the radii) and the directional probes 18.
    # (The seed's example carries the seed's faulty gradients: its verdict is not the point.)
    X, Y, parameters, gradients = example(name)
    gradcheck_fast.gradient_check_n(parameters, gradients, X, Y, verbose=False)
    gradcheck_fast.check_gradients(parameters, gradients, X, Y, mode=mode)
    assert [launch[0] for launch in regions] == []


@needs_threads
def test_a_large_check_launches_few_regions_each_with_every_thread(regions, monkeypatch):
    # Some 50 ms of work on one thread by the time model: one region (before the fix, 100
    # pieces of ~0.5 ms, each a region waiting for a late thread). Every region gets all
    # threads and several chunks per thread, which the threads claim one at a time. (The row
    # loops' regions: a network this size takes the matrix sweep otherwise.)
    from gradcheck_fast.engines import layer_sweep

    monkeypatch.setattr(layer_sweep, "FULL_SWEEP", "rows")
    sizes = (256, 128, 64, 1)
    per_sample = sum(sizes[1:]) * costmodel.sweep_row_seconds(sizes, 1)
    m = int(2.5 * _schedule.SERIAL_SECONDS / per_sample)
    X, Y, parameters, gradients = random_mlp(sizes, m)
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    assert report.passed
    loops = [args for name, args in regions if name == "_sweep_parallel"]
    # The time model's one-thread estimate, as the engine forms it.
    expected = sum(sizes[1:]) * costmodel.sweep_row_seconds(sizes, m)
    assert expected >= 2 * _schedule.SERIAL_SECONDS
    assert 1 <= len(loops) <= math.ceil(expected / engines._common.PIECE_SECONDS), len(loops)
    for start, stop, n_chunks, n_workers, schedule, *_ in loops:
        assert n_workers == MAX_THREADS
        assert n_chunks == min(stop - start, _schedule.CHUNKS_PER_THREAD * n_workers)
        assert schedule[0] >= n_chunks  # the counter is spent...
        assert schedule[1:].sum() == n_chunks  # ...and every chunk was claimed by a worker


@needs_threads
def test_the_threads_claim_every_chunk_once():
    # The dynamic hand-out itself: a region of workers claiming chunks of a range, each chunk
    # recording its claims; every chunk is claimed exactly once, whatever the thread count.
    @numba.njit(parallel=True)
    def region(n_chunks, n_workers, schedule, claims):
        for w in numba.prange(n_workers):
            ch = _schedule.claim(schedule, w, n_chunks)
            while ch < n_chunks:
                claims[ch] += 1
                ch = _schedule.claim(schedule, w, n_chunks)

    for n_workers in (1, 2, MAX_THREADS, 3 * MAX_THREADS):
        claims = np.zeros(10_000, dtype=np.int64)
        schedule = _schedule.counter(n_workers)
        region(claims.size, n_workers, schedule, claims)
        assert np.all(claims == 1), n_workers
        assert schedule[1:].sum() == claims.size  # each worker counted its own claims


# ---------------------------------------------------------------------------------------------
# Item 4: a user's cost with expensive evaluations keeps every thread busy
# ---------------------------------------------------------------------------------------------
@numba.njit
def _slow_cost(theta, per_thread, n_work):
    """0.5 ||theta||^2 after ``n_work`` iterations of busy work (~10 ns each); counts this
    evaluation in the calling thread's slot (each thread writes only its own)."""
    per_thread[numba.get_thread_id()] += 1
    busy = 0.0
    for k in range(n_work):
        busy += math.sin(k * 1e-3)
    return 0.5 * np.sum(theta * theta) + 0.0 * busy


def _evaluation_ms(n_work):
    counts = np.zeros(MAX_THREADS, dtype=np.int64)
    theta = np.ones(2)
    _slow_cost(theta, counts, n_work)
    import time

    best = math.inf
    for _ in range(3):
        started = time.perf_counter()
        _slow_cost(theta, counts, n_work)
        best = min(best, time.perf_counter() - started)
    return best * 1e3


@needs_threads
def test_expensive_evaluations_are_shared_by_every_thread(regions):
    # ~30 ms per evaluation: before the fix a piece (~25 ms of work) held one coordinate, one
    # chunk, and so one thread: [16, 0] evaluations per thread. Now the work is cut into
    # evaluations and every region holds at least one per thread.
    n_work = 3_000_000
    if _evaluation_ms(n_work) < 15.0:  # a much faster machine: make the evaluation dearer
        n_work = int(n_work * 15.0 / _evaluation_ms(n_work)) + 1
    P = 8
    theta = np.linspace(-1.0, 1.0, P)
    per_thread = np.zeros(MAX_THREADS, dtype=np.int64)
    report = gradcheck_fast.check(_slow_cost, theta, theta.copy(), (per_thread, n_work))
    assert report.passed
    # Which thread takes which chunk is up to the scheduler, but with 2P evaluations of
    # ~30 ms each a second thread that never evaluates anything would have to stay asleep for
    # the whole check. (The counts include the evaluations check() makes in Python itself.)
    assert np.count_nonzero(per_thread) >= 2, per_thread
    loops = [args for name, args in regions if name == "_user_costs_parallel"]
    assert loops, "expensive evaluations ran on one thread"
    covered = np.zeros(2 * P, dtype=np.int64)
    for start, stop, n_chunks, n_workers, _, *_ in loops:
        assert n_workers == MAX_THREADS and n_chunks >= n_workers
        covered[start:stop] += 1
    assert np.all(covered == 1)  # each evaluation in exactly one region


# ---------------------------------------------------------------------------------------------
# Deciding the threads from measured progress
# ---------------------------------------------------------------------------------------------
def _late_region(start, stop, n_chunks, n_workers, schedule, done):
    """A stand-in for a parallel kernel in which worker 0 claimed every chunk: the others were
    descheduled until the work was gone (the region then waited for them)."""
    done[start:stop] += 1
    schedule[0] = n_chunks + n_workers
    schedule[1] = n_chunks


def _punctual_region(start, stop, n_chunks, n_workers, schedule, done):
    done[start:stop] += 1
    schedule[0] = n_chunks + n_workers
    schedule[1:] = 1


def _serial_range(lo, hi, done):
    done[lo:hi] += 1


@needs_threads
def test_a_region_that_waited_for_a_late_thread_marks_the_machine_busy(monkeypatch):
    monkeypatch.setattr(_schedule, "BUSY_MEMORY", 60.0)
    monkeypatch.setattr(_schedule, "_last_late", -math.inf)
    previous = numba.get_num_threads()
    numba.set_num_threads(MAX_THREADS)
    try:
        done = np.zeros(100, dtype=np.int64)
        assert _schedule.run_on(_serial_range, _punctual_region, 0, 100, 2, (done,), 1e-3)
        assert not _schedule.busy()
        # A thread that claimed nothing in a region that took no longer than the work on one
        # thread: it started late on an idle machine (or tbb ran both loops on one thread),
        # which cost nothing.
        assert _schedule.run_on(_serial_range, _late_region, 0, 100, 2, (done,), 10.0)
        assert not _schedule.busy()
        assert _schedule.threads_for(_schedule.SERIAL_SECONDS) == MAX_THREADS
        # The same, over its expected time (0 s here): the region waited for a late thread.
        assert not _schedule.run_on(_serial_range, _late_region, 0, 100, 2, (done,), 0.0)
        assert _schedule.busy()
        # Busy: work that would have had the threads runs on one, up to BUSY_SERIAL_SECONDS.
        assert _schedule.threads_for(_schedule.SERIAL_SECONDS) == 1
        assert _schedule.threads_for(0.99 * _schedule.BUSY_SERIAL_SECONDS) == 1
        assert _schedule.threads_for(_schedule.BUSY_SERIAL_SECONDS) == MAX_THREADS
        assert np.all(done == 3)
    finally:
        numba.set_num_threads(previous)


@needs_threads
def test_after_a_late_region_a_long_check_runs_serial_pieces_and_tries_again(monkeypatch):
    monkeypatch.setattr(_schedule, "PROBE_EVERY", 4)
    monkeypatch.setattr(_schedule, "LATE_FACTOR", 0.0)  # the stand-in regions take no time
    previous = numba.get_num_threads()
    numba.set_num_threads(MAX_THREADS)
    calls = []

    def serial(lo, hi, done):
        calls.append("serial")
        _serial_range(lo, hi, done)

    def parallel(*args):
        calls.append("parallel")
        _late_region(*args)

    try:
        done = np.zeros(1000, dtype=np.int64)
        # 1 s of work: 10 pieces of ~0.1 s; every region is late.
        engines.run_kernel(serial, parallel, 1000, 1e-3, (done,), progress=False)
    finally:
        numba.set_num_threads(previous)
    assert np.all(done == 1)
    assert calls == ["parallel", "serial", "serial", "serial"] * 2 + ["parallel", "serial"]


def test_blocked_products_are_the_same_bits_on_any_threads(monkeypatch):
    """_schedule.blocked_matmul cuts a product into blocks of rows by the shapes alone and
    spreads them over threads: the same bits on one thread and on several (forced here,
    whatever the size), transposed operands included; a small product stays one call."""
    rng = np.random.default_rng(4)
    A, B = rng.standard_normal((130, 70)), rng.standard_normal((70, 33))
    whole = np.matmul(A, B)
    assert np.array_equal(_schedule.blocked_matmul(A, B, np.empty((130, 33))), whole)
    monkeypatch.setattr(_schedule, "BLOCK_MACS", 1000)  # at most MAX_BLOCKS blocks
    calls = []
    original = _schedule.spread
    monkeypatch.setattr(_schedule, "spread", lambda run, blocks, seconds: (
        calls.append(len(blocks)), original(run, blocks, seconds)))
    results = []
    previous = numba.get_num_threads()
    try:
        for n_threads, serial in ((1, 0.02), (MAX_THREADS, 0.0)):
            numba.set_num_threads(n_threads)
            monkeypatch.setattr(_schedule, "SERIAL_SECONDS", serial)
            results.append((_schedule.blocked_matmul(A, B, np.empty((130, 33))),
                            _schedule.blocked_matmul(B.T, A.T, np.empty((33, 130)))))
    finally:
        numba.set_num_threads(previous)
    assert calls == [_schedule.MAX_BLOCKS] * 4
    for one, many in zip(*results):
        assert np.array_equal(one, many)
    # Each block is a product of its own: equal to the whole one within its rounding.
    np.testing.assert_allclose(results[0][0], whole, rtol=0, atol=1e-12 * np.abs(whole).max())


@needs_threads
def test_run_takes_the_serial_kernel_on_python_threads(monkeypatch, all_threads):
    # _schedule.run hands pieces of [0, n) to Python threads, each with its own work space
    # (per_thread), the serial kernel on each (no parallel kernel to compile); small work is
    # one call.
    import threading

    monkeypatch.setattr(_schedule, "_last_late", -math.inf)
    monkeypatch.setattr(_schedule, "SERIAL_SECONDS", 1e-4)
    calls, spaces = [], []

    def serial(lo, hi, done, space):
        calls.append((lo, hi, threading.get_ident()))
        done[lo:hi] += 1
        space.append((lo, hi))

    def per_thread():
        space = []
        spaces.append(space)
        return (space,)

    done = np.zeros(1000, dtype=np.int64)
    _schedule.run(serial, 1000, 1e-6, (done,), per_thread)  # 1 ms of work: pieces
    assert np.all(done == 1)
    assert len(calls) == min(1000, _schedule.CHUNKS_PER_THREAD * MAX_THREADS)
    assert len(spaces) <= MAX_THREADS and sum(map(len, spaces)) == len(calls)
    calls.clear()
    _schedule.run(serial, 1000, 1e-10, (done,), per_thread)  # 0.1 us: one call
    assert [(lo, hi) for lo, hi, _ in calls] == [(0, 1000)] and np.all(done == 2)


class _LateHelpers:
    """A stand-in pool whose threads start only when ``release`` is set (a descheduled
    helper), each recording the blocks it ran."""

    def __init__(self):
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self.release = threading.Event()
        self.pool = ThreadPoolExecutor(4)

    def submit(self, work, run):
        def late():
            self.release.wait(30)
            return work(run)
        return self.pool.submit(late)


@needs_threads
def test_spread_does_not_wait_for_a_helper_that_claimed_nothing(monkeypatch, all_threads):
    # Python threads claim blocks one at a time, the calling thread included: a helper that
    # has not started when the others took every block claims none, and spread returns
    # without it (before: one group per thread, joined, so a descheduled helper held the
    # call for its time slice). Nothing is timed: the helper starts only after spread
    # returned, which it could not do if spread waited for it.
    import threading

    helpers = _LateHelpers()
    monkeypatch.setattr(_schedule, "_pool", lambda n: helpers)
    monkeypatch.setattr(_schedule, "SERIAL_SECONDS", 0.0)
    monkeypatch.setattr(_schedule, "_last_late", -math.inf)
    ran = []

    def run(claimed):
        for block in claimed:
            ran.append((threading.get_ident(), block))

    try:
        caller = threading.Thread(target=_schedule.spread, args=(run, list(range(10)), 1.0))
        caller.start()
        caller.join(30)
        returned = not caller.is_alive()
        helpers.release.set()
        caller.join(30)
    finally:
        helpers.pool.shutdown(wait=True)
    assert returned
    assert sorted(block for _, block in ran) == list(range(10))
    assert {thread for thread, _ in ran} == {caller.ident}


@needs_threads
def test_spread_runs_every_block_once_and_raises_a_helpers_error(monkeypatch, all_threads):
    monkeypatch.setattr(_schedule, "SERIAL_SECONDS", 0.0)
    monkeypatch.setattr(_schedule, "_last_late", -math.inf)
    counts = np.zeros(200, dtype=np.int64)

    def run(claimed):
        for block in claimed:
            counts[block] += 1

    _schedule.spread(run, list(range(200)), 1.0)
    assert np.all(counts == 1)

    def failing(claimed):
        for block in claimed:
            if block == 7:
                raise ValueError("block 7")

    with pytest.raises(ValueError, match="block 7"):
        _schedule.spread(failing, list(range(20)), 1.0)
