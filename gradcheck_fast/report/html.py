"""HTML of a gradient-check report, a step sweep and a cost estimate (``_repr_html_``): what a
notebook shows.

Self-contained: inline styles only, no ``<style>`` block, no JavaScript, nothing fetched, so
that JupyterLab, VS Code and GitHub's notebook viewer show it alike. Colours are
semi-transparent backgrounds and mid-tone text, readable on light and dark themes, and never
the only cue: every verdict is also written out, in bold (``<strong>``), so a viewer that strips
style attributes (GitHub's sanitiser has) still shows the table and the verdicts. Every text
that can come from the user (block names, diagnoses that quote them, notes) is escaped.

Reads the objects' attributes only, and takes the words of the text report from
:mod:`.formatting` (one home for each sentence); it imports nothing else of the package, so
the result types can use it without a cycle.
"""

from __future__ import annotations

import math
from html import escape

from .formatting import (
    DETECTS_NOTE,
    _criteria,
    _headline,
    _set_aside_notes,
    wrong_block_lines,
)

#: Text colour and background of each verdict (GitHub's palette, mid-tones for both themes).
_COLOURS = {
    "ok": ("#1a7f37", "rgba(46, 160, 67, 0.15)"),
    "fine": ("#1a7f37", "rgba(46, 160, 67, 0.15)"),
    "passed": ("#1a7f37", "rgba(46, 160, 67, 0.15)"),
    "wrong": ("#cf222e", "rgba(248, 81, 73, 0.15)"),
    "failed": ("#cf222e", "rgba(248, 81, 73, 0.15)"),
    "unverified": ("#9a6700", "rgba(212, 167, 44, 0.2)"),
    "inconclusive": ("#9a6700", "rgba(212, 167, 44, 0.2)"),
}
_NEUTRAL = ("inherit", "rgba(128, 128, 128, 0.12)")

_BOX = ("font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; font-size: 13px; "
        "line-height: 1.45; max-width: 100%; overflow-x: auto")
_TABLE = "border-collapse: collapse; margin: 6px 0; font-size: 12px"
_CELL = "padding: 2px 10px; border-bottom: 1px solid rgba(128, 128, 128, 0.3)"
_MONO = "font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace"


def _badge(verdict: str) -> str:
    """The verdict as a coloured word."""
    colour, background = _COLOURS.get(verdict.lower(), _NEUTRAL)
    return (f'<strong style="color: {colour}; background: {background}; '
            f'padding: 0 5px; border-radius: 3px">{escape(verdict)}</strong>')


def _verdict_bar(verdict: str, text: str) -> str:
    """A bar with the verdict's colour at the left, the verdict and a sentence."""
    colour, background = _COLOURS.get(verdict.lower(), _NEUTRAL)
    return (f'<div style="border-left: 4px solid {colour}; background: {background}; '
            f'padding: 4px 8px; margin-bottom: 4px">{_badge(verdict)} {escape(text)}</div>')


def _table(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    """A table; ``header`` plain text (escaped here), ``rows`` HTML cells (escaped by the
    caller), ``align`` 'l' or 'r' per column."""
    def cells(tag: str, values: list[str]) -> str:
        return "".join(f'<{tag} style="{_CELL}; text-align: '
                       f'{"left" if a == "l" else "right"}">{value}</{tag}>'
                       for value, a in zip(values, align))

    head = f"<thead><tr>{cells('th', [escape(h) for h in header])}</tr></thead>"
    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f'<table style="{_TABLE}">{head}<tbody>{body}</tbody></table>'


def _code(text: str) -> str:
    return f'<code style="{_MONO}">{escape(text)}</code>'


def _list(items: list[str]) -> str:
    """A bullet list of HTML items (escaped by the caller)."""
    if not items:
        return ""
    return ('<ul style="margin: 2px 0 4px 0; padding-left: 20px">'
            + "".join(f"<li>{item}</li>" for item in items) + "</ul>")


def _section(title: str, body: str, open_: bool = True) -> str:
    """A titled part that the reader can fold (``<details>``: no script needed)."""
    return (f'<details{" open" if open_ else ""} style="margin: 4px 0"><summary style="'
            f'cursor: pointer; font-weight: 600">{escape(title)}</summary>{body}</details>')


def _number(value: float, spec: str = ".3e") -> str:
    return escape(format(value, spec)) if value is not None else ""


def _shape(shape) -> str:
    return "x".join(map(str, shape)) or "scalar"


# -- the report -------------------------------------------------------------------------------
def report_html(report) -> str:
    """The HTML of a :class:`.types.GradientCheckReport`: its verdict, the two criteria, the
    wrong blocks with their diagnoses, a row per block, the notes and the worst elements."""
    directional = report.mode == "directional"
    unit = "probes" if directional else "elements"
    parts = [_report_headline(report), _list([escape(line.strip()) for line in _criteria(report)])]
    parts.append(_wrong_blocks(report, unit))
    parts.append(_directional_table(report) if directional else _block_table(report))
    notes = [*report.notes, *_set_aside_notes(report, unit)]
    if directional:
        notes.append(DETECTS_NOTE)
    if notes:
        parts.append(_section("Notes", _list([escape(note) for note in notes])))
    parts.append(_worst_elements(report))
    return f'<div class="gradcheck-fast-report" style="{_BOX}">{"".join(parts)}</div>'


def _report_headline(report) -> str:
    """The text report's first line, its verdict word made a coloured badge."""
    verdict = ("PASSED" if report.passed else "FAILED" if report.failed_blocks
               else "INCONCLUSIVE")
    return _verdict_bar(verdict, _headline(report).replace(f" {verdict}:", ":", 1))


def _wrong_blocks(report, unit: str) -> str:
    """The wrong blocks in backprop order (the first is where the backward pass first goes
    wrong), each with how many of its elements fail and the diagnosis."""
    colour, _ = _COLOURS["wrong"]
    items = [f'<span class="wrong-block">{_code(name)} <span style="color: {colour}; '
             f'font-weight: 600">{escape(count)}</span>: '
             f'<span class="diagnosis">{escape(text)}</span></span>'
             for name, count, text in wrong_block_lines(report, unit)]
    if not items:
        return ""
    return _section("Wrong blocks, in backprop order", _list(items))


def _block_table(report) -> str:
    """A row per block of a full or sampled check."""
    sampled = report.mode == "sampled"
    header = ["block", "shape", *(["checked"] if sampled else []), "difference",
              "max abs err", "max rel err", "failing", "kinks", "verdict"]
    rows = []
    for name, b in report.blocks.items():
        rows.append([_code(name), escape(_shape(b.shape)),
                     *([str(b.n_checked)] if sampled else []), _number(b.difference),
                     _number(b.max_abs_error), _number(b.max_rel_error), str(b.n_failing),
                     str(b.n_kinks), _badge(b.verdict)])
    align = ["l", "l", *(["r"] if sampled else []), "r", "r", "r", "r", "r", "l"]
    return _table(header, rows, align)


def _directional_table(report) -> str:
    """A row per block of a directional check, with the error its probes detect."""
    header = ["block", "shape", "difference", "probes", "failing", "kinks",
              f"detects (p={report.probability:g})", "verdict"]
    rows = []
    for name, b in report.blocks.items():
        detectable = b.detectable_error
        detects = (f"&ge; {_number(detectable, '.1e')}"
                   if detectable is not None and math.isfinite(detectable) else "-")
        rows.append([_code(name), escape(_shape(b.shape)), _number(b.difference),
                     str(b.n_probes), str(b.n_failing), str(b.n_kinks), detects,
                     _badge(b.verdict)])
    return _table(header, rows, ["l", "l", "r", "r", "r", "r", "r", "l"])


def _worst_elements(report) -> str:
    """The worst elements (folded when the check passed: they are then only the largest
    rounding errors)."""
    worst = [e for e in report.worst if not report.passed or e.relative_error > 0]
    if not worst:
        return ""
    rows = [[_code(e.label), _number(e.analytic, ".6g"), _number(e.numerical, ".6g"),
             _number(e.relative_error, ".3g")] for e in worst]
    table = _table(["element", "analytic", "numerical", "relative error"], rows,
                   ["l", "r", "r", "r"])
    return _section("Worst elements", table, open_=not report.passed)


# -- the step sweep ---------------------------------------------------------------------------
def sweep_html(sweep) -> str:
    """The HTML of a :class:`gradcheck_fast.sweep.SweepReport`: the verdict and its reason, a
    row per step (differences below the threshold green, above it red), the best step marked."""
    rows = []
    for row in sweep.rows:
        below = math.isfinite(row.difference) and row.difference <= sweep.threshold
        difference = _badge_number(row.difference, "ok" if below else "wrong")
        slope = "" if row.slope is None else escape(f"{row.slope:+.1f}")
        best = "&larr; best" if row.epsilon == sweep.best_epsilon else ""
        rows.append([_number(row.epsilon, ".0e"), difference, _number(row.max_rel_error),
                     slope, best])
    table = _table(["epsilon", "difference", "max rel err", "slope", ""], rows,
                   ["r", "r", "r", "r", "l"])
    caption = (f"<div>difference green at or below the threshold {escape(f'{sweep.threshold:g}')}"
               f", red above it; slope: d log(difference) / d log(epsilon)</div>")
    headline = _verdict_bar(sweep.verdict.upper(),
                         f"step sweep ({sweep.engine} engine): {sweep.explanation}")
    return f'<div class="gradcheck-fast-sweep" style="{_BOX}">{headline}{table}{caption}</div>'


def _badge_number(value: float, verdict: str) -> str:
    colour, _ = _COLOURS[verdict]
    return f'<span style="color: {colour}">{_number(value)}</span>'


# -- the cost estimate ------------------------------------------------------------------------
def estimate_html(estimate) -> str:
    """The HTML of a :class:`gradcheck_fast.planning.CostEstimate`: a row per mode."""
    rows = [[escape(m.mode), f"{m.evaluations:,}", f"{m.coordinates:,}",
             escape(f"~{m.seconds:.3g} s"), escape(f"{m.setup:.3g} s")]
            for m in (estimate.full, estimate.sampled, estimate.directional)]
    table = _table(["mode", "evaluations", "coordinates", "expected time", "set-up"], rows,
                   ["l", "r", "r", "r", "r"])
    title = (f"<div style=\"font-weight: 600\">expected cost for {estimate.n_params:,} "
             f"parameters ({escape(estimate.engine)} engine)</div>")
    return f'<div class="gradcheck-fast-estimate" style="{_BOX}">{title}{table}</div>'
