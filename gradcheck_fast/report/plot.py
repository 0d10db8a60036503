"""Pictures of a check (optional matplotlib): where a gradient is wrong, analytic against
numerical, and the error against the step.

matplotlib is imported when a picture is asked for, never before (``import gradcheck_fast``
does not load it), and only through :class:`matplotlib.figure.Figure`: no pyplot, no backend
chosen, nothing shown. Every function returns the Figure it drew, or the Axes passed as
``ax=``. Save a figure with ``fig.savefig("report.png")``; in Jupyter, ``%matplotlib inline``
displays it.

The heat maps use fixed colour limits (relative errors from :data:`ERROR_LIMITS`), and fixed
colours for what the error colour cannot say: wrong elements (:data:`WRONG`, outlined),
kinks in the step (:data:`KINK`), non-finite or unverified elements (:data:`NOT_VERIFIED`).
A block too large for one screen pixel per element is downsampled by the maximum: a cell
shows the largest error of its elements and the most serious flag among them, so one wrong
element among 200,000 stays a red cell.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np

from .diagnosis import judge, probe_items, relative_errors
from .formatting import format_report

#: What to install when matplotlib is missing.
INSTALL_HINT = 'pip install "gradcheck-fast[plot]"'

#: The colour limits of the relative error ``|a - n| / max(|a|, |n|)``: below 1e-14 is float64
#: rounding of the two gradients; 1 is total disagreement (one of them zero, or a sign flip
#: beyond it, clipped).
ERROR_LIMITS = (1e-14, 1.0)
ERROR_CMAP = "viridis"

#: The flag colours, none of them in viridis.
WRONG = "#e41a1c"
KINK = "#ff7f00"
NOT_VERIFIED = "#ff00ff"
#: What an element's flag code means, most serious last (a cell shows its largest code).
_FLAG_COLORS = {1: KINK, 2: NOT_VERIFIED, 3: WRONG}

#: The smallest cell (in pixels at the figure's dpi) a downsampled heat map draws.
MIN_CELL_PX = 4

#: Below this many wrong cells in a block, each is also ringed when the cells are smaller than
#: :data:`_RING_BELOW_PX`, so that a single one is seen at a glance.
_RINGED, _RING_BELOW_PX = 20, 12

_VERDICT_COLOR = {"ok": "black", "wrong": WRONG, "unverified": "#a0009f"}


def _matplotlib():
    """``matplotlib.figure``, ``matplotlib.colors``, ``matplotlib.collections`` and
    ``matplotlib.patches``, or an ImportError that says what to install."""
    try:
        from matplotlib import collections, colors, figure, patches
    except ImportError as error:
        raise ImportError(f"plotting needs matplotlib, an optional dependency of "
                          f"gradcheck_fast: {INSTALL_HINT}") from error
    return figure, colors, collections, patches


# ---------------------------------------------------------------------------------------------
# Choosing blocks and axes
# ---------------------------------------------------------------------------------------------
def _block_names(report, blocks) -> list[str]:
    """The names of ``blocks`` (None: all, in layout order; a name; or a sequence of names)."""
    if blocks is None:
        return list(report.blocks)
    names = [blocks] if isinstance(blocks, str) else list(blocks)
    unknown = [name for name in names if name not in report.blocks]
    if unknown or not names:
        raise ValueError(f"blocks must name gradient blocks of the report "
                         f"({', '.join(report.blocks)}); got {blocks!r}")
    return names


def _single_block_for_ax(names: list[str], ax, function: str) -> None:
    if ax is not None and len(names) != 1:
        raise ValueError(f"ax= draws one block; the report has {len(names)} ({', '.join(names)}): "
                         f"pass blocks='{names[0]}' with ax=, or leave ax=None for a figure "
                         f"of every block ({function})")


def _check_ax(ax) -> None:
    if ax is not None and not hasattr(ax, "figure"):
        raise TypeError(f"ax must be a matplotlib Axes; got {type(ax).__name__}")


def _title(report) -> str:
    """The verdict line of ``str(report)``."""
    return format_report(report).splitlines()[0]


# ---------------------------------------------------------------------------------------------
# report.plot(): heat maps
# ---------------------------------------------------------------------------------------------
def plot_report(report, blocks=None, ax=None):
    """Per block, a heat map of each element's relative error ``|a - n| / max(|a|, |n|)``.

    Log colour scale with fixed limits (:data:`ERROR_LIMITS`); wrong elements in
    :data:`WRONG` and outlined (ringed too when few), kinks in :data:`KINK`, non-finite and
    unverified elements in :data:`NOT_VERIFIED`; coordinates a sampled check did not take are
    blank. Matrices are drawn whole, rows down and columns across; a vector is a strip; a block
    with more elements than pixels is downsampled by the maximum (the title says how). A
    directional report has no per-element values: its picture is each block's probes against
    the error they detect (:func:`plot_probes`).

    Parameters
    ----------
    report : GradientCheckReport
    blocks : str or sequence of str, optional
        The blocks to draw ('dW1', ...); default all.
    ax : matplotlib Axes, optional
        Draw one block (or a directional report's probes) into it.

    Returns
    -------
    matplotlib.figure.Figure, or ``ax`` when given.

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install "gradcheck-fast[plot]"``).
    ValueError
        An unknown block, or ``ax=`` with more than one block.
    """
    figure, colors, collections, patches = _matplotlib()
    _check_ax(ax)
    names = _block_names(report, blocks)
    if report.mode == "directional":
        return plot_probes(report, blocks=names, ax=ax)
    _single_block_for_ax(names, ax, "report.plot")
    status = _element_status(report)
    norm = colors.LogNorm(*ERROR_LIMITS, clip=True)
    cmap = _error_cmap()
    if ax is not None:
        _heat_map(ax, report, names[0], status, norm, cmap, collections)
        return ax
    fig, axes, cax = _heat_map_figure(figure, report, names)
    for name, block_ax in zip(names, axes):
        image = _heat_map(block_ax, report, name, status, norm, cmap, collections)
    fig.colorbar(image, cax=cax, extend="both",
                 label="relative error |a − n| / max(|a|, |n|)")
    fig.suptitle(textwrap.fill(_title(report), 110), fontsize=11, y=0.995, va="top")
    _flag_legend(fig, report, patches)
    return fig


def _error_cmap():
    from matplotlib import colormaps

    # Coordinates not checked are NaN: transparent, so the axes' white shows ("blank").
    return colormaps[ERROR_CMAP].with_extremes(bad=(1.0, 1.0, 1.0, 0.0))


def _element_status(report) -> tuple[np.ndarray, np.ndarray]:
    """Flat in layout order: each element's relative error (NaN where not checked) and flag
    code (0 none, 1 kink, 2 non-finite or unverified, 3 wrong)."""
    relative = relative_errors(report._grad_flat, report._gradapprox_flat)
    flags = np.zeros(report.n_params, dtype=np.int8)
    flags[report._kink_indices] = 1
    flags[report._nonfinite_indices] = 2
    flags[report._unverified_indices] = 2
    flags[report._failing_indices] = 3
    return relative, flags


def _as_matrix(shape: tuple[int, ...]) -> tuple[int, int, bool]:
    """How a block is drawn: ``(rows, columns, is_strip)``; a block with at most one axis
    longer than 1 is a strip (one row), more than two axes fold into the columns."""
    size = int(np.prod(shape, dtype=np.int64))
    if sum(n > 1 for n in shape) <= 1:
        return 1, size, True
    return shape[0], size // shape[0], False


#: Figure geometry in inches: width, margins, a matrix's height range, a strip's height and
#: the room for an axes' title.
_WIDTH, _LEFT, _RIGHT = 9.0, 0.7, 1.25
_TOP, _BOTTOM, _TITLE_ROOM = 0.75, 0.35, 0.62
_MATRIX_HEIGHT, _STRIP_HEIGHT = (0.8, 2.4), 0.3


def _heat_map_figure(figure, report, names):
    """A figure with one axes per block, stacked, sized so that a cell is a few pixels, and a
    colorbar axes on the right."""
    heights = []
    for name in names:
        rows, _, strip = _as_matrix(report.blocks[name].shape)
        heights.append(_STRIP_HEIGHT if strip
                       else float(np.clip(0.02 * rows, *_MATRIX_HEIGHT)))
    total = _TOP + _BOTTOM + sum(heights) + _TITLE_ROOM * len(heights)
    fig = figure.Figure(figsize=(_WIDTH, total))
    axes, top = [], total - _TOP
    for height in heights:
        top -= _TITLE_ROOM
        axes.append(fig.add_axes((_LEFT / _WIDTH, (top - height) / total,
                                  (_WIDTH - _LEFT - _RIGHT) / _WIDTH, height / total)))
        top -= height
    cax = fig.add_axes(((_WIDTH - _RIGHT + 0.25) / _WIDTH, _BOTTOM / total, 0.15 / _WIDTH,
                        (total - _TOP - _BOTTOM - 0.3) / total))
    return fig, axes, cax


def _cells(ax, rows: int, cols: int) -> tuple[int, int, float]:
    """The downsampling factors (rows, columns) that give each cell at least
    :data:`MIN_CELL_PX` pixels of ``ax``, and the smaller side of a cell in pixels."""
    fig = ax.figure
    box = ax.get_position()
    width = box.width * fig.get_figwidth() * fig.dpi
    height = box.height * fig.get_figheight() * fig.dpi
    fr = -(-rows // max(1, int(height // MIN_CELL_PX)))
    fc = -(-cols // max(1, int(width // MIN_CELL_PX)))
    return fr, fc, min(height / -(-rows // fr), width / -(-cols // fc))


def downsample_max(values: np.ndarray, factors: tuple[int, int], fill) -> np.ndarray:
    """The maximum of each ``factors``-sized cell of a 2-D array (NaN ignored; a cell of NaN
    only is NaN), the last cells padded with ``fill``.

    Examples
    --------
    >>> a = np.zeros((3, 5)); a[2, 4] = 1.0
    >>> downsample_max(a, (2, 2), np.nan)
    array([[0., 0., 0.],
           [0., 0., 1.]])
    """
    rows, cols = values.shape
    fr, fc = factors
    n_rows, n_cols = -(-rows // fr), -(-cols // fc)
    padded = np.full((n_rows * fr, n_cols * fc), fill, dtype=values.dtype)
    padded[:rows, :cols] = values
    return np.fmax.reduce(padded.reshape(n_rows, fr, n_cols, fc), axis=(1, 3))


def _heat_map(ax, report, name, status, norm, cmap, collections):
    """One block's heat map in ``ax``; returns the error image (the colorbar's mappable)."""
    block = report.blocks[name]
    rows, cols, strip = _as_matrix(block.shape)
    span = report.layout.block(name[1:])
    relative, flags = status
    fr, fc, cell_px = _cells(ax, rows, cols)
    errors = downsample_max(np.maximum(relative[span], ERROR_LIMITS[0]).reshape(rows, cols),
                            (fr, fc), np.nan)
    cell_flags = downsample_max(flags[span].reshape(rows, cols), (fr, fc), 0)
    # Cells in element coordinates: the cell (i, j) covers rows i*fr .. i*fr + fr - 1.
    extent = (-0.5, errors.shape[1] * fc - 0.5, errors.shape[0] * fr - 0.5, -0.5)
    ax.set_facecolor("white")
    image = ax.imshow(errors, cmap=cmap, norm=norm, extent=extent, aspect="auto",
                      interpolation="nearest", zorder=0)
    # The outline goes under the flag colours: its inner half is covered, so a wrong cell of
    # a few pixels stays red, and its outer half marks the cell's edge on the neighbours.
    ax.imshow(_flag_rgba(cell_flags), extent=extent, aspect="auto", interpolation="nearest",
              zorder=2)
    wrong = cell_flags == 3
    if wrong.any():
        ax.add_collection(collections.LineCollection(
            _outline(wrong, fr, fc), colors="black", linewidths=1.6, zorder=1))
        if np.count_nonzero(wrong) <= _RINGED and cell_px < _RING_BELOW_PX:
            i, j = np.nonzero(wrong)
            ax.plot((j + 0.5) * fc - 0.5, (i + 0.5) * fr - 0.5, "o", ms=14, mfc="none",
                    mec=WRONG, mew=1.6, zorder=3)
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.yaxis.set_major_locator(_integer_ticks())
    if strip:
        ax.set_yticks([])
    ax.set_title(_heat_map_title(report, name, fr, fc), fontsize=9, loc="left",
                 color=_VERDICT_COLOR[block.verdict])
    return image


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _flag_rgba(cell_flags: np.ndarray) -> np.ndarray:
    """An RGBA image: each flagged cell in its flag's colour, the rest transparent."""
    from matplotlib.colors import to_rgba

    rgba = np.zeros((*cell_flags.shape, 4))
    for code, color in _FLAG_COLORS.items():
        rgba[cell_flags == code] = to_rgba(color)
    return rgba


def _outline(mask: np.ndarray, fr: int, fc: int) -> np.ndarray:
    """The boundary of the True cells of ``mask`` as line segments ``(n, 2, 2)`` in element
    coordinates (cells of ``fr`` x ``fc`` elements)."""
    padded = np.pad(mask, 1)
    # An edge lies between two cells (or a cell and the outside) that differ.
    i, j = np.nonzero(padded[1:-1, 1:] != padded[1:-1, :-1])  # left edge of cell (i, j)
    x, y0, y1 = j * fc - 0.5, i * fr - 0.5, (i + 1) * fr - 0.5
    vertical = np.stack([np.stack([x, y0], -1), np.stack([x, y1], -1)], 1)
    i, j = np.nonzero(padded[1:, 1:-1] != padded[:-1, 1:-1])  # top edge of cell (i, j)
    y, x0, x1 = i * fr - 0.5, j * fc - 0.5, (j + 1) * fc - 0.5
    horizontal = np.stack([np.stack([x0, y], -1), np.stack([x1, y], -1)], 1)
    return np.concatenate([vertical, horizontal]).astype(float)


def _heat_map_title(report, name: str, fr: int, fc: int) -> str:
    block = report.blocks[name]
    shape = "×".join(map(str, block.shape))
    checked = (f", {block.n_checked} of {block.size} checked" if report.mode == "sampled"
               else "")
    if block.verdict == "wrong":
        what = f"{block.n_failing} of {block.n_checked} wrong"
        if block.diagnosis:
            what += f" — {block.diagnosis}"
    else:
        what = f"{block.verdict}, max rel. error {block.max_rel_error:.1e}"
    cells = f" [cells: max of {fr}×{fc}]" if fr * fc > 1 else ""
    return textwrap.shorten(f"{name} ({shape}{checked}): {what}{cells}", 140,
                            placeholder=" …")


def _flag_legend(fig, report, patches) -> None:
    handles = [patches.Patch(facecolor=WRONG, edgecolor="black", label="wrong (outlined)"),
               patches.Patch(facecolor=KINK, label="kink in the step"),
               patches.Patch(facecolor=NOT_VERIFIED, label="non-finite / unverified")]
    if report.mode == "sampled":
        handles.append(patches.Patch(facecolor="white", edgecolor="0.6", label="not checked"))
    top = 1.0 - 0.36 / fig.get_figheight()
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=9,
               frameon=False, bbox_to_anchor=(0.5, top))


# ---------------------------------------------------------------------------------------------
# Directional reports: the probes against the error they detect
# ---------------------------------------------------------------------------------------------
def probe_status(report, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A directional report's block ``name``: each probe's relative disagreement
    ``|v.grad - numerical| / max(...)`` and flag code (as the builder judged it: 0 agrees,
    1 kink, 2 non-finite or unverified, 3 wrong)."""
    p = report.probes[name]
    items = probe_items(p.numerical, p.kinks, report.cost, rtol=report.rtol, atol=report.atol,
                        grad_norm=p.grad_norm, size=p.size)
    judged = judge(p.analytic, items.numerical, items.tolerance, p.noise,
                   items.at_kink | items.nonfinite, report.atol, items.scale)
    flags = np.zeros(p.analytic.size, dtype=np.int8)
    flags[items.at_kink] = 1
    flags[items.nonfinite | judged.unverified] = 2
    flags[judged.failing] = 3
    return judged.relative, flags


def plot_probes(report, blocks=None, ax=None):
    """A directional report: per block, each probe's relative disagreement (log scale, the
    limits of :data:`ERROR_LIMITS`; wrong probes in :data:`WRONG`) beside the smallest
    relative error ``||E|| / ||G||`` the block's probes detect with the report's probability
    (a bar): a right block's probes sit far below its bar, a wrong block's above it."""
    figure, _, _, _ = _matplotlib()
    _check_ax(ax)
    names = _block_names(report, blocks)
    fig = None
    if ax is None:
        fig = figure.Figure(figsize=(max(5.0, 1.1 * len(names) + 2.5), 4.4),
                            layout="constrained")
        ax = fig.add_subplot()
    colors = {0: "#377eb8", **_FLAG_COLORS}
    bars = []
    for x, name in enumerate(names):
        relative, flags = probe_status(report, name)
        jitter = np.linspace(-0.18, 0.18, relative.size) if relative.size > 1 else [0.0]
        shown = np.clip(np.nan_to_num(relative, nan=ERROR_LIMITS[1]), *ERROR_LIMITS)
        for code, color in colors.items():
            chosen = flags == code
            ax.plot(x + np.asarray(jitter)[chosen], shown[chosen], "o", color=color, ms=5)
        detectable = report.blocks[name].detectable_error
        if detectable is not None and math.isfinite(detectable):
            bars.append((x, detectable))
    x, level = np.array(bars).T if bars else ([], [])
    ax.hlines(level, np.subtract(x, 0.32), np.add(x, 0.32), color="black", lw=2,
              label=f"detectable error ||E||/||G|| (p = {report.probability:g})")
    ax.set_yscale("log")
    ax.set_ylim(ERROR_LIMITS[0] / 2, ERROR_LIMITS[1] * 2)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_xticks(range(len(names)), names)
    for label, name in zip(ax.get_xticklabels(), names):
        label.set_color(_VERDICT_COLOR[report.blocks[name].verdict])
    ax.set_ylabel("probe's relative disagreement")
    ax.set_title(textwrap.fill(_title(report), 70), fontsize=10)
    ax.plot([], [], "o", color=colors[0], label="probe agrees")
    ax.plot([], [], "o", color=WRONG, label="probe wrong")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax if fig is None else fig


# ---------------------------------------------------------------------------------------------
# report.plot_scatter(): analytic against numerical
# ---------------------------------------------------------------------------------------------
def plot_scatter(report, blocks=None, ax=None):
    """Per block, the analytic gradient against the numerical one on symmetric log axes,
    the diagonal with its tolerance band ``atol + rtol |numerical|`` around it, and a wrong
    block's fitted line ``analytic = s × numerical`` (a ×2 scale error is a line of slope 2).
    Wrong elements (probes, for a directional report) in :data:`WRONG`, kinks in
    :data:`KINK`; coordinates not checked and non-finite ones are not drawn.

    Parameters and returns as :func:`plot_report`.
    """
    figure, _, _, _ = _matplotlib()
    _check_ax(ax)
    names = _block_names(report, blocks)
    _single_block_for_ax(names, ax, "report.plot_scatter")
    if ax is not None:
        _scatter(ax, report, names[0])
        return ax
    n_cols = min(3, len(names))
    n_rows = -(-len(names) // n_cols)
    fig = figure.Figure(figsize=(3.6 * n_cols, 3.4 * n_rows + 0.6), layout="constrained")
    grid = fig.subplots(n_rows, n_cols, squeeze=False)
    for block_ax, name in zip(grid.flat, names):
        _scatter(block_ax, report, name)
    for block_ax in grid.flat[len(names):]:
        block_ax.set_visible(False)
    fig.suptitle(textwrap.fill(_title(report), 100), fontsize=11)
    return fig


def _sparse_symlog_ticks(linthresh: float, limit: float):
    """0 and every third decade from above the linear range up to ``limit``, both signs: a
    symlog axis over 12 decades has no room for more, and ticks at +-linthresh crowd 0."""
    from matplotlib.ticker import FixedLocator

    low = math.floor(math.log10(linthresh)) + 1
    high = math.floor(math.log10(limit))
    decades = 10.0 ** np.arange(high, low - 1, -3)
    return FixedLocator(np.concatenate([-decades, [0.0], decades[::-1]]))


def _scatter_points(report, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A block's (numerical, analytic, flag code) of its checked elements or its probes."""
    if report.mode == "directional":
        _, flags = probe_status(report, name)
        probes = report.probes[name]
        numerical, analytic = probes.numerical, probes.analytic
    else:
        relative, all_flags = _element_status(report)
        span = report.layout.block(name[1:])
        numerical = report._gradapprox_flat[span]
        analytic = report._grad_flat[span]
        flags = all_flags[span]
    shown = np.isfinite(numerical) & np.isfinite(analytic)
    return numerical[shown], analytic[shown], flags[shown]


def _scatter(ax, report, name: str) -> None:
    block = report.blocks[name]
    numerical, analytic, flags = _scatter_points(report, name)
    both = np.concatenate([np.abs(numerical), np.abs(analytic), [report.atol]])
    largest = float(both.max())
    # Linear within 6 decades of the largest value (and never below atol): the rest is the
    # rounding floor of a gradient, where a log axis would spread noise over many decades.
    linthresh = max(report.atol, 1e-6 * largest)
    limit = 2.0 * largest
    ax.set_xscale("symlog", linthresh=linthresh)
    ax.set_yscale("symlog", linthresh=linthresh)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(_sparse_symlog_ticks(linthresh, limit))
    line = np.concatenate([-np.geomspace(limit, linthresh / 10, 200), [0.0],
                           np.geomspace(linthresh / 10, limit, 200)])
    band = report.atol + report.rtol * np.abs(line)
    ax.fill_between(line, line - band, line + band, color="0.75", lw=0,
                    label=f"tolerance {report.atol:g} + {report.rtol:g}|n|")
    ax.plot(line, line, color="0.4", lw=0.8)
    colors = {0: "#377eb8", **_FLAG_COLORS}
    labels = {0: "agrees", 1: "kink", 2: "unverified", 3: "wrong"}
    for code in (0, 1, 2, 3):  # the serious ones on top
        chosen = flags == code
        if chosen.any():
            ax.plot(numerical[chosen], analytic[chosen], "o", ms=3, color=colors[code],
                    label=labels[code], rasterized=bool(chosen.sum() > 5000))
    if block.scale is not None:
        ax.plot(line, block.scale * line, "--", color=WRONG, lw=1,
                label=f"analytic = {block.scale:.3g} × numerical")
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_xlabel("numerical" if report.mode != "directional" else "numerical (along v)",
                  fontsize=8)
    ax.set_ylabel("analytic", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(f"{name}: {block.verdict}", color=_VERDICT_COLOR[block.verdict], fontsize=10)
    ax.legend(fontsize=7, loc="upper left")


# ---------------------------------------------------------------------------------------------
# step_sweep(...).plot(): the V-curve
# ---------------------------------------------------------------------------------------------
def plot_sweep(sweep, ax=None):
    """The seed's difference (eq. (3)) against the step, per block and over all parameters,
    on log-log axes: the ε² truncation guide through the largest step's point, the 1/ε
    rounding guide through the smallest's, the threshold, the chosen step marked and the
    verdict in the title.

    Parameters
    ----------
    sweep : SweepReport
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure, or ``ax`` when given.
    """
    figure, _, _, _ = _matplotlib()
    _check_ax(ax)
    fig = None
    if ax is None:
        fig = figure.Figure(figsize=(7.5, 5.0), layout="constrained")
        ax = fig.add_subplot()
    eps = np.array([row.epsilon for row in sweep.rows])
    total = _positive([row.difference for row in sweep.rows])
    names = list(sweep.rows[0].blocks) if sweep.rows else []
    for name in names:
        ax.plot(eps, _positive([row.blocks[name] for row in sweep.rows]), "o-", ms=3, lw=1,
                label=name)
    ax.plot(eps, total, "s-", color="black", lw=2.2, ms=5, label="all parameters")
    ax.set_xscale("log")
    ax.set_yscale("log")
    shown = np.concatenate([total[np.isfinite(total)], [sweep.threshold]])
    low, high = shown.min() / 30, shown.max() * 30
    _guides(ax, eps, total)
    ax.axhline(sweep.threshold, color="0.3", ls=":", lw=1,
               label=f"threshold {sweep.threshold:g}")
    if math.isfinite(sweep.best_epsilon):
        ax.axvline(sweep.best_epsilon, color=WRONG if sweep.verdict == "wrong" else "#4daf4a",
                   lw=1.2, alpha=0.8, label=f"best step {sweep.best_epsilon:.0e}")
    ax.set_ylim(low, high)
    ax.invert_xaxis()  # the sweep runs from large steps to small ones
    ax.set_xlabel("epsilon")
    ax.set_ylabel("difference ||grad − gradapprox|| / (||grad|| + ||gradapprox||)")
    ax.set_title(textwrap.fill(f"step sweep ({sweep.engine} engine): {sweep.verdict.upper()} — "
                               f"{sweep.explanation}", 90), fontsize=9)
    ax.legend(fontsize=8, ncol=2)
    return ax if fig is None else fig


def _positive(values) -> np.ndarray:
    """Values for a log axis: zero, negative and NaN ones are not drawn."""
    values = np.array(values, dtype=float)
    return np.where(values > 0, values, np.nan)


def _guides(ax, eps: np.ndarray, total: np.ndarray) -> None:
    """ε² through the first (largest) step's difference, 1/ε through the last's."""
    finite = np.flatnonzero(np.isfinite(total))
    if finite.size < 2:
        return
    first, last = finite[0], finite[-1]
    ax.plot(eps, total[first] * (eps / eps[first]) ** 2, "--", color="0.55", lw=1,
            label="∝ ε² (truncation)")
    ax.plot(eps, total[last] * (eps[last] / eps), "-.", color="0.55", lw=1,
            label="∝ 1/ε (rounding)")
