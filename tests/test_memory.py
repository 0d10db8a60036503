"""The kept buffers of large per-parameter arrays (gradcheck_fast._memory): handed out again
only when nothing refers to them, so that no two live arrays ever share memory."""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck_fast import _memory


@pytest.fixture
def small_buffers(monkeypatch):
    """Buffers from 1 kB on, none kept before or after the test."""
    monkeypatch.setattr(_memory, "MIN_BYTES", 1024)
    _memory.release()
    yield
    _memory.release()


def test_a_buffer_in_use_is_never_handed_out_again(small_buffers):
    first = _memory.empty((3, 100))
    first[...] = 1.0
    view = first[1]  # a view keeps the buffer in use after its array goes
    del first
    second = _memory.empty((3, 100))
    assert not np.shares_memory(second, view)
    second[...] = 2.0
    assert np.all(view == 1.0)


def test_a_free_buffer_is_handed_out_again_in_any_dtype(small_buffers):
    first = _memory.empty((2, 500))
    address = first.__array_interface__["data"][0]
    del first
    again = _memory.zeros(8000, dtype=np.int8)
    assert again.__array_interface__["data"][0] == address
    assert again.dtype == np.int8 and again.shape == (8000,) and not np.any(again)
    assert again.flags.c_contiguous and again.flags.aligned and again.flags.writeable


def test_small_arrays_and_much_larger_buffers_are_left_alone(small_buffers):
    big = _memory.empty(10_000)
    del big
    assert _memory.kept_bytes() == 80_000
    small = _memory.empty(np.int64(100))  # 800 bytes: np.empty (a NumPy integer as the size)
    quarter = _memory.empty(2_000)  # the kept buffer is more than twice as large
    assert _memory.kept_bytes() == 80_000 + 16_000
    assert small.base is None and quarter.base is not None


def test_at_most_keep_bytes_are_kept_and_release_lets_go(small_buffers, monkeypatch):
    monkeypatch.setattr(_memory, "KEEP_BYTES", 20_000)
    arrays = [_memory.empty(1_000) for _ in range(4)]  # 8 kB each, all in use
    assert _memory.kept_bytes() <= 20_000
    arrays[0][...] = 3.0  # a buffer let go of lives on while its array does
    assert np.all(arrays[0] == 3.0)
    _memory.release()
    assert _memory.kept_bytes() == 0


def test_two_checks_of_a_large_network_in_a_row_reuse_the_buffers(small_buffers):
    """The engine's per-parameter arrays come from kept buffers: a second check reuses them
    (its report from the first still holds its numerical gradient, which stays intact)."""
    import gradcheck_fast
    from gradcheck_fast.networks import example

    X, Y, parameters, gradients = example("wide")
    first = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    kept = _memory.kept_bytes()
    numerical = {name: value.copy() for name, value in first.gradapprox.items()}
    second = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    assert kept > 0 and _memory.kept_bytes() <= kept + first._gradapprox_flat.nbytes
    for name, value in first.gradapprox.items():
        assert np.array_equal(value, numerical[name]) and np.array_equal(value,
                                                                         second.gradapprox[name])


def test_a_finite_memo_serves_only_the_arrays_it_was_formed_from():
    """An engine that formed J+-'s finiteness in a pass of its own hands it over with the
    arrays it is of; a Costs made from it with other changes forms its own."""
    import dataclasses

    from gradcheck_fast.engines._common import Costs

    plus, minus = np.array([1.0, np.inf, 1e308]), np.array([0.0, 1.0, -1e308])
    memo = np.zeros(3, dtype=bool)  # not the truth: only the memo gives this
    costs = Costs(1e308, None, None, plus, minus, np.zeros(3), np.zeros(3), np.zeros(3, int),
                  "incremental", np.arange(3), np.zeros(3), finite_memo=(plus, minus, memo))
    assert costs.finite() is memo
    other = dataclasses.replace(costs, dJ_plus=plus.copy())
    assert other.finite().tolist() == [True, False, False]  # 1e308 + 1e308 overflows


def test_repeated_checks_take_no_fresh_pages():
    """A check's temporaries (2-16 MB each at mnist size) come from the heap once the
    allocator's thresholds are raised at import (_memory.raise_allocator_thresholds): with
    glibc's defaults they were fresh pages, whether the heap kept them depending on the order
    of the blocks: 4.5k page faults (17 MB) per mnist-size check were measured, which doubled
    its time. In a fresh process (this one's heap is the test run's), after three checks, five
    more take well under 1 MB of page faults each. glibc's own defaults: without MALLOC_*
    variables, which fix its thresholds (dask's worker nannies set MALLOC_TRIM_THRESHOLD_ to
    64 KiB, returning every freed block: there the temporaries are fresh pages)."""
    import os
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's malloc and Linux page-fault counts only")
    script = (
        "import resource\n"
        "from gradcheck_fast import check_gradients\n"
        "from gradcheck_fast.networks import example\n"
        "X, Y, p, g = example('mnist')\n"
        "for _ in range(3): check_gradients(p, g, X, Y)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5): check_gradients(p, g, X, Y)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)\n")
    environ = {key: value for key, value in os.environ.items()
               if not key.startswith("MALLOC_")}
    faults = float(subprocess.run([sys.executable, "-c", script], check=True, text=True,
                                  capture_output=True, timeout=300,
                                  env=environ).stdout.split()[-1])
    assert faults < 256, f"{faults:.0f} page faults per check"
