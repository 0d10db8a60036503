"""Where a cold start's compile time goes: numba's compile events, per dispatcher and signature.

From the repository root, ``python -m benchmarks.compile_profile`` runs, each in a fresh Python
process with its own empty ``NUMBA_CACHE_DIR`` (as :mod:`benchmarks.cold_start` does):

- ``demo``: the demo, ``python -m gradcheck_fast --repeat 1``;
- ``checks``: the first ``check_gradients`` of the seed, small, medium and mnist-size
  networks in turn;

and records every ``numba:compile`` event (one per dispatcher and signature compiled; a
cache hit raises none). It prints, per scenario and phase, the wall time and the compile time,
then the dispatchers by *self* time (their own compile, without the callees compiled while
typing them; IR-inlined helpers are part of their callers' self time) and every function
compiled for more than one signature, with the signatures and the call sites that asked for
them (the calling dispatcher, or the package's Python frame for a top-level call).

Options: ``--scenario demo|checks|both`` (default both), ``--top N`` (default 25),
``--json FILE`` (write the raw events). It is a documented command, not a pytest benchmark:
each run compiles the package from scratch (tens of seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

_PACKAGE = "gradcheck_fast"


# ---------------------------------------------------------------------------------------------
# Child: record the events
# ---------------------------------------------------------------------------------------------
def _call_site() -> str:
    """The innermost frames of the package (outside the jit/thread wrappers) that led here."""
    import traceback

    frames = [f for f in traceback.extract_stack()
              if f"{os.sep}{_PACKAGE}{os.sep}" in f.filename
              and not f.filename.endswith(("_jit.py", "_threads.py"))]
    return " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"
                       for f in reversed(frames[-2:])) or "(outside the package)"


class _Recorder:
    """A numba event listener that keeps (name, signature, start, end, parent, site, phase)."""

    def __init__(self):
        from numba.core import event

        class Listener(event.Listener):
            def on_start(inner, ev):  # noqa: N805
                self._start(ev)

            def on_end(inner, ev):  # noqa: N805
                self._end(ev)

        self.listener = Listener()
        self.stack = []
        self.records = []
        self.phase = "import"

    def _start(self, ev):
        dispatcher = ev.data["dispatcher"]
        py = getattr(dispatcher, "py_func", None)
        name = f"{py.__module__}.{py.__qualname__}" if py is not None else str(dispatcher)
        args = ", ".join(str(a) for a in ev.data["args"])
        parent = self.stack[-1]["name"] if self.stack else None
        site = parent if parent else _call_site()
        self.stack.append({"name": name, "signature": args, "start": time.perf_counter(),
                           "parent": parent, "site": site, "phase": self.phase,
                           "children": 0.0, "depth": len(self.stack)})

    def _end(self, ev):
        record = self.stack.pop()
        record["end"] = time.perf_counter()
        total = record["end"] - record["start"]
        record["total"] = total
        record["self"] = total - record.pop("children")
        if self.stack:
            self.stack[-1]["children"] += total
        self.records.append(record)


_DEMO = """
import sys
from gradcheck_fast.__main__ import main
_recorder.phase = "demo"
sys.stdout = open(__import__("os").devnull, "w")
try:
    main(["--repeat", "1"])
finally:
    sys.stdout = sys.__stdout__
"""

_CHECKS = """
import gradcheck_fast as gc
from gradcheck_fast.networks import example
for name in ("seed", "small", "medium", "mnist"):
    X, Y, parameters, gradients = example(name)
    _recorder.phase = name
    started = time.perf_counter()
    gc.check_gradients(parameters, gradients, X, Y)
    _phases[name] = time.perf_counter() - started
"""


def _child(scenario: str, output: str) -> None:
    from numba.core import event

    recorder = _Recorder()
    event.register("numba:compile", recorder.listener)
    phases = {}
    started = time.perf_counter()
    import gradcheck_fast  # noqa: F401  (import time: its own phase)

    phases["import"] = time.perf_counter() - started
    code = _DEMO if scenario == "demo" else _CHECKS
    started = time.perf_counter()
    exec(code, {"_recorder": recorder, "_phases": phases, "time": time})
    if scenario == "demo":
        phases["demo"] = time.perf_counter() - started
    with open(output, "w") as f:
        json.dump({"phases": phases, "records": recorder.records}, f)


# ---------------------------------------------------------------------------------------------
# Parent: run and summarise
# ---------------------------------------------------------------------------------------------
def _run(scenario: str) -> dict:
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        output = os.path.join(out, "events.json")
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "benchmarks.compile_profile", "--child",
                                 scenario, output], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(result.stderr)
        with open(output) as f:
            data = json.load(f)
    data["wall"] = wall
    return data


def _short(name: str) -> str:
    return name.replace(f"{_PACKAGE}.", "")


def _summary(scenario: str, data: dict, top: int) -> None:
    records = data["records"]
    print(f"\n=== {scenario}: whole process {data['wall']:.1f} s ===")
    by_phase = defaultdict(float)
    count_phase = defaultdict(int)
    for r in records:
        if r["depth"] == 0:
            by_phase[r["phase"]] += r["total"]
        count_phase[r["phase"]] += 1
    print(f"{'phase':<8} {'wall s':>7} {'compile s':>9} {'compiles':>8}")
    for phase, wall in data["phases"].items():
        print(f"{phase:<8} {wall:7.2f} {by_phase[phase]:9.2f} {count_phase[phase]:8d}")

    per_function = defaultdict(lambda: {"self": 0.0, "n": 0, "sigs": []})
    for r in records:
        entry = per_function[r["name"]]
        entry["self"] += r["self"]
        entry["n"] += 1
        entry["sigs"].append(r)
    total_self = sum(e["self"] for e in per_function.values())
    print(f"\nself compile time by function (sum {total_self:.2f} s; "
          f"'n': signatures compiled)")
    print(f"{'self s':>7} {'share':>6} {'n':>3}  function  [phase of first compile]")
    ranked = sorted(per_function.items(), key=lambda kv: -kv[1]["self"])
    for name, entry in ranked[:top]:
        print(f"{entry['self']:7.2f} {entry['self'] / total_self:6.1%} {entry['n']:3d}  "
              f"{_short(name)}  [{entry['sigs'][0]['phase']}]")
    rest = sum(e["self"] for _, e in ranked[top:])
    if rest:
        print(f"{rest:7.2f} {rest / total_self:6.1%}      ({len(ranked) - top} more)")

    duplicates = [(name, e) for name, e in ranked if e["n"] > 1]
    print(f"\nfunctions compiled for more than one signature: {len(duplicates)}")
    for name, entry in duplicates:
        print(f"  {_short(name)}: {entry['n']} signatures, {entry['self']:.2f} s self")
        for r in entry["sigs"]:
            print(f"    {r['self']:6.2f} s  ({r['signature']})")
            print(f"             [{r['phase']}] from {_short(r['site'])}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compile_profile")
    parser.add_argument("--scenario", choices=("demo", "checks", "both"), default="both")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", help="write the raw events of each scenario here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    scenarios = ("demo", "checks") if args.scenario == "both" else (args.scenario,)
    raw = {}
    for scenario in scenarios:
        raw[scenario] = _run(scenario)
        _summary(scenario, raw[scenario], args.top)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f)


if __name__ == "__main__":
    main()
