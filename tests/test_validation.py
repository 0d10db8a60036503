"""Bad inputs raise the promised errors, naming what to fix; the seed's vector helpers."""

from __future__ import annotations

import re

import numpy as np
import pytest

import gradcheck_fast
from gradcheck_fast import Layout, MLPLayout, reference
from gradcheck_fast._console import strip_ansi


def check(parameters, gradients, X, Y, **kwargs):
    return gradcheck_fast.check_gradients(parameters, gradients, X, Y, **kwargs)


@pytest.fixture
def case(seed_correct):
    """Fresh ``(X, Y, parameters, gradients)`` of the seed case, correct gradients, float Y."""
    X, Y, parameters, gradients = seed_correct
    return X, Y.astype(float), parameters, gradients


def test_valid_case_passes(case):
    # The baseline the error tests below perturb one thing at a time.
    X, Y, parameters, gradients = case
    assert check(parameters, gradients, X, Y).passed


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["b2", "b3", "b1"])
def test_missing_parameter_key(case, key):
    X, Y, parameters, gradients = case
    del parameters[key]
    with pytest.raises(ValueError, match=f"'{key}'"):
        check(parameters, gradients, X, Y)
    with pytest.raises(ValueError, match=f"'{key}'"):
        gradcheck_fast.gradient_check_n(parameters, gradients, X, Y)


def test_missing_W1_is_named(case):
    X, Y, parameters, gradients = case
    del parameters["W1"]
    with pytest.raises(ValueError, match="'W1'"):
        check(parameters, gradients, X, Y)


@pytest.mark.parametrize("key", ["W2", "W3"])
def test_missing_later_W_is_named(case, key):
    # BUG (library, message quality): the depth is read off the run W1, W2, ... so without
    # W2 the network looks 1-layer deep and the error is "unexpected key 'W3'"; without W3,
    # "unexpected key 'b3'". Neither names the key the caller has to add.
    X, Y, parameters, gradients = case
    del parameters[key]
    with pytest.raises(ValueError) as info:
        check(parameters, gradients, X, Y)
    assert f"'{key}'" in str(info.value)


@pytest.mark.parametrize("key", ["W9", "foo", "b4"])
def test_extra_parameter_key(case, key):
    X, Y, parameters, gradients = case
    parameters[key] = np.ones((1, 1))
    with pytest.raises(ValueError, match=f"'{key}'"):
        check(parameters, gradients, X, Y)


@pytest.mark.parametrize("key", ["dW1", "db3", "dW2"])
def test_missing_gradient_key(case, key):
    X, Y, parameters, gradients = case
    del gradients[key]
    with pytest.raises(ValueError, match=f"'{key}'"):
        check(parameters, gradients, X, Y)


@pytest.mark.parametrize("key", ["dW7", "db4", "foo", "W1"])
def test_extra_gradient_key(case, key):
    X, Y, parameters, gradients = case
    gradients[key] = np.ones((1, 1))
    with pytest.raises(ValueError, match=f"'{key}'"):
        check(parameters, gradients, X, Y)


def test_seed_intermediates_are_accepted_and_ignored(case):
    X, Y, parameters, gradients = case
    assert {"dZ1", "dA2", "dZ3", "dA1"} <= set(gradients)  # the seed's backward pass returns them
    with_intermediates = check(parameters, gradients, X, Y)
    only = {k: v for k, v in gradients.items() if k[:2] in ("dW", "db")}
    without = check(parameters, only, X, Y)
    assert with_intermediates.difference == without.difference
    garbage = dict(only, dZ1=np.full((7, 7), np.nan), dA2="not an array")
    assert check(parameters, garbage, X, Y).difference == without.difference


# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------
def test_gradient_with_wrong_shape_names_key_and_both_shapes(case):
    X, Y, parameters, gradients = case
    gradients["dW2"] = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"dW2") as info:
        check(parameters, gradients, X, Y)
    message = str(info.value)
    assert "(5, 3)" in message and "(3, 5)" in message


def test_gradient_with_flat_shape(case):
    X, Y, parameters, gradients = case
    gradients["db1"] = gradients["db1"].ravel()
    with pytest.raises(ValueError, match=r"db1.*\(5,\)"):
        check(parameters, gradients, X, Y)


def test_W_shapes_that_do_not_chain(case):
    X, Y, parameters, gradients = case
    parameters["W2"] = np.ones((3, 4))
    with pytest.raises(ValueError, match=r"W2.*\(3, 4\)"):
        check(parameters, gradients, X, Y)


def test_b_as_a_flat_vector(case):
    X, Y, parameters, gradients = case
    parameters["b2"] = parameters["b2"].ravel()
    with pytest.raises(ValueError, match=r"b2.*\(3,\).*\(3, 1\)"):
        check(parameters, gradients, X, Y)


def test_b_with_wrong_length(case):
    X, Y, parameters, gradients = case
    parameters["b1"] = np.ones((4, 1))
    with pytest.raises(ValueError, match=r"b1"):
        check(parameters, gradients, X, Y)


@pytest.mark.parametrize("shape", [(5,), (5, 4, 1), (0, 4)])
def test_W_not_a_nonempty_matrix(case, shape):
    X, Y, parameters, gradients = case
    parameters["W1"] = np.ones(shape)
    with pytest.raises(ValueError, match=r"W1"):
        check(parameters, gradients, X, Y)


def test_X_with_wrong_row_count(case):
    X, Y, parameters, gradients = case
    with pytest.raises(ValueError, match=r"X.*\(3, 3\)"):
        check(parameters, gradients, X[:3], Y)


@pytest.mark.parametrize("X_shape", [(4,), (4, 0), (4, 3, 1)])
def test_X_not_a_matrix(case, X_shape):
    _, Y, parameters, gradients = case
    with pytest.raises(ValueError, match="X"):
        check(parameters, gradients, np.ones(X_shape), Y)


def test_X_and_Y_sample_counts_differ(case):
    X, Y, parameters, gradients = case
    # (The message shows Y[:2] as (1, 2): the (m,) form is reshaped before the check.)
    with pytest.raises(ValueError, match=r"Y must have shape \(1, 3\)"):
        check(parameters, gradients, X, Y[:2])
    with pytest.raises(ValueError, match=r"Y.*\(1, 4\)"):
        check(parameters, gradients, X, np.ones((1, 4)))


def test_Y_with_wrong_number_of_outputs(case):
    X, Y, parameters, gradients = case
    with pytest.raises(ValueError, match=r"Y.*\(2, 3\)"):
        check(parameters, gradients, X, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"Y.*\(3, 1\)"):
        check(parameters, gradients, X, Y.reshape(3, 1))


# ---------------------------------------------------------------------------------------------
# Types
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.array([["a", "b", "c"]] * 4),
                                 np.array([[object()] * 3] * 4, dtype=object),
                                 "abc"])
def test_non_numeric_X(case, bad):
    _, Y, parameters, gradients = case
    with pytest.raises(TypeError, match="X"):
        check(parameters, gradients, bad, Y)


@pytest.mark.parametrize("bad", [np.array(["1", "1", "0"]),
                                 np.array([None, 1, 0], dtype=object)])
def test_non_numeric_Y(case, bad):
    X, _, parameters, gradients = case
    with pytest.raises(TypeError, match="Y"):
        check(parameters, gradients, X, bad)


def test_non_numeric_parameter(case):
    X, Y, parameters, gradients = case
    parameters["W3"] = np.array([["a", "b", "c"]])
    with pytest.raises(TypeError, match=re.escape("parameters['W3']")):
        check(parameters, gradients, X, Y)


@pytest.mark.parametrize("key", ["W1", "b2", "b3"])
def test_integer_parameter_array_is_a_type_error_naming_the_key(case, key):
    X, Y, parameters, gradients = case
    parameters[key] = np.ones(parameters[key].shape, dtype=np.int64)
    with pytest.raises(TypeError, match=re.escape(f"parameters['{key}']")):
        check(parameters, gradients, X, Y)


def test_non_numeric_gradient(case):
    X, Y, parameters, gradients = case
    gradients["db2"] = np.array([["x"], ["y"], ["z"]])
    with pytest.raises(TypeError, match=re.escape("gradients['db2']")):
        check(parameters, gradients, X, Y)


@pytest.mark.parametrize("where", ["X", "Y", "W1", "dW1"])
def test_complex_arrays_are_refused(case, where):
    X, Y, parameters, gradients = case
    if where == "X":
        X = X + 0j
    elif where == "Y":
        Y = Y + 0j
    elif where == "W1":
        parameters["W1"] = parameters["W1"] + 0j
    else:
        gradients["dW1"] = gradients["dW1"] + 0j
    with pytest.raises(TypeError, match=re.escape(where)):
        check(parameters, gradients, X, Y)


@pytest.mark.parametrize("parameters", [None, [("W1", np.ones((1, 1)))], np.ones(3), "W1"])
def test_parameters_not_a_dict(case, parameters):
    X, Y, _, gradients = case
    with pytest.raises(TypeError, match="parameters"):
        check(parameters, gradients, X, Y)


def test_gradients_not_a_dict(case):
    X, Y, parameters, gradients = case
    with pytest.raises(TypeError, match="gradients"):
        check(parameters, list(gradients.values()), X, Y)


# ---------------------------------------------------------------------------------------------
# Non-finite values
# ---------------------------------------------------------------------------------------------
def test_finite_values_whose_squares_overflow_are_finite():
    """The finiteness test starts with a sum of squares (one dot product); values beyond
    ~1e154 overflow it, and the elementwise test then decides: they are finite inputs, not
    NaN or Inf (the check itself may then find non-finite costs, which it reports)."""
    from gradcheck_fast.validation import all_finite

    huge = np.array([1e200, -3e180, 2.0])
    assert all_finite(huge) and all_finite(huge.reshape(3, 1))
    assert not all_finite(np.array([1e200, np.nan])) and not all_finite(np.array([np.inf]))
    assert all_finite(np.array([]))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_X(case, value):
    X, Y, parameters, gradients = case
    X = X.copy()
    X[2, 1] = value
    with pytest.raises(ValueError, match=r"X.*\(2, 1\)"):
        check(parameters, gradients, X, Y)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_Y(case, value):
    X, Y, parameters, gradients = case
    Y = Y.copy()
    Y[2] = value
    with pytest.raises(ValueError, match=r"Y.*\(2,\)"):
        check(parameters, gradients, X, Y)


@pytest.mark.parametrize("key, index", [("W2", (1, 3)), ("b1", (4, 0)), ("b3", (0, 0))])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nonfinite_parameter_names_key_and_index(case, key, index, value):
    X, Y, parameters, gradients = case
    parameters[key] = parameters[key].copy()
    parameters[key][index] = value
    with pytest.raises(ValueError, match=re.escape(f"parameters['{key}']") + ".*"
                       + re.escape(str(index))):
        check(parameters, gradients, X, Y)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_gradient_is_a_failed_check_not_an_error(case, value):
    X, Y, parameters, gradients = case
    gradients["dW2"] = gradients["dW2"].copy()
    gradients["dW2"][1, 2] = value
    report = check(parameters, gradients, X, Y)
    assert report.passed is False
    assert np.isnan(report.difference)
    difference = gradcheck_fast.gradient_check_n(parameters, gradients, X, Y, verbose=False)
    assert np.isnan(difference)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_gradient_block_is_reported_as_failed(case, value):
    # BUG (library) for +-inf: report.build_report allows |grad - gradapprox| up to
    # threshold * (|grad| + |gradapprox|) + noise, which is inf <= inf for an infinite gradient,
    # so the block with the Inf is reported as passed (failed_blocks == []) while the global
    # check fails with difference nan. NaN is caught (NaN comparisons are false).
    X, Y, parameters, gradients = case
    gradients["dW2"] = gradients["dW2"].copy()
    gradients["dW2"][1, 2] = value
    report = check(parameters, gradients, X, Y)
    assert report.failed_blocks == ["dW2"]
    assert report.blocks["dW2"].n_failing == 1
    assert not report.blocks["dW2"].passed


def test_nan_gradient_prints_the_mistake_message(case, capsys):
    # The seed's `difference > 2e-7` is False for NaN: it would have printed "works perfectly
    # fine". The library must not.
    X, Y, parameters, gradients = case
    gradients["db3"] = np.array([[np.nan]])
    difference = gradcheck_fast.gradient_check_n(parameters, gradients, X, Y)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == strip_ansi(reference.MISTAKE_MESSAGE.format(difference))
    assert "works perfectly fine" not in out


def test_infinite_cost_is_a_failed_check_without_warnings():
    # An output at exactly 1 with label 0 makes the seed's cost +inf (-log(0)). Non-finite
    # costs reach the report (no warning: this project runs with filterwarnings = error) as
    # unverified coordinates: not failed (nothing shows the gradient wrong), never passed.
    parameters = {"W1": np.array([[100.0]]), "b1": np.zeros((1, 1))}  # z = 100: a == 1.0
    gradients = {"dW1": np.ones((1, 1)), "db1": np.ones((1, 1))}  # a - y = 1: the true slope
    report = check(parameters, gradients, np.ones((1, 1)), np.zeros((1, 1)))
    assert report.cost == np.inf
    assert report.passed is False and np.isnan(report.difference)
    assert report.failed_blocks == []
    assert [b.verdict for b in report.blocks.values()] == ["unverified", "unverified"]
    assert [e.label for e in report.nonfinite] == ["dW1[0, 0]", "db1[0, 0]"]
    assert "NaN/Inf" in str(report)


def test_all_zero_gradients_of_a_flat_cost_agree():
    # Every unit dead and the output bias at its optimum... simplest: a depth-1 network with
    # zero inputs and labels 1/2 has J' = 0 for every parameter, and gradapprox is exactly 0.
    X = np.zeros((2, 4))
    Y = np.full((1, 4), 0.5)
    parameters = {"W1": np.zeros((1, 2)), "b1": np.zeros((1, 1))}
    gradients = {"dW1": np.zeros((1, 2)), "db1": np.zeros((1, 1))}
    report = check(parameters, gradients, X, Y)
    assert report.difference == 0.0 and report.passed and report.failed_blocks == []


# ---------------------------------------------------------------------------------------------
# Scalars: epsilon, threshold, n_threads
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("epsilon", [0, 0.0, -1e-7, -1, float("nan"), float("inf"),
                                     float("-inf")])
def test_epsilon_invalid_value(case, epsilon):
    X, Y, parameters, gradients = case
    with pytest.raises(ValueError, match="epsilon"):
        check(parameters, gradients, X, Y, epsilon=epsilon)
    with pytest.raises(ValueError, match="epsilon"):
        gradcheck_fast.gradient_check_n(parameters, gradients, X, Y, epsilon)


def test_huge_integer_epsilon_or_threshold_is_a_value_error(case):
    # BUG (library, minor): 10**400 is a Python int beyond float range; check_epsilon and
    # check_threshold call float() on it and let OverflowError escape, which is neither of the
    # documented TypeError/ValueError. It is not finite: ValueError, as for inf.
    X, Y, parameters, gradients = case
    with pytest.raises(ValueError, match="epsilon"):
        check(parameters, gradients, X, Y, epsilon=10**400)
    with pytest.raises(ValueError, match="threshold"):
        check(parameters, gradients, X, Y, threshold=10**400)


@pytest.mark.parametrize("epsilon", ["a", True, False, 1e-7 + 0j, np.array([1e-7])])
def test_epsilon_invalid_type(case, epsilon):
    X, Y, parameters, gradients = case
    with pytest.raises(TypeError, match="epsilon"):
        check(parameters, gradients, X, Y, epsilon=epsilon)


def test_epsilon_none_means_the_default_step(case):
    # None selects the method's default step: the seed's 1e-7 for the central difference.
    X, Y, parameters, gradients = case
    default = check(parameters, gradients, X, Y)
    explicit = check(parameters, gradients, X, Y, epsilon=None)
    assert default.epsilon == explicit.epsilon == 1e-7
    assert default.difference == explicit.difference


@pytest.mark.parametrize("epsilon", [np.float32(1e-4), np.float64(1e-7), 1, np.int64(1)])
def test_epsilon_numpy_and_integer_scalars_accepted(case, epsilon):
    X, Y, parameters, gradients = case
    report = check(parameters, gradients, X, Y, epsilon=epsilon)
    assert report.epsilon == float(epsilon)


@pytest.mark.parametrize("threshold", [0, -2e-7, float("nan"), float("inf")])
def test_threshold_invalid_value(case, threshold):
    X, Y, parameters, gradients = case
    with pytest.raises(ValueError, match="threshold"):
        check(parameters, gradients, X, Y, threshold=threshold)


@pytest.mark.parametrize("threshold", ["a", True, None])
def test_threshold_invalid_type(case, threshold):
    X, Y, parameters, gradients = case
    with pytest.raises(TypeError, match="threshold"):
        check(parameters, gradients, X, Y, threshold=threshold)


@pytest.mark.parametrize("n_threads", [0, -1, 10**6])
def test_n_threads_invalid_value(case, n_threads):
    import numba

    X, Y, parameters, gradients = case
    with pytest.raises(ValueError, match="n_threads"):
        check(parameters, gradients, X, Y, n_threads=n_threads)
    with pytest.raises(ValueError, match="n_threads"):
        check(parameters, gradients, X, Y, n_threads=numba.config.NUMBA_NUM_THREADS + 1)


@pytest.mark.parametrize("n_threads", [1.5, 1.0, "2", True])
def test_n_threads_invalid_type(case, n_threads):
    X, Y, parameters, gradients = case
    with pytest.raises(TypeError, match="n_threads"):
        check(parameters, gradients, X, Y, n_threads=n_threads)
    with pytest.raises(TypeError, match="n_threads"):
        gradcheck_fast.gradient_check_n(parameters, gradients, X, Y, n_threads=n_threads)


def test_n_threads_numpy_integer_accepted(case):
    X, Y, parameters, gradients = case
    assert check(parameters, gradients, X, Y, n_threads=np.int64(1)).passed


# ---------------------------------------------------------------------------------------------
# dictionary_to_vector / vector_to_dictionary / gradients_to_vector
# ---------------------------------------------------------------------------------------------
SEED_SHAPES = {"W1": (5, 4), "b1": (5, 1), "W2": (3, 5), "b2": (3, 1), "W3": (1, 3),
               "b3": (1, 1)}


def test_dictionary_to_vector_as_in_the_seed(seed_data):
    _, _, parameters = seed_data
    theta, keys = gradcheck_fast.dictionary_to_vector(parameters)
    ref_theta, ref_keys = reference.dictionary_to_vector(parameters)
    assert theta.shape == (47, 1) and theta.dtype == np.float64
    assert keys == ref_keys
    assert keys == (["W1"] * 20 + ["b1"] * 5 + ["W2"] * 15 + ["b2"] * 3 + ["W3"] * 3 + ["b3"])
    np.testing.assert_array_equal(theta, ref_theta)


def test_dictionary_to_vector_returns_a_new_array(seed_data):
    _, _, parameters = seed_data
    theta, _ = gradcheck_fast.dictionary_to_vector(parameters)
    theta[:] = 0.0
    assert np.any(parameters["W1"] != 0.0)


def test_vector_round_trip(seed_data):
    _, _, parameters = seed_data
    theta, _ = gradcheck_fast.dictionary_to_vector(parameters)
    rebuilt = gradcheck_fast.vector_to_dictionary(theta)
    assert list(rebuilt) == list(SEED_SHAPES)
    for key, value in parameters.items():
        assert rebuilt[key].shape == SEED_SHAPES[key]
        np.testing.assert_array_equal(rebuilt[key], value)
    np.testing.assert_array_equal(gradcheck_fast.dictionary_to_vector(rebuilt)[0], theta)


def test_vector_to_dictionary_one_argument_gives_the_seed_shapes():
    theta = np.arange(47.0).reshape(-1, 1)
    for vector in (theta, theta.ravel()):
        parameters = gradcheck_fast.vector_to_dictionary(vector)
        assert {k: v.shape for k, v in parameters.items()} == SEED_SHAPES
        assert parameters["W1"][0, 1] == 1.0 and parameters["b1"][0, 0] == 20.0
        assert parameters["b3"][0, 0] == 46.0
    seed = reference.vector_to_dictionary(theta)
    for key, value in gradcheck_fast.vector_to_dictionary(theta).items():
        np.testing.assert_array_equal(value, seed[key])


@pytest.mark.parametrize("size", [46, 48, 0])
def test_vector_to_dictionary_wrong_size(size):
    with pytest.raises(ValueError, match="47"):
        gradcheck_fast.vector_to_dictionary(np.zeros((size, 1)))


def test_vector_to_dictionary_wrong_shape():
    with pytest.raises(ValueError, match=r"\(1, 47\)"):
        gradcheck_fast.vector_to_dictionary(np.zeros((1, 47)))


def test_vector_to_dictionary_with_parameters_or_layout(helpers):
    _, _, parameters = helpers.random_network((3, 7, 2, 2), 4, 50)
    theta, _ = gradcheck_fast.dictionary_to_vector(parameters)
    assert theta.shape == (3 * 7 + 7 + 7 * 2 + 2 + 2 * 2 + 2, 1)
    layouts = [parameters, MLPLayout([3, 7, 2, 2]),
               Layout({k: v.shape for k, v in parameters.items()}),
               {k: v.shape for k, v in parameters.items()}]
    for layout in layouts:
        rebuilt = gradcheck_fast.vector_to_dictionary(theta, layout)
        assert list(rebuilt) == list(parameters)
        for key, value in parameters.items():
            np.testing.assert_array_equal(rebuilt[key], value)
        with pytest.raises(ValueError, match=str(theta.shape[0])):
            gradcheck_fast.vector_to_dictionary(theta[:-1], layout)


def test_vector_to_dictionary_rejects_a_bad_layout():
    with pytest.raises(TypeError, match="layout"):
        gradcheck_fast.vector_to_dictionary(np.zeros(47), [4, 5, 3, 1])


def test_gradients_to_vector_as_in_the_seed(seed_faulty):
    X, Y, parameters, gradients = seed_faulty
    grad = gradcheck_fast.gradients_to_vector(gradients)
    assert grad.shape == (47, 1)
    np.testing.assert_array_equal(grad, reference.gradients_to_vector(gradients))
    np.testing.assert_array_equal(gradcheck_fast.gradients_to_vector(gradients, parameters),
                                  grad)
    np.testing.assert_array_equal(
        gradcheck_fast.gradients_to_vector(gradients, MLPLayout([4, 5, 3, 1])), grad)


def test_gradients_to_vector_checks_against_the_layout(seed_faulty):
    _, _, parameters, gradients = seed_faulty
    gradients["dW1"] = gradients["dW1"].T
    with pytest.raises(ValueError, match="dW1"):
        gradcheck_fast.gradients_to_vector(gradients, parameters)


def test_gradients_round_trip_through_layout(helpers):
    X, Y, parameters = helpers.random_network((2, 4, 3), 5, 51)
    gradients = helpers.correct_gradients(X, Y, parameters)
    layout = MLPLayout([2, 4, 3])
    grad = gradcheck_fast.gradients_to_vector(gradients, layout)
    rebuilt = layout.unpack(grad, prefix="d")
    for name in layout.grad_names:
        np.testing.assert_array_equal(rebuilt[name], gradients[name])


# ---------------------------------------------------------------------------------------------
# Messages that name the true culprit (not a neighbour)
# ---------------------------------------------------------------------------------------------
def _message(error, call):
    with pytest.raises(error) as info:
        call()
    return str(info.value)


def test_a_missing_middle_layer_is_named_missing(case):
    # Before: "unexpected key 'W3'; expected exactly W1, b1" (the depth was read off the run
    # W1, b1, ... and stopped at the gap).
    X, Y, parameters, gradients = case
    del parameters["W2"], parameters["b2"]
    for call in (lambda: check(parameters, gradients, X, Y),
                 lambda: gradcheck_fast.gradient_check_n(parameters, gradients, X, Y)):
        message = _message(ValueError, call)
        assert "is missing keys 'W2', 'b2'" in message and "3-layer" in message
        assert "unexpected" not in message


def test_a_missing_bias_below_a_whole_layer_is_named_alone(case):
    X, Y, parameters, gradients = case
    del parameters["b1"]
    message = _message(ValueError, lambda: check(parameters, gradients, X, Y))
    assert "is missing key 'b1'" in message
    assert "remove" not in message  # W1 is there: the layer exists, nothing to remove


def test_gradients_of_a_layer_the_parameters_lack_blame_the_parameters(case):
    # Before: "gradients has unexpected key 'dW3'" although the gradients are complete and the
    # parameters lack W3 and b3.
    X, Y, parameters, gradients = case
    del parameters["W3"], parameters["b3"]
    message = _message(ValueError, lambda: check(parameters, gradients, X, Y))
    assert "gradients has 'dW3', 'db3' but parameters has no 'W3', 'b3'" in message
    assert "add parameters" in message


def test_a_W_with_the_wrong_row_count_is_blamed_not_its_bias(case):
    # Before: "parameters['b2'] has shape (3, 1) but must be a (4, 1) column", though b2 and
    # W3 agree on 3 units and W2 is the odd one out.
    X, Y, parameters, gradients = case
    parameters["W2"] = np.ones((4, 5))
    message = _message(ValueError, lambda: check(parameters, gradients, X, Y))
    assert message.startswith("parameters['W2'] has shape (4, 5)")
    assert "W2 must have shape (3, 5)" in message


def test_the_output_layer_names_both_W_and_b(case):
    # Before: "parameters['b3'] has shape (1, 1) but must be a (2, 1) column", though nothing
    # after the output layer says whether W3 or b3 has the wrong number of outputs.
    X, Y, parameters, gradients = case
    n_layers = sum(1 for key in parameters if key.startswith("W"))
    W = f"W{n_layers}"
    parameters[W] = np.ones((parameters[W].shape[0] + 1, parameters[W].shape[1]))
    message = _message(ValueError, lambda: check(parameters, gradients, X, Y))
    assert message.startswith(f"parameters['{W}'] has shape {parameters[W].shape}")
    assert f"b{n_layers}" in message and "number of outputs" in message


def test_a_bias_with_the_wrong_length_is_still_blamed(case):
    # The other way round: b2 disagrees with W2 and W3, which agree with each other.
    X, Y, parameters, gradients = case
    parameters["b2"] = np.ones((4, 1))
    message = _message(ValueError, lambda: check(parameters, gradients, X, Y))
    assert message.startswith("parameters['b2'] has shape (4, 1)") and "(3, 1)" in message


@pytest.mark.parametrize("labels", [np.array([0.0, 1.0, 2.0, 1.0]), np.array([0, 1, 1, 0],
                                                                          dtype=bool)])
def test_softmax_labels_of_shape_m_must_be_integers(helpers, labels):
    # Before: "Y must have shape (3, 4) ...; got shape (4,)", silent on integer labels.
    X, Y, parameters = helpers.random_network((2, 4, 3), 4, 52)
    model = gradcheck_fast.MLP(output="softmax")
    gradients = {f"d{k}": np.zeros_like(v) for k, v in parameters.items()}
    message = _message(ValueError, lambda: check(parameters, gradients, X, labels,
                                                 model=model))
    assert "integer class labels" in message and f"dtype {labels.dtype}" in message
    assert "Y.astype(int)" in message and "one-hot Y of shape (3, m)" in message
    # The fix the message names works.
    assert check(parameters, gradients, X, labels.astype(int), model=model).n_params > 0


@pytest.mark.parametrize("option, value", [("epsilon", 10**400), ("threshold", 10**400),
                                           ("n_per_block", -10**400),
                                           ("n_threads", 10**400)],
                         ids=["epsilon", "threshold", "n_per_block", "n_threads"])
def test_a_huge_int_is_shown_compactly(case, option, value):
    # Before: all 401 digits of 10**400 in the message.
    X, Y, parameters, gradients = case
    message = _message(ValueError, lambda: check(parameters, gradients, X, Y,
                                                 **{option: value}))
    assert message.startswith(option) and len(message) < 200
    assert "1e400" in message


@pytest.mark.parametrize("theta", [np.array(1.5), 1.5])
def test_custom_check_refuses_a_0d_theta(theta):
    # Before: np.ascontiguousarray made the 0-d theta 1-d, and the check ran on it.
    def cost(theta):
        return float(np.sum(theta**2))

    message = _message(ValueError, lambda: gradcheck_fast.check(cost, theta, [3.0]))
    assert message.startswith("theta must be a non-empty vector")
    assert "shape ()" in message and "np.atleast_1d(theta)" in message


def test_a_0d_X_shows_its_own_shape(case):
    # Before: "got shape (1,)", a shape the caller never passed.
    X, Y, parameters, gradients = case
    message = _message(ValueError, lambda: check(parameters, gradients, 1.0, Y))
    assert message.startswith("X must have shape (4, m)") and "got shape ()" in message


def test_a_stray_key_far_above_the_network_is_unexpected_not_a_gap(case):
    # The depth that blames fewer keys: one stray key, rather than ~2e9 missing ones.
    X, Y, parameters, gradients = case
    parameters["W999999999"] = np.ones((1, 1))
    message = _message(ValueError, lambda: check(parameters, gradients, X, Y))
    assert message.startswith("parameters has unexpected key 'W999999999'")


@pytest.mark.parametrize("source, key, near", [("parameters", "W1", "W1 "),
                                               ("gradients", "dW1", "dW1 "),
                                               ("parameters", "b2", "B2")])
def test_a_near_miss_key_is_named(case, source, key, near):
    # Before: "missing key 'W1'" without a word on the 'W1 ' that is there.
    X, Y, parameters, gradients = case
    mapping = dict(parameters if source == "parameters" else gradients)
    mapping[near] = mapping.pop(key)
    arguments = (mapping, gradients) if source == "parameters" else (parameters, mapping)
    message = _message(ValueError, lambda: check(*arguments, X, Y))
    assert f"missing key {key!r}" in message and f"did you mean {near!r}?" in message
