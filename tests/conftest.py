"""Shared test data: the seed's published case, random networks, and an independent bound on
the rounding error of the seed's cost.

Helpers are plain functions; tests reach them through the session-scoped fixtures at the end
(session scope keeps them usable inside hypothesis tests).
"""

from __future__ import annotations

import copy

import numba
import numpy as np
import pytest

from gradcheck_fast import reference

#: Unit roundoff of float64.
U = 2.0**-53


def seed_case():
    """The seed's published case ``(X, Y, parameters)`` (NumPy legacy seed 1), fresh arrays."""
    return reference.seed_case()


def random_network(sizes, m, seed, scale=1.0):
    """A random network of widths ``sizes = (n0, n1, ..., nL)`` and ``m`` samples.

    He-style initialisation scaled by ``scale``: ``Wl ~ scale * N(0, 2 / n_{l-1})``,
    ``bl ~ 0.1 * N(0, 1)``; ``X ~ N(0, 1)``; ``Y`` in {0, 1} (float).
    Returns ``(X, Y, parameters)``.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((sizes[0], m))
    Y = (rng.random((sizes[-1], m)) < 0.5).astype(np.float64)
    parameters = {}
    for l in range(1, len(sizes)):
        parameters[f"W{l}"] = scale * np.sqrt(2.0 / sizes[l - 1]) * rng.standard_normal(
            (sizes[l], sizes[l - 1]))
        parameters[f"b{l}"] = 0.1 * rng.standard_normal((sizes[l], 1))
    return X, Y, parameters


def correct_gradients(X, Y, parameters):
    """The gradients of the corrected seed backward pass (with the seed's intermediates)."""
    _, cache = reference.forward_propagation_n(X, Y, parameters)
    return reference.backward_propagation_n(X, Y, cache)


def faulty_gradients(X, Y, parameters):
    """The gradients of the seed's backward pass with its two deliberate mistakes."""
    _, cache = reference.forward_propagation_n(X, Y, parameters)
    return reference.backward_propagation_n_faulty(X, Y, cache)


def hidden_activations(X, parameters, layer):
    """``A_layer`` of the network (``A_0 = X``), by the seed's own forward formulas."""
    A = X
    for l in range(1, layer + 1):
        A = reference.relu(parameters[f"W{l}"] @ A + parameters[f"b{l}"])
    return A


def place_on_kink(X, parameters, layer, row, sample, offset):
    """Return a copy of ``parameters`` whose hidden unit ``row`` of ``layer`` has pre-activation
    ``offset`` (e.g. +-1e-8) at sample ``sample``: a step of 1e-7 on ``b_layer[row]`` (or on a
    weight feeding it) then flips that ReLU."""
    parameters = copy.deepcopy(parameters)
    A_prev = hidden_activations(X, parameters, layer - 1)
    W = parameters[f"W{layer}"]
    parameters[f"b{layer}"][row, 0] = offset - W[row] @ A_prev[:, sample]
    return parameters


def cost_rounding_bound(X, Y, parameters):
    """An upper bound E on |computed J - exact J| for ANY evaluation of the seed's cost that
    follows the seed's formulas in float64, whatever its summation order (numpy's pairwise sums
    and BLAS, or the engine's sequential loops) and whatever exp/log it calls.

    Derivation (first order in u = 2**-53, standard forward error analysis):

    * Pre-activations. ``Z_l = W_l A_{l-1} + b_l`` computed in any order errs by at most
      ``gamma_{n_{l-1}+1} (|W_l| |A_{l-1}| + |b_l|)`` (FMA only lowers that); ReLU is 1-Lipschitz
      and the later layers multiply the error by at most ``|W_L| ... |W_{l+1}|``. With the
      "absolute" network ``Zabs_l = |W_l| Zabs_{l-1} + |b_l|``, ``Zabs_0 = |X|``, the output
      pre-activation errs by at most ``gamma_D Zabs_L``, ``D = sum_l (n_{l-1} + 1)``.
    * A loss term's derivative in z is ``a - y``, so that error costs ``|a - y| gamma_D Zabs``.
    * Evaluating the loss at the computed z, allowing 4 ulp (= 8u) for each exp and log call
      (glibc is below 1 ulp; numpy's SIMD float64 kernels are within a few ulp):
      ``a = 1/(1 + exp(-z))`` has relative error <= 8u + 2u = 10u, so ``-log(a)`` errs by
      10u + 8u |log a|; ``1 - a`` has relative error 10u a / (1 - a) + u (the cancellation when
      the output saturates), so ``-log(1 - a)`` errs by that + 8u |log(1 - a)|. Multiplying by
      y, 1 - y and adding the two terms adds 2u |l_kj| (+ 2u more for y outside {0, 1}).
    * Summing the n_L units of a sample adds n_L u sum_k |l_kj|; summing the m samples in any
      order adds gamma_m sum_j |l_j|; ``1/m`` and the product add 2u |J|.

    Returns ``(E, J)``: E is this bound at ``parameters``; J the reference cost.
    """
    L = len(parameters) // 2
    m = X.shape[1]
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64).reshape(-1, m)
    J, cache = reference.forward_propagation_n(X, Y, parameters)
    a = cache[4 * (L - 1) + 1]
    Zabs = np.abs(X)
    D = 0
    for l in range(1, L + 1):
        W, b = parameters[f"W{l}"], parameters[f"b{l}"]
        Zabs = np.abs(W) @ Zabs + np.abs(b)
        D += W.shape[1] + 1

    def gamma(n):
        return n * U / (1 - n * U)

    ell = -np.log(a) * Y - np.log(1 - a) * (1 - Y)  # per unit and sample
    y, ybar = np.abs(Y), np.abs(1 - Y)
    not_binary = ~((Y == 0) | (Y == 1))
    per_unit = (np.abs(a - Y) * gamma(D) * Zabs
                + y * (10 * U + 8 * U * np.abs(np.log(a)))
                + ybar * (10 * U * a / (1 - a) + U + 8 * U * np.abs(np.log(1 - a)))
                + (2 * U + 2 * U * not_binary) * np.abs(ell))
    n_out = Y.shape[0]
    per_sample = per_unit.sum(axis=0) + n_out * U * np.abs(ell).sum(axis=0)
    E = (per_sample.sum() + gamma(m) * np.abs(ell).sum()) / m + 2 * U * abs(J)
    return float(E), float(J)


def gradapprox_rounding_bound(X, Y, parameters, gradapprox, epsilon):
    """Per coordinate, how far two float64 evaluations of the seed's central difference may
    disagree through rounding alone.

    Each implementation's J(theta +- eps e_i) is within E of the exact value (see
    :func:`cost_rounding_bound`), so two implementations' J+ differ by <= 2E, likewise J-, and
    their gradapprox by <= (2E + 2E) / (2 eps) = 2E / eps. J+ - J- is exact (Sterbenz: J+ and
    J- are within a factor 2), the division by 2 eps adds u |gradapprox| on each side.
    E is evaluated at theta instead of theta +- eps e_i: it is continuous in theta and moves by
    a relative O(eps) = 1e-7 there, covered by the factor 1.01.
    """
    E, _ = cost_rounding_bound(X, Y, parameters)
    return 1.01 * 2 * E / epsilon + 2 * U * np.abs(gradapprox)


def _absolute_forward(X, parameters):
    """Computed Z_l (l = 1..L), A_l (l = 0..L-1) and Zabs_l (l = 0..L; Zabs_0 = |X|)."""
    L = len(parameters) // 2
    X = np.asarray(X, dtype=np.float64)
    A, Zabs, Z = [X], [np.abs(X)], [None]
    for l in range(1, L + 1):
        W, b = parameters[f"W{l}"], parameters[f"b{l}"]
        Z.append(W @ A[-1] + b)
        Zabs.append(np.abs(W) @ Zabs[-1] + np.abs(b))
        if l < L:
            A.append(reference.relu(Z[-1]))
    return Z, A, Zabs


def _D(parameters):
    """Roundings on the way to an output pre-activation: sum over layers of (n_{l-1} + 1)."""
    return sum(parameters[f"W{l}"].shape[1] + 1 for l in range(1, len(parameters) // 2 + 1))


def _gamma(n):
    return n * U / (1 - n * U)


def _step_growth(X, parameters, epsilon):
    """``delta[l][q]``: a bound on max |change of Z_q| when one parameter of layer l moves by
    epsilon (q >= l), as long as no ReLU flips.

    A weight of layer l moves row r of Z_l by epsilon * A_{l-1}[c, j], a bias by epsilon:
    at most epsilon * max(1, max |A_{l-1}|). ReLU is 1-Lipschitz, and layer q maps a change of
    at most d in every entry of A_{q-1} to at most ||W_q||_inf * d (max row sum of |W_q|).
    """
    L = len(parameters) // 2
    _, A, _ = _absolute_forward(X, parameters)
    delta = {}
    for l in range(1, L + 1):
        d = epsilon * max(1.0, float(np.max(np.abs(A[l - 1]))))
        delta[l] = {l: d}
        for q in range(l + 1, L + 1):
            d *= float(np.max(np.abs(parameters[f"W{q}"]).sum(axis=1)))
            delta[l][q] = d
    return delta


def kink_free(X, parameters, epsilon):
    """True when no +-epsilon step on any single parameter can flip any hidden ReLU.

    Every hidden pre-activation must sit farther from 0 than the largest change a step can
    cause there (:func:`_step_growth`), after allowing for the rounding of the computed Z
    itself (gamma_D Zabs, see :func:`cost_rounding_bound`).
    """
    L = len(parameters) // 2
    Z, _, Zabs = _absolute_forward(X, parameters)
    delta = _step_growth(X, parameters, epsilon)
    gD = _gamma(_D(parameters))
    for q in range(1, L):
        margin = float(np.min(np.abs(Z[q]) - gD * Zabs[q]))
        if margin <= max(delta[l][q] for l in range(1, q + 1)):
            return False
    return True


def fd_error_bound(X, Y, parameters, gradapprox, epsilon):
    """Per coordinate (flat, layout order), a bound on |gradapprox_i - grad_i| for a correct
    float64 gradapprox (any implementation of the seed's cost) and ``grad`` from
    ``reference.backward_propagation_n``, on a network that is :func:`kink_free`.

    Three parts, each rigorous to first order in u:

    * rounding of the central difference: |J+- computed - exact| <= E (cost_rounding_bound),
      so (E + E) / (2 eps) (x 1.01, E being taken at theta), plus u |gradapprox| per side
      of the division;
    * truncation: with the ReLU pattern fixed, z is affine in any single parameter, so the
      third derivative of J along theta_i is 1/m sum_kj l3(z_kj) (dz_kj/dtheta_i)**3 with
      |l3| = |a(1-a)(1-2a)| <= 0.1 and |dz/dtheta_i| <= S (the step growth to the output per
      unit step); the central difference errs by eps**2 / 6 * 0.1 * n_L * S**3 at most;
    * rounding of the analytic gradient: the backward pass on absolute values
      (dZabs_L = 1 >= |a - y|, dZabs_{l-1} = |W_l|^T dZabs_l, Gabs = 1/m dZabs Zabs^T) bounds
      every term; each entry goes through at most K = m + 2 + sum n_l + 2D + 11 roundings
      (the output's own error, gamma_{D+11} max(1, Zabs_L), the backward products, the sum
      over samples), so it errs by at most gamma_K max(1, max Zabs_L) Gabs.
    """
    L = len(parameters) // 2
    m = X.shape[1]
    E, _ = cost_rounding_bound(X, Y, parameters)
    _, _, Zabs = _absolute_forward(X, parameters)
    delta = _step_growth(X, parameters, 1.0)
    S = max(delta[l][L] for l in range(1, L + 1))
    n_out = parameters[f"W{L}"].shape[0]
    truncation = epsilon**2 / 6 * 0.1 * n_out * S**3
    dZabs = np.ones((n_out, m))
    Gabs = {}
    for l in range(L, 0, -1):
        Gabs[f"W{l}"] = dZabs @ Zabs[l - 1].T / m
        Gabs[f"b{l}"] = dZabs.sum(axis=1, keepdims=True) / m
        dZabs = np.abs(parameters[f"W{l}"]).T @ dZabs
    n_units = sum(parameters[f"W{l}"].shape[0] for l in range(1, L + 1))
    K = m + 2 + n_units + 2 * _D(parameters) + 11
    rho = _gamma(K) * max(1.0, float(np.max(Zabs[L])))
    backward = rho * np.concatenate([Gabs[f"{kind}{l}"].ravel()
                                     for l in range(1, L + 1) for kind in "Wb"])
    return 1.01 * E / epsilon + 2 * U * np.abs(gradapprox) + truncation + backward


@pytest.fixture(scope="session")
def helpers():
    """The helper functions of this module, for tests (including hypothesis tests)."""
    import types

    return types.SimpleNamespace(
        seed_case=seed_case,
        random_network=random_network,
        correct_gradients=correct_gradients,
        faulty_gradients=faulty_gradients,
        hidden_activations=hidden_activations,
        place_on_kink=place_on_kink,
        cost_rounding_bound=cost_rounding_bound,
        gradapprox_rounding_bound=gradapprox_rounding_bound,
        kink_free=kink_free,
        fd_error_bound=fd_error_bound,
    )


@pytest.fixture
def seed_data():
    """``(X, Y, parameters)`` of the seed's published case (fresh arrays per test)."""
    return seed_case()


@pytest.fixture
def seed_faulty(seed_data):
    """``(X, Y, parameters, gradients)`` with the seed's faulty backward pass."""
    X, Y, parameters = seed_data
    return X, Y, parameters, faulty_gradients(X, Y, parameters)


@pytest.fixture
def seed_correct(seed_data):
    """``(X, Y, parameters, gradients)`` with the corrected backward pass."""
    X, Y, parameters = seed_data
    return X, Y, parameters, correct_gradients(X, Y, parameters)


@pytest.fixture(autouse=True)
def _threads_as_decided_by_the_work(monkeypatch):
    """Keep the thread count a function of the work alone during tests: the engine otherwise
    falls back to one thread for a while after a parallel region waited for a late thread
    (gradcheck_fast._schedule), which on a busy test machine would leave the tests that mean
    to exercise the parallel path on the serial one. tests/test_scheduling.py tests that
    fallback itself."""
    from gradcheck_fast import _schedule

    monkeypatch.setattr(_schedule, "BUSY_MEMORY", 0.0)
    monkeypatch.setattr(_schedule, "PROBE_EVERY", 1)


def count_calls(monkeypatch, owner, name: str) -> list:
    """Replace ``owner.name`` (for the test) by a wrapper that appends to the returned list at
    every call and then calls the original."""
    calls = []
    original = getattr(owner, name)

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return calls


@pytest.fixture
def all_threads():
    """Run the test with numba's thread count at its maximum; restore it afterwards."""
    previous = numba.get_num_threads()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    yield numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(previous)
