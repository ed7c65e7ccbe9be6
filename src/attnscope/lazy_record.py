"""Lazy capture's pass: the model's own fast attention, recording queries, keys and row
log-sum-exps as it runs.

A lazy capture needs, per layer, the queries and keys exactly as the model used them and each
query row's log-sum-exp of its scaled, masked scores (see :mod:`attnscope.lazy`). On a CPU the
fused attention kernel that SDPA runs (``_scaled_dot_product_flash_attention_for_cpu``) returns
that log-sum-exp beside its output, as it needs it for its online softmax: computing it costs
nothing more than the forward pass. This module registers an attention implementation with
transformers, ``"attnscope_lse"``, that runs the kernel, keeps what it was given and what it
returned, and hands the model the same output SDPA would.

    with recording(loaded.model) as record:
        loaded.model(**inputs)
    record.queries[l], record.keys[l], record.lse[l]   # [B, H, T, d], [B, H_kv, T, d], [B, H, T]

Only the thread that opened the ``with`` block records; a pass from another thread meanwhile
runs the same kernel and records nothing. Where the kernel is missing (another device, an old
torch) the implementation runs transformers' own SDPA and records queries and keys only
(``record.lse`` holds None for those layers; lazy capture then computes them in row blocks).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

__all__ = ["IMPLEMENTATION", "LayerRecord", "kernel_available", "recording", "register"]

#: the attention implementation's name, as transformers' ``set_attn_implementation`` takes it.
IMPLEMENTATION = "attnscope_lse"

_STATE = threading.local()
_REGISTER_LOCK = threading.Lock()


@dataclass
class LayerRecord:
    """What one thread's pass handed its attention, layer by layer, in the order it ran.

    ``keep(layer, query, key, lse)`` receives device tensors ``[B, H, T, d]``, ``[B, H_kv, T,
    d]`` and ``[B, H, T]`` (or None) and may move or cut them; what it returns is appended."""

    keep: Any = None
    queries: list[Any] = field(default_factory=list)
    keys: list[Any] = field(default_factory=list)
    lse: list[Any] = field(default_factory=list)
    _bool_mask: tuple[Any, Any] | None = None  # (the model's bool mask, its additive form)

    def additive(self, mask: Any, dtype: Any) -> Any:
        """The kernel takes an additive float mask: 0 where the model lets a query see a key,
        -inf where it does not. Every layer of a pass shares the model's mask, so it is
        converted once."""
        if self._bool_mask is not None and self._bool_mask[0] is mask:
            return self._bool_mask[1]
        converted = _additive(mask, dtype)
        self._bool_mask = (mask, converted)
        return converted


def _additive(mask: Any, dtype: Any) -> Any:
    """A bool mask (True: the query sees the key) as 0 / -inf of ``dtype``."""
    import torch

    zero = torch.zeros((), dtype=dtype, device=mask.device)
    hidden = torch.full((), float("-inf"), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, hidden)


def kernel_available() -> bool:
    """Whether this torch has the CPU attention kernel that returns row log-sum-exps."""
    import torch

    return hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")


class recording:
    """Record this thread's passes through models running the ``"attnscope_lse"``
    implementation (see the module docstring). Switching the model to it is the caller's
    part (:class:`attnscope.lazy._fast_attention`)."""

    def __init__(self, keep: Any = None) -> None:
        self.record = LayerRecord(keep=keep)

    def __enter__(self) -> LayerRecord:
        register()
        if getattr(_STATE, "record", None) is not None:
            raise RuntimeError("a lazy capture is already recording on this thread")
        _STATE.record = self.record
        return self.record

    def __exit__(self, *exc: Any) -> None:
        _STATE.record = None
        self.record._bool_mask = None


def register() -> None:
    """Add the implementation (and its mask, SDPA's) to transformers' registries, once."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    with _REGISTER_LOCK:
        if IMPLEMENTATION not in ALL_ATTENTION_FUNCTIONS:
            ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, sdpa_mask)
            ALL_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, _attention)


def _attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
               dropout: float = 0.0, scaling: float | None = None, is_causal: bool | None = None,
               position_bias: Any = None, **kwargs: Any) -> tuple[Any, None]:
    """The attention function transformers calls in every layer: ``query`` ``[B, H, T, d]``,
    ``key`` and ``value`` ``[B, H_kv, S, d]``; returns the output ``[B, T, H, d]``, as
    transformers' SDPA function does, and no weights."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    record: LayerRecord | None = getattr(_STATE, "record", None)
    usable = (kernel_available() and query.device.type == "cpu" and position_bias is None
              and kwargs.get("softcap") is None and query.dtype == key.dtype == value.dtype
              and query.shape[2] > 1)
    if not usable:
        out, _ = sdpa_attention_forward(module, query, key, value, attention_mask,
                                        dropout=dropout, scaling=scaling, is_causal=is_causal,
                                        position_bias=position_bias, **kwargs)
        lse = None
    else:
        groups = query.shape[1] // key.shape[1]
        keys, values = repeat_kv(key, groups), repeat_kv(value, groups)
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        causal = bool(causal) and attention_mask is None and query.shape[2] == key.shape[2]
        mask = attention_mask
        if mask is not None and mask.dtype == torch.bool:
            mask = (record.additive(mask, query.dtype) if record is not None
                    else _additive(mask, query.dtype))
        output, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, keys, values, dropout, causal, attn_mask=mask, scale=scaling)
        out = output.transpose(1, 2).contiguous()  # (B, T, H, d), as transformers expects
    if record is not None:
        layer = len(record.queries)
        kept = (query, key, lse)
        if record.keep is not None:
            kept = record.keep(layer, query, key, lse)
        record.queries.append(kept[0])
        record.keys.append(kept[1])
        record.lse.append(kept[2])
    return out, None
