"""Long checks can show progress and stop promptly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np

import gradcheck_fast
from gradcheck_fast import engines
from gradcheck_fast.networks import random_mlp

_LONG_CHECK = textwrap.dedent("""
    import sys, time
    import gradcheck_fast
    from gradcheck_fast.networks import example, random_mlp
    # Compile (or load) the exact engine's kernels first, serial and parallel: a SIGINT that
    # arrives while numba compiles is only acted on when compilation ends (tens of seconds on
    # a cold cache), which is not what this test measures.
    X, Y, parameters, gradients = random_mlp((100, 50, 10), m=64)
    gradcheck_fast.check_gradients(parameters, gradients, X, Y, engine="exact", n_threads=2)
    X, Y, parameters, gradients = example("mnist")
    # The exact engine on the mnist-size network: minutes of work, in pieces of ~0.1 s.
    print("started", flush=True)
    t = time.monotonic()
    try:
        gradcheck_fast.check_gradients(parameters, gradients, X, Y, engine="exact")
    except KeyboardInterrupt:
        print(f"interrupted after {time.monotonic() - t:.2f} s", flush=True)
        sys.exit(3)
    print("finished", flush=True)
""")


#: Seconds a child may take to compile or load its kernels and start its check.
STARTUP_TIMEOUT = 180


def _interrupt(script: str, after_s: float) -> tuple[int, str, str, float]:
    """Run ``script`` in a child process, send it SIGINT ``after_s`` seconds after it prints
    "started", and return its exit code, its output and how long it took to stop."""
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        # Read "started" with a deadline: a child that stalls before it (a deadlock, a cold
        # compile on a loaded machine) fails the test instead of blocking pytest.
        line = []
        reader = threading.Thread(target=lambda: line.append(process.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(STARTUP_TIMEOUT)
        assert line and line[0].strip() == "started", (
            f"the child did not start within {STARTUP_TIMEOUT} s")
        time.sleep(after_s)
        assert process.poll() is None, "the check ended before it could be interrupted"
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        waited = time.monotonic() - sent
    finally:
        process.kill()
        process.wait()
    return process.returncode, out, err, waited


def test_ctrl_c_stops_a_long_check_within_a_piece():
    # 3 s: well inside the check (kernels loaded, pieces running).
    returncode, out, err, waited = _interrupt(_LONG_CHECK, after_s=3.0)
    assert returncode == 3, (out, err)
    assert out.strip().startswith("interrupted after"), (out, err)
    # A piece of the exact engine on this network lasts well under a second on 2 cores; the
    # bound is generous because the machine is shared. Without pieces the wait would be the
    # whole remaining check (minutes).
    assert waited < 10.0, waited


def test_progress_bar_counts_every_parameter(capsys):
    X, Y, parameters, gradients = random_mlp((30, 20, 1), m=16)
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, progress=True)
    err = capsys.readouterr().err
    assert f"{report.n_params}/{report.n_params}" in err
    assert report.passed


def test_pieces_give_the_same_result_as_one_call(monkeypatch):
    X, Y, parameters, gradients = random_mlp((30, 20, 1), m=16)
    whole = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    monkeypatch.setattr(engines._common, "PIECE_SECONDS", 1e-9)  # one piece per parameter
    pieces = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    for name in whole.gradapprox:
        assert np.array_equal(whole.gradapprox[name], pieces.gradapprox[name])


_LONG_CUSTOM_CHECK = textwrap.dedent("""
    import math, sys, time
    import numba, numpy as np
    import gradcheck_fast

    @numba.njit
    def cost(theta, n_work):
        busy = 0.0
        for k in range(n_work):
            busy += math.sin(k * 1e-3)
        return 0.5 * np.sum(theta * theta) + 0.0 * busy

    n_work = 4_000_000  # ~40 ms per evaluation here
    small = np.ones(2)
    gradcheck_fast.check(cost, small, small, (n_work,))  # compile the parallel loop
    theta = np.linspace(-1.0, 1.0, 100)  # 200 evaluations: seconds of work
    print("started", flush=True)
    t = time.monotonic()
    try:
        gradcheck_fast.check(cost, theta, theta, (n_work,))
    except KeyboardInterrupt:
        print(f"interrupted after {time.monotonic() - t:.2f} s", flush=True)
        sys.exit(3)
    print("finished", flush=True)
""")


def test_ctrl_c_stops_a_check_of_an_expensive_custom_cost():
    # Pieces of a custom cost's check hold about one evaluation per thread when evaluations
    # are expensive, so Ctrl-C waits for about one evaluation, not for the check.
    returncode, out, err, waited = _interrupt(_LONG_CUSTOM_CHECK, after_s=1.0)
    assert returncode == 3, (out, err)
    assert out.strip().startswith("interrupted after"), (out, err)
    # A piece is ~0.1 s of work here (a few evaluations); the bound is generous for a shared
    # machine, and far below the check's remaining seconds.
    assert waited < 3.0, waited
