"""The registry of context-mixing methods: one dict, read by :func:`attnscope.context_mixing`
and by the ``attnscope explain-token --method`` choices.

It imports nothing heavy, so the command line builds its choices without loading torch; the
functions themselves live in :mod:`attnscope.analysis.context_mixing` under the names given here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MEASURE_NAMES", "METHODS", "MixingMethod"]


@dataclass(frozen=True)
class MixingMethod:
    """One context-mixing method: what it measures, whether it needs a target (the gradient
    methods differentiate one), and the name of its function in
    :mod:`attnscope.analysis.context_mixing`."""

    summary: str
    needs_target: bool
    function: str


#: method name -> :class:`MixingMethod`
METHODS: dict[str, MixingMethod] = {
    "value_zeroing": MixingMethod(
        "1 - cos of a layer's output when a token's value vectors are zeroed "
        "(Mohebbi et al. 2023)", False, "_value_zeroing"),
    "alti": MixingMethod(
        "per-token terms of the attention block's output, by distance (Ferrando et al. 2022)",
        False, "_alti"),
    "norms2": MixingMethod(
        "norms of the per-token terms with residual and layer norm (Kobayashi et al. 2021)",
        False, "_norms2"),
    "attattr": MixingMethod(
        "attention x integrated gradient of the target (Hao et al. 2021)", True, "_attattr"),
    "grad_rollout": MixingMethod(
        "gradient-weighted attention rollout (Chefer et al. 2021)", True, "_grad_rollout"),
}


#: How pages name each method (the views' measure selectors, the report's section).
MEASURE_NAMES: dict[str, str] = {
    "value_zeroing": "Value Zeroing", "alti": "ALTI", "norms2": "norms2",
    "attattr": "attention \u00d7 gradient", "grad_rollout": "gradient rollout",
}
