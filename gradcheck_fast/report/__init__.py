"""The report of a gradient check: result types, the judgement of the numbers, text, assembly.

- :mod:`.types` -- :class:`Element`, :class:`BlockResult`, :class:`GradientCheckReport`,
  :class:`GradientCheckFailed`: the results, as data;
- :mod:`.diagnosis` -- noise bounds and tolerances, which elements (or probes) fail or are
  unverified, a block's verdict, what a wrong block's mistake looks like;
- :mod:`.formatting` -- ``str(report)``: the verdict, the criteria, the table, the notes;
- :mod:`.build` -- one builder for full, sampled and directional checks.

Why two criteria: the seed's global ``difference`` (eq. (3)) can hide one wrong element among
millions, so ``report.passed`` is decided elementwise, ``|analytic - numerical| <= atol + rtol
|numerical| + noise`` (torch's convention plus each element's bound on the rounding of its
central difference); ``seed_passed`` keeps the seed's number and threshold.
"""

from __future__ import annotations

from .build import N_WORST, build, build_directional_report, build_report
from .diagnosis import (
    NO_HINTS,
    SIGMA_FACTOR,
    TIGHT_FIT,
    UNVERIFIABLE_FRACTION,
    Hints,
    allowance,
    diagnose,
    layer_numbers,
    noise_bound,
    relative_difference,
    shape_factors,
)
from .types import BlockResult, Element, GradientCheckFailed, GradientCheckReport

__all__ = [
    "NO_HINTS",
    "N_WORST",
    "SIGMA_FACTOR",
    "TIGHT_FIT",
    "UNVERIFIABLE_FRACTION",
    "BlockResult",
    "Element",
    "Hints",
    "GradientCheckFailed",
    "GradientCheckReport",
    "allowance",
    "build",
    "build_directional_report",
    "build_report",
    "diagnose",
    "layer_numbers",
    "noise_bound",
    "relative_difference",
    "shape_factors",
]
