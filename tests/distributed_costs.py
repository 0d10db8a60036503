"""Costs for the sharded checks' tests and benchmarks, in an importable module (a worker process
imports it to unpickle a cost by reference, as it would a user's module), and the cluster that
stands in for many machines."""

from __future__ import annotations

import contextlib
import os

import numba
import numpy as np


@numba.njit
def coupled(theta, a, reps):
    """sum(sin(theta_i) a_i) + 1/2 sum(theta_i theta_(i+1)), evaluated ``reps`` times over (a
    cost whose evaluation takes a measurable time)."""
    total = 0.0
    for _ in range(reps):
        total = 0.0
        for i in range(theta.shape[0]):
            total += np.sin(theta[i]) * a[i]
            if i + 1 < theta.shape[0]:
                total += 0.5 * theta[i] * theta[i + 1]
    return total


def coupled_grad(theta, a):
    grad = np.cos(theta) * a
    grad[:-1] += 0.5 * theta[1:]
    grad[1:] += 0.5 * theta[:-1]
    return grad


def raising(theta):
    """A cost that fails at one coordinate's perturbation (theta[7] moved up)."""
    if theta[7] > 0.5:
        raise FloatingPointError("the user's cost failed")
    return float(np.sum(theta**2))


def coupled_problem(P: int = 600, seed: int = 0):
    """A point, the cost's data and its gradient: ``theta``, ``a``, ``coupled_grad``."""
    rng = np.random.default_rng(seed)
    theta, a = 0.5 * rng.normal(size=P), rng.normal(size=P)
    return theta, a, coupled_grad(theta, a)


@contextlib.contextmanager
def local_cluster():
    """A dask LocalCluster of 2 single-threaded worker processes and its Client (a cluster
    stands in for many machines), closed after."""
    import distributed

    environ = dict(os.environ)
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster:
            with distributed.Client(cluster) as client:
                yield client
    finally:
        # dask's nannies put their workers' settings into this process's environment too
        # (distributed.nanny.pre-spawn-environ: MALLOC_TRIM_THRESHOLD_=65536, one BLAS
        # thread, ...), which every process started later would inherit.
        os.environ.clear()
        os.environ.update(environ)
