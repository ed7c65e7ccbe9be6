"""Interventions on heads: remove them, score them, read what they write.

One mechanism serves everything here: a gate per head where the heads' outputs meet the output
projection (:class:`HeadGates`, a pre-hook on the real module). On it:

* :func:`ablate`: one input with some heads removed (zeroed, or replaced by their mean);
* :func:`head_importance`: every head's importance, exact or by gradient;
* :func:`direct_logit_attribution` and :func:`logit_lens` (causal LMs): each head's direct
  contribution to a logit, and each layer's residual read through the unembedding.

    import attnscope as at
    model = at.load("smollm2")
    print(at.ablate(model, "The capital of France is", heads=[(18, 6)], target=" Paris"))
    at.head_importance(model, texts, method="gradient").figure().save("importance.png")
"""

from attnscope.interventions.ablation import Ablation, ablate
from attnscope.interventions.gates import HeadGates, layer_modules, output_projection
from attnscope.interventions.importance import HeadImportance, head_importance
from attnscope.interventions.lens import (
    LogitAttribution,
    LogitLens,
    direct_logit_attribution,
    logit_lens,
)

__all__ = [
    "Ablation",
    "HeadGates",
    "HeadImportance",
    "LogitAttribution",
    "LogitLens",
    "ablate",
    "direct_logit_attribution",
    "head_importance",
    "layer_modules",
    "logit_lens",
    "output_projection",
]
