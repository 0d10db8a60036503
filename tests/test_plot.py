"""The pictures (gradcheck_fast.report.plot): what is drawn where, asserted on the rendered
pixels and on the artists; matplotlib optional and never imported before a picture."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib.image  # the test extra brings matplotlib (the package's "plot" extra)
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

import gradcheck_fast
from gradcheck_fast.layout import Layout
from gradcheck_fast.networks import example
from gradcheck_fast.report import plot
from gradcheck_fast.report.build import Measurements, build
from tests.test_report import _seed

ROOT = Path(__file__).resolve().parents[1]

#: The flag colours as 8-bit RGB, as Agg writes them.
WRONG_RGB = tuple(round(255 * c) for c in to_rgba(plot.WRONG)[:3])
KINK_RGB = tuple(round(255 * c) for c in to_rgba(plot.KINK)[:3])


def _pixels(fig) -> np.ndarray:
    """The figure rendered by Agg: an (height, width, 4) uint8 array, row 0 at the top."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def _axes_titled(fig, name: str):
    (ax,) = [ax for ax in fig.axes if ax.get_title(loc="left").startswith(name + " (")]
    return ax


def _pixel_at(fig, pixels, ax, x: float, y: float) -> tuple[int, int, int]:
    """The RGB of the pixel under data point (x, y) of ``ax``."""
    px, py = ax.transData.transform((x, y))
    row = int(fig.bbox.height - py)  # display y runs up, buffer rows run down
    return tuple(int(v) for v in pixels[row, int(px), :3])


def _cell_centre(ax, i: int, j: int) -> tuple[float, float]:
    """The data coordinates of the centre of the heat-map cell holding element (i, j)."""
    image = ax.images[0]
    left, right, bottom, top = image.get_extent()
    n_rows, n_cols = image.get_array().shape
    fc, fr = (right - left) / n_cols, (bottom - top) / n_rows
    ci, cj = i // round(fr), j // round(fc)
    return left + (cj + 0.5) * fc, top + (ci + 0.5) * fr


def _axes_box(fig, ax) -> tuple[slice, slice]:
    """Buffer rows and columns inside ``ax``."""
    x0, y0, x1, y1 = ax.get_window_extent().extents
    height = fig.bbox.height
    return slice(int(height - y1) + 1, int(height - y0)), slice(int(x0) + 1, int(x1))


def _is(rgb, expected) -> bool:
    return all(abs(a - b) <= 2 for a, b in zip(rgb, expected))


# ---------------------------------------------------------------------------------------------
# The target: one wrong element among 200,704 is a red cell where it sits
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist():
    return example("mnist")


def test_one_wrong_element_of_dW1_is_red_at_its_place_on_the_mnist_network(mnist):
    X, Y, parameters, gradients = mnist
    wrong = {k: v.copy() for k, v in gradients.items()}
    i, j = 100, 501
    wrong["dW1"][i, j] += 1e-3  # one element off by ~10 % of the block's typical size
    report = gradcheck_fast.check_gradients(parameters, wrong, X, Y)
    assert report.failed_blocks == ["dW1"] and report.blocks["dW1"].n_failing == 1
    fig = report.plot()
    assert isinstance(fig, Figure)
    pixels = _pixels(fig)
    ax = _axes_titled(fig, "dW1")
    image = ax.images[0]
    assert image.get_array().shape[1] < 784  # downsampled: several elements per cell
    assert _is(_pixel_at(fig, pixels, ax, *_cell_centre(ax, i, j)), WRONG_RGB)
    # The red is there and only there: within the ring around that cell.
    rows, cols = _axes_box(fig, ax)
    red = np.all(np.abs(pixels[rows, cols, :3].astype(int) - WRONG_RGB) <= 2, axis=-1)
    ys, xs = np.nonzero(red)
    px, py = ax.transData.transform(_cell_centre(ax, i, j))
    centre = (fig.bbox.height - py - rows.start, px - cols.start)
    ring = 14 * fig.dpi / 72  # the ring's diameter in pixels (markersize 14 points)
    assert red.sum() >= 4 and np.hypot(ys - centre[0], xs - centre[1]).max() <= ring

    # The same network with its right gradient: no red anywhere in dW1's heat map.
    fig = gradcheck_fast.check_gradients(parameters, gradients, X, Y).plot()
    pixels = _pixels(fig)
    ax = _axes_titled(fig, "dW1")
    rows, cols = _axes_box(fig, ax)
    red = np.all(np.abs(pixels[rows, cols, :3].astype(int) - WRONG_RGB) <= 2, axis=-1)
    assert not red.any()


def test_downsampling_keeps_the_maximum_of_each_cell():
    a = np.zeros((256, 784))
    a[100, 501] = 0.5
    small = plot.downsample_max(a, (5, 5), np.nan)
    assert small.shape == (52, 157)
    assert small[20, 100] == 0.5 and np.count_nonzero(small) == 1
    b = np.full((3, 4), np.nan)
    b[0, 0], b[0, 1] = 1e-3, np.nan  # NaN (not checked) is ignored; a cell of NaN stays NaN
    np.testing.assert_array_equal(plot.downsample_max(b, (2, 2), np.nan),
                                  [[1e-3, np.nan], [np.nan, np.nan]])
    flags = np.zeros((5, 5), dtype=np.int8)
    flags[4, 4], flags[0, 0], flags[0, 1] = 3, 1, 2  # the most serious flag of a cell wins
    np.testing.assert_array_equal(plot.downsample_max(flags, (2, 2), 0),
                                  [[2, 0, 0], [0, 0, 0], [0, 0, 3]])


# ---------------------------------------------------------------------------------------------
# Heat maps: fixed colours, flags, blanks
# ---------------------------------------------------------------------------------------------
LAYOUT = Layout({"W": (2, 2), "b": (2, 1)})


def _hand_made_report():
    """W[0,0] agrees, W[0,1] wrong (x2), W[1,0] at a kink, W[1,1] non-finite J+-; b[0]
    unverified (agrees within a noise bound of half its size), b[1] agrees."""
    analytic = np.array([1.0, 4.0, 5.0, 0.3, 2.0, 3.0])
    numerical = np.array([1.0, 2.0, 1.0, np.nan, 2.5, 3.0])
    items = Measurements(
        mode="full", engine="exact", cost=0.5, analytic=analytic, numerical=numerical,
        tolerance=1e-8 + 1e-6 * np.abs(numerical), noise=np.array([0, 0, 0, 0, 1.0, 0]),
        at_kink=np.arange(6) == 2, nonfinite=np.arange(6) == 3,
        spans=(slice(0, 4), slice(4, 6)), indices=np.arange(6))
    return build(LAYOUT, analytic, items, epsilon=1e-7, threshold=2e-7, rtol=1e-6, atol=1e-8)


def test_each_flag_has_its_colour_and_wrong_elements_are_outlined():
    report = _hand_made_report()
    fig = report.plot()
    overlay = _axes_titled(fig, "dW").images[1].get_array()
    expected = {(0, 0): None, (0, 1): plot.WRONG, (1, 0): plot.KINK, (1, 1): plot.NOT_VERIFIED}
    for (i, j), color in expected.items():
        if color is None:
            assert overlay[i, j, 3] == 0  # transparent: the error colour shows
        else:
            np.testing.assert_allclose(overlay[i, j], to_rgba(color))
    strip = _axes_titled(fig, "db").images[1].get_array()  # a vector: one row
    assert strip.shape == (1, 2, 4)
    np.testing.assert_allclose(strip[0, 0], to_rgba(plot.NOT_VERIFIED))  # unverified
    assert strip[0, 1, 3] == 0
    # The one wrong cell's outline: its four edges, in element coordinates.
    (outline,) = _axes_titled(fig, "dW").collections
    edges = sorted(tuple(map(tuple, np.round(s, 6))) for s in outline.get_segments())
    assert edges == sorted([((0.5, -0.5), (0.5, 0.5)), ((1.5, -0.5), (1.5, 0.5)),
                            ((0.5, -0.5), (1.5, -0.5)), ((0.5, 0.5), (1.5, 0.5))])


def test_colour_limits_are_fixed_so_an_error_has_one_colour_in_every_picture():
    seed = gradcheck_fast.check_gradients(*_seed(faulty=True)).plot()
    hand = _hand_made_report().plot()
    for fig in (seed, hand):
        for ax in fig.axes[:-1]:  # the last is the colorbar
            norm = ax.images[0].norm
            assert (norm.vmin, norm.vmax) == plot.ERROR_LIMITS
            assert ax.images[0].get_cmap().name.startswith(plot.ERROR_CMAP)
    # The agreeing element W[0,0] (relative error 0) is drawn at the bottom of the scale.
    ax = _axes_titled(hand, "dW")
    pixels = _pixels(hand)
    bottom = tuple(round(255 * c) for c in ax.images[0].get_cmap()(0.0)[:3])
    assert _is(_pixel_at(hand, pixels, ax, 0.0, 0.0), bottom)
    assert _is(_pixel_at(hand, pixels, ax, 1.0, 0.0), WRONG_RGB)
    assert _is(_pixel_at(hand, pixels, ax, 0.0, 1.0), KINK_RGB)


def test_the_seed_picture_marks_exactly_the_failing_elements():
    report = gradcheck_fast.check_gradients(*_seed(faulty=True))
    fig = report.plot()
    assert "FAILED" in fig._suptitle.get_text() and "dW2, db1" in fig._suptitle.get_text()
    for name, block in report.blocks.items():
        ax = _axes_titled(fig, name)
        overlay = ax.images[1].get_array()
        red = np.all(np.isclose(overlay, to_rgba(plot.WRONG)), axis=-1)
        assert red.sum() == block.n_failing, name  # the seed's blocks are not downsampled
        assert (ax._left_title.get_color() == plot.WRONG) == (block.verdict == "wrong")
    worst = report.blocks["dW2"].worst[0]
    overlay = _axes_titled(fig, "dW2").images[1].get_array()
    assert np.allclose(overlay[worst.index], to_rgba(plot.WRONG))


def test_a_sampled_report_leaves_unchecked_elements_blank():
    parameters, gradients, X, Y = _seed(faulty=False)
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, mode="sampled",
                                            n_per_block=3, seed=1)
    fig = report.plot()
    ax = _axes_titled(fig, "dW1")
    errors = ax.images[0].get_array()
    checked = report.checked["dW1"]
    assert checked.sum() == 3
    np.testing.assert_array_equal(np.ma.getmaskarray(errors) | np.isnan(errors.data), ~checked)
    pixels = _pixels(fig)
    i, j = np.argwhere(~checked)[0]
    assert _pixel_at(fig, pixels, ax, j, i) == (255, 255, 255)
    i, j = np.argwhere(checked)[0]
    assert _pixel_at(fig, pixels, ax, j, i) != (255, 255, 255)
    assert "not checked" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_ax_draws_one_block_and_returns_the_axes():
    report = gradcheck_fast.check_gradients(*_seed(faulty=True))
    fig = Figure()
    ax = fig.add_subplot()
    assert report.plot(blocks="db1", ax=ax) is ax
    assert ax.get_title(loc="left").startswith("db1 (5×1)") and len(ax.images) == 2
    assert len(report.plot(blocks=["dW2", "db1"]).axes) == 3  # two blocks and a colorbar
    with pytest.raises(ValueError, match="ax= draws one block"):
        report.plot(ax=fig.add_subplot())
    with pytest.raises(ValueError, match="blocks must name gradient blocks.*dW1, db1"):
        report.plot(blocks="W1")
    with pytest.raises(TypeError, match="ax must be a matplotlib Axes"):
        report.plot(blocks="db1", ax="left")


# ---------------------------------------------------------------------------------------------
# Directional reports, scatter, sweep
# ---------------------------------------------------------------------------------------------
def test_a_directional_picture_shows_each_blocks_probes_against_its_detectable_error():
    parameters, gradients, X, Y = _seed(faulty=True)
    report = gradcheck_fast.check_gradients(parameters, gradients, X, Y, mode="directional")
    fig = report.plot()
    (ax,) = fig.axes
    names = [t.get_text() for t in ax.get_xticklabels()]
    assert names == list(report.blocks)
    red = [line for line in ax.lines if line.get_color() == plot.WRONG and len(line.get_xdata())]
    xs = np.concatenate([line.get_xdata() for line in red])
    assert sorted(set(np.round(xs).astype(int))) == [names.index("db1"), names.index("dW2")]
    assert len(xs) == report.blocks["db1"].n_failing + report.blocks["dW2"].n_failing
    # One bar per block, at its detectable error; the wrong probes lie above it.
    (bars,) = [c for c in ax.collections if len(c.get_segments()) == len(names)]
    levels = [segment[0][1] for segment in bars.get_segments()]
    np.testing.assert_allclose(levels, [b.detectable_error for b in report.blocks.values()])
    assert min(np.concatenate([line.get_ydata() for line in red])) > max(levels)


def test_scatter_draws_analytic_against_numerical_with_the_fitted_scale():
    report = gradcheck_fast.check_gradients(*_seed(faulty=True))
    fig = report.plot_scatter()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split(":")[0] for ax in axes] == list(report.blocks)
    ax = axes[list(report.blocks).index("db1")]
    assert ax.get_xscale() == ax.get_yscale() == "symlog"
    (fit,) = [line for line in ax.lines if line.get_linestyle() == "--"]
    x, y = fit.get_xdata(), fit.get_ydata()
    np.testing.assert_allclose(y[x != 0] / x[x != 0], report.blocks["db1"].scale)
    (wrong,) = [line for line in ax.lines if line.get_label() == "wrong"]
    failing = report.blocks["db1"].worst  # all 4 of them (a block keeps up to 5)
    assert len(failing) == report.blocks["db1"].n_failing == 4
    assert (sorted(zip(wrong.get_xdata(), wrong.get_ydata()))
            == sorted((e.numerical, e.analytic) for e in failing))
    assert any(c.get_label().startswith("tolerance") for c in ax.collections)  # the band


def test_the_sweep_picture_is_the_v_curve_with_its_guides_and_verdict():
    parameters, gradients, X, Y = _seed(faulty=False)
    sweep = gradcheck_fast.step_sweep(parameters, gradients, X, Y)
    fig = sweep.plot()
    (ax,) = fig.axes
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert "FINE" in ax.get_title()
    lines = {line.get_label(): line for line in ax.lines}
    eps = [row.epsilon for row in sweep.rows]
    np.testing.assert_array_equal(lines["all parameters"].get_ydata(),
                                  [row.difference for row in sweep.rows])
    np.testing.assert_array_equal(lines["dW1"].get_ydata(),
                                  [row.blocks["dW1"] for row in sweep.rows])
    square, inverse = lines["∝ ε² (truncation)"], lines["∝ 1/ε (rounding)"]
    np.testing.assert_allclose(np.diff(np.log10(square.get_ydata())), 2 * np.diff(np.log10(eps)))
    np.testing.assert_allclose(np.diff(np.log10(inverse.get_ydata())), -np.diff(np.log10(eps)))
    best = lines[f"best step {sweep.best_epsilon:.0e}"]
    assert list(best.get_xdata()) == [sweep.best_epsilon] * 2
    wrong = gradcheck_fast.step_sweep(*_seed(faulty=True)).plot(ax=Figure().add_subplot())
    assert "WRONG" in wrong.get_title()


def test_the_sweep_rows_hold_each_blocks_difference():
    parameters, gradients, X, Y = _seed(faulty=True)
    sweep = gradcheck_fast.step_sweep(parameters, gradients, X, Y, steps=[1e-5, 1e-7])
    for row in sweep.rows:
        report = gradcheck_fast.check_gradients(parameters, gradients, X, Y,
                                                epsilon=row.epsilon, engine="exact")
        assert row.blocks == {name: b.difference for name, b in report.blocks.items()}


# ---------------------------------------------------------------------------------------------
# matplotlib optional, lazy, headless
# ---------------------------------------------------------------------------------------------
def test_without_matplotlib_every_picture_says_which_extra_to_install(monkeypatch):
    report = gradcheck_fast.check_gradients(*_seed(faulty=True))
    sweep = gradcheck_fast.step_sweep(*_seed(faulty=True), steps=[1e-6, 1e-7])
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: import fails
    for draw in (report.plot, report.plot_scatter, sweep.plot):
        with pytest.raises(ImportError, match=r'pip install "gradcheck-fast\[plot\]"'):
            draw()


def test_the_package_imports_matplotlib_only_for_a_picture_and_never_pyplot():
    code = (
        "import sys, gradcheck_fast\n"
        "from gradcheck_fast import reference\n"
        "X, Y, p = reference.seed_case()\n"
        "_, cache = reference.forward_propagation_n(X, Y, p)\n"
        "g = reference.backward_propagation_n_faulty(X, Y, cache)\n"
        "r = gradcheck_fast.check_gradients(p, g, X, Y)\n"
        "str(r), r.to_dict(), str(gradcheck_fast.step_sweep(p, g, X, Y))\n"
        "assert 'matplotlib' not in sys.modules, 'imported before a picture'\n"
        "fig = r.plot()\n"
        "assert type(fig).__module__ == 'matplotlib.figure', type(fig)\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


# ---------------------------------------------------------------------------------------------
# The CLI and the README picture
# ---------------------------------------------------------------------------------------------
def _env():
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MPLBACKEND"] = "Agg"  # no display: as in CI (the package never needs a backend)
    return env


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_the_cli_writes_the_seed_reports_picture(tmp_path):
    target = tmp_path / "report.png"
    done = subprocess.run([sys.executable, "-m", "gradcheck_fast", "--plot", str(target)],
                          cwd=ROOT, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "dW2, db1 wrong" in done.stdout
    data = target.read_bytes()
    width, height = _png_size(data)
    fig = gradcheck_fast.check_gradients(*_seed(faulty=True)).plot()
    assert (width, height) == (round(fig.bbox.width), round(fig.bbox.height))
    assert 10_000 < len(data) < 150_000
    image = matplotlib.image.imread(target)
    red = np.all(np.abs(np.round(image[..., :3] * 255) - WRONG_RGB) <= 2, axis=-1)
    assert red.sum() > 1000  # the wrong cells of dW2 and db1 (each tens of pixels wide)


def test_the_cli_without_matplotlib_says_what_to_install(tmp_path):
    target = tmp_path / "report.png"
    code = ("import sys\n"
            "sys.modules['matplotlib'] = None\n"
            "from gradcheck_fast.__main__ import main\n"
            f"sys.exit(main(['--plot', {str(target)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, env=_env(), timeout=300)
    assert done.returncode == 1
    assert 'pip install "gradcheck-fast[plot]"' in done.stderr
    assert not target.exists()


def test_the_readme_picture_is_committed_small_and_the_clis_size():
    data = (ROOT / "docs" / "seed_report.png").read_bytes()
    assert len(data) < 150_000
    fig = gradcheck_fast.check_gradients(*_seed(faulty=True)).plot()
    assert _png_size(data) == (round(fig.bbox.width), round(fig.bbox.height))


def test_any_layout_is_drawn_a_3d_block_folded_and_a_scalar_as_a_strip():
    """A custom cost's dict parameters: a (2, 3, 4) block (its last two axes folded into the
    columns), a scalar, and one wrong element, drawn where it is."""
    params = {"T": np.linspace(-1.0, 1.0, 24).reshape(2, 3, 4), "s": np.array(0.5)}

    def cost(p):
        return float(np.sum(p["T"] ** 2) * p["s"])

    grads = {"T": 2.0 * params["T"] * params["s"], "s": np.array(np.sum(params["T"] ** 2))}
    grads["T"][1, 2, 3] *= 3.0
    report = gradcheck_fast.check(cost, params, grads)
    assert report.failed_blocks == ["dT"]
    fig = report.plot()
    overlay = _axes_titled(fig, "dT").images[1].get_array()
    assert overlay.shape == (2, 12, 4)  # rows: the first axis; columns: 3 x 4
    red = np.all(np.isclose(overlay, to_rgba(plot.WRONG)), axis=-1)
    assert np.argwhere(red).tolist() == [[1, 2 * 4 + 3]]
    assert _axes_titled(fig, "ds").images[0].get_array().shape == (1, 1)
