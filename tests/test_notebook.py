"""The example notebook (examples/gradient_checking.ipynb): committed without outputs, and
executed headlessly here (nbclient) so that it cannot rot; it states the seed's numbers."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "gradient_checking.ipynb"

#: What a run may take in CI (issue 13); it takes ~15 s with a warm numba cache.
BUDGET_S = 60.0


def test_the_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    assert len(code) >= 10
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, cell["source"]
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def _outputs(cell) -> tuple[str, set[str]]:
    """A code cell's text (streams, results) and the MIME types of its rich outputs."""
    text, kinds = [], set()
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            text.append(output["text"])
        elif output["output_type"] in ("execute_result", "display_data"):
            kinds |= set(output["data"])
            text.append(output["data"].get("text/plain", ""))
    return "".join(text), kinds


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    import nbclient  # the test extra brings nbclient, nbformat, ipykernel, matplotlib
    import nbformat
    from traitlets.config import Config

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # The kernel is this interpreter (ipykernel's own spec), started in the repository root
    # with it on PYTHONPATH so that it imports this copy of the package. It talks over local
    # sockets in a temporary directory (IPC) rather than TCP on localhost: no open port, and no
    # "running over TCP without encryption" warning from the kernel.
    sockets = tmp_path_factory.mktemp("kernel") / "kernel"
    config = Config({"KernelManager": {"transport": "ipc", "ip": str(sockets)}})
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    client = nbclient.NotebookClient(nb, config=config, timeout=int(BUDGET_S),
                                     kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    started = time.perf_counter()
    client.execute(env=env)
    return nb, time.perf_counter() - started


def test_the_notebook_runs_and_shows_the_seeds_numbers(executed):
    nb, seconds = executed
    cells = [_outputs(cell) for cell in nb.cells if cell.cell_type == "code"]
    text = "\n".join(t for t, _ in cells)
    assert "The gradient is correct!" in text
    # The seed's messages with the published numbers (0.2850931568, then 1.19e-7).
    faulty = re.search(r"There is a mistake in the backward propagation! difference = (\S+?)\x1b",
                       text)
    fixed = re.search(r"Your backward propagation works perfectly fine! difference = (\S+?)\x1b",
                      text)
    assert abs(float(faulty.group(1)) - 0.2850931568) <= 1e-9
    assert 1.185e-7 <= float(fixed.group(1)) <= 1.195e-7
    assert "gradient check FAILED: 2 of 6 blocks disagree with the numerical gradient " \
           "(dW2, db1)" in text
    assert "step sweep (exact engine): FINE" in text
    # One element of 235,146 wrong by 2e-5 of its value: the seed's criterion passes, the
    # elementwise one names the element.
    assert "checked 235,146 parameters" in text and "dW1[100, 501]" in text
    assert re.search(r"seed criterion: difference = 4\.8\d*e-08 <= threshold 2e-07 \(passed\)",
                     text)
    assert "checked 1,579,530 parameters along 48 directions" in text
    assert "directional gradient check FAILED: 1 of 6 blocks" in text
    pictures = sum("image/png" in kinds for _, kinds in cells)
    assert pictures == 6  # plot, scatter, two sweeps, the large network, the directional one
    print(f"\nthe notebook ran in {seconds:.1f} s")
    assert seconds <= BUDGET_S
