"""How long the engines take per checked coordinate: the time model behind the choice of
threads and pieces and behind estimate_cost.

Rates measured on the development machine (2 cores, AVX-512, numba 0.68, OpenBLAS on one
thread, see the README); good to a small factor elsewhere.
"""

from __future__ import annotations

import functools

import numpy as np

from ..activations import REGISTRY

#: Seconds per floating-point operation of the BLAS products (one thread) in the set-up of
#: the incremental engine and in the directional probes.
BLAS_S_PER_FLOP = 1.0 / 35e9

#: Seconds per (parameter x sample) of the incremental engine's loop on one thread (both
#: steps), plus, for the output layer's parameters, seconds per (parameter x sample x output)
#: (a hidden layer's parameters reach the loss through one composed cubic per sample,
#: whatever the number of outputs).
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
#: reciprocals, copies).
ELEMENT_S = 1e-9

#: Seconds per (unit of hidden layer l x unit of a later ReLU layer q x sample) of the kink
#: radii (:func:`.incremental._radii`), one thread: on wide deep networks the largest
#: part of the incremental engine's set-up. The bound matrix B_{q<-l} is read once per sample:
#: from the cache while it fits (RADII_CACHE_ELEMENTS, 8 MB), from memory, about twice as
#: slowly, beyond (measured: 1024-wide layers 1.5 ns, 2048- and 4096-wide 3.1 ns).
RADII_S_PER_ELEMENT = 1.5e-9
RADII_S_PER_ELEMENT_STREAMED = 3e-9
RADII_CACHE_ELEMENTS = 1 << 20

#: Seconds per (hidden unit x sample x output) of the composed cubics
#: (:func:`.incremental._composed`), one thread.
COMPOSED_S_PER_ELEMENT = 2.5e-8


#: Seconds per (unit x input x sample) of the incremental engine's layer sweep
#: (:mod:`.layer_sweep`: five multiply-adds, vectorised over the inputs) and per (unit x sample) of
#: its records, one thread.
SWEEP_S_PER_TRIPLE = 1.0e-9
SWEEP_S_PER_RECORD = 2.0e-8


@functools.lru_cache(maxsize=256)
def sweep_row_seconds(sizes: tuple[int, ...], m: int) -> float:
    """Mean seconds of one unit row of the layer sweep on one thread."""
    rows = sum(sizes[1:])
    triples = sum(sizes[l] * sizes[l - 1] for l in range(1, len(sizes)))
    return m * (SWEEP_S_PER_TRIPLE * triples / rows + SWEEP_S_PER_RECORD)


def sweep_check_seconds(sizes, m: int, counts: np.ndarray, full: bool,
                        explicit_fraction=None, slow_fraction=None) -> float:
    """Seconds of the incremental engine's changes for ``counts[l]`` coordinates of each layer
    l (every one: ``full``), both steps, one thread: the layer sweep (every unit row, or one
    slot per coordinate of a subset) and the per-coordinate path of the explicit ones,
    ``explicit_fraction[l]`` of layer l's parameters (a sample beyond its limit, counted by
    :func:`.layer_sweep.explicit_parameters`; None: none), whose samples take the explicit
    propagation in the share ``slow_fraction`` (see :func:`incremental_layer_seconds`)."""
    sizes = tuple(int(n) for n in sizes)
    if full:
        sweep = sum(sizes[1:]) * sweep_row_seconds(sizes, m)
    else:
        sweep = float(np.sum(counts)) * sweep_slot_seconds(m)
    if explicit_fraction is None:
        return sweep
    explicit = counts * np.asarray(explicit_fraction, dtype=float)
    return sweep + float(explicit @ incremental_layer_seconds(sizes, m, slow_fraction))


def sweep_slot_seconds(m: int) -> float:
    """Seconds of one parameter of a sweep over a subset of parameters (its unit's records,
    shared with the unit's other parameters in the subset, and its input's sums)."""
    return m * (SWEEP_S_PER_RECORD + 5 * SWEEP_S_PER_TRIPLE)


#: Up to this many multiply-adds, the incremental engine's unperturbed pass is the exact
#: engine's jitted loops rather than NumPy's BLAS products (measured: the small example network,
#: 8e3, 7 us against 22; the medium one, 3.3e5, 192 us against 41).
JIT_FORWARD_MACS = 1 << 15


def forward_macs(sizes: tuple[int, ...], m: int) -> int:
    """Multiply-adds of one forward pass of m samples."""
    return m * sum(sizes[l] * sizes[l - 1] for l in range(1, len(sizes)))


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
    pairs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return 2 * m * pairs * BLAS_S_PER_FLOP + 2 * m * sum(sizes) * ELEMENT_S


def radii_sample_seconds(sizes, kinked) -> float:
    """Seconds per sample of the kink radii (:func:`.incremental._radii`, one thread):
    every unit of a hidden layer l against every unit of each later hidden layer q in
    ``kinked`` (the layers with a kink)."""
    sizes = [int(s) for s in sizes]
    seconds = 0.0
    for q in kinked:
        for l in range(1, q):
            block = sizes[q] * sizes[l]
            seconds += block * (RADII_S_PER_ELEMENT if block <= RADII_CACHE_ELEMENTS
                                else RADII_S_PER_ELEMENT_STREAMED)
    return seconds


def composed_sample_seconds(sizes) -> float:
    """Seconds per sample of the composed cubics (:func:`.incremental._composed`, one
    thread): every hidden unit against every output."""
    return sum(int(s) for s in sizes[1:-1]) * int(sizes[-1]) * COMPOSED_S_PER_ELEMENT


def prepare_seconds(sizes, m: int, hidden, speed: float = 1.0) -> float:
    """Seconds of the incremental engine's set-up (:func:`.incremental.prepare`) for a
    network with the hidden activations ``hidden`` (one name per hidden layer); ``speed``: the
    parallel speed-up of its jitted parts (the radii and the composed cubics).

    The forward pass; the sensitivities ``V_l = W_{l+1}^T (mask V_{l+1})`` (one BLAS product per
    hidden layer over ``m x n_out`` columns); the derivative bounds ``B_{q<-l}`` (|W| and
    products of them) and their reciprocals; the radii (every later ReLU unit against every
    unit, per sample); the series behind curved layers; the composed cubics (per hidden unit, sample
    and output).
    """
    sizes = [int(s) for s in sizes]
    n_layers = len(sizes) - 1
    n_out = sizes[-1]
    hidden_units = sum(sizes[1:-1])
    kinked = [q for q in range(1, n_layers) if REGISTRY[hidden[q - 1]].kink]
    flops = 2 * m * n_out * sum(sizes[l] * sizes[l + 1] for l in range(1, n_layers - 1))
    elements = 2 * m * n_out * hidden_units  # masks and copies of V
    for l in range(1, n_layers - 1):
        for q in range(l + 1, n_layers):
            elements += 2 * sizes[q] * sizes[l]  # |W| or the product's scaling, reciprocal
            if q > l + 1:
                flops += 2 * sizes[q] * sizes[q - 1] * sizes[l]
    jitted = m * (radii_sample_seconds(sizes, kinked)
                  + composed_sample_seconds(sizes)) / speed
    return (forward_seconds(sizes, m) + flops * BLAS_S_PER_FLOP + elements * ELEMENT_S
            + jitted + series_seconds(sizes, m, hidden))


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
