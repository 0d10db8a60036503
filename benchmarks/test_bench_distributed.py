"""Many machines (issue 12): a check sharded over a LocalCluster of 2 single-threaded worker
processes against the local 2-thread check, on work worth distributing, in the same run.

- A custom njit cost whose local full check takes >= 5 s: the sharded check (data shipping,
  per-worker set-up and the scheduler included; the cluster's start-up is not, a user has a
  cluster) within 1.3x of the local one, both with the cost compiled (the local check is
  timed after a first one; the workers have run a first check too). The first check on fresh
  workers, which compile the cost and the loop once per process, is measured and printed.
- The scheduler's overhead per shard: many tiny shards, (wall time - their work / workers) per
  shard, which the shard size (``SHARD_SECONDS``) keeps a small fraction of a shard's work.
- The 1024-1024-512-10 network's full check takes ~0.2 s here since the layer sweep: under a
  second, it runs locally whatever ``executor=`` says, and the report says so.

With ``--benchmark-disable`` the same checks run small (verdicts and bits only).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import gradcheck_fast
from gradcheck_fast import distributed
from gradcheck_fast.networks import random_mlp
from tests.distributed_costs import coupled, coupled_problem, local_cluster

TARGET = 1.3


@pytest.fixture(scope="module")
def client():
    with local_cluster() as client:
        yield client


def test_a_long_custom_check_through_the_cluster(benchmark, client, monkeypatch):
    P, reps = (2000, 160) if not benchmark.disabled else (300, 30)
    if benchmark.disabled:  # small: sharded all the same
        monkeypatch.setattr(distributed, "LOCAL_SECONDS", 0.0)
    theta, a, grad = coupled_problem(P)
    gradcheck_fast.check(coupled, theta, grad, (a, 1))  # compiled here before timing
    started = time.perf_counter()
    local = gradcheck_fast.check(coupled, theta, grad, (a, reps), n_threads=2)
    local_s = time.perf_counter() - started
    # The first check on these workers compiles the cost and the loop in each process (the
    # local check above was timed compiled): measured and stated, then the timed run.
    started = time.perf_counter()
    cold = gradcheck_fast.check(coupled, theta, grad, (a, reps), executor=client)
    cold_s = time.perf_counter() - started
    benchmark.group = "many machines"
    benchmark.name = f"check[njit cost, P={P}] on a LocalCluster (2 x 1 thread)"
    sharded = benchmark.pedantic(gradcheck_fast.check, args=(coupled, theta, grad, (a, reps)),
                                 kwargs={"executor": client}, rounds=1, iterations=1)
    for name in local.blocks:
        assert np.array_equal(local.gradapprox[name], sharded.gradapprox[name])
        assert np.array_equal(local.gradapprox[name], cold.gradapprox[name])
    assert "shards" in sharded.notes[-1]
    if benchmark.disabled:
        return
    cluster_s = benchmark.stats.stats.min
    ratio = cluster_s / local_s
    print(f"\nlocal 2-thread check {local_s:.2f} s; through the cluster {cluster_s:.2f} s: "
          f"{ratio:.2f}x ({sharded.notes[-1]}); the first check on fresh workers "
          f"{cold_s:.2f} s: {cold_s / local_s:.2f}x ({cold.notes[-1]})")
    assert local_s >= 5.0, "the local check must be worth distributing (>= 5 s)"
    assert ratio <= TARGET


def test_the_schedulers_overhead_per_shard(benchmark, client, monkeypatch):
    """200 shards of a 50 us evaluation each: almost all of the time is the executor's."""
    monkeypatch.setattr(distributed, "LOCAL_SECONDS", 0.0)
    monkeypatch.setattr(distributed, "SHARD_SECONDS", 1e-9)  # one coordinate per shard
    P = 200 if not benchmark.disabled else 20
    theta, a, grad = coupled_problem(P)
    gradcheck_fast.check(coupled, theta, grad, (a, 1), executor=client)  # workers warm
    benchmark.group = "many machines"
    benchmark.name = f"check[{P} one-coordinate shards] on a LocalCluster"
    started = time.perf_counter()
    report = benchmark.pedantic(gradcheck_fast.check, args=(coupled, theta, grad, (a, 1)),
                                kwargs={"executor": client}, rounds=1, iterations=1)
    wall = time.perf_counter() - started
    assert report.passed and f"{P} shards" in report.notes[-1]
    per_shard = wall / P
    print(f"\n{P} one-coordinate shards in {wall:.3f} s: {1e3 * per_shard:.2f} ms per shard "
          f"(on 2 workers: the executor's round trip, the shard's own work is ~0.1 ms)")
    if not benchmark.disabled:
        # A shard of SHARD_SECONDS = 2 s then carries well under 1 % of overhead.
        assert per_shard < 0.02


def test_a_check_under_a_second_runs_locally_whatever_the_executor(benchmark, client):
    sizes, m = ((1024, 1024, 512, 10), 64) if not benchmark.disabled else ((64, 32, 10), 16)
    X, Y, parameters, gradients = random_mlp(sizes, m=m, seed=0)
    benchmark.group = "many machines"
    benchmark.name = f"check_gradients[{'-'.join(map(str, sizes))}] with executor="
    report = benchmark.pedantic(gradcheck_fast.check_gradients,
                                args=(parameters, gradients, X, Y),
                                kwargs={"executor": client}, rounds=1, iterations=1)
    assert report.passed
    assert report.notes[-1].startswith("executor: the check was expected to take")
