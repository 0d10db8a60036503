"""How long the engines take per checked coordinate: the time model behind the choice of
threads and pieces and behind estimate_cost.

Rates measured on the development machine (2 cores, AVX-512, numba 0.68, OpenBLAS on one
thread, see the README); good to a small factor elsewhere.
"""

from __future__ import annotations

import functools

import numpy as np

from .._schedule import PRODUCT_SECONDS, SERIAL_SECONDS
from ..activations import REGISTRY

#: Seconds per multiply-add of the BLAS products on one thread (the forward pass, the
#: sensitivities, the layer sweep's products and the directional probes).
BLAS_S_PER_MAC = PRODUCT_SECONDS

#: Seconds per (parameter x sample) of the incremental engine's per-coordinate kernel on one
#: thread (both steps), plus, for the output layer's parameters, seconds per (parameter x
#: sample x output) (a hidden layer's parameters reach the loss through one composed cubic
#: per sample, whatever the number of outputs).
INCREMENTAL_S_PER_SAMPLE = 1.2e-8
INCREMENTAL_S_PER_OUTPUT = 1.1e-9

#: Seconds per (unit of a later layer x unit x sample) of the incremental engine's set-up
#: behind tanh/sigmoid layers: the forward-mode Taylor coefficients V2, V3
#: (:func:`.incremental._series`, NumPy elementwise work and three BLAS products).
SERIES_S_PER_ELEMENT = 1.2e-8

#: Seconds per multiply-add of the exact engine and of the incremental engine's explicit
#: propagation (strict IEEE loops, one thread).
EXACT_S_PER_FLOP = 1.0 / 1.5e9

#: Seconds per element of the set-up's NumPy elementwise passes (activations, masks, |W|,
#: reciprocals, floors, copies).
ELEMENT_S = 1e-9

#: The kink radii (:func:`.incremental._radii`), one thread, per sample: a later ReLU layer q
#: of at most :data:`SCAN_ALL` units is scanned whole against each earlier
#: hidden layer l, RADII_S_PER_ELEMENT per (unit of q x unit of l); a wider one in rounds of
#: its units nearest their kinks, tens of them, RADII_S_PER_UNIT per unit of l and of q
#: (measured: 1.1 to 2.3e-8 per unit on 1024- to 4096-wide layers at m = 64, less on
#: narrower ones, whose rounds stop sooner).
RADII_S_PER_ELEMENT = 1.5e-9
RADII_S_PER_UNIT = 1.5e-8

#: Seconds per (hidden unit x sample x output) of the composed cubics
#: (:func:`.incremental._composed`), one thread (measured 2.0-2.5e-9 from the mnist-size
#: network to 4096-4096-4096-10).
COMPOSED_S_PER_ELEMENT = 2.5e-9

#: The layer sweep by unit rows (:func:`.layer_sweep._sweep_rows`), one thread: seconds per
#: (unit x input x sample) (five multiply-adds, vectorised over the inputs), per (unit x
#: sample) (its records), per parameter, and per call (the tables and launches). Fitted to
#: 14 networks from 20-10-5 (m = 16) to 784-256-128-10 (m = 64), within 10 %.
SWEEP_S_PER_TRIPLE = 6.5e-10
SWEEP_S_PER_RECORD = 6e-9
SWEEP_S_PER_PARAM = 3.7e-9
SWEEP_S = 1.6e-5

#: The layer sweep by matrix products (:func:`.layer_sweep._matrix_sweep`), one thread:
#: seconds per (unit x sample) (its records: measured 1.1e-8 on the mnist-size network, up to
#: 1.6e-8 on 4096-wide layers), per (input x sample) of each layer (its powers and the
#: tables), per parameter (the assembly and the largest step), per layer and per call (NumPy
#: calls, launches), besides MATRIX_PRODUCTS products per layer at BLAS_S_PER_MAC. Fitted to 21
#: networks from 8-8-4 (m = 16) to 4096-4096-4096-10 (m = 64): within 1.4x but for those
#: whose inputs by sample outgrow the caches (784-256-128-10 at m = 512, 3072-128-10 at
#: m = 256: 0.7x).
MATRIX_S_PER_RECORD = 1.1e-8
MATRIX_S_PER_INPUT = 7e-9
MATRIX_S_PER_PARAM = 1.4e-9
MATRIX_S_PER_LAYER = 6e-6
MATRIX_S = 2.2e-5

#: The matrix sweep's products per layer at the default step: P1 and P2 (the cubic term's P3
#: is left out where it stays below rounding, :func:`.layer_sweep._cubic_negligible`: every
#: layer of the benchmark networks at epsilon = 1e-7; at 1e-5 it is formed too).
MATRIX_PRODUCTS = 2

#: The layer sweep over a subset of parameters (:func:`.layer_sweep._sweep_slots`), one
#: thread: seconds per (parameter x sample) (measured 3 ns on 64-32-16-4, where the subset's
#: parameters share their units' records, to 19 ns on 4096-4096-4096-10, where each has its
#: own unit), and its tables, per parameter and per (input x sample) of each layer.
SLOT_S_PER_SAMPLE = 8e-9
TABLES_S_PER_PARAM = 8e-10
TABLES_S_PER_INPUT = 2.5e-9

#: Seconds per checked coordinate of the engine's last step (:func:`._common.finish_change`:
#: the L2 term, the difference over the steps taken, the noise, finiteness; in the matrix
#: sweep's assembly, measured 0.7 ns there, or a pass of its own, 1.3 ns on fresh memory).
FINISH_S_PER_COORDINATE = 1.3e-9


def _triples(sizes) -> int:
    """Weights of the network: (unit x input) pairs over its layers."""
    return sum(int(n) * int(n_prev) for n_prev, n in zip(sizes[:-1], sizes[1:]))


def _parameters(sizes) -> int:
    """Parameters of the network: each unit's weights and bias."""
    return sum(int(n) * (int(n_prev) + 1) for n_prev, n in zip(sizes[:-1], sizes[1:]))


@functools.lru_cache(maxsize=256)
def sweep_row_seconds(sizes: tuple[int, ...], m: int) -> float:
    """Mean seconds of one unit row of the row loops' sweep on one thread (for the choice of
    threads and pieces)."""
    rows = sum(sizes[1:])
    return m * (SWEEP_S_PER_TRIPLE * _triples(sizes) / rows + SWEEP_S_PER_RECORD)


@functools.lru_cache(maxsize=256)
def row_sweep_seconds(sizes: tuple[int, ...], m: int) -> float:
    """Seconds of the full sweep by unit rows on one thread."""
    return (SWEEP_S + sum(sizes[1:]) * sweep_row_seconds(sizes, m)
            + SWEEP_S_PER_PARAM * _parameters(sizes))


@functools.lru_cache(maxsize=256)
def matrix_sweep_seconds(sizes: tuple[int, ...], m: int) -> float:
    """Seconds of the full sweep by matrix products on one thread."""
    n_layers = len(sizes) - 1
    P = _parameters(sizes)
    return (MATRIX_S + n_layers * MATRIX_S_PER_LAYER + m * sum(sizes[1:]) * MATRIX_S_PER_RECORD
            + m * sum(sizes[:-1]) * MATRIX_S_PER_INPUT + P * MATRIX_S_PER_PARAM
            + MATRIX_PRODUCTS * m * P * BLAS_S_PER_MAC)


def full_sweep_seconds(sizes: tuple[int, ...], m: int, matrix: bool) -> float:
    """Seconds of the full sweep on one thread, by matrix products (``matrix``) or unit rows
    (:func:`.layer_sweep.matrix_pays` decides which runs)."""
    return matrix_sweep_seconds(sizes, m) if matrix else row_sweep_seconds(sizes, m)


def matrix_faster(sizes: tuple[int, ...], m: int) -> bool:
    """Whether the full sweep by matrix products is expected to take less time than by unit
    rows (measured crossover: ~1e5 multiply-adds; 64-32-16-4 takes either in 90 us at
    m = 32, and 113 us against 155 by unit rows at m = 64)."""
    return matrix_sweep_seconds(sizes, m) < row_sweep_seconds(sizes, m)


def sweep_check_seconds(sizes, m: int, counts: np.ndarray, full: bool,
                        explicit_fraction=None, slow_fraction=None,
                        matrix: bool = False) -> float:
    """Seconds of the incremental engine's changes for ``counts[l]`` coordinates of each layer
    l (every one: ``full``, by matrix products if ``matrix``), both steps, one thread: the
    layer sweep (every unit row, or one slot per coordinate of a subset), the per-coordinate
    path of the explicit ones, ``explicit_fraction[l]`` of layer l's parameters (a sample
    beyond its limit, counted by :func:`.layer_sweep.explicit_parameters`; None: none), whose
    samples take the explicit propagation in the share ``slow_fraction`` (see
    :func:`incremental_layer_seconds`), and the last pass over the coordinates."""
    sizes = tuple(int(n) for n in sizes)
    n = float(np.sum(counts))
    if full:
        sweep = full_sweep_seconds(sizes, m, matrix)
    else:
        sweep = tables_seconds(sizes, m) + n * sweep_slot_seconds(m)
    sweep += n * FINISH_S_PER_COORDINATE
    if explicit_fraction is None:
        return sweep
    explicit = counts * np.asarray(explicit_fraction, dtype=float)
    return sweep + float(explicit @ incremental_layer_seconds(sizes, m, slow_fraction))


def sweep_slot_seconds(m: int) -> float:
    """Seconds of one parameter of a sweep over a subset of parameters (its unit's records,
    shared with the unit's other parameters in the subset, and its input's sums)."""
    return m * SLOT_S_PER_SAMPLE


def tables_seconds(sizes, m: int) -> float:
    """Seconds of a sweep's tables (:func:`.layer_sweep.tables`, one thread): every layer's
    inputs by sample, and the largest step over every parameter."""
    return (TABLES_S_PER_PARAM * _parameters(sizes)
            + TABLES_S_PER_INPUT * m * sum(int(n) for n in sizes[:-1]))


#: Up to this many multiply-adds, the incremental engine's unperturbed pass is the exact
#: engine's jitted loops rather than NumPy's BLAS products (measured: the small example network,
#: 8e3, 7 us against 22; the medium one, 3.3e5, 192 us against 41).
JIT_FORWARD_MACS = 1 << 15


def forward_macs(sizes: tuple[int, ...], m: int) -> int:
    """Multiply-adds of one forward pass of m samples."""
    return m * _triples(sizes)


def _later_pairs(sizes, l: int) -> int:
    """Multiply-adds of one sample's pass through the layers after layer l."""
    return sum(int(sizes[q]) * int(sizes[q + 1]) for q in range(l, len(sizes) - 1))


def exact_seconds(sizes, m: int) -> float:
    """Mean seconds per coordinate of the exact engine (both steps, one thread): one row of
    the perturbed layer and, for the samples it changes (at most m), the layers after it."""
    if not isinstance(sizes, tuple):
        sizes = tuple(int(s) for s in sizes)
    return _exact_seconds(sizes, int(m))


@functools.lru_cache(maxsize=256)
def _exact_seconds(sizes: tuple[int, ...], m: int) -> float:
    return _mean_over_coordinates(sizes, exact_layer_seconds(sizes, m))


def _mean_over_coordinates(sizes, per_layer) -> float:
    """The mean of ``per_layer[l]`` (seconds per coordinate of layer l) over all coordinates."""
    counts = [int(sizes[l]) * (int(sizes[l - 1]) + 1) for l in range(1, len(sizes))]
    return float(sum(c * s for c, s in zip(counts, per_layer[1:])) / sum(counts))


def exact_layer_seconds(sizes, m: int) -> np.ndarray:
    """Per layer l (index 1..L; 0 unused), seconds per coordinate of the exact engine (both
    steps, one thread)."""
    sizes = [int(s) for s in sizes]
    seconds = np.zeros(len(sizes))
    for l in range(1, len(sizes)):
        seconds[l] = 2 * m * (sizes[l - 1] + _later_pairs(sizes, l)) * EXACT_S_PER_FLOP
    return seconds


def incremental_seconds(sizes, m: int, slow_fraction=None) -> float:
    """Mean seconds per coordinate of the incremental engine (both steps, one thread).

    ``slow_fraction[l]``: the share of samples whose change at hidden layer l cannot be shown
    to leave the later ReLUs on their side, which are propagated explicitly (deep networks).
    """
    return _mean_over_coordinates(sizes, incremental_layer_seconds(sizes, m, slow_fraction))


@functools.lru_cache(maxsize=64)
def incremental_worst_seconds(sizes: tuple[int, ...], m: int) -> float:
    """:func:`incremental_seconds` when every sample takes the explicit path (a bound, cached:
    the small checks ask for it on every call)."""
    return incremental_seconds(sizes, m, np.ones(len(sizes)))


def incremental_layer_seconds(sizes, m: int, slow_fraction=None) -> np.ndarray:
    """Per layer l (index 1..L; 0 unused), seconds per coordinate of the incremental engine
    (both steps, one thread); ``slow_fraction`` as for :func:`incremental_seconds`."""
    sizes = [int(s) for s in sizes]
    n_out = sizes[-1]
    seconds = np.zeros(len(sizes))
    for l in range(1, len(sizes)):
        per_sample = INCREMENTAL_S_PER_SAMPLE
        if l == len(sizes) - 1:
            per_sample += n_out * INCREMENTAL_S_PER_OUTPUT
        seconds[l] = m * per_sample
        if slow_fraction is not None and l < len(sizes) - 1:
            seconds[l] += slow_fraction[l] * 2 * m * _later_pairs(sizes, l) * EXACT_S_PER_FLOP
    return seconds


def forward_seconds(sizes, m: int) -> float:
    """Seconds of one unperturbed forward pass with BLAS (:func:`.incremental.forward`):
    the products and the activations."""
    sizes = [int(s) for s in sizes]
    return forward_macs(sizes, m) * BLAS_S_PER_MAC + 2 * m * sum(sizes) * ELEMENT_S


#: A later layer of at most this many units is scanned whole by the kink radii (its rounds'
#: tests and floors would cost more than they save: 5 us more set-up on the small example
#: network).
SCAN_ALL = 64


def radii_sample_seconds(sizes, kinked) -> float:
    """Seconds per sample of the kink radii (:func:`.incremental._radii`, one thread): each
    hidden layer l against each later hidden layer q in ``kinked`` (the layers with a kink),
    scanned whole (narrow q) or in rounds."""
    sizes = [int(s) for s in sizes]
    seconds = 0.0
    for q in kinked:
        for l in range(1, q):
            if sizes[q] <= SCAN_ALL:
                seconds += sizes[q] * sizes[l] * RADII_S_PER_ELEMENT
            else:
                seconds += (sizes[q] + sizes[l]) * RADII_S_PER_UNIT
    return seconds


def composed_sample_seconds(sizes) -> float:
    """Seconds per sample of the composed cubics (:func:`.incremental._composed`, one
    thread): every hidden unit against every output."""
    return sum(int(s) for s in sizes[1:-1]) * int(sizes[-1]) * COMPOSED_S_PER_ELEMENT


def prepare_seconds(sizes, m: int, hidden, speed: float = 1.0) -> float:
    """Seconds of the incremental engine's set-up (:func:`.incremental.prepare`) for a
    network with the hidden activations ``hidden`` (one name per hidden layer); ``speed``: the
    parallel speed-up of its parts that run on several threads when large (the products, the
    radii and the composed cubics).

    The forward pass; the sensitivities ``V_l = W_{l+1}^T (mask V_{l+1})`` (one BLAS product per
    hidden layer over ``m x n_out`` columns); the derivative bounds ``B_{q<-l}`` (|W| and
    products of them), their reciprocals and floors; the radii; the series behind curved
    layers; the composed cubics (per hidden unit, sample and output).
    """
    sizes = [int(s) for s in sizes]
    n_layers = len(sizes) - 1
    n_out = sizes[-1]
    hidden_units = sum(sizes[1:-1])
    kinked = [q for q in range(1, n_layers) if REGISTRY[hidden[q - 1]].kink]
    macs = m * n_out * sum(sizes[l] * sizes[l + 1] for l in range(1, n_layers - 1))
    elements = 2 * m * n_out * hidden_units  # masks and copies of V
    for l in range(1, n_layers - 1):
        for q in range(l + 1, n_layers):
            elements += sizes[q] * sizes[l]  # |W| or the product's scaling, reciprocal, floor
            if q > l + 1:
                macs += sizes[q] * sizes[q - 1] * sizes[l]
    parts = (forward_seconds(sizes, m), macs * BLAS_S_PER_MAC,
             m * radii_sample_seconds(sizes, kinked), m * composed_sample_seconds(sizes))
    return (sum(on_threads(part, speed) for part in parts) + elements * ELEMENT_S
            + series_seconds(sizes, m, hidden))


def on_threads(seconds: float, speed: float) -> float:
    """``seconds`` of one-thread work on the threads the engine gives it: one below the serial
    threshold (:data:`gradcheck_fast._schedule.SERIAL_SECONDS`), else all of them, at the
    parallel speed-up ``speed``."""
    return seconds if seconds < SERIAL_SECONDS else seconds / speed


def series_seconds(sizes, m: int, hidden) -> float:
    """Seconds of the incremental engine's extra set-up for the curved layers among
    ``hidden`` (one activation name per hidden layer): for every hidden layer l with a smooth
    layer after it, the Taylor coefficients of each later layer q, ``n_q x n_l x m`` of them."""
    sizes = [int(s) for s in sizes]
    smooth = [REGISTRY[name].curved for name in hidden]
    elements = 0
    for l in range(1, len(sizes) - 2):
        if any(smooth[l:]):
            elements += sum(sizes[q] for q in range(l + 1, len(sizes) - 1)) * sizes[l] * m
    return elements * SERIES_S_PER_ELEMENT
