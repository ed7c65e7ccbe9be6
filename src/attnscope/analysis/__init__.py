"""Analyses of a Trace: what each head does, rollout and flow, norm-based attention, layer
trends, embedding PCA, and one report page that shows them all.

    import attnscope as at
    trace = at.capture(at.load(), "The girl poured water into a tall glass.")
    print(at.head_patterns(trace))              # every head's pattern scores and label
    at.attention_flow(trace).bar(0).save("flow.png")
    at.report(trace).save("report.html")
"""

from attnscope.analysis.embeddings import Projection, pca, token_path
from attnscope.analysis.figures import attention_graph
from attnscope.analysis.flow import (
    FlowResult,
    attention_flow,
    attention_rollout,
    max_flow,
    residual_attention,
)
from attnscope.analysis.layers import LayerTrends, layer_trends
from attnscope.analysis.norms import NormAttention, attention_norms
from attnscope.analysis.patterns import SCORES, HeadTable, head_patterns
from attnscope.analysis.report import Report, report

__all__ = [
    "SCORES",
    "FlowResult",
    "HeadTable",
    "LayerTrends",
    "NormAttention",
    "Projection",
    "Report",
    "attention_flow",
    "attention_graph",
    "attention_norms",
    "attention_rollout",
    "head_patterns",
    "layer_trends",
    "max_flow",
    "pca",
    "report",
    "residual_attention",
    "token_path",
]
