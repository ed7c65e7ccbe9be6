"""Architecture adapters: one module per model family, registered by ``config.model_type``.

An adapter says where a family keeps its attention (query/key/value/output projections, head
split, scale, masks, biases, rotary embeddings, grouped-query heads, norms) so that
:mod:`attnscope.scratch` can rebuild that attention by hand and :func:`attnscope.capture` can
record queries, keys and values. Adding a family is one new module in this folder that defines
an :class:`~attnscope.adapters.base.Adapter` subclass and calls :func:`register` on it, plus its
name in ``_FAMILY_MODULES``.

    >>> attnscope.adapters.supported()
    ('bart', 'bert', 'distilbert', 'electra', 'gpt2', 'llama', 'mistral', 'qwen2', 'roberta', 't5')
"""

from __future__ import annotations

import importlib
from typing import Any

from attnscope.adapters.base import Adapter, AttentionParams, HookPoints
from attnscope.errors import AttnscopeError

__all__ = ["Adapter", "AttentionParams", "HookPoints", "get_adapter", "register", "supported"]

# The family modules in this folder; each registers its adapter when imported.
_FAMILY_MODULES = (
    "bart", "bert", "distilbert", "electra", "gpt2", "llama", "mistral", "qwen2", "roberta", "t5",
)

_REGISTRY: dict[str, Adapter] = {}
_loaded = False


def register(adapter_class: type[Adapter]) -> type[Adapter]:
    """Register an adapter class for each of its ``model_types`` (usable as a decorator)."""
    adapter = adapter_class()
    for model_type in adapter_class.model_types:
        _REGISTRY[model_type] = adapter
    return adapter_class


def _load_families() -> None:
    global _loaded
    if not _loaded:
        for name in _FAMILY_MODULES:
            importlib.import_module(f"attnscope.adapters.{name}")
        _loaded = True


def supported() -> tuple[str, ...]:
    """The ``model_type`` names that have an adapter, sorted."""
    _load_families()
    return tuple(sorted(_REGISTRY))


def get_adapter(model: Any, what: str = "queries, keys and values") -> Adapter:
    """The adapter for a LoadedModel, a Trace, a transformers model or a ``model_type`` string.

    Raises:
        AttnscopeError: the family has no adapter; the message names the supported families.
    """
    _load_families()
    model_type: str | None
    if isinstance(model, str):
        model_type = model
    else:
        model_type = getattr(model, "model_type", None)
        if model_type is None:
            model_type = getattr(getattr(model, "config", None), "model_type", None)
    adapter = _REGISTRY.get(str(model_type))
    if adapter is None:
        raise AttnscopeError(
            f"attnscope cannot yet compute {what} for {model_type!r} models (it still captures "
            f"their attention and hidden states); supported families: {', '.join(supported())}."
        )
    return adapter
