"""What a notebook and a terminal show: short reprs that state the verdict, self-contained HTML,
colours only where they render, and a progress bar that suits its stream."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import types
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import gradcheck_fast
from gradcheck_fast import reference
from gradcheck_fast.networks import random_mlp

ROOT = Path(__file__).resolve().parents[1]

#: The colours the HTML gives a wrong and an ok verdict (gradcheck_fast.report.html).
RED, GREEN = "#cf222e", "#1a7f37"

#: Elements that have no end tag in HTML.
VOID = {"br", "hr", "img", "meta", "input", "wbr", "col", "area", "base", "link", "source"}


# -- a small DOM from the standard library's parser -------------------------------------------
class Node:
    def __init__(self, tag: str, attrs: dict, parent: Node | None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def find_all(self, tag: str) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if child.tag == tag:
                    found.append(child)
                found += child.find_all(tag)
        return found


class _TreeBuilder(HTMLParser):
    """Builds a tree and insists that every element is closed, in order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.node = Node("#root", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.node)
        self.node.children.append(node)
        if tag not in VOID:
            self.node = node

    def handle_endtag(self, tag):
        assert tag == self.node.tag, f"</{tag}> closes <{self.node.tag}>"
        self.node = self.node.parent

    def handle_data(self, data):
        self.node.children.append(data)


def parse(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    assert builder.node is builder.root, f"<{builder.node.tag}> is never closed"
    return builder.root


def table_rows(root: Node, first_header: str) -> tuple[list[str], list[list[Node]]]:
    """The header texts and the body rows (lists of cells) of the table whose first header
    cell says ``first_header``."""
    for table in root.find_all("table"):
        header = [th.text.strip() for th in table.find_all("th")]
        if header and header[0] == first_header:
            body = table.find_all("tbody")[0]
            return header, [row.find_all("td") for row in body.find_all("tr")]
    raise AssertionError(f"no table starting with {first_header!r}")


def assert_self_contained(html: str) -> None:
    lowered = html.lower()
    for forbidden in ("<script", "javascript:", "<link", "<style", "<iframe", " src=", "@import",
                      "http://", "https://"):
        assert forbidden not in lowered, forbidden
    assert re.search(r"<[^>]*\son\w+\s*=", lowered) is None  # no event handlers


# -- the cases --------------------------------------------------------------------------------
@pytest.fixture
def faulty_report(seed_faulty):
    X, Y, parameters, gradients = seed_faulty
    return gradcheck_fast.check_gradients(parameters, gradients, X, Y)


def _custom_report():
    """A custom cost whose parameter names carry markup; 'b&<i>' has an extra factor 2."""
    def cost(params):
        return 0.5 * np.sum(params["w<x>"] ** 2) + np.sum(params["b&<i>"])

    params = {"w<x>": np.arange(6.0).reshape(2, 3), "b&<i>": np.ones(2)}
    grads = {"w<x>": params["w<x>"].copy(), "b&<i>": np.full(2, 2.0)}
    return gradcheck_fast.check(cost, params, grads)


# -- reprs ------------------------------------------------------------------------------------
def test_repr_of_the_seed_faulty_report_states_the_verdict(faulty_report):
    # The published difference 0.2850931568, to three digits.
    assert repr(faulty_report) == (
        "<GradientCheckReport FAILED: 2 of 6 blocks wrong (dW2, db1); difference 0.285>")
    # str stays the text table.
    assert str(faulty_report).startswith("gradient check FAILED: 2 of 6 blocks disagree")


def _assert_short(text: str, starts: str) -> None:
    assert "\n" not in text and len(text) < 200, text
    assert text.startswith(starts) and text.endswith(">"), text


def test_reprs_are_one_short_line_with_the_verdict(seed_faulty, seed_correct, faulty_report):
    X, Y, parameters, gradients = seed_correct
    correct = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    _assert_short(repr(correct), "<GradientCheckReport PASSED: all 6 blocks ok; difference ")
    for name, block in faulty_report.blocks.items():
        _assert_short(repr(block), f"<BlockResult {name} ")
        assert f" {block.verdict}: {block.n_failing} of {block.size} elements failing" in repr(
            block)
    assert repr(faulty_report.blocks["dW2"]).endswith(
        "; " + faulty_report.blocks["dW2"].diagnosis + ">")
    for element in faulty_report.worst:
        _assert_short(repr(element), f"<Element {element.label}: analytic ")
        assert f"relative error {element.relative_error:.3g}>" in repr(element)
    # The dataclass dump is gone from the tuples a notebook shows.
    assert "BlockResult(" not in repr(faulty_report.blocks)
    assert "Element(" not in repr(faulty_report.blocks["db1"].worst)

    X, Y, parameters, gradients = seed_faulty
    sampled = gradcheck_fast.check_gradients(parameters, gradients, X, Y, mode="sampled",
                                             n_per_block=3)
    _assert_short(repr(sampled), "<GradientCheckReport FAILED: 2 of 6 blocks wrong (dW2, db1)")
    assert repr(sampled).endswith(f"; sampled, {sampled.n_checked} of 47 parameters>")
    directional = gradcheck_fast.check_gradients(parameters, gradients, X, Y,
                                                 mode="directional")
    _assert_short(repr(directional), "<GradientCheckReport FAILED: 2 of 6 blocks wrong")
    assert repr(directional).endswith("; directional>")
    assert "of 8 probes failing" in repr(directional.blocks["dW2"])

    sweep = gradcheck_fast.step_sweep(parameters, gradients, X, Y)
    _assert_short(repr(sweep), "<SweepReport WRONG: difference 0.285 at epsilon ")
    estimate = gradcheck_fast.estimate_cost(parameters, gradients, X, Y)
    _assert_short(repr(estimate), "<CostEstimate for 47 parameters (exact engine): full ~")
    assert "sampled ~" in repr(estimate) and "directional ~" in repr(estimate)


def test_reprs_stay_short_with_many_long_names():
    names = [f"a_very_long_parameter_name_number_{k}" for k in range(12)]
    params = {name: np.full(3, float(k)) for k, name in enumerate(names)}
    grads = {name: 2 * value + 1 for name, value in params.items()}  # every block wrong

    def cost(params):
        return sum(0.5 * np.sum(v ** 2) for v in params.values())

    report = gradcheck_fast.check(cost, params, grads)
    assert len(report.failed_blocks) == 12
    _assert_short(repr(report), "<GradientCheckReport FAILED: 12 of 12 blocks wrong (d")
    assert "...)" in repr(report)  # the list of names was cut, the verdict was not
    for block in report.blocks.values():
        _assert_short(repr(block), "<BlockResult ")


def test_repr_of_an_inconclusive_report():
    theta = np.array([1.0, 2.0, 3.0])
    # J is NaN one step to the right of theta[0]: that coordinate cannot be verified.
    report = gradcheck_fast.check(
        lambda t: 0.5 * np.sum(t ** 2) + (np.nan if t[0] > 1.0 else 0.0), theta, theta.copy())
    assert repr(report) == (
        "<GradientCheckReport INCONCLUSIVE: 1 of 1 blocks unverified (dtheta); difference nan>")
    root = parse(report._repr_html_())
    _, rows = table_rows(root, "block")
    assert [[c.text for c in row][-1] for row in rows] == ["unverified"]
    assert "INCONCLUSIVE" in root.text and "NaN/Inf" in root.text


# -- HTML -------------------------------------------------------------------------------------
def test_html_of_the_seed_faulty_case_names_the_wrong_blocks_and_their_diagnoses(
        faulty_report):
    html = faulty_report._repr_html_()
    assert_self_contained(html)
    root = parse(html)
    assert "FAILED" in root.text
    header, rows = table_rows(root, "block")
    assert header[-1] == "verdict"
    assert [row[0].text for row in rows] == list(faulty_report.blocks)
    for row in rows:
        name, verdict = row[0].text, row[-1]
        assert verdict.text == ("wrong" if name in {"dW2", "db1"} else "ok"), name
        colour = RED if name in {"dW2", "db1"} else GREEN
        assert f"color: {colour}" in verdict.find_all("strong")[0].attrs["style"], name
        # the numbers are the report's (the text table's format)
        block = faulty_report.blocks[name]
        assert row[1].text == "x".join(map(str, block.shape))
        assert row[2].text == f"{block.difference:.3e}"
        assert row[5].text == str(block.n_failing)
    # The wrong blocks in backprop order, each with its diagnosis.
    wrong = [span for span in root.find_all("span")
             if span.attrs.get("class") == "wrong-block"]
    assert [span.find_all("code")[0].text for span in wrong] == ["dW2", "db1"]
    for span, name in zip(wrong, ["dW2", "db1"]):
        diagnosis = faulty_report.blocks[name].diagnosis
        assert diagnosis and diagnosis.startswith(f"{name} ≈ ")
        assert diagnosis in span.text
    assert "dW2 ≈ 2.00 × numerical" in root.text and "db1 ≈ 4.00 × numerical" in root.text
    # The worst elements, the worst first.
    header, rows = table_rows(root, "element")
    assert header == ["element", "analytic", "numerical", "relative error"]
    assert [row[0].text for row in rows] == [e.label for e in faulty_report.worst]
    assert rows[0][0].text == "db1[0, 0]" and rows[0][3].text == "0.75"


def test_html_of_a_passed_check(seed_correct):
    X, Y, parameters, gradients = seed_correct
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y)
    html = report._repr_html_()
    assert_self_contained(html)
    root = parse(html)
    assert "PASSED" in root.text and "FAILED" not in root.text
    assert "Wrong blocks" not in root.text
    _, rows = table_rows(root, "block")
    assert [row[-1].text for row in rows] == ["ok"] * 6
    # The worst elements of a passed check are only rounding: folded.
    details = [d for d in root.find_all("details") if "Worst elements" in d.text]
    assert len(details) == 1 and "open" not in details[0].attrs


def test_block_names_with_markup_are_escaped():
    report = _custom_report()
    assert report.failed_blocks == ["db&<i>"]
    html = report._repr_html_()
    assert "<x>" not in html and "<i>" not in html
    assert "dw&lt;x&gt;" in html and "db&amp;&lt;i&gt;" in html
    assert_self_contained(html)
    root = parse(html)
    _, rows = table_rows(root, "block")
    assert [(row[0].text, row[-1].text) for row in rows] == [("dw<x>", "ok"), ("db&<i>", "wrong")]
    # The diagnosis quotes the name: escaped too, and shown as written.
    assert report.blocks["db&<i>"].diagnosis.startswith("db&<i> ≈ 2.00 × numerical")
    assert "db&<i> ≈ 2.00 × numerical" in root.text
    assert "python engine" in root.text  # the criteria line
    assert "@numba.njit" in root.text  # the report's own note


def test_sampled_and_directional_reports_render(seed_faulty):
    X, Y, parameters, gradients = seed_faulty
    sampled = gradcheck_fast.check_gradients(parameters, gradients, X, Y, mode="sampled",
                                             n_per_block=3)
    html = sampled._repr_html_()
    assert_self_contained(html)
    root = parse(html)
    header, rows = table_rows(root, "block")
    assert header[2] == "checked"
    assert [int(row[2].text) for row in rows] == [b.n_checked for b in sampled.blocks.values()]
    assert [row[-1].text for row in rows] == [b.verdict for b in sampled.blocks.values()]
    assert "sampled gradient check" in root.text

    directional = gradcheck_fast.check_gradients(parameters, gradients, X, Y,
                                                 mode="directional")
    html = directional._repr_html_()
    assert_self_contained(html)
    root = parse(html)
    header, rows = table_rows(root, "block")
    assert header == ["block", "shape", "difference", "probes", "failing", "kinks",
                      "detects (p=0.999)", "verdict"]
    for row, (name, block) in zip(rows, directional.blocks.items(), strict=True):
        assert row[0].text == name and row[-1].text == block.verdict
        assert int(row[3].text) == block.n_probes
        assert row[6].text == f"≥ {block.detectable_error:.1e}"
    assert "8 of 8 probes wrong" in root.text
    assert "'detects' is the smallest relative error" in root.text


def test_step_sweep_html_has_a_row_per_step(seed_faulty, seed_correct):
    X, Y, parameters, gradients = seed_faulty
    sweep = gradcheck_fast.step_sweep(parameters, gradients, X, Y)
    html = sweep._repr_html_()
    assert_self_contained(html)
    root = parse(html)
    assert "WRONG" in root.text and sweep.explanation in root.text
    header, rows = table_rows(root, "epsilon")
    assert header[:4] == ["epsilon", "difference", "max rel err", "slope"]
    assert [row[0].text for row in rows] == [f"{r.epsilon:.0e}" for r in sweep.rows]
    assert [row[1].text for row in rows] == [f"{r.difference:.3e}" for r in sweep.rows]
    assert [row[4].text for row in rows].count("← best") == 1
    best = [row[0].text for row in rows if row[4].text == "← best"]
    assert best == [f"{sweep.best_epsilon:.0e}"]
    # Every difference is above the threshold: red.
    assert all(RED in row[1].find_all("span")[0].attrs["style"] for row in rows)

    X, Y, parameters, gradients = seed_correct
    fine = gradcheck_fast.step_sweep(parameters, gradients, X, Y)._repr_html_()
    _, rows = table_rows(parse(fine), "epsilon")
    colours = [GREEN in row[1].find_all("span")[0].attrs["style"] for row in rows]
    assert any(colours) and not all(colours)  # the V: fine in the middle only


def test_estimate_html_has_a_row_per_mode(seed_faulty):
    X, Y, parameters, gradients = seed_faulty
    estimate = gradcheck_fast.estimate_cost(parameters, gradients, X, Y)
    html = estimate._repr_html_()
    assert_self_contained(html)
    root = parse(html)
    assert "expected cost for 47 parameters (exact engine)" in root.text
    header, rows = table_rows(root, "mode")
    assert header == ["mode", "evaluations", "coordinates", "expected time", "set-up"]
    assert [row[0].text for row in rows] == ["full", "sampled", "directional"]
    for row, mode in zip(rows, ["full", "sampled", "directional"]):
        assert row[1].text == f"{estimate[mode].evaluations:,}"
        assert row[3].text == f"~{estimate[mode].seconds:.3g} s"


# -- colours ----------------------------------------------------------------------------------
def test_seed_messages_have_no_escape_codes_in_a_pipe():
    code = ("import gradcheck_fast\n"
            "from gradcheck_fast import reference as r\n"
            "X, Y, p = r.seed_case()\n"
            "cost, cache = r.forward_propagation_n(X, Y, p)\n"
            "for backward in (r.backward_propagation_n_faulty, r.backward_propagation_n):\n"
            "    g = backward(X, Y, cache)\n"
            "    gradcheck_fast.gradient_check_n(p, g, X, Y)\n"
            "    r.gradient_check_n(p, g, X, Y)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NO_COLOR", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    lines = done.stdout.splitlines()
    assert sum(line.startswith("There is a mistake in the backward propagation! difference = ")
               for line in lines) == 2
    assert sum(line.startswith("Your backward propagation works perfectly fine! difference = ")
               for line in lines) == 2


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_seed_messages_are_coloured_on_a_terminal_unless_no_color(seed_faulty, monkeypatch):
    X, Y, parameters, gradients = seed_faulty
    monkeypatch.delenv("NO_COLOR", raising=False)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    difference = gradcheck_fast.gradient_check_n(parameters, gradients, X, Y)
    assert terminal.getvalue().startswith(reference.MISTAKE_MESSAGE.format(difference) + "\n")
    assert terminal.getvalue().startswith("\x1b[93m")

    monkeypatch.setenv("NO_COLOR", "1")
    plain = _Terminal()
    monkeypatch.setattr(sys, "stdout", plain)
    gradcheck_fast.gradient_check_n(parameters, gradients, X, Y)
    assert "\x1b" not in plain.getvalue()
    assert plain.getvalue().startswith("There is a mistake in the backward propagation!")


# -- the progress bar -------------------------------------------------------------------------
def test_progress_in_a_pipe_is_whole_lines_without_escape_codes(capsys):
    X, Y, parameters, gradients = random_mlp((30, 20, 1), m=16)
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert lines and all(line.startswith("gradient check: ") for line in lines), lines
    assert f" {report.n_params}/{report.n_params} " in lines[-1]


def test_progress_on_a_terminal_redraws_one_line(monkeypatch):
    X, Y, parameters, gradients = random_mlp((30, 20, 1), m=16)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, progress=True)
    out = terminal.getvalue()
    assert out.startswith("\r") and out.count("\n") == 1  # redrawn in place, one line left
    assert f"{report.n_params}/{report.n_params}" in out.rsplit("\r", 1)[-1]


@pytest.fixture
def notebook(monkeypatch):
    """A Jupyter kernel without ipywidgets, as tqdm and the package detect one: the outputs
    the bar displays are recorded as a notebook would hold them (updates replace)."""
    outputs: list[dict] = []

    class Handle:
        def __init__(self, index):
            self.index = index

        def update(self, bundle, raw=False):
            assert raw
            outputs[self.index] = dict(bundle)

    def display(bundle, raw=False, display_id=None):
        assert raw and display_id is True
        outputs.append(dict(bundle))
        return Handle(len(outputs) - 1)

    class ZMQInteractiveShell:
        config: dict = {"IPKernelApp": {}}

    shell = ZMQInteractiveShell()
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell
    ipython_display = types.ModuleType("IPython.display")
    ipython_display.display = display
    ipython.display = ipython_display
    for name, module in [("IPython", ipython), ("IPython.display", ipython_display),
                         ("ipykernel", types.ModuleType("ipykernel")),
                         ("ipykernel.zmqshell", types.ModuleType("ipykernel.zmqshell"))]:
        monkeypatch.setitem(sys.modules, name, module)
    for name in ("tqdm.auto", "tqdm.autonotebook", "tqdm.notebook"):  # re-detect, as anew
        monkeypatch.delitem(sys.modules, name, raising=False)
    for name in list(os.environ):
        if name == "QT_API" or name.startswith("SPYDER"):
            monkeypatch.delenv(name)
    return outputs


def test_progress_in_a_notebook_updates_one_output_without_warnings(notebook, capsys):
    X, Y, parameters, gradients = random_mlp((30, 20, 1), m=16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, progress=True)
    assert [str(w.message) for w in caught] == []
    # One output, holding the final state (what a saved notebook shows), not 0/N.
    assert len(notebook) == 1
    assert f" {report.n_params}/{report.n_params} " in notebook[0]["text/plain"]
    assert notebook[0]["text/plain"].startswith("gradient check: 100%")
    assert "\r" not in notebook[0]["text/plain"]
    assert capsys.readouterr().err == ""


def test_in_a_real_kernel_the_bar_ends_at_n_of_n_and_the_report_is_html():
    # Needs a Jupyter kernel and a client to run it (not core or test dependencies of the
    # package: the notebook's tests bring them); the fake kernel above covers the logic.
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    cells = [
        "import gradcheck_fast\n"
        "from gradcheck_fast import reference as r\n"
        "from gradcheck_fast.networks import random_mlp\n"
        "X, Y, p = r.seed_case()\n"
        "g = r.backward_propagation_n_faulty(X, Y, r.forward_propagation_n(X, Y, p)[1])\n"
        "difference = gradcheck_fast.gradient_check_n(p, g, X, Y)",
        "X2, Y2, p2, g2 = random_mlp((30, 20, 1), m=16)\n"
        "gradcheck_fast.check_gradients(p2, g2, X2, Y2, progress=True).n_params",
        "gradcheck_fast.check_gradients(p, g, X, Y)",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    messages, bar, report = (cell.outputs for cell in notebook.cells)
    # The seed's message keeps its colour: notebooks render it.
    assert messages[0].name == "stdout" and messages[0].text.startswith("\x1b[93mThere is")
    # One output for the bar, holding its last state; nothing on stderr (no TqdmWarning).
    n_params = int(bar[-1].data["text/plain"])
    displays = [out for out in bar if out.output_type == "display_data"]
    assert len(displays) == 1 and [o for o in bar if o.output_type == "stream"] == []
    assert f" {n_params}/{n_params} " in displays[0].data["text/plain"]
    # The report: the short repr and the HTML.
    data = report[0].data
    assert data["text/plain"].startswith("<GradientCheckReport FAILED: 2 of 6 blocks wrong")
    _, rows = table_rows(parse(data["text/html"]), "block")
    assert [row[-1].text for row in rows] == ["ok", "wrong", "wrong", "ok", "ok", "ok"]
