"""The seed's algorithms in plain NumPy: the slow, obviously-correct baseline.

Everything here follows the seed exercise line by line (a Python loop over the parameters, a
dictionary round-trip and a full forward pass per perturbation) and is deliberately never
optimised: it is what the fast engine is measured and tested against. The only generalisation is
depth: the N-layer functions accept any number of layers L >= 1 (ReLU hidden layers, a sigmoid
output and the seed's cross-entropy cost), read from the ``W1, b1, ..., WL, bL`` keys.

The seed's backward pass with its two deliberate mistakes is kept as
:func:`backward_propagation_n_faulty`; :func:`backward_propagation_n` is the corrected one.

Examples
--------
>>> import numpy as np
>>> from gradcheck_fast import reference
>>> X, Y, parameters = reference.seed_case()
>>> cost, cache = reference.forward_propagation_n(X, Y, parameters)
>>> gradients = reference.backward_propagation_n_faulty(X, Y, cache)
>>> d = reference.gradient_check_n(parameters, gradients, X, Y, verbose=False)
>>> round(float(d), 6)
0.285093
"""

from __future__ import annotations

import numpy as np

from ._console import coloured

__all__ = [
    "relu",
    "sigmoid",
    "forward_propagation",
    "backward_propagation",
    "gradient_check",
    "forward_propagation_n",
    "backward_propagation_n",
    "backward_propagation_n_faulty",
    "dictionary_to_vector",
    "vector_to_dictionary",
    "gradients_to_vector",
    "gradient_check_n",
    "gradapprox_n",
    "forward_mlp",
    "backward_mlp",
    "one_hot",
    "seed_case",
    "MISTAKE_MESSAGE",
    "SUCCESS_MESSAGE",
]

#: The seed's messages for the N-dimensional check (ANSI colours included, as in the seed; they
#: are printed with their colours only where colours render, see :mod:`gradcheck_fast._console`).
MISTAKE_MESSAGE = "\033[93mThere is a mistake in the backward propagation! difference = {}\033[0m"
SUCCESS_MESSAGE = "\033[92mYour backward propagation works perfectly fine! difference = {}\033[0m"


def relu(x):
    """ReLU as in the seed's helpers: ``max(0, x)`` elementwise."""
    return np.maximum(0, x)


def sigmoid(x):
    """The logistic function as in the seed's helpers: ``1 / (1 + exp(-x))``."""
    return 1 / (1 + np.exp(-x))


# --------------------------------------------------------------------------------------------
# 1-D check
# --------------------------------------------------------------------------------------------
def forward_propagation(x, theta):
    """The seed's 1-D cost ``J(theta) = theta * x``."""
    J = theta * x
    return J


def backward_propagation(x, theta):
    """The seed's 1-D derivative ``dJ/dtheta = x``."""
    dtheta = x
    return dtheta


def gradient_check(x, theta, epsilon=1e-7, *, verbose=True):
    """The seed's 1-D gradient check, eq. (2); prints the verdict at threshold 1e-7.

    Examples
    --------
    >>> difference = gradient_check(2, 4)
    The gradient is correct!
    >>> float(difference)
    2.919335883291695e-10
    """
    thetaplus = theta + epsilon  # Step 1
    thetaminus = theta - epsilon  # Step 2
    J_plus = forward_propagation(x, thetaplus)  # Step 3
    J_minus = forward_propagation(x, thetaminus)  # Step 4
    gradapprox = (J_plus - J_minus) / (2 * epsilon)  # Step 5

    grad = backward_propagation(x, theta)

    numerator = np.linalg.norm(grad - gradapprox)  # Step 1'
    denominator = np.linalg.norm(grad) + np.linalg.norm(gradapprox)  # Step 2'
    difference = numerator / denominator  # Step 3'

    if verbose:
        if difference < 1e-7:
            print("The gradient is correct!")
        else:
            print("The gradient is wrong!")
    return difference


# --------------------------------------------------------------------------------------------
# N-layer network
# --------------------------------------------------------------------------------------------
def _n_layers(parameters):
    n = 0
    while f"W{n + 1}" in parameters:
        n += 1
    return n


def _parameter_keys(n_layers):
    keys = []
    for l in range(1, n_layers + 1):
        keys += [f"W{l}", f"b{l}"]
    return keys


def forward_propagation_n(X, Y, parameters):
    """LINEAR -> RELU -> ... -> LINEAR -> SIGMOID with the seed's cross-entropy cost.

    The seed's three-layer function generalised to ``L = len(parameters) // 2`` layers. The cache
    is the seed's flat tuple ``(Z1, A1, W1, b1, ..., ZL, AL, WL, bL)``.

    Returns
    -------
    cost : float
        ``1/m * sum(-log(AL) * Y - log(1 - AL) * (1 - Y))``.
    cache : tuple
    """
    m = X.shape[1]
    L = _n_layers(parameters)
    A = X
    cache = ()
    for l in range(1, L + 1):
        W = parameters[f"W{l}"]
        b = parameters[f"b{l}"]
        Z = np.dot(W, A) + b
        A = sigmoid(Z) if l == L else relu(Z)
        cache += (Z, A, W, b)

    # Cost
    logprobs = np.multiply(-np.log(A), Y) + np.multiply(-np.log(1 - A), 1 - Y)
    cost = 1.0 / m * np.sum(logprobs)
    return cost, cache


def _backward(X, Y, cache, dW2_factor, db1_factor):
    m = X.shape[1]
    L = len(cache) // 4
    gradients = {}
    dZ = None
    for l in range(L, 0, -1):
        Z, A, W, b = cache[4 * (l - 1) : 4 * l]
        A_prev = X if l == 1 else cache[4 * (l - 2) + 1]
        if l == L:
            dZ = A - Y
        else:
            dA = gradients[f"dA{l}"]
            dZ = np.multiply(dA, np.int64(A > 0))
        dW = 1.0 / m * np.dot(dZ, A_prev.T)
        if l == 2:
            dW = dW * dW2_factor
        db = db1_factor / m if l == 1 else 1.0 / m
        db = db * np.sum(dZ, axis=1, keepdims=True)
        gradients[f"dZ{l}"] = dZ
        gradients[f"dW{l}"] = dW
        gradients[f"db{l}"] = db
        if l > 1:
            gradients[f"dA{l - 1}"] = np.dot(W.T, dZ)
    return gradients


def backward_propagation_n(X, Y, cache):
    """The correct backward pass for :func:`forward_propagation_n`, at any depth.

    Returns the seed's gradient dict: ``dWl``, ``dbl`` and the intermediate ``dZl``/``dAl``.
    """
    return _backward(X, Y, cache, dW2_factor=1, db1_factor=1.0)


def backward_propagation_n_faulty(X, Y, cache):
    """The seed's backward pass *with its two deliberate mistakes*, for demos and tests.

    ``dW2`` is multiplied by 2 and ``db1`` uses ``4./m`` instead of ``1./m`` (when the network
    has a second, respectively a first, layer). The gradient check must find both.
    """
    return _backward(X, Y, cache, dW2_factor=2, db1_factor=4.0)


def dictionary_to_vector(parameters):
    """Flatten ``W1, b1, ..., WL, bL`` into a ``(P, 1)`` column; return it and one key per entry."""
    keys = []
    count = 0
    for key in _parameter_keys(_n_layers(parameters)):
        new_vector = np.reshape(parameters[key], (-1, 1))
        keys = keys + [key] * new_vector.shape[0]
        if count == 0:
            theta = new_vector
        else:
            theta = np.concatenate((theta, new_vector), axis=0)
        count = count + 1
    return theta, keys


def vector_to_dictionary(theta, shapes=None):
    """Rebuild the parameter dict from a flat ``theta``.

    With one argument, the seed's 47-parameter network (4-5-3-1). ``shapes`` (a dict
    ``{'W1': (5, 4), 'b1': (5, 1), ...}`` in flattening order) gives any layout.
    """
    if shapes is None:
        shapes = {"W1": (5, 4), "b1": (5, 1), "W2": (3, 5), "b2": (3, 1),
                  "W3": (1, 3), "b3": (1, 1)}
    parameters = {}
    start = 0
    for key, shape in shapes.items():
        size = int(np.prod(shape))
        parameters[key] = theta[start : start + size].reshape(shape)
        start += size
    return parameters


def gradients_to_vector(gradients):
    """Flatten ``dW1, db1, ..., dWL, dbL`` into a ``(P, 1)`` column (other keys are ignored)."""
    n_layers = 0
    while f"dW{n_layers + 1}" in gradients:
        n_layers += 1
    count = 0
    for key in ["d" + k for k in _parameter_keys(n_layers)]:
        new_vector = np.reshape(gradients[key], (-1, 1))
        if count == 0:
            theta = new_vector
        else:
            theta = np.concatenate((theta, new_vector), axis=0)
        count = count + 1
    return theta


def gradient_check_n(parameters, gradients, X, Y, epsilon=1e-7, *, verbose=True):
    """The seed's N-dimensional gradient check, eq. (3): one full forward pass per perturbation.

    Prints the seed's message (threshold 2e-7) unless ``verbose=False``; returns the difference.
    """
    parameters_values, _ = dictionary_to_vector(parameters)
    shapes = {key: np.shape(parameters[key]) for key in _parameter_keys(_n_layers(parameters))}
    grad = gradients_to_vector(gradients)
    num_parameters = parameters_values.shape[0]
    J_plus = np.zeros((num_parameters, 1))
    J_minus = np.zeros((num_parameters, 1))
    gradapprox = np.zeros((num_parameters, 1))

    for i in range(num_parameters):
        thetaplus = np.copy(parameters_values)  # Step 1
        thetaplus[i][0] = thetaplus[i][0] + epsilon  # Step 2
        # Step 3
        J_plus[i], _ = forward_propagation_n(X, Y, vector_to_dictionary(thetaplus, shapes))

        thetaminus = np.copy(parameters_values)  # Step 1
        thetaminus[i][0] = thetaminus[i][0] - epsilon  # Step 2
        # Step 3
        J_minus[i], _ = forward_propagation_n(X, Y, vector_to_dictionary(thetaminus, shapes))

        gradapprox[i] = (J_plus[i] - J_minus[i]) / (2 * epsilon)

    numerator = np.linalg.norm(grad - gradapprox)  # Step 1'
    denominator = np.linalg.norm(grad) + np.linalg.norm(gradapprox)  # Step 2'
    difference = numerator / denominator  # Step 3'

    if verbose:
        if difference > 2e-7:
            print(coloured(MISTAKE_MESSAGE.format(difference)))
        else:
            print(coloured(SUCCESS_MESSAGE.format(difference)))
    return difference


def gradapprox_n(parameters, X, Y, epsilon=1e-7, indices=None):
    """The seed's loop body for chosen coordinates: ``gradapprox[i]`` for each i in ``indices``.

    Exactly the work ``gradient_check_n`` does per coordinate (a copy of theta, a dict
    round-trip and a full forward pass for each of the two steps), so timing it on a sample of
    coordinates and scaling by P / len(indices) predicts the full loop on networks too large
    to run it whole. ``indices=None`` means all coordinates. Returns a 1-D array.
    """
    parameters_values, _ = dictionary_to_vector(parameters)
    shapes = {key: np.shape(parameters[key]) for key in _parameter_keys(_n_layers(parameters))}
    if indices is None:
        indices = range(parameters_values.shape[0])
    gradapprox = []
    for i in indices:
        thetaplus = np.copy(parameters_values)
        thetaplus[i][0] = thetaplus[i][0] + epsilon
        J_plus, _ = forward_propagation_n(X, Y, vector_to_dictionary(thetaplus, shapes))
        thetaminus = np.copy(parameters_values)
        thetaminus[i][0] = thetaminus[i][0] - epsilon
        J_minus, _ = forward_propagation_n(X, Y, vector_to_dictionary(thetaminus, shapes))
        gradapprox.append((J_plus - J_minus) / (2 * epsilon))
    return np.array(gradapprox, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# The MLP family (gradcheck_fast.MLP): known-good forward and backward passes in plain NumPy
# --------------------------------------------------------------------------------------------
def one_hot(labels, n_classes):
    """Integer class labels of shape (m,) as a one-hot (n_classes, m) float matrix."""
    labels = np.asarray(labels)
    Y = np.zeros((n_classes, labels.shape[0]))
    Y[labels, np.arange(labels.shape[0])] = 1.0
    return Y


def _labels(Y, loss, n_out):
    Y = np.asarray(Y)
    if loss.class_labels and Y.ndim == 1 and Y.dtype.kind in "iu":
        return one_hot(Y, n_out)
    return Y.reshape(n_out, -1) if Y.ndim == 1 else Y


def forward_mlp(X, Y, parameters, model):
    """Forward pass and cost of ``model`` (a :class:`gradcheck_fast.MLP`); returns (cost, cache).

    The cache is the seed's flat tuple ``(Z1, A1, W1, b1, ..., ZL, AL, WL, bL)``. Costs as in
    the ``MLP`` docstring, each activation and loss by its registry entry's NumPy functions
    (:mod:`gradcheck_fast.activations`, :mod:`gradcheck_fast.losses`).
    """
    m = X.shape[1]
    L = _n_layers(parameters)
    hidden = model.activations(L)
    loss = model.loss
    Y = _labels(Y, loss, parameters[f"W{L}"].shape[0])
    A = X
    cache = ()
    for l in range(1, L + 1):
        W = parameters[f"W{l}"]
        b = parameters[f"b{l}"]
        Z = np.dot(W, A) + b
        A = hidden[l - 1].forward(Z, model.leaky_slope) if l < L else loss.output(Z)
        cache += (Z, A, W, b)
    cost = 1.0 / m * loss.data_sum(Z, Y)
    if model.l2:
        cost += model.l2 / (2 * m) * sum(np.sum(parameters[f"W{l}"] ** 2)
                                          for l in range(1, L + 1))
    return cost, cache


def backward_mlp(X, Y, cache, model):
    """The correct gradients of :func:`forward_mlp`: ``dWl``, ``dbl`` and ``dZl``/``dAl``.

    ``dZL`` is the loss entry's (``AL - Y`` for every pair but softmax with labels that sum to
    s per sample: ``AL * s - Y``); L2 adds ``lambda / m * Wl`` to ``dWl``.
    """
    m = X.shape[1]
    L = len(cache) // 4
    hidden = model.activations(L)
    n_out = cache[4 * (L - 1)].shape[0]
    Y = _labels(Y, model.loss, n_out)
    gradients = {}
    for l in range(L, 0, -1):
        Z, A, W, b = cache[4 * (l - 1) : 4 * l]
        A_prev = X if l == 1 else cache[4 * (l - 2) + 1]
        if l == L:
            dZ = model.loss.dZ(A, Y)
        else:
            dZ = gradients[f"dA{l}"] * hidden[l - 1].derivative(Z, A, model.leaky_slope)
        dW = 1.0 / m * np.dot(dZ, A_prev.T) + model.l2 / m * W
        db = 1.0 / m * np.sum(dZ, axis=1, keepdims=True)
        gradients[f"dZ{l}"] = dZ
        gradients[f"dW{l}"] = dW
        gradients[f"db{l}"] = db
        if l > 1:
            gradients[f"dA{l - 1}"] = np.dot(W.T, dZ)
    return gradients


def seed_case():
    """The seed's published test case: ``(X, Y, parameters)`` drawn with NumPy's legacy seed 1.

    ``X`` is ``randn(4, 3)``, ``Y = [1, 1, 0]`` and the 4-5-3-1 network's parameters are drawn
    in the order W1, b1, W2, b2, W3, b3 — as in the exercise's ``gradient_check_n_test_case``.
    """
    rng = np.random.RandomState(1)
    x = rng.randn(4, 3)
    y = np.array([1, 1, 0])
    W1 = rng.randn(5, 4)
    b1 = rng.randn(5, 1)
    W2 = rng.randn(3, 5)
    b2 = rng.randn(3, 1)
    W3 = rng.randn(1, 3)
    b3 = rng.randn(1, 1)
    parameters = {"W1": W1, "b1": b1, "W2": W2, "b2": b2, "W3": W3, "b3": b3}
    return x, y, parameters
