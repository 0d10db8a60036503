"""Threads and processes: numba's threading layer, thread count, launch lock and BLAS limit.

The threading layer is chosen in one place, :func:`choose_threading_layer`, which
``gradcheck_fast/__init__.py`` calls at import, before any kernel can run:

- If the user chose nothing (no ``NUMBA_THREADING_LAYER`` or ``NUMBA_THREADING_LAYER_PRIORITY``
  in the environment, ``numba.config.THREADING_LAYER`` still ``"default"``) and numba has not
  started its threads yet, the layer becomes numba's ``"forksafe"``: **tbb** when it can be
  loaded (pip's ``tbb`` wheel, ``pip install gradcheck-fast[tbb]``, is preloaded from where
  pip puts it, off the loader path), else **workqueue**. numba's own default on Linux would be
  GNU OpenMP, which kills or hangs every child a later ``fork()`` makes (``multiprocessing``,
  ``ProcessPoolExecutor``, joblib, pytest-xdist, data loaders) once a parallel kernel has run.
- A choice the user made is kept, OpenMP included (its fork problem is then documented, not
  fought). A layer numba has already started cannot be changed: it stays as it is.

workqueue is fork-safe but aborts the process when two Python threads launch parallel kernels
at once, so every parallel kernel of the package is wrapped by :func:`serialised_launches`: its
launches are serialised unless the layer in force is known to be thread-safe (tbb, omp).
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading

import numba

#: Layers that several Python threads may launch parallel kernels on at once.
THREAD_SAFE_LAYERS = frozenset({"tbb", "omp"})

#: What the package asks numba for when the user chose no layer: tbb if loadable, else
#: workqueue (on Linux; elsewhere numba may prefer its fork-safe OpenMP).
DEFAULT_LAYER = "forksafe"

#: Explicit layers that would take tbb if it could be loaded: preloading pip's library helps
#: them and overrides nothing.
_LAYERS_WANTING_TBB = frozenset({"tbb", "safe", "threadsafe", DEFAULT_LAYER})

#: numba's name for the TBB runtime it links against, per platform.
_TBB_LIBRARY = {"win32": "tbb12.dll", "darwin": "libtbb.12.dylib"}.get(sys.platform,
                                                                       "libtbb.so.12")

#: Whether :func:`choose_threading_layer` set the layer (False: the user's or numba's stands).
chose_layer = False

#: Held around each parallel launch on a layer that is not thread-safe (reentrant: a launch
#: site never has to know whether its caller holds it). Made anew in a forked child.
_LAUNCH_LOCK = threading.RLock()

#: How many parallel kernels the package launched in this process (a diagnostic: the tests
#: use it to make sure that a check they rely on really ran a parallel region).
launches = 0


def user_chose_layer() -> bool:
    """Whether the user chose numba's threading layer (or its priority order) themselves: by
    environment variable, in ``numba.config`` or in a ``.numba_config.yaml``."""
    if "NUMBA_THREADING_LAYER" in os.environ or "NUMBA_THREADING_LAYER_PRIORITY" in os.environ:
        return True
    if str(numba.config.THREADING_LAYER).lower() != "default":
        return True
    return list(numba.config.THREADING_LAYER_PRIORITY) != ["tbb", "omp", "workqueue"]


def layer_started() -> bool:
    """Whether numba has started its threading layer (it cannot be changed after that)."""
    try:
        numba.threading_layer()
    except ValueError:  # "Threading layer is not initialized."
        return False
    return True


def choose_threading_layer() -> None:
    """Choose numba's threading layer for the process, once, at import of the package.

    Sets ``numba.config.THREADING_LAYER = "forksafe"`` (tbb, else workqueue) unless the user
    chose a layer or numba's layer is already running; preloads pip's TBB runtime when the
    layer in use would take tbb. See the module docstring for why.
    """
    global chose_layer
    if layer_started():
        return
    chosen = user_chose_layer()
    if chosen and str(numba.config.THREADING_LAYER).lower() not in _LAYERS_WANTING_TBB:
        return
    _preload_tbb()
    if not chosen:
        numba.config.THREADING_LAYER = DEFAULT_LAYER
        chose_layer = True


def _preload_tbb() -> bool:
    """Load pip's TBB runtime with global symbols, so that numba's tbb layer finds it.

    pip's ``tbb`` wheel puts the library in ``<prefix>/lib``, which is not on the loader's
    path; numba then silently falls back to another layer. Loaded by full path first, numba's
    own load by name finds it. Returns whether a library was loaded.
    """
    path = _tbb_wheel_library()
    if path is None:
        return False
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError:  # a broken or foreign-architecture install: numba falls back
        return False
    return True


def _tbb_wheel_library() -> str | None:
    """Path of the TBB runtime of the installed ``tbb`` distribution, or None."""
    from importlib import metadata

    try:
        files = metadata.files("tbb") or ()
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == _TBB_LIBRARY:
            path = os.path.normpath(file.locate())
            if os.path.exists(path):
                return path
    return None


def serialised_launches(kernel):
    """Wrap the numba ``parallel=True`` dispatcher ``kernel`` so that its launches run alone
    among the package's launches when the threading layer is not known to be thread-safe.

    workqueue aborts the process (SIGABRT) when two Python threads launch parallel kernels at
    once; tbb and omp do not, so no lock is taken there. Before numba's layer has started, the
    lock is taken too (the first launch starts it). :func:`gradcheck_fast._jit.jit` applies
    this to every parallel kernel, so no launch site can forget it; the kernels are launched
    from Python only (the wrapper is not callable from jitted code). ``launch.kernel`` is the
    dispatcher.
    """

    @functools.wraps(kernel.py_func)
    def launch(*args, **kwargs):
        global launches
        launches += 1
        if _thread_safe_layer():
            return kernel(*args, **kwargs)
        with _LAUNCH_LOCK:
            if chose_layer:
                _keep_choice()
            return kernel(*args, **kwargs)

    launch.kernel = kernel
    return launch


#: The layer in force once numba started it (it never changes after that).
_started_layer: str | None = None


def _keep_choice() -> None:
    """Before numba's layer starts: set the package's choice again if numba dropped it.

    numba re-reads its configuration from the environment before each compilation, and when
    any ``NUMBA_*`` variable changed since the last reading (a notebook setting
    ``NUMBA_CACHE_DIR``, say) ``THREADING_LAYER`` goes back to "default", which is GNU OpenMP
    on Linux: not fork-safe. The reading is done here first, so that the compilation of the
    kernel about to launch finds nothing new; a layer the user has chosen since is kept.
    """
    numba.core.config.reload_config()
    if "NUMBA_THREADING_LAYER" not in os.environ and (
            str(numba.config.THREADING_LAYER).lower() == "default"):
        numba.config.THREADING_LAYER = DEFAULT_LAYER


def _thread_safe_layer() -> bool:
    global _started_layer
    if _started_layer is None:
        try:
            _started_layer = numba.threading_layer()
        except ValueError:  # not started yet
            return False
    return _started_layer in THREAD_SAFE_LAYERS


def num_threads() -> int:
    """``numba.get_num_threads()``, which starts numba's threading layer if it has not started:
    the package's choice is set again first if numba dropped it (see :func:`_keep_choice`).
    Every thread count the package reads goes through here."""
    if chose_layer and _started_layer is None and not layer_started():
        _keep_choice()
    return numba.get_num_threads()


class n_threads_set:  # noqa: N801 (used as a function: ``with n_threads_set(n):``)
    """Run the body with ``numba.set_num_threads(n_threads)``; restore the old value after
    (None: leave it alone).

    numba's thread count is per Python thread, so concurrent checks do not disturb each other.
    A class rather than a generator: entered on every check, the seed's included (~1 us less).
    """

    __slots__ = ("n_threads", "previous")

    def __init__(self, n_threads: int | None):
        self.n_threads = n_threads
        self.previous = None

    def __enter__(self) -> None:
        if self.n_threads is not None:
            self.previous = num_threads()
            numba.set_num_threads(self.n_threads)

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            numba.set_num_threads(self.previous)


@functools.lru_cache(maxsize=1)
def _blas_libraries():
    """threadpoolctl's controllers of the BLAS libraries loaded in the process."""
    from threadpoolctl import ThreadpoolController

    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


#: The BLAS limit is process-wide, so it is shared by every Python thread inside
#: :func:`single_blas_thread`: the first to enter sets it, the last to leave restores the
#: thread counts found by the first. (threadpoolctl's own context managers, entered and left
#: in interleaved order by several threads, restore in the wrong order and can leave BLAS at
#: one thread for good.)
_blas_lock = threading.Lock()
_blas_users = 0
#: The thread counts to restore, kept until they are restored (a restore interrupted by
#: Ctrl-C is done by the next one to leave, instead of saving 1 as the counts to restore).
_blas_saved: tuple[int, ...] | None = None


def _after_fork_in_child() -> None:
    """A forked child has one thread: locks that another thread of the parent held are made
    anew (else the child's first launch or BLAS section would wait forever) and no check is
    inside a BLAS section any more."""
    global _LAUNCH_LOCK, _blas_lock, _blas_users
    _LAUNCH_LOCK = threading.RLock()
    _blas_lock = threading.Lock()
    _blas_users = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def single_blas_thread() -> _SingleBlasThread:
    """Hold BLAS to one thread in the body.

    The set-up of the incremental engine and the directional mode use BLAS matrix products. A
    multi-threaded BLAS may split a product differently for another thread count and round
    differently; on one thread the result is the same whatever the machine's BLAS settings, so
    a check stays bitwise reproducible. (It also keeps BLAS threads from competing with numba's
    on a small machine.) Safe to enter from several Python threads at once: BLAS stays at one
    thread until the last of them leaves, then every BLAS library gets back exactly the thread
    count it had before the first entered. While any check is inside, the limit holds for the
    whole process (BLAS libraries have one setting per process).
    """
    return _SingleBlasThread()


class _SingleBlasThread:
    """:func:`single_blas_thread`'s context (a class: entered on every check, where a
    generator-based context manager's overhead is measurable)."""

    __slots__ = ("entered",)

    def __enter__(self) -> _SingleBlasThread:
        global _blas_users, _blas_saved
        self.entered = False
        with _blas_lock:
            if _blas_users == 0:
                if _blas_saved is None:
                    _blas_saved = tuple(library.get_num_threads()
                                        for library in _blas_libraries())
                # A library already on one thread is left alone (nor restored later).
                _set_blas_threads([None if count == 1 else 1 for count in _blas_saved])
            _blas_users += 1
            self.entered = True
        return self

    def __exit__(self, *exc) -> bool:
        global _blas_users, _blas_saved
        if self.entered:
            with _blas_lock:
                _blas_users -= 1
                if _blas_users == 0:
                    _set_blas_threads([None if count == 1 else count for count in _blas_saved])
                    _blas_saved = None
        return False


def _set_blas_threads(counts) -> None:
    """Give each BLAS library its thread count, from whichever Python thread calls (under
    ``_blas_lock``).

    threadpoolctl >= 3.8 lets only one "controlling" Python thread change OpenBLAS's
    process-wide setting and ignores the others; the shared counter above already makes the
    changes cooperative, so control is taken for the call and released after it (the last
    thread to leave is often not the one that set the limit).
    """
    if all(count is None for count in counts):
        return
    from threadpoolctl import OpenBLASController

    release = getattr(OpenBLASController, "clear_controlling_thread", None)
    if release is not None:
        release(force=True)
    try:
        for library, count in zip(_blas_libraries(), counts):
            if count is not None:
                library.set_num_threads(count)
    finally:
        if release is not None:
            release(force=True)
