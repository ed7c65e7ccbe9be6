"""The decoder self-attention and cross attention of an encoder-decoder model (T5, BART) for
``capture(model, text, text_b, attention="lazy")``: their queries and keys recorded during the
model's SDPA pass, turned into the LazyTraces ``lazy.decoder`` and ``lazy.cross``.

The encoder's queries and keys come from :class:`attnscope.adapters.hooks.QKVRecorder`, as for
every family; the decoder's are hooked here on the query and key projections of each decoder
layer (``q``/``k`` in T5, ``q_proj``/``k_proj`` in BART), whose outputs ``[1, T, H·d]`` are the
queries and keys the attention uses (T5's position bias and BART's scale are added from the
adapter's facts, as for the encoder).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Seq2SeqRecorder"]


class Seq2SeqRecorder:
    """Forward hooks on the query and key projections of an encoder-decoder model's decoder
    self-attention and cross attention (T5, BART), for the pass's ``with`` block; the outputs
    ``[1, T, H·d]`` are kept per (part, layer)."""

    def __init__(self, model: Any) -> None:
        from attnscope.adapters import get_adapter

        self.loaded = model
        self.adapter = get_adapter(model)
        self.base = model.model.base_model
        self.num_layers = len(self.base.decoder.block if model.model_type == "t5"
                              else self.base.decoder.layers)
        self.kept: dict[tuple[str, int, str], Any] = {}
        self.handles: list[Any] = []

    def _modules(self, layer: int, part: str) -> tuple[Any, Any]:
        if self.loaded.model_type == "t5":
            block = self.base.decoder.block[layer]
            attn = block.layer[1].EncDecAttention if part == "cross" else (
                block.layer[0].SelfAttention)
            return attn.q, attn.k
        block = self.base.decoder.layers[layer]
        attn = block.encoder_attn if part == "cross" else block.self_attn
        return attn.q_proj, attn.k_proj

    def __enter__(self) -> Seq2SeqRecorder:
        def keep(key: tuple[str, int, str]) -> Any:
            def hook(module: Any, args: Any, output: Any) -> None:
                self.kept[key] = output.detach()
            return hook

        for layer in range(self.num_layers):
            for part in ("decoder", "cross"):
                for name, module in zip("qk", self._modules(layer, part), strict=True):
                    self.handles.append(module.register_forward_hook(keep((part, layer, name))))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def part(self, part: str, encoder: Any, side: Any, layers: list[int],
             heads: tuple[int, ...] | None, block: int) -> Any:
        """The decoder (causal, over the decoder tokens) or cross (decoder queries over the
        encoder's keys) attention as a LazyTrace of the chosen layers and heads."""
        # the encoder's LazyTrace class builds the part: attnscope.lazy imports this module,
        # so this module names no class of it (``encoder`` and the result are LazyTraces)
        LazyTrace = type(encoder)
        from attnscope.selection import select_extra

        H = self.loaded.num_heads
        chosen = list(range(H)) if heads is None else list(heads)

        def stack(name: str) -> np.ndarray:
            out = []
            for layer in layers:
                x = self.kept.pop((part, layer, name))[0]  # (T, H·d)
                x = x.reshape(x.shape[0], H, -1).transpose(0, 1)[chosen]  # (H, T, d)
                out.append(x.float().cpu().numpy())
            return np.stack(out)

        params = [self.adapter.attention(self.loaded.model, layer, part) for layer in layers]
        bias = params[0].position_bias
        extra: dict[str, Any] = {"qkv_adapter": self.adapter.name}
        if bias is not None:
            extra = select_extra({**extra, "position_bias": bias.to_json()}, None, heads)
        q, k = stack("q"), stack("k")
        n = len(side)
        lazy = LazyTrace(
            model_name=encoder.model_name, model_type=encoder.model_type,
            architecture=encoder.architecture, text=side.text, text_b=None,
            tokens=tuple(side.tokens), input_ids=np.asarray(side.input_ids),
            token_type_ids=np.zeros(n, np.int64), special_mask=np.asarray(side.special_mask),
            word_ids=np.asarray(side.word_ids), offsets=np.asarray(side.offsets),
            segment_ids=np.asarray(side.segment_ids), sentence_b_start=None,
            truncated=int(side.dropped), queries=q, keys=k,
            lse=np.zeros(q.shape[:3], np.float32),
            scales=np.asarray([float(p.scale) for p in params], np.float32),
            causal=part == "decoder", sliding_windows=(None,) * len(layers), extra=extra,
            layer_ids=encoder.layer_ids, head_ids=encoder.head_ids,
        )
        lazy._compute_lse(block)
        return lazy
