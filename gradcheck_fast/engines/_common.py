"""What every engine shares: the result type (:class:`Costs`), running a kernel over an index
range in pieces (threads, progress, Ctrl-C), and the flat coordinate decoder of the MLP family."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import _schedule
from .._console import progress_bar
from .._jit import jit
from .._schedule import bare, run_on, threads_for
from .._steps import numpy_steps, steps_taken
from ..noise import SIGMA_FACTOR

#: Unit roundoff of float64.
_U = 2.0**-53


# ---------------------------------------------------------------------------------------------
# What the kernels take: a few named tuples (numba unpacks them at no cost inside a kernel)
# ---------------------------------------------------------------------------------------------
class Network(NamedTuple):
    """The MLP's layout for the kernels (int64 arrays): ``sizes[l]`` the width of layer l
    (``sizes[0]`` the inputs), ``w_off[l]``/``b_off[l]`` where ``Wl``/``bl`` start in theta,
    ``act_off[l]`` where layer l's ``(n_l, m)`` activations start in the flat Z and A."""

    sizes: np.ndarray
    w_off: np.ndarray
    b_off: np.ndarray
    act_off: np.ndarray

    @classmethod
    def of(cls, layout, m: int) -> Network:
        """The bundle of an :class:`~gradcheck_fast.layout.MLPLayout` for m samples."""
        return cls(layout.sizes, layout.w_off, layout.b_off, layout.activation_offsets(m))


class Codes(NamedTuple):
    """The model for the kernels: ``acts[l]`` the activation code of hidden layer l
    (:mod:`gradcheck_fast.activations`), ``out`` the output+loss code
    (:mod:`gradcheck_fast.losses`), leaky ReLU's ``slope`` and the L2 weight ``l2``."""

    acts: np.ndarray
    out: int
    slope: float
    l2: float

    @classmethod
    def of(cls, model, n_layers: int) -> Codes:
        """The bundle of a :class:`gradcheck_fast.MLP` for a network of n_layers layers."""
        return cls(model.codes(n_layers), model.output_code, model.leaky_slope, model.l2)


class Request(NamedTuple):
    """What to compute: slot k is parameter ``idx[k]`` of ``theta``, perturbed by +-epsilon."""

    idx: np.ndarray
    theta: np.ndarray
    epsilon: float


# Not frozen: nothing changes a Costs once built (dataclasses.replace makes a new one), and a
# frozen dataclass's construction costs 2.5 us against 0.6, on the seed check's path.
@dataclass
class Costs:
    """What a central-difference check is built from (flat arrays in layout order).

    Attributes
    ----------
    J : the unperturbed cost.
    J_plus, J_minus : J(theta + epsilon e_i) and J(theta - epsilon e_i) (properties: stored
        as ``_J_plus``/``_J_minus``, or None where they are ``J + dJ_plus`` and ``J +
        dJ_minus``, formed when first read; the incremental engine keeps only the changes).
    dJ_plus, dJ_minus : their changes from J. The incremental engine computes these directly
        (accurate relative to the change); the exact engine by subtraction.
    gradapprox : ``(dJ_plus - dJ_minus) / (2 epsilon)``; for the exact engine this is the
        seed's ``(J_plus - J_minus) / (2 epsilon)``.
    resolution : per index, a bound on the rounding error of ``J_plus - J_minus`` from the
        loss evaluations the perturbations changed.
    kinks : per index, how many (sample, hidden unit) pairs crossed a ReLU kink in the two steps
        (a custom cost: 1 where its values show a kink that explains a failure, else 0).
    engine : "exact", "incremental", "numba" or "python" (a user's cost), for the report.
    indices : the parameter indices the arrays refer to, in order (all of them for a full check).
    noise_source : per index, the engine's bound on the rounding error of gradapprox (gradient
        units), or a function that computes it when first asked for (:attr:`noise`): what its
        J+- or changes carry, each engine by its own analysis (:func:`full_cost_noise` for two
        full costs, which measures J's noise with extra passes that a bare difference, as
        gradient_check_n's, does not need; the incremental engine's changes carry only
        ``resolution``).
    kink : what a kink is for this engine, in words ("a ReLU kink"), for the report.
    truncation : per index, a bound on the truncation error of gradapprox, inf where none can
        be claimed (large steps only; see :mod:`gradcheck_fast.truncation`), or None.
    explicit : the incremental engine: how many of the indices its layer sweep left to the
        per-coordinate path (a sample beyond its limit); None for the other engines.
    finite_memo : ``(dJ_plus, dJ_minus, finite)``: :meth:`finite` of these very arrays, where
        an engine formed it in a pass it made anyway (used only while ``dJ_plus`` and
        ``dJ_minus`` are these arrays and J+- are not stored: a Costs made from this one by
        ``dataclasses.replace`` with other arrays forms its own).
    """

    J: float
    _J_plus: np.ndarray | None
    _J_minus: np.ndarray | None
    dJ_plus: np.ndarray
    dJ_minus: np.ndarray
    gradapprox: np.ndarray
    resolution: np.ndarray
    kinks: np.ndarray
    engine: str
    indices: np.ndarray
    noise_source: np.ndarray | Callable[[], np.ndarray]
    kink: str = "a ReLU kink"
    truncation: np.ndarray | None = None
    explicit: int | None = None
    finite_memo: tuple | None = None

    @property
    def J_plus(self) -> np.ndarray:
        if self._J_plus is None:
            self._J_plus = self.J + self.dJ_plus
        return self._J_plus

    @property
    def J_minus(self) -> np.ndarray:
        if self._J_minus is None:
            self._J_minus = self.J + self.dJ_minus
        return self._J_minus

    def finite(self) -> np.ndarray:
        """Per index, whether J_plus and J_minus are both finite (formed without them when
        they are J + dJ)."""
        if self._J_plus is None and self._J_minus is None:
            memo = self.finite_memo
            if memo is not None and memo[0] is self.dJ_plus and memo[1] is self.dJ_minus:
                return memo[2]
            finite = np.empty(self.dJ_plus.shape[0], dtype=np.bool_)
            _finite_sums(float(self.J), self.dJ_plus, self.dJ_minus, finite)
            return finite
        return np.isfinite(self.J_plus) & np.isfinite(self.J_minus)

    @functools.cached_property
    def noise(self) -> np.ndarray:
        """The engine's rounding bound of gradapprox per index (see ``noise_source``)."""
        source = self.noise_source
        return source() if callable(source) else source


class Finish(NamedTuple):
    """The last step of the incremental engine's changes, per slot (:func:`finish_change`):
    what it takes -- J, the L2 term's ``l2 / (2 m)`` (0: none) and per parameter whether it is
    a weight (the L2 term's) -- and the arrays it writes: the central difference
    ``gradapprox``, its ``noise`` bound and whether J+- are ``finite``."""

    J: float
    l2_scale: float
    weight: np.ndarray
    gradapprox: np.ndarray
    noise: np.ndarray
    finite: np.ndarray


@jit(inline=True)
def finish_change(plus, minus, resolution, w, epsilon, l2, J):
    """The last step for one parameter at ``w`` (the one home of it): the L2 term's change
    added to the changes ``plus`` and ``minus`` (J+- - J, data part), exactly ``l2 d (2 w +
    d)`` for a step d (``l2``: l2 / (2 m) for a weight, else 0); the central difference, their
    difference over the steps really taken (0 where the step rounds to 0); its noise bound
    ``resolution / (2 epsilon)``; whether J+- are both finite. Returns ``(plus, minus,
    gradapprox, noise, finite)``."""
    d_plus, d_minus = steps_taken(w, epsilon)
    if l2 != 0.0:  # (a zero l2 times an infinite term would be NaN)
        plus += l2 * (d_plus * (2.0 * w + d_plus))
        minus += l2 * (d_minus * (2.0 * w + d_minus))
    step = d_plus - d_minus
    gradapprox = (plus - minus) / step if step > 0 else 0.0
    finite = math.isfinite(J + plus) and math.isfinite(J + minus)
    return plus, minus, gradapprox, resolution / (2.0 * epsilon), finite


@jit
def finish_slots(values, t, epsilon, finish, indices):
    """:func:`finish_change` for every slot k (parameter ``indices[k]`` at ``t[k]``):
    ``values[0:2]`` (the changes) in place, ``finish``'s arrays (:class:`Finish`) by slot."""
    J, l2_scale, weight, gradapprox, noise, finite = finish
    plus, minus, resolution = values[0], values[1], values[2]
    for k in range(t.shape[0]):
        l2 = l2_scale if l2_scale != 0.0 and weight[indices[k]] else 0.0
        plus[k], minus[k], gradapprox[k], noise[k], finite[k] = finish_change(
            plus[k], minus[k], resolution[k], t[k], epsilon, l2, J)


@jit
def _finite_sums(J, dJ_plus, dJ_minus, finite):
    """``finite[i]``: J + dJ_plus[i] and J + dJ_minus[i] are both finite."""
    for i in range(finite.shape[0]):
        finite[i] = math.isfinite(J + dJ_plus[i]) and math.isfinite(J + dJ_minus[i])


def full_cost_noise(J_plus: np.ndarray, J_minus: np.ndarray, resolution: np.ndarray,
                    gradapprox: np.ndarray, theta: np.ndarray, epsilon: float, m: int,
                    sigma: float) -> np.ndarray:
    """The rounding bound of ``gradapprox = (J_plus - J_minus) / (2 epsilon)`` when J+- are two
    full costs (the exact engine, a user's cost), per index (``theta``: those coordinates):

    - ``resolution / (2 epsilon)``: the losses the two perturbations changed;
    - the steps: the seed divides by 2 epsilon, but the steps really taken are
      ``fl(theta_i +- epsilon) - theta_i``, off by up to an ulp of theta_i each (infinite
      where they round to 0);
    - the final sums of m per-sample losses round differently after the first changed sample:
      at most (m + 1) ulps of each J (a bound, which ECnoise cannot give when J happens to round
      regularly);
    - ``SIGMA_FACTOR * sigma / epsilon`` for the rest, sigma being J's ECnoise estimate
      (:mod:`gradcheck_fast.noise`; 0 or NaN: none).
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d_plus, d_minus = numpy_steps(theta, epsilon)
        step = d_plus - d_minus
        step_error = np.where(step > 0, np.abs(step - 2.0 * epsilon) / step, np.inf)
        sums = (m + 1) * _U * (np.abs(J_plus) + np.abs(J_minus)) / (2.0 * epsilon)
        measured = SIGMA_FACTOR * sigma / epsilon if math.isfinite(sigma) else 0.0
        return (resolution / (2.0 * epsilon) + step_error * np.abs(gradapprox) + sums
                + measured)


#: The index range is handed to the kernels in pieces of about this much one-thread work:
#: Ctrl-C is acted on between pieces (a kernel cannot be interrupted) and a progress bar can
#: move. Each piece is one parallel region, and on a busy machine each region may wait for a
#: descheduled thread, so pieces are few: ~0.1 s of work, i.e. a prompt Ctrl-C.
PIECE_SECONDS = 0.1

#: With a progress bar, at least this many pieces (the bar moves in steps of 1/20 at most).
PROGRESS_PIECES = 20


def run_kernel(serial, parallel, P: int, seconds: float, args: tuple, progress: bool,
               params_before: Callable[[int], int] | None = None) -> None:
    """Run ``serial(lo, hi, *args)`` or ``parallel(lo, hi, n_chunks, n_workers, schedule,
    *args)`` over the items [0, P) (seconds: the expected time per item on one thread;
    ``parallel=None`` runs everything serially, e.g. a plain Python callable; the progress bar
    counts parameters: ``params_before(k)`` of them are done with the items before k, k by
    default).

    Small work runs on one thread in one call; larger work in pieces, returning to Python (and
    so to KeyboardInterrupt and the progress bar) between them. A parallel piece holds at
    least one item per thread, so every thread has work whatever an item costs; after a piece
    that waited for a late thread the next ones run serially (see
    :mod:`gradcheck_fast._schedule`). Which thread computes which item never changes a result:
    every item writes only its own slots.
    """
    args = tuple(map(bare, args))
    total = P * seconds
    if runs_at_once(P, seconds, progress):
        serial(0, P, *args)  # one call on one thread, whatever the machine (the common case)
        return
    n_threads = 1 if parallel is None else max(1, min(threads_for(total), P))
    n_pieces = max(1, math.ceil(total / PIECE_SECONDS))
    if progress:
        # More pieces for the bar; parallel ones no smaller than the work a region pays for.
        n_pieces = max(n_pieces, PROGRESS_PIECES if n_threads == 1 else min(
            PROGRESS_PIECES, math.floor(total / _schedule.SERIAL_SECONDS)))
    n_pieces = min(n_pieces, max(1, P // n_threads))
    done = params_before or (lambda k: k)
    bar = _progress_bar(done(P)) if progress else None
    serial_pieces = 0  # after a region that waited for a late thread, serial pieces
    try:
        for k in range(n_pieces):
            lo, hi = k * P // n_pieces, (k + 1) * P // n_pieces
            if serial_pieces > 0:
                serial_pieces -= 1
                run_on(serial, parallel, lo, hi, 1, args, (hi - lo) * seconds)
            elif not run_on(serial, parallel, lo, hi, n_threads, args, (hi - lo) * seconds):
                serial_pieces = _schedule.PROBE_EVERY - 1
            if bar is not None:
                bar.update(done(hi) - done(lo))
    finally:
        if bar is not None:
            bar.close()


@functools.lru_cache(maxsize=16)
def all_indices(P: int) -> np.ndarray:
    """``np.arange(P)``, read-only and kept: the indices of a full check of P parameters."""
    indices = np.arange(P)
    indices.flags.writeable = False
    return indices


def runs_at_once(P: int, seconds: float, progress: bool) -> bool:
    """Whether :func:`run_kernel` runs P items of ``seconds`` each as one call on one thread:
    small work without a progress bar (an engine may then fuse its set-up into that call)."""
    return not progress and P * seconds < _schedule.SERIAL_SECONDS


def _progress_bar(total: int):
    return progress_bar(total)


@jit
def locate(i, sizes, w_off, b_off):
    """Where flat index i is: ``(layer l, row r, column c, is_bias)`` (c = 0 for a bias)."""
    n_layers = sizes.shape[0] - 1
    l = 1
    while l < n_layers and i >= w_off[l + 1]:
        l += 1
    n_prev = sizes[l - 1]
    is_bias = i >= b_off[l]
    r = i - b_off[l] if is_bias else (i - w_off[l]) // n_prev
    c = 0 if is_bias else (i - w_off[l]) % n_prev
    return l, r, c, is_bias
