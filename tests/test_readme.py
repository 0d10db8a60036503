"""The README's Python examples run, in order, as written (the front door must stay true)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 3
    # ```py blocks need what a test cannot have (a cluster's scheduler): compiled only.
    for block in re.findall(r"```py\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        compile(block, "README.md", "exec")
    namespace: dict = {}
    for block in blocks:
        if "my_backward" in block:  # a template for the reader's own test suite
            compile(block, "README.md", "exec")
            continue
        exec(compile(block, "README.md", "exec"), namespace)
    report = namespace["report"]
    in_place = namespace["in_place"]
    assert in_place.passed and list(in_place.blocks) == ["dW1", "db1", "dW2", "db2"]
    layer = namespace["layer"]
    assert layer.passed and list(layer.blocks) == ["dx", "dw", "db"]
    assert namespace["conv"].passed and namespace["conv"].blocks["dw"].shape == (4, 3, 3, 3)
    rows = namespace["rows"]
    assert rows.failed_blocks == ["dW1"] and rows.blocks["dW1"].shape == (5, 4)
    assert rows.blocks["dW1"].diagnosis.startswith("dW1 has half the L2 term")
    assert namespace["budgeted"].mode == "full" and namespace["budgeted"].passed
    assert namespace["difference"] > 0.28
    assert report.mode == "directional" and not report.passed
    out = capsys.readouterr().out
    assert "There is a mistake in the backward propagation!" in out
    assert "expected cost" in out and "step sweep" in out
