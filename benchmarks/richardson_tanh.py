"""Large steps behind smooth layers: ``method="richardson"`` (steps of 7.4e-4 and twice that)
on the mnist-size network (784-256-128-10, m = 64) with ReLU and with tanh hidden layers.
From the repository root, ``python -m benchmarks.richardson_tanh`` prints both times (the
README's figures; the tanh check takes most samples through the explicit path, a minute or
so, far longer on a loaded machine).
"""

from __future__ import annotations

import time

import gradcheck_fast as gc
from gradcheck_fast import MLP, reference
from gradcheck_fast.networks import example


def main() -> None:
    X, Y, parameters, _ = example("mnist")
    for hidden in ("relu", "tanh"):
        model = MLP(hidden=hidden)
        _, cache = reference.forward_mlp(X, Y, parameters, model)
        gradients = reference.backward_mlp(X, Y, cache, model)
        # Compile (or load) the kernels on two samples first: only the check is timed.
        gc.check_gradients(parameters, gradients, X[:, :2], Y[:, :2], model=model,
                           method="richardson")
        started = time.perf_counter()
        report = gc.check_gradients(parameters, gradients, X, Y, model=model,
                                    method="richardson")
        print(f"hidden={hidden!r}: method='richardson' on the mnist-size network "
              f"{time.perf_counter() - started:.1f} s, passed={report.passed}")


if __name__ == "__main__":
    main()
