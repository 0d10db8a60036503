"""Verdicts at large steps over many random tanh networks: false alarms and caught mistakes.

Run from the repository root (takes minutes; not part of the test run)::

    python -m benchmarks.false_alarm_sweep --networks 150

For each epsilon it checks, with the correct gradients of ``reference.backward_mlp``, how many
networks get a block called "wrong" (a false alarm: must be 0) or "unverified", and, with a
mistake planted (the last layer's dW scaled by 1.1, db1's sign flipped, one element of dW1
doubled), how many checks call the right block wrong.
"""

from __future__ import annotations

import argparse

import numpy as np

import gradcheck_fast as gc
from gradcheck_fast import reference

EPSILONS = (1e-3, 1e-2, 5e-2, 1e-1)


def tanh_network(seed: int):
    """A random tanh network (2-3 hidden layers of 2-6 units, 3-8 samples, an output of 1-3
    units taking turns at sigmoid, softmax and linear) with its correct gradients."""
    rng = np.random.default_rng(seed)
    depth = int(rng.integers(2, 4))
    sizes = [int(rng.integers(2, 7)) for _ in range(depth)] + [int(rng.integers(1, 4))]
    m = int(rng.integers(3, 9))
    output = ("sigmoid", "softmax", "linear")[seed % 3]
    if output == "softmax" and sizes[-1] == 1:
        output = "sigmoid"
    X = rng.standard_normal((sizes[0], m))
    parameters = {}
    for l in range(1, len(sizes)):
        parameters[f"W{l}"] = rng.standard_normal((sizes[l], sizes[l - 1])) * np.sqrt(
            2.0 / sizes[l - 1])
        parameters[f"b{l}"] = 0.1 * rng.standard_normal((sizes[l], 1))
    if output == "softmax":
        Y = np.eye(sizes[-1])[:, rng.integers(0, sizes[-1], m)]
    elif output == "sigmoid":
        Y = (rng.random((sizes[-1], m)) < 0.5).astype(float)
    else:
        Y = rng.standard_normal((sizes[-1], m))
    model = gc.MLP(hidden="tanh", output=output)
    _, cache = reference.forward_mlp(X, Y, parameters, model)
    gradients = reference.backward_mlp(X, Y, cache, model)
    return X, Y, parameters, gradients, model


def mistakes(gradients, n_layers: int):
    """(name of the wrong block, wrong gradients) for the three planted mistakes."""
    last = f"dW{n_layers}"
    scaled = dict(gradients, **{last: 1.1 * gradients[last]})
    flipped = dict(gradients, db1=-gradients["db1"])
    single = gradients["dW1"].copy()
    single[0, 0] = 2.0 * single[0, 0] if single[0, 0] != 0 else 1.0
    return [(last, scaled), ("db1", flipped), ("dW1", dict(gradients, dW1=single))]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=150)
    parser.add_argument("--mode", default="full", choices=("full", "directional"))
    parser.add_argument("--engine", default="auto")
    args = parser.parse_args(argv)
    n = args.networks
    options = {"mode": args.mode}
    if args.mode == "full":
        options["engine"] = args.engine
    print(f"{n} random tanh networks, mode={args.mode}, correct gradients then planted mistakes")
    print(f"{'epsilon':>8} {'wrong':>7} {'unverified':>11} {'ok':>5}   "
          f"{'x1.1 caught':>11} {'sign caught':>11} {'1 elem caught':>13}")
    for epsilon in EPSILONS:
        verdicts = {"wrong": 0, "unverified": 0, "ok": 0}
        caught = [0, 0, 0]
        for seed in range(n):
            X, Y, parameters, gradients, model = tanh_network(seed)
            report = gc.check_gradients(parameters, gradients, X, Y, model=model,
                                        epsilon=epsilon, **options)
            verdict = ("wrong" if report.failed_blocks
                       else "ok" if report.passed else "unverified")
            verdicts[verdict] += 1
            for k, (name, wrong) in enumerate(mistakes(gradients, len(parameters) // 2)):
                bad = gc.check_gradients(parameters, wrong, X, Y, model=model,
                                         epsilon=epsilon, **options)
                caught[k] += name in bad.failed_blocks
        print(f"{epsilon:>8g} {verdicts['wrong']:>7} {verdicts['unverified']:>11} "
              f"{verdicts['ok']:>5}   {caught[0]:>11} {caught[1]:>11} {caught[2]:>13}",
              flush=True)
    X, Y, parameters = reference.seed_case()
    for model in (gc.MLP(), gc.MLP(hidden="tanh")):
        _, cache = reference.forward_mlp(X, Y, parameters, model)
        gradients = reference.backward_mlp(X, Y, cache, model)
        report = gc.check_gradients(parameters, gradients, X, Y, model=model, epsilon=1.0,
                                    **options)
        print(f"seed case, {model.hidden}, epsilon 1: "
              + ", ".join(f"{name} {b.verdict}" for name, b in report.blocks.items()))


if __name__ == "__main__":
    main()
