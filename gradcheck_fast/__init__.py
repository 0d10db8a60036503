"""gradcheck_fast: finite-difference gradient checking of neural networks, fast.

The seed's API (``gradient_check``, ``gradient_check_n``, ``forward_propagation_n``,
``backward_propagation_n``, ``dictionary_to_vector``, ``vector_to_dictionary``,
``gradients_to_vector``) with jitted parallel kernels behind it, :func:`check_gradients` for a
full report, and :mod:`gradcheck_fast.reference`, the seed's own loop, as the baseline.
"""

from __future__ import annotations

# numba's threading layer for the process, chosen before anything else of the package is
# imported: fork-safe unless the user chose one (see _threads). numba starts the layer at the
# first parallel launch and never changes it after that.
from . import _threads

_threads.choose_threading_layer()

from . import reference
from ._jit import CacheUnavailableWarning

# Every public function from api; the types from the rooms that define them.
from .api import (
    assert_gradients_close,
    backward_propagation_n,
    check,
    check_gradients,
    check_layer,
    dictionary_to_vector,
    estimate_cost,
    forward_propagation_n,
    gradient_check,
    gradient_check_n,
    gradients_to_vector,
    release_memory,
    step_sweep,
    vector_to_dictionary,
)
from .layout import Layout, MLPLayout
from .models import MLP
from .options import LowPrecisionWarning
from .planning import CostEstimate
from .report import BlockResult, Element, GradientCheckFailed, GradientCheckReport
from .sweep import SweepReport

__version__ = "0.1.0"

__all__ = [
    "BlockResult",
    "CacheUnavailableWarning",
    "CostEstimate",
    "Element",
    "GradientCheckFailed",
    "GradientCheckReport",
    "LowPrecisionWarning",
    "assert_gradients_close",
    "check",
    "check_layer",
    "Layout",
    "MLP",
    "MLPLayout",
    "backward_propagation_n",
    "check_gradients",
    "dictionary_to_vector",
    "estimate_cost",
    "forward_propagation_n",
    "gradient_check",
    "gradient_check_n",
    "gradients_to_vector",
    "reference",
    "release_memory",
    "step_sweep",
    "SweepReport",
    "vector_to_dictionary",
]
