"""Processes and threads: fork after a check, concurrent checks, the threading layer the user
chose, the BLAS thread limit, and a read-only install without a numba cache.

Whatever can hang or abort a process (fork after a parallel kernel, workqueue launches from
several threads) runs in a child Python with a timeout, so a hang fails the test instead of
blocking pytest and an abort cannot take pytest down.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import numba
import numpy as np
import pytest
import threadpoolctl

import gradcheck_fast
from gradcheck_fast import _threads

from .conftest import correct_gradients, random_network, seed_case

ROOT = Path(__file__).resolve().parents[1]

#: Seconds a child may take: imports, loading the cached kernels and a few tiny checks take a
#: few seconds (more on a loaded machine); a hang is what this bounds.
CHILD_TIMEOUT = 240


def run_child(script: str, tmp_path: Path, env: dict | None = None,
              timeout: float = CHILD_TIMEOUT) -> subprocess.CompletedProcess:
    """Run ``script`` as ``python child.py`` (a file, so that spawn/forkserver workers can
    import its functions) with this repository's package first on the path."""
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(script))
    child_env = dict(os.environ)
    for name in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY"):
        child_env.pop(name, None)
    child_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    child_env.update(env or {})
    try:
        result = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=child_env,
                                capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the child hung (no exit within {timeout} s); its output so far:\n"
                    f"{exc.stdout}\n{exc.stderr}")
    assert result.returncode == 0, (
        f"the child failed (exit code {result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


# ---------------------------------------------------------------------------------------------
# Child scripts' shared part: a parallel check in the parent, then the same check in workers.
# ---------------------------------------------------------------------------------------------
_COMMON = """
import sys, threading
import numba, numpy as np
import gradcheck_fast
from gradcheck_fast import _schedule, _threads
from tests.conftest import correct_gradients, random_network, seed_case

# Every check below runs parallel regions, however small: these tests are about what the
# regions do to forks and threads (a small check runs serially on its own).
_schedule.SERIAL_SECONDS = 0.0
_schedule.BUSY_MEMORY = 0.0


def launching(check):
    # Run check() and make sure that it launched parallel kernels.
    before = _threads.launches
    result = check()
    assert _threads.launches > before, "no parallel region was launched"
    return result


def fingerprint(report):
    # Every number a check computed, as exact bits.
    values = [report.difference, report.cost]
    for block in report.blocks.values():
        values += [block.difference, block.max_abs_error, block.max_rel_error]
    arrays = [np.asarray(a).tobytes() for a in report.gradapprox.values()]
    return np.array(values).tobytes(), arrays


def small_checks(_=None):
    # A directional check (parallel kernels, whatever its size) and the seed's full check.
    X, Y, parameters = seed_case()
    gradients = correct_gradients(X, Y, parameters)
    directional = gradcheck_fast.check_gradients(parameters, gradients, X, Y,
                                                 mode="directional", n_threads=2)
    full = launching(lambda: gradcheck_fast.check_gradients(parameters, gradients, X, Y,
                                                            n_threads=2))
    return fingerprint(directional), fingerprint(full)


def parallel_check():
    # Large enough for the engine's parallel path with 2 threads.
    X, Y, parameters = random_network((64, 64, 32, 10), 64, 1)
    gradients = correct_gradients(X, Y, parameters)
    return fingerprint(launching(lambda: gradcheck_fast.check_gradients(
        parameters, gradients, X, Y, n_threads=2)))
"""

_FORK_AND_FRIENDS = _COMMON + """
import concurrent.futures as cf
import multiprocessing as mp

if __name__ == "__main__":
    parallel_check()
    want = small_checks()
    print("layer", numba.threading_layer(), flush=True)
    # Two forked workers (cheap); one each for spawn and forkserver (each starts Python and
    # loads numba and the cached kernels: seconds).
    for method, n in (("fork", 2), ("spawn", 1), ("forkserver", 1)):
        with mp.get_context(method).Pool(n) as pool:
            got = pool.map_async(small_checks, range(n)).get(timeout=120)
        assert got == [want] * n, method
        print(method, "pool ok", flush=True)
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as executor:
        got = list(executor.map(small_checks, range(2), timeout=120))
    assert got == [want, want], "ProcessPoolExecutor"
    print("executor ok", flush=True)
"""


def test_fork_spawn_forkserver_after_a_parallel_check(tmp_path):
    """After parallel kernels ran in the parent, workers made by fork (Pool and
    ProcessPoolExecutor), spawn and forkserver each run checks and return the parent's bits.
    (With GNU OpenMP, numba's default layer on Linux, a forked worker was killed on its first
    parallel kernel and the Pool hung.)"""
    result = run_child(_FORK_AND_FRIENDS, tmp_path)
    assert "executor ok" in result.stdout
    assert "layer omp" not in result.stdout


_CONCURRENT = _COMMON + """
def hammer(results, index):
    results[index] = [small_checks() + (parallel_check(),) for _ in range(3)]

if __name__ == "__main__":
    solo = small_checks() + (parallel_check(),)
    results = [None] * 4
    threads = [threading.Thread(target=hammer, args=(results, i)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(run == solo for runs in results for run in runs), "concurrent bits differ"
    print("layer", numba.threading_layer(), flush=True)
"""


def test_workqueue_fallback_is_fork_and_thread_safe(tmp_path):
    """Without tbb the package's default is numba's workqueue layer: fork-safe, and the
    package serialises its own launches, so 4 Python threads running parallel checks at once
    neither abort the process (workqueue's SIGABRT on concurrent launches) nor change a bit."""
    script = _HIDE_TBB + _CONCURRENT + textwrap.dedent("""
    import multiprocessing as mp
    if __name__ == "__main__":
        with mp.get_context("fork").Pool(1) as pool:
            assert pool.map_async(small_checks, [0]).get(timeout=120) == [solo[:2]]
        print("fork ok", flush=True)
    """)
    result = run_child(script, tmp_path)
    assert "layer workqueue" in result.stdout
    assert "fork ok" in result.stdout


_START_FIRST = """
import numba, numpy as np

@numba.njit(parallel=True)
def started(out):
    for i in numba.prange(out.size):
        out[i] = i

started(np.zeros(4))  # numba's own default layer runs before the package is imported
print("layer", numba.threading_layer(), "started first", flush=True)
"""


@pytest.mark.parametrize("layer, env, prelude", [
    ("omp", {"NUMBA_THREADING_LAYER": "omp"}, ""),
    ("workqueue", {"NUMBA_THREADING_LAYER": "workqueue"}, ""),
    (None, {}, _START_FIRST),
], ids=["env-omp", "env-workqueue", "started-before-import"])
def test_a_layer_the_user_chose_is_respected(tmp_path, layer, env, prelude):
    """NUMBA_THREADING_LAYER set by the user, or a layer numba started before the package was
    imported, is the layer in force; concurrent checks on it give the solo bits (omp is
    thread-safe; on workqueue the package serialises its launches)."""
    script = textwrap.dedent(prelude) + _CONCURRENT + textwrap.dedent("""
    if __name__ == "__main__":
        from gradcheck_fast import _threads
        print("package chose", _threads.chose_layer, flush=True)
    """)
    result = run_child(script, tmp_path, env=env)
    if layer is None:  # the one numba started (omp, or tbb if found on the loader's path)
        layer = result.stdout.split("layer ")[1].split()[0]
    assert result.stdout.count(f"layer {layer}") == (2 if prelude else 1)
    assert "package chose False" in result.stdout


def test_choice_respects_what_the_user_set(monkeypatch):
    """The layer the user set in numba.config or the environment counts as their choice; only
    numba's untouched default is replaced (by the fork-safe choice)."""
    monkeypatch.delenv("NUMBA_THREADING_LAYER", raising=False)
    monkeypatch.delenv("NUMBA_THREADING_LAYER_PRIORITY", raising=False)
    monkeypatch.setattr(numba.config, "THREADING_LAYER", "default")
    monkeypatch.setattr(numba.config, "THREADING_LAYER_PRIORITY", ["tbb", "omp", "workqueue"])
    assert not _threads.user_chose_layer()
    monkeypatch.setattr(numba.config, "THREADING_LAYER", "omp")
    assert _threads.user_chose_layer()
    monkeypatch.setattr(numba.config, "THREADING_LAYER", "default")
    monkeypatch.setenv("NUMBA_THREADING_LAYER", "default")
    assert _threads.user_chose_layer()
    monkeypatch.delenv("NUMBA_THREADING_LAYER")
    monkeypatch.setattr(numba.config, "THREADING_LAYER_PRIORITY", ["omp", "tbb", "workqueue"])
    assert _threads.user_chose_layer()


def test_the_layer_in_this_process_is_fork_safe():
    """The test process imported the package with no layer chosen: whatever layer numba
    started is a fork-safe one (tbb when the tbb wheel is installed)."""
    X, Y, parameters, gradients = _seed_checks()
    gradcheck_fast.check_gradients(parameters, gradients, X, Y, mode="directional", n_threads=2)
    if not _threads.chose_layer:
        pytest.skip("the test run chose its own threading layer")
    assert numba.threading_layer() in ("tbb", "workqueue")


# ---------------------------------------------------------------------------------------------
# Concurrent checks in this process: bits and the BLAS thread limit
# ---------------------------------------------------------------------------------------------
def _seed_checks():
    X, Y, parameters = seed_case()
    return X, Y, parameters, correct_gradients(X, Y, parameters)


def _fingerprint(report):
    values = [report.difference, report.cost]
    for block in report.blocks.values():
        values += [block.difference, block.max_abs_error, block.max_rel_error]
    return np.array(values).tobytes(), [np.asarray(a).tobytes()
                                        for a in report.gradapprox.values()]


def _blas_threads():
    return [(info["filepath"], info["num_threads"])
            for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]


def test_concurrent_checks_give_solo_bits_and_restore_blas_exactly(monkeypatch):
    """4 Python threads running directional and full checks (parallel path) at once give
    bitwise the solo results, and BLAS gets back exactly the thread counts it had (each
    thread's threadpoolctl limit, left in interleaved order, used to leave BLAS at 1 thread
    for good)."""
    from gradcheck_fast import _schedule

    monkeypatch.setattr(_schedule, "SERIAL_SECONDS", 0.0)  # parallel regions, however small
    launched = _threads.launches
    X, Y, parameters = random_network((64, 64, 32, 10), 64, 1)
    gradients = correct_gradients(X, Y, parameters)

    def checks():
        return (_fingerprint(gradcheck_fast.check_gradients(
                    parameters, gradients, X, Y, mode="directional", n_directions=16,
                    n_threads=2)),
                _fingerprint(gradcheck_fast.check_gradients(parameters, gradients, X, Y,
                                                            n_threads=2)))

    before = _blas_threads()
    solo = checks()
    assert _blas_threads() == before
    results, errors = [], []
    barrier = threading.Barrier(4)

    def run():
        try:
            barrier.wait()
            for _ in range(4):
                results.append(checks())
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(results) == 16
    assert all(result == solo for result in results)
    assert _blas_threads() == before
    assert _threads.launches > launched  # the checks did run parallel regions


def test_blas_limit_is_shared_by_overlapping_threads():
    """single_blas_thread entered by one thread and left while another is still inside keeps
    BLAS at 1 thread for the one still inside, and restores the original once both left."""
    before = _blas_threads()
    if all(count == 1 for _, count in before):
        pytest.skip("BLAS runs on one thread here: a limit of 1 cannot be told from none")
    inside_first, first_left, seen = threading.Event(), threading.Event(), []

    def first():
        with _threads.single_blas_thread():
            inside_first.set()
            second_inside.wait()
        first_left.set()

    def second():
        inside_first.wait()
        with _threads.single_blas_thread():
            second_inside.set()
            first_left.wait()
            seen.append(_blas_threads())

    second_inside = threading.Event()
    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [[(path, 1) for path, _ in before]]
    assert _blas_threads() == before


def test_an_interrupted_blas_restore_is_done_by_the_next_check(monkeypatch):
    """Ctrl-C while the last thread out restores BLAS used to leave it at 1 thread for good
    (the next check saved 1 as the count to restore)."""
    before = _blas_threads()
    real = _threads._set_blas_threads
    calls = []

    def interrupted_restore(counts):
        calls.append(counts)
        if len(calls) == 2:  # the restore, after the limit
            raise KeyboardInterrupt
        real(counts)

    monkeypatch.setattr(_threads, "_set_blas_threads", interrupted_restore)
    with pytest.raises(KeyboardInterrupt):
        with _threads.single_blas_thread():
            pass
    monkeypatch.setattr(_threads, "_set_blas_threads", real)
    with _threads.single_blas_thread():
        pass
    assert _blas_threads() == before
    assert _threads._blas_users == 0


_HIDE_TBB = """
from importlib import metadata
_files = metadata.files
def files(name):  # as if the tbb wheel were not installed
    if name == "tbb":
        raise metadata.PackageNotFoundError(name)
    return _files(name)
metadata.files = files
"""

_FORK_WHILE_LAUNCHING = _HIDE_TBB + _COMMON + """
import multiprocessing as mp, time

if __name__ == "__main__":
    want = parallel_check()
    print("layer", numba.threading_layer(), flush=True)
    # Another thread holds the launch lock (as it does for the whole of a parallel kernel on
    # workqueue) while the main thread forks: the child must not inherit it held.
    held, release = threading.Event(), threading.Event()
    def hold():
        with _threads._LAUNCH_LOCK:
            held.set()
            release.wait()
    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    with mp.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(parallel_check).get(timeout=60)
    release.set()
    holder.join()
    assert got == want
    print("fork while launching ok", flush=True)
"""


def test_a_fork_while_another_thread_launches_does_not_hang_the_child(tmp_path):
    result = run_child(_FORK_WHILE_LAUNCHING, tmp_path)
    assert "layer workqueue" in result.stdout
    assert "fork while launching ok" in result.stdout


_ENV_CHANGED = _HIDE_TBB + _COMMON + """
import os
if __name__ == "__main__":
    # A NUMBA_* variable set after the import (a notebook choosing its cache directory):
    # numba re-reads its configuration at the next compilation.
    os.environ["NUMBA_CACHE_DIR"] = sys.argv[1] if len(sys.argv) > 1 else os.getcwd()

    @numba.njit
    def users_own(x):  # compiled now: numba re-reads its configuration
        return x + 1.0

    users_own(1.0)
    parallel_check()
    print("layer", numba.threading_layer(), flush=True)
"""


def test_the_fork_safe_choice_survives_numba_rereading_its_configuration(tmp_path):
    # Before: the re-read set the layer back to numba's default, GNU OpenMP (not fork-safe).
    result = run_child(_ENV_CHANGED, tmp_path)
    assert "layer workqueue" in result.stdout


# ---------------------------------------------------------------------------------------------
# A read-only install: no numba cache
# ---------------------------------------------------------------------------------------------
_READ_ONLY = """
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import gradcheck_fast
    from gradcheck_fast import activations
ours = [w for w in caught if issubclass(w.category, gradcheck_fast.CacheUnavailableWarning)]
assert len(ours) == 1, [str(w.message) for w in caught]
assert "NUMBA_CACHE_DIR" in str(ours[0].message)
assert not [w for w in caught if w not in ours], [str(w.message) for w in caught]
# A kernel of the package runs, compiled without a cache:
assert activations._relu(-1.5) == 0.0 and activations._relu(2.5) == 2.5
assert type(activations._relu._cache).__name__ == "NullCache"
import numba, numpy as np

@numba.njit
def cost(theta):
    return np.sum(theta ** 3)

theta = np.array([1.0, -2.0, 0.5])
report = gradcheck_fast.check(cost, theta, 3 * theta ** 2)
wrong = gradcheck_fast.check(cost, theta, 3 * theta ** 2 + np.array([0.0, 1e-3, 0.0]))
assert report.passed and not wrong.passed
print("read-only ok", flush=True)
"""


def _unprivileged_runner() -> list[str] | None:
    """``setpriv`` to the user nobody, when this process is root and nobody can run this
    Python (a root-only temporary virtual environment cannot be)."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return None
    command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    try:
        probe = subprocess.run(command + [sys.executable, "-c", "import numba, threadpoolctl"],
                               capture_output=True, timeout=60, cwd="/")
    except (OSError, subprocess.TimeoutExpired):
        return None
    return command if probe.returncode == 0 else None


@pytest.fixture
def world_readable_dir():
    """A fresh directory under the system's temporary directory that any user can reach
    (pytest's tmp_path is inside a directory only its owner can enter)."""
    path = Path(tempfile.mkdtemp(prefix="gradcheck-fast-ro-"))
    path.chmod(0o755)
    yield path
    for item in [path, *path.rglob("*")]:
        item.chmod(0o755 if item.is_dir() else 0o644)
    shutil.rmtree(path)


def test_read_only_install_imports_and_checks_without_cache(world_readable_dir):
    """The package in a read-only directory, run by an unprivileged user with no writable home
    (or, where this process cannot switch user, with every numba cache locator made
    unavailable): it imports with one warning naming NUMBA_CACHE_DIR and checks correctly.
    (Before: ``RuntimeError: cannot cache function '_relu': no locator available``.)"""
    tmp_path = world_readable_dir
    site = tmp_path / "site"
    shutil.copytree(ROOT / "gradcheck_fast", site / "gradcheck_fast",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "child.py").write_text(_READ_ONLY)
    env = {key: value for key, value in os.environ.items() if not key.startswith("NUMBA_")}
    env.update(PYTHONPATH=str(site), HOME=str(tmp_path / "no-home"))
    env.pop("XDG_CACHE_HOME", None)
    runner = _unprivileged_runner()
    if runner is None:
        # numba's own switch (0.61+) for the locators to try: the IPython one never applies
        # to a file.
        if not hasattr(numba.config, "CACHE_LOCATOR_CLASSES"):
            pytest.skip("neither a user switch (needs root) nor NUMBA_CACHE_LOCATOR_CLASSES")
        env["NUMBA_CACHE_LOCATOR_CLASSES"] = "numba.core.caching.IPythonCacheLocator"
        runner = []
    for path in [tmp_path, *tmp_path.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    result = subprocess.run(runner + [sys.executable, str(tmp_path / "child.py")],
                            cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=CHILD_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "read-only ok" in result.stdout
