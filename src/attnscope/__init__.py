"""attnscope: see, measure and understand self-attention in any Hugging Face transformer.

    import attnscope as at
    model = at.load()                    # the embedded default, all-MiniLM-L6-v2
    trace = at.capture(model, "leaves fall in autumn", "autumn is marked by colorful foliage")
    at.heatmap(trace, layer=-1, head=0).save("head.png")

Importing attnscope is instant: each name below is imported from its module the first time it
is used (PEP 562), and so are the submodules (``at.scratch``, ``at.compat``, ``at.analysis``...).
That keeps ``attnscope --help`` quick and lets the command line answer Ctrl-C at any moment
with one line instead of a traceback.
"""

from __future__ import annotations

import importlib
import sys
import types

# typing.TYPE_CHECKING without importing typing, so that the import stays instant; type
# checkers read the imports at the end of this file.
TYPE_CHECKING = False

__version__ = "0.2.0"

# public name -> the module that defines it
_EXPORTS = {
    "Ablation": "attnscope.interventions",
    "AttnFigure": "attnscope.render.static",
    "AttnView": "attnscope.render.views",
    "AttnscopeError": "attnscope.errors",
    "CorpusResult": "attnscope.corpora",
    "DEFAULT_MODEL_NAME": "attnscope.models",
    "Explanation": "attnscope.explain",
    "HeadImportance": "attnscope.interventions",
    "LazyAttentionWarning": "attnscope.lazy",
    "LazyTrace": "attnscope.lazy",
    "LoadedModel": "attnscope.models",
    "LongView": "attnscope.render.long_view",
    "LogitAttribution": "attnscope.interventions",
    "LogitLens": "attnscope.interventions",
    "MemoryBudgetError": "attnscope.lazy",
    "Tokenization": "attnscope.tokens",
    "Trace": "attnscope.trace",
    "TruncationWarning": "attnscope.tokens",
    "ablate": "attnscope.interventions",
    "atlas": "attnscope.corpora.atlas",
    "attention_flow": "attnscope.analysis",
    "attention_graph": "attnscope.analysis",
    "attention_norms": "attnscope.analysis",
    "attention_rollout": "attnscope.analysis",
    "capture": "attnscope.capture",
    "capture_batch": "attnscope.capture",
    "context_mixing": "attnscope.analysis.context_mixing",
    "corpus": "attnscope.corpora",
    "direct_logit_attribution": "attnscope.interventions",
    "explain": "attnscope.explain",
    "faithfulness": "attnscope.analysis.context_mixing",
    "from_transformer_lens": "attnscope.transformer_lens",
    "generate": "attnscope.generation",
    "generation_view": "attnscope.render.generation_view",
    "head_importance": "attnscope.interventions",
    "head_patterns": "attnscope.analysis",
    "head_view": "attnscope.render.views",
    "heads_grid": "attnscope.render.static",
    "long_view": "attnscope.render.long_view",
    "pooled_attention": "attnscope.render.long_view",
    "heatmap": "attnscope.render.static",
    "iter_capture": "attnscope.capture",
    "joint_embedding": "attnscope.analysis.embeddings",
    "layer_trends": "attnscope.analysis",
    "load": "attnscope.models",
    "logit_lens": "attnscope.interventions",
    "merge_subwords": "attnscope.words",
    "model_grid": "attnscope.render.static",
    "model_view": "attnscope.render.views",
    "neuron_view": "attnscope.render.views",
    "pca": "attnscope.analysis",
    "report": "attnscope.analysis",
    "token_path": "attnscope.analysis",
    "tokenize": "attnscope.tokens",
}

_SUBMODULES = {
    "adapters", "analysis", "capture", "cli", "compat", "corpora", "errors", "explain", "files",
    "generation", "interventions", "lazy", "mixing", "models", "render", "scratch", "testing",
    "tokens", "trace", "transformer_lens", "words",
}

__all__ = [
    "Ablation",
    "AttnFigure",
    "AttnView",
    "AttnscopeError",
    "CorpusResult",
    "DEFAULT_MODEL_NAME",
    "Explanation",
    "HeadImportance",
    "LazyAttentionWarning",
    "LazyTrace",
    "LoadedModel",
    "LogitAttribution",
    "LogitLens",
    "LongView",
    "MemoryBudgetError",
    "Tokenization",
    "Trace",
    "TruncationWarning",
    "__version__",
    "ablate",
    "atlas",
    "attention_flow",
    "attention_graph",
    "attention_norms",
    "attention_rollout",
    "capture",
    "capture_batch",
    "context_mixing",
    "corpus",
    "direct_logit_attribution",
    "explain",
    "faithfulness",
    "from_transformer_lens",
    "generate",
    "generation_view",
    "head_importance",
    "head_patterns",
    "head_view",
    "heads_grid",
    "heatmap",
    "iter_capture",
    "joint_embedding",
    "layer_trends",
    "load",
    "logit_lens",
    "long_view",
    "merge_subwords",
    "model_grid",
    "model_view",
    "neuron_view",
    "pca",
    "pooled_attention",
    "report",
    "token_path",
    "tokenize",
]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is not None:
        value = getattr(importlib.import_module(module_name), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module 'attnscope' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})


class _Package(types.ModuleType):
    """attnscope's module type. Python records every submodule it loads as an attribute of
    its package; ``attnscope.capture`` and ``attnscope.explain`` name functions that share a
    name with their modules, and must stay the functions."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name, "").endswith(f".{name}"):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:  # what type checkers and editors see
    from typing import Any

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
    from attnscope.analysis.context_mixing import context_mixing, faithfulness
    from attnscope.analysis.embeddings import joint_embedding
    from attnscope.capture import capture, capture_batch, iter_capture
    from attnscope.corpora import CorpusResult, corpus
    from attnscope.corpora.atlas import atlas
    from attnscope.errors import AttnscopeError
    from attnscope.explain import Explanation, explain
    from attnscope.generation import generate
    from attnscope.interventions import (
        Ablation,
        HeadImportance,
        LogitAttribution,
        LogitLens,
        ablate,
        direct_logit_attribution,
        head_importance,
        logit_lens,
    )
    from attnscope.lazy import LazyAttentionWarning, LazyTrace, MemoryBudgetError
    from attnscope.models import DEFAULT_MODEL_NAME, LoadedModel, load
    from attnscope.render.generation_view import generation_view
    from attnscope.render.long_view import LongView, long_view, pooled_attention
    from attnscope.render.static import AttnFigure, heads_grid, heatmap, model_grid
    from attnscope.render.views import AttnView, head_view, model_view, neuron_view
    from attnscope.tokens import Tokenization, TruncationWarning, tokenize
    from attnscope.trace import Trace
    from attnscope.transformer_lens import from_transformer_lens
    from attnscope.words import merge_subwords
