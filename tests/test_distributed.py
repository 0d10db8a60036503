"""Many machines (issue 12): a check's coordinates in shards on a dask cluster or a
concurrent.futures process pool, bitwise the local report, losing nothing when a worker dies.

A LocalCluster of 2 single-threaded worker processes and a spawn ProcessPoolExecutor stand in
for a cluster. The checks here are small; ``LOCAL_SECONDS`` is set to 0 so that they are
sharded all the same (a check under a second runs locally otherwise, tested too).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import threading
import time

import numpy as np
import pytest

import gradcheck_fast
from gradcheck_fast import distributed
from gradcheck_fast.networks import random_mlp
from tests.distributed_costs import coupled, coupled_problem, local_cluster, raising


@pytest.fixture(scope="module")
def client():
    with local_cluster() as client:
        yield client


@pytest.fixture(scope="module")
def pool():
    executor = cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
    yield executor
    executor.shutdown(cancel_futures=True)


@pytest.fixture
def always_shard(monkeypatch):
    monkeypatch.setattr(distributed, "LOCAL_SECONDS", 0.0)


def _same_report(a, b):
    assert a.passed == b.passed and a.failed_blocks == b.failed_blocks
    assert a.difference == b.difference
    for name in a.blocks:
        assert np.array_equal(a.gradapprox[name], b.gradapprox[name], equal_nan=True), name
        assert a.blocks[name].verdict == b.blocks[name].verdict


@pytest.mark.parametrize("executor", ["client", "pool"])
def test_a_custom_njit_cost_gives_the_local_report_bitwise(executor, request, always_shard):
    executor = request.getfixturevalue(executor)
    theta, a, grad = coupled_problem()
    wrong = grad.copy()
    wrong[100] *= 1.1
    layout = gradcheck_fast.Layout({"u": (400,), "v": (20, 10)})
    for g in (grad, wrong):
        local = gradcheck_fast.check(coupled, theta, g, (a, 1), layout=layout)
        sharded = gradcheck_fast.check(coupled, theta, g, (a, 1), layout=layout,
                                       executor=executor)
        _same_report(local, sharded)
        assert "shards" in sharded.notes[-1]
    assert sharded.failed_blocks == ["du"]


def test_the_mnist_size_network_gives_the_local_report_bitwise(client, always_shard):
    X, Y, parameters, gradients = random_mlp((784, 256, 128, 10), m=64, seed=0)
    gradients["dW2"][3, 5] += 1e-3
    local = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    sharded = gradcheck_fast.check_gradients(parameters, gradients, X, Y, executor=client)
    _same_report(local, sharded)
    assert sharded.failed_blocks == ["dW2"] and "dask cluster" in sharded.notes[-1]
    sampled = gradcheck_fast.check_gradients(parameters, gradients, X, Y, mode="sampled",
                                             n_per_block=50, executor=client)
    _same_report(gradcheck_fast.check_gradients(parameters, gradients, X, Y, mode="sampled",
                                                n_per_block=50), sampled)


def test_a_layer_check_with_a_python_forward_gives_the_local_report(pool, always_shard):
    rng = np.random.default_rng(1)
    inputs = {"x": rng.normal(size=(6, 4)), "w": rng.normal(size=(4, 3))}

    def forward(x, w):
        return np.tanh(x @ w), (x, w)

    def backward(dout, cache):
        x, w = cache
        dz = dout * (1.0 - np.tanh(x @ w) ** 2)
        return dz @ w.T, 1.5 * (x.T @ dz)

    local = gradcheck_fast.check_layer(forward, backward, inputs)
    sharded = gradcheck_fast.check_layer(forward, backward, inputs, executor=pool)
    _same_report(local, sharded)
    assert sharded.failed_blocks == ["dw"]


def test_a_small_check_runs_locally_and_says_so(client):
    theta, a, grad = coupled_problem(50)
    report = gradcheck_fast.check(coupled, theta, grad, (a, 1), executor=client)
    assert report.notes[-1].startswith("executor: the check was expected to take")
    assert "ran locally" in report.notes[-1]


def test_an_error_in_the_users_cost_names_its_shard(pool, always_shard):
    theta = np.full(40, 0.5 - 0.5e-7)  # theta[7] + epsilon crosses 0.5: the cost raises
    with pytest.raises(FloatingPointError, match="the user's cost failed") as info:
        gradcheck_fast.check(raising, theta, 2 * theta, executor=pool)
    notes = getattr(info.value, "__notes__", [])
    assert any("raised in the shard of" in note for note in notes)


def test_bad_executors_and_unpicklable_costs_are_named(client, always_shard):
    theta, a, grad = coupled_problem(30)
    with pytest.raises(TypeError, match="executor must be"):
        gradcheck_fast.check(coupled, theta, grad, (a, 1), executor="localhost:8786")
    lock = threading.Lock()

    def cost(t):
        with lock:
            return float(np.sum(t**2))

    with pytest.raises(TypeError, match="cannot be sent to the workers"):
        gradcheck_fast.check(cost, theta, 2 * theta, executor=client)


def test_estimates_count_the_workers(client, monkeypatch):
    from gradcheck_fast import custom

    theta, a, grad = coupled_problem(200)
    # One evaluation's time fixed (each estimate would time it afresh, noisily).
    monkeypatch.setattr(custom, "first_evaluation",
                        lambda cost, theta, args: custom.Evaluation(1.0, True, 1e-3))
    here = gradcheck_fast.estimate_cost(coupled, theta, grad, (a, 1), n_threads=1)
    spread = gradcheck_fast.estimate_cost(coupled, theta, grad, (a, 1), executor=client)
    # 2 single-threaded workers: the coordinates' evaluations take half the time.
    assert here.full.evaluations == spread.full.evaluations == 400
    assert here.full.seconds - here.full.setup == pytest.approx(400 * 1e-3, rel=0.01)
    assert spread.full.seconds - spread.full.setup == pytest.approx(400 * 1e-3 / 2, rel=0.01)
    X, Y, parameters, gradients = random_mlp((30, 20, 1), m=16)
    one = gradcheck_fast.estimate_cost(parameters, gradients, X, Y, n_threads=1)
    two = gradcheck_fast.estimate_cost(parameters, gradients, X, Y, executor=client)
    assert two.full.seconds - two.full.setup == pytest.approx(
        (one.full.seconds - one.full.setup) / 2)


def _kill_one_worker_soon(pids, delay):
    def kill():
        time.sleep(delay)
        os.kill(pids[0], signal.SIGKILL)

    thread = threading.Thread(target=kill)
    thread.start()
    return thread


def test_a_dask_worker_killed_mid_check_loses_nothing(client):
    """~4 s of evaluations in 8+ shards; one worker process is killed after 0.8 s: dask
    re-runs its shards on the other (its nanny restarts it), the report is the local one."""
    theta, a, grad = coupled_problem(400)
    reps = 1600  # ~2.4 ms per evaluation: ~2 s of work per worker, the kill well inside it
    local = gradcheck_fast.check(coupled, theta, grad, (a, reps))
    pids = list(client.run(os.getpid).values())
    killer = _kill_one_worker_soon(pids, 0.8)
    sharded = gradcheck_fast.check(coupled, theta, grad, (a, reps), executor=client)
    killer.join()
    _same_report(local, sharded)
    assert "re-run after a worker was lost" in sharded.notes[-1]
    client.wait_for_workers(2, timeout=60)


def test_a_process_pool_worker_killed_mid_check_loses_nothing():
    theta, a, grad = coupled_problem(400)
    reps = 1600
    local = gradcheck_fast.check(coupled, theta, grad, (a, reps))
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(os.getpid).result()  # the workers are up
        pids = list(pool._processes)
        killer = _kill_one_worker_soon(pids, 1.5)
        sharded = gradcheck_fast.check(coupled, theta, grad, (a, reps), executor=pool)
        killer.join()
    _same_report(local, sharded)
    assert "re-run after a worker was lost" in sharded.notes[-1]


def test_the_progress_bar_counts_the_finished_shards_coordinates(pool, always_shard, capsys):
    theta, a, grad = coupled_problem(120)
    report = gradcheck_fast.check(coupled, theta, grad, (a, 1), executor=pool, progress=True)
    assert report.passed
    err = capsys.readouterr().err
    assert "120/120" in err.splitlines()[-1]
