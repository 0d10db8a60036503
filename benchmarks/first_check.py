"""What the first check of a new custom cost costs: compiling the cost and the loop over its
coordinates (numba cannot cache the loop on disk: it is compiled for that function). From the
repository root, ``python -m benchmarks.first_check`` prints, for a small cost (the README's
logistic regression, which runs on one thread) and the medium MLP written as an njit cost
(which runs the parallel loop), the first and the second check's time in a fresh process.
"""

from __future__ import annotations

import time

import numba
import numpy as np

import gradcheck_fast as gc
from gradcheck_fast import dictionary_to_vector, gradients_to_vector
from gradcheck_fast.networks import example
from tests.test_custom import mlp_cost


@numba.njit
def logistic_cost(theta, X, y):
    z = (X * theta).sum(axis=1)
    return np.mean(np.log1p(np.exp(-z)) * y + np.log1p(np.exp(z)) * (1 - y))


@numba.njit
def _warm(theta):
    return 0.5 * np.sum(theta * theta)


def _twice(label: str, cost, theta, grad, args) -> None:
    started = time.perf_counter()
    report = gc.check(cost, theta, grad, args)
    first = time.perf_counter() - started
    started = time.perf_counter()
    gc.check(cost, theta, grad, args)
    second = time.perf_counter() - started
    print(f"{label}: first check {first:.2f} s (compiles), second {second * 1e3:.1f} ms, "
          f"passed={report.passed}")


def main() -> None:
    # The package's own cached kernels are loaded first: what remains is the new cost's part.
    gc.check(_warm, np.ones(3), np.ones(3))
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((50, 3)), (rng.random(50) < 0.5).astype(float)
    theta = rng.standard_normal(3)
    grad = X.T @ (1 / (1 + np.exp(-(X @ theta))) - y) / len(y)
    _twice("logistic regression (3 parameters, one thread)", logistic_cost, theta, grad, (X, y))
    X, Y, parameters, gradients = example("medium")
    theta = dictionary_to_vector(parameters)[0]
    grad = gradients_to_vector(gradients)
    _twice("medium MLP as an njit cost (2,625 parameters, parallel loop)", mlp_cost, theta, grad,
           (X, Y, np.array([64, 32, 16, 1])))


if __name__ == "__main__":
    main()
