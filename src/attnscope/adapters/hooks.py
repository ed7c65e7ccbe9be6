"""Record queries, keys and values during a forward pass, with hooks on the real modules.

Forward hooks catch the outputs of each layer's query/key/value projections (the model's own
modules, never forked classes); RoPE models also get a forward pre-hook that reads the cos/sin
the model hands its attention module, so stored queries and keys are rotated exactly as the
model rotates them. Every hook is removed on leaving the ``with`` block, error or not.

    with QKVRecorder(loaded) as recorder:
        out = loaded.model(**inputs, output_attentions=True)
    queries, keys, values = recorder.per_layer()   # each: L tensors [B, H, T, d]
"""

from __future__ import annotations

import threading
from typing import Any

from attnscope.adapters import get_adapter

__all__ = ["QKVRecorder"]

# torch numbers hook handles with a plain class counter, which two threads registering at once
# can give the same number (one hook then replaces, and is removed with, the other): hooks are
# added and removed under one lock.
_REGISTRY_LOCK = threading.Lock()


class QKVRecorder:
    """Hooks on the self-attention projections of every layer of an encoder or decoder-only
    model (the encoder of T5/BART). See the module docstring."""

    def __init__(self, loaded: Any) -> None:
        self.adapter = get_adapter(loaded)
        self.loaded = loaded
        self.num_layers = int(loaded.num_layers)
        self._handles: list[Any] = []
        self._thread: int | None = None  # the thread whose forward passes are recorded
        # raw[layer] maps "q"/"k"/"v"/"qkv"/"rope" to what the hooks saw in the last pass.
        self._raw: list[dict[str, Any]] = [{} for _ in range(self.num_layers)]

    def facts(self) -> dict[str, Any]:
        """Scale, key/value heads, rotary and position-bias facts for ``trace.extra``."""
        return self.adapter.facts(self.loaded.model, self.num_layers)

    def __enter__(self) -> QKVRecorder:
        self._thread = threading.get_ident()
        with _REGISTRY_LOCK:
            self._register()
        return self

    def _register(self) -> None:
        try:
            for layer in range(self.num_layers):
                points = self.adapter.hook_points(self.loaded.model, layer)
                store = self._raw[layer]
                for name in ("q", "k", "v", "qkv"):
                    module = getattr(points, name)
                    if module is not None:
                        hook = _keep_output(store, name, self._thread)
                        self._handles.append(module.register_forward_hook(hook))
                if points.rotary is not None:
                    self._handles.append(points.rotary.register_forward_pre_hook(
                        _keep_rope(store, self._thread), with_kwargs=True))
        except BaseException:
            self._remove_all()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this recorder registered."""
        with _REGISTRY_LOCK:
            self._remove_all()

    def _remove_all(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def per_layer(self, *, repeat_kv_heads: bool = True) -> tuple[list[Any], list[Any], list[Any]]:
        """Queries, keys and values of each layer, as lists of L tensors ``[B, H, T, d]``.

        Queries and keys are post-rotary; grouped key/value heads are repeated to H heads, so
        ``q @ k^T * scale`` (+ bias) gives the model's scores (``repeat_kv_heads=False`` keeps
        keys and values at ``[B, H_kv, T, d]``: query head h uses key head h // (H // H_kv)).
        What the hooks kept is released.
        """
        import torch

        from attnscope.adapters.positions import apply_rotary, repeat_kv, rotary_cos_sin

        queries, keys, values = [], [], []
        for layer in range(self.num_layers):
            raw = self._raw[layer]
            self._raw[layer] = {}
            params = self.adapter.attention(self.loaded.model, layer, "self")
            H, H_kv, d = params.num_heads, params.num_kv_heads, params.head_dim
            if "qkv" in raw:
                q, k, v = raw["qkv"].split(H * d, dim=-1)  # fused [q | k | v]: each (B, T, H*d)
            else:
                q, k, v = raw["q"], raw["k"], raw["v"]  # (B, T, H*d), (B, T, H_kv*d) x 2
            B, T, _ = q.shape
            q = q.reshape(B, T, H, d).transpose(1, 2)  # (B, H, T, d)
            k = k.reshape(B, T, H_kv, d).transpose(1, 2)  # (B, H_kv, T, d)
            v = v.reshape(B, T, H_kv, d).transpose(1, 2)  # (B, H_kv, T, d)
            if "rope" in raw:
                cos, sin = raw["rope"]  # each (B, T, d): the model's own rotation
                q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            elif params.rotary is not None:  # the model passed no cos/sin: rotate as it would
                cos, sin = rotary_cos_sin(torch.arange(T, device=q.device), params.rotary)
                q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            queries.append(q)
            group = H // H_kv if repeat_kv_heads else 1
            keys.append(repeat_kv(k, group))  # (B, H, T, d), or (B, H_kv, T, d) unrepeated
            values.append(repeat_kv(v, group))
        return queries, keys, values


def _keep_output(store: dict[str, Any], name: str, thread: int | None) -> Any:
    def hook(module: Any, args: Any, output: Any) -> None:
        if threading.get_ident() == thread:  # another thread's pass: not ours to record
            store[name] = output.detach()

    return hook


def _keep_rope(store: dict[str, Any], thread: int | None) -> Any:
    # kwargs has a default: if the hook is removed while another thread's forward pass is
    # running, torch may call it once more without them.
    def hook(module: Any, args: Any, kwargs: dict[str, Any] | None = None) -> None:
        if threading.get_ident() != thread or kwargs is None:
            return
        rope = kwargs.get("position_embeddings")
        if rope is None and len(args) > 1:
            rope = args[1]
        if rope is not None:
            store["rope"] = (rope[0].detach(), rope[1].detach())

    return hook
