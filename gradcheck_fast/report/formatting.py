"""Text formatting of a gradient-check report: the verdict line, the criteria, the per-block
table, the notes and the worst elements (``str(report)``).

Reads the report's attributes only: it imports nothing of the package, so the result types
can use it without a cycle.
"""

from __future__ import annotations

import math

#: The verdict line's name of each mode.
_WHAT = {"full": "gradient check", "sampled": "sampled gradient check",
         "directional": "directional gradient check"}


#: What the directional table's 'detects' column means.
DETECTS_NOTE = ("'detects' is the smallest relative error ||E|| / ||G|| of the block the probes "
                "catch with that probability (rank-one errors, the hardest case for rank-one "
                "probes, for weight blocks)")


def format_report(report) -> str:
    """The text of ``str(report)`` (``report``: a :class:`.types.GradientCheckReport`): the
    verdict, the two criteria, the wrong blocks with their diagnoses, a row per block, notes
    on what was set aside, and the worst elements."""
    unit = "probes" if report.mode == "directional" else "elements"
    lines = [_headline(report), *_criteria(report)]
    lines += [f"  note: {note}" for note in report.notes]
    lines += _wrong_blocks(report, unit)
    lines += _directional_table(report) if report.mode == "directional" else _table(report)
    lines += ["note: " + note for note in _set_aside_notes(report, unit)]
    worst = [e for e in report.worst if not report.passed or e.relative_error > 0]
    if worst:
        lines.append("worst elements:")
        lines += [f"  {e}" for e in worst]
    return "\n".join(lines)


def _headline(report) -> str:
    """PASSED, FAILED (naming the wrong blocks in backprop order) or INCONCLUSIVE."""
    blocks = report.blocks
    wrong = report.failed_blocks
    what = _WHAT[report.mode]
    if report.passed:
        agree = "the block agrees" if len(blocks) == 1 else f"all {len(blocks)} blocks agree"
        return f"{what} PASSED: {agree} with the numerical gradient"
    if wrong:
        return (f"{what} FAILED: {len(wrong)} of {len(blocks)} blocks disagree with the "
                f"numerical gradient ({', '.join(wrong)})")
    n_unverified = sum(b.verdict == "unverified" for b in blocks.values())
    return (f"{what} INCONCLUSIVE: {n_unverified} of {len(blocks)} blocks could not be "
            f"verified everywhere")


def _criteria(report) -> list[str]:
    """The seed's criterion and the elementwise one, with the settings and what was checked."""
    seed = "<=" if report.seed_passed else ">"
    over = {"full": f"{report.n_params} parameters",
            "sampled": f"{report.n_checked} of {report.n_params} parameters",
            "directional": f"{sum(b.n_probes for b in report.blocks.values())} directions over "
                           f"{report.n_params} parameters"}[report.mode]
    method = "" if report.method == "central" else f", {report.method}"
    engine = "" if report.mode == "directional" else f", {report.engine} engine"
    if report.n_explicit:  # the layer sweep left some coordinates to the one-by-one path
        engine += f" ({report.n_explicit} taken one by one)"
    return [
        f"  seed criterion: difference = {report.difference:.10g} {seed} threshold "
        f"{report.threshold:g} ({'passed' if report.seed_passed else 'failed'})",
        f"  elementwise: |analytic - numerical| <= {report.atol:g} + {report.rtol:g} |numerical| "
        f"+ noise; epsilon {report.epsilon:g}{method}, {over}{engine}",
    ]


def _wrong_blocks(report, unit: str) -> list[str]:
    """The wrong blocks in backprop order, each with its diagnosis."""
    wrong = wrong_block_lines(report, unit)
    if not wrong:
        return []
    width = max(len(name) for name, _, _ in wrong)
    return ["wrong blocks, in backprop order:"] + [
        f"  {name:<{width}}  {count}: {text}" for name, count, text in wrong]


def wrong_block_lines(report, unit: str) -> list[tuple[str, str, str]]:
    """Per wrong block, in backprop order: its name, ``"4 of 15 elements wrong"`` and its
    diagnosis (or where to look instead)."""
    lines = []
    for name in report.failed_blocks:
        b = report.blocks[name]
        total = b.n_probes if report.mode == "directional" else (
            b.n_checked if report.mode == "sampled" else b.size)
        text = b.diagnosis or "no simple pattern (see the worst elements)"
        lines.append((name, f"{b.n_failing} of {total} {unit} wrong", text))
    return lines


def _width(report) -> int:
    return max(5, *(len(name) for name in report.blocks))


def _table(report) -> list[str]:
    """A row per block of a full or sampled check."""
    width = _width(report)
    checked = report.mode == "sampled"
    extra = f" {'checked':>8}" if checked else ""
    lines = [f"  {'block':<{width}}  {'shape':<10}{extra} {'difference':>11} "
             f"{'max abs err':>11} {'max rel err':>11} {'failing':>8} {'kinks':>6}  "
             f"verdict"]
    for name, b in report.blocks.items():
        shape = "x".join(map(str, b.shape))
        extra = f" {b.n_checked:>8}" if checked else ""
        lines.append(f"  {name:<{width}}  {shape:<10}{extra} {b.difference:>11.3e} "
                     f"{b.max_abs_error:>11.3e} {b.max_rel_error:>11.3e} {b.n_failing:>8} "
                     f"{b.n_kinks:>6}  {b.verdict}")
    return lines


def _directional_table(report) -> list[str]:
    """A row per block of a directional check, with the error its probes detect."""
    width = _width(report)
    detects = f"detects (p={report.probability:g})"
    lines = [f"  {'block':<{width}}  {'shape':<10} {'difference':>11} {'probes':>7} "
             f"{'failing':>8} {'kinks':>6}  {detects:>16}  verdict"]
    for name, b in report.blocks.items():
        shape = "x".join(map(str, b.shape))
        detects = f">= {b.detectable_error:.1e}" if math.isfinite(b.detectable_error) else "-"
        lines.append(f"  {name:<{width}}  {shape:<10} {b.difference:>11.3e} {b.n_probes:>7} "
                     f"{b.n_failing:>8} {b.n_kinks:>6}  {detects:>16}  {b.verdict}")
    lines.append("note: " + DETECTS_NOTE)
    return lines


def _set_aside_notes(report, unit: str) -> list[str]:
    """What was not judged and why: kinks, non-finite J+-, agreements within noise only."""
    blocks = report.blocks.values()
    notes = []
    n_kinks = sum(b.n_kinks for b in blocks)
    if n_kinks:
        kink = report.kink
        notes.append(f"{n_kinks} {unit} step across {kink}, where the central difference "
                     f"is no derivative: not counted as failing"
                     + (" (report.kinks)" if report.mode != "directional" else ""))
    n_nonfinite = sum(b.n_nonfinite for b in blocks)
    if n_nonfinite and report.mode == "directional":
        notes.append(f"{n_nonfinite} probes have a NaN/Inf J(theta +- eps v) "
                     f"(J = {report.cost:g}): not verified")
    elif n_nonfinite:
        first = report.nonfinite[0].label
        notes.append(f"{n_nonfinite} element(s) have a NaN/Inf J(theta +- eps e_i), first {first} "
                     f"(report.nonfinite): not verified")
    n_noisy = sum(b.n_unverified for b in blocks)
    if n_noisy:
        notes.append(f"{n_noisy} element(s) pass only within an error bound larger than 1 % of "
                     f"their size (saturated outputs, a step that rounds away, a coarse cost): "
                     f"not verified (report.unverified)")
    return notes


# -- reprs: one line that states the verdict (what a notebook cell's last line shows) ----------
#: The longest repr; longer texts (many wrong blocks, a long diagnosis) are cut with "...".
REPR_CHARS = 160


def _shorten(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters (ending with "...") if longer."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _names(names, limit: int = 60) -> str:
    """``"dW2, db1"``: the names, cut if the list is long."""
    return _shorten(", ".join(names), limit)


def report_repr(report) -> str:
    """``<GradientCheckReport FAILED: 2 of 6 blocks wrong (dW2, db1); difference 0.285>``,
    with the mode when it is not the full check."""
    blocks = report.blocks
    wrong = report.failed_blocks
    if report.passed:
        verdict = f"PASSED: {'the block' if len(blocks) == 1 else f'all {len(blocks)} blocks'} ok"
    elif wrong:
        verdict = f"FAILED: {len(wrong)} of {len(blocks)} blocks wrong ({_names(wrong)})"
    else:
        unverified = [name for name, b in blocks.items() if b.verdict == "unverified"]
        verdict = (f"INCONCLUSIVE: {len(unverified)} of {len(blocks)} blocks unverified "
                   f"({_names(unverified)})")
    mode = {"full": "",
            "sampled": f"; sampled, {report.n_checked} of {report.n_params} parameters",
            "directional": "; directional"}[report.mode]
    return f"<GradientCheckReport {verdict}; difference {report.difference:.3g}{mode}>"


def block_repr(block) -> str:
    """``<BlockResult dW2 3x5 wrong: 4 of 15 elements failing; dW2 ≈ 2.00 × numerical: ...>``."""
    shape = "x".join(map(str, block.shape)) or "scalar"
    head = f"<BlockResult {_shorten(block.name, 40)} {shape} {block.verdict}"
    if block.n_probes:
        counts = f"{block.n_failing} of {block.n_probes} probes failing"
    else:
        counts = f"{block.n_failing} of {block.n_checked} elements failing"
    text = f"{head}: {counts}, max rel err {block.max_rel_error:.3g}"
    if block.diagnosis:
        text += "; " + block.diagnosis
    return _shorten(text, REPR_CHARS - 1) + ">"


def element_repr(element) -> str:
    """``<Element dW2[2, 0]: analytic 1.8316, numerical 0.915802, relative error 0.5>``."""
    return (f"<Element {_shorten(element.label, 60)}: analytic {element.analytic:.6g}, "
            f"numerical {element.numerical:.6g}, relative error {element.relative_error:.3g}>")
