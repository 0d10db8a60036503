"""The demo: ``python -m gradcheck_fast`` checks the seed's published case, fast and slow.

1. The seed's faulty backward pass (``dW2`` doubled, ``db1`` with 4/m): the seed's message, the
   difference 0.2850931568..., and the report naming the blocks that disagree.
2. The corrected backward pass: it passes.
3. How long the fast check and the seed's reference loop took on the same inputs.

``python -m gradcheck_fast --plot FILE.png`` writes the picture of the faulty case's report
instead (``report.plot()``; needs matplotlib: ``pip install "gradcheck-fast[plot]"``).
"""

from __future__ import annotations

import argparse
import sys
import timeit

from . import __version__, check_gradients, gradient_check_n, reference


def _best_of(call, repeat: int) -> float:
    return min(timeit.repeat(call, number=1, repeat=repeat))


def write_plot(path: str) -> int:
    """Write ``report.plot()`` of the seed's faulty case to ``path``; 0, or 1 with the reason
    on stderr when matplotlib is missing or the file cannot be written."""
    X, Y, parameters = reference.seed_case()
    _, cache = reference.forward_propagation_n(X, Y, parameters)
    report = check_gradients(parameters, reference.backward_propagation_n_faulty(X, Y, cache),
                             X, Y)
    try:
        figure = report.plot()
        # No software version in the metadata: the committed picture regenerates unchanged.
        metadata = {"Software": None} if path.lower().endswith(".png") else None
        figure.savefig(path, metadata=metadata)
    except (ImportError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}: the report of the seed's faulty backward pass "
          f"({', '.join(report.failed_blocks)} wrong)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gradcheck_fast",
        description="Check the seed's published gradient-checking case with gradcheck_fast.",
    )
    parser.add_argument("--repeat", type=int, default=20,
                        help="timed runs of each implementation; the best is shown (default 20)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="write the picture of the faulty case's report to FILE (any "
                             "format matplotlib writes: .png, .svg, .pdf) instead of the demo; "
                             'needs matplotlib: pip install "gradcheck-fast[plot]"')
    parser.add_argument("--version", action="version", version=f"gradcheck_fast {__version__}")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.plot is not None:
        return write_plot(args.plot)

    X, Y, parameters = reference.seed_case()
    _, cache = reference.forward_propagation_n(X, Y, parameters)
    faulty = reference.backward_propagation_n_faulty(X, Y, cache)
    correct = reference.backward_propagation_n(X, Y, cache)

    print("1. The seed's backward pass, with its two deliberate mistakes:")
    gradient_check_n(parameters, faulty, X, Y)
    print()
    print("2. The corrected backward pass:")
    gradient_check_n(parameters, correct, X, Y)
    print()

    fast = _best_of(lambda: gradient_check_n(parameters, faulty, X, Y, verbose=False), args.repeat)
    slow = _best_of(
        lambda: reference.gradient_check_n(parameters, faulty, X, Y, verbose=False), args.repeat
    )
    n_params = check_gradients(parameters, faulty, X, Y).n_params
    print(f"3. Time for one full check of the {n_params} parameters "
          f"(best of {args.repeat}):")
    print(f"   gradcheck_fast.gradient_check_n            {fast * 1e6:10.1f} us")
    print(f"   gradcheck_fast.reference.gradient_check_n  {slow * 1e6:10.1f} us   "
          f"({slow / fast:.0f}x slower)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
