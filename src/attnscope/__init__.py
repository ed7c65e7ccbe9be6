"""attnscope: see, measure and understand self-attention in any Hugging Face transformer.

    import attnscope as at
    model = at.load()                    # the embedded default, all-MiniLM-L6-v2
    trace = at.capture(model, "leaves fall in autumn", "autumn is marked by colorful foliage")
    at.heatmap(trace, layer=-1, head=0).save("head.png")
"""

from attnscope.analysis import (
    attention_flow,
    attention_graph,
    attention_norms,
    attention_rollout,
    head_patterns,
    layer_trends,
    pca,
    report,
    token_path,
)
from attnscope.capture import capture, capture_batch, iter_capture
from attnscope.errors import AttnscopeError
from attnscope.explain import Explanation, explain
from attnscope.models import DEFAULT_MODEL_NAME, LoadedModel, load
from attnscope.render.static import AttnFigure, heads_grid, heatmap, model_grid
from attnscope.render.views import AttnView, head_view, model_view, neuron_view
from attnscope.tokens import Tokenization, TruncationWarning, tokenize
from attnscope.trace import Trace
from attnscope.words import merge_subwords

__version__ = "0.1.0"

__all__ = [
    "AttnFigure",
    "AttnView",
    "AttnscopeError",
    "DEFAULT_MODEL_NAME",
    "Explanation",
    "LoadedModel",
    "Tokenization",
    "Trace",
    "TruncationWarning",
    "__version__",
    "attention_flow",
    "attention_graph",
    "attention_norms",
    "attention_rollout",
    "capture",
    "capture_batch",
    "explain",
    "head_patterns",
    "head_view",
    "heads_grid",
    "heatmap",
    "iter_capture",
    "layer_trends",
    "load",
    "merge_subwords",
    "model_grid",
    "model_view",
    "neuron_view",
    "pca",
    "report",
    "token_path",
    "tokenize",
]
