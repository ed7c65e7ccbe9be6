"""One gate per head, where the heads' outputs meet the output projection.

Every attention layer ends with an output projection (``o_proj`` in LLaMA, ``c_proj`` in GPT-2,
``attention.output.dense`` in BERT, ``out_lin`` in DistilBERT) whose input is the heads' outputs
side by side, ``[B, T, H*d]``. A forward pre-hook on that real module sees each head's output
separately, so one mechanism serves every intervention:

* ablation: gate 0 (the head's output becomes 0, or a replacement such as its mean);
* importance by gradient: gates of 1 that require grad, d loss / d gate (Michel et al. 2019);
* recording: each head's output, for means and direct logit attribution.

With gate ``g`` and replacement ``r`` a head's output ``z`` becomes ``g * z + (1 - g) * r``.
Hooks are registered on entering the ``with`` block and removed on leaving it, error or not.
While they are installed they act on every forward pass of the model, from any thread: do not
share one model between an intervention and other work running at the same time.

Shapes: B texts, T tokens, H heads of size d, D hidden size, L layers.
"""

from __future__ import annotations

import threading
from typing import Any

from attnscope.adapters import get_adapter
from attnscope.errors import AttnscopeError

__all__ = ["HeadGates", "layer_modules", "output_projection"]

# torch numbers hook handles with a class counter; registering from two threads at once could
# give two hooks one number (see attnscope.adapters.hooks).
_REGISTRY_LOCK = threading.Lock()


def _check_supported(loaded: Any) -> None:
    if loaded.architecture == "encoder-decoder":
        raise AttnscopeError(
            f"Interventions work on encoders and decoder-only models; {loaded.name!r} is an "
            "encoder-decoder model (T5, BART), whose heads attnscope cannot gate yet."
        )


def output_projection(loaded: Any, layer: int) -> Any:
    """The real output-projection module of ``layer``'s self attention (``o_proj``,
    ``c_proj``, ``attention.output.dense``, ``out_lin``...): the module whose weight the
    family's adapter names as the output projection."""
    _check_supported(loaded)
    adapter = get_adapter(loaded, "head interventions")
    w_o = adapter.attention(loaded.model, layer, "self").w_o
    block = layer_modules(loaded)[layer]
    for module in block.modules():
        weight = getattr(module, "weight", None)
        # GPT-2's Conv1D stores the transpose: the adapter's w_o is a view of the same memory.
        if weight is not None and weight.data_ptr() == w_o.data_ptr() and weight.numel() == (
                w_o.numel()):
            return module
    raise AttnscopeError(
        f"attnscope found no output projection in layer {layer} of {loaded.name!r}."
    )


def layer_modules(loaded: Any) -> Any:
    """The ``nn.ModuleList`` of the model's L transformer layers (``layers``, ``h``,
    ``encoder.layer``, ``transformer.layer``), found as the list of L modules holding the
    attention parameters of layer 0."""
    from torch import nn

    _check_supported(loaded)
    adapter = get_adapter(loaded, "head interventions")
    w_q = adapter.attention(loaded.model, 0, "self").w_q
    for module in loaded.model.modules():
        if (isinstance(module, nn.ModuleList) and len(module) == loaded.num_layers
                and any(p.data_ptr() == w_q.data_ptr() for p in module[0].parameters())):
            return module
    raise AttnscopeError(f"attnscope found no list of {loaded.num_layers} layers in "
                         f"{loaded.name!r}.")


class HeadGates:
    """Pre-hooks on every layer's output projection that gate, replace or record heads.

    Args:
        loaded: a LoadedModel (encoder or decoder-only).
        gates: layer -> gate tensor ``[H]`` (the same for every text) or ``[B, H]`` (one row per
            text in the batch); a layer left out is not touched. Gates may require grad.
        replacements: layer -> what a gated head's output is replaced by, ``[H, d]`` (e.g. the
            head's mean output) or anything broadcastable to ``[B, T, H, d]``; default 0.
        record: keep each layer's head outputs ``[B, T, H, d]`` in :attr:`recorded` (detached
            unless ``record_grad``).

        with HeadGates(model, gates={18: torch.tensor([1., 1, 1, 1, 1, 1, 0, 1, 1])}):
            out = model.lm_model(ids)          # layer 18 head 6 removed
    """

    def __init__(
        self,
        loaded: Any,
        gates: dict[int, Any] | None = None,
        replacements: dict[int, Any] | None = None,
        *,
        record: bool = False,
        record_grad: bool = False,
    ) -> None:
        self.loaded = loaded
        self.num_heads = int(loaded.num_heads)
        self.gates = dict(gates or {})
        self.replacements = dict(replacements or {})
        self.record = record
        self.record_grad = record_grad
        self.recorded: dict[int, Any] = {}
        self._handles: list[Any] = []
        layers = range(loaded.num_layers) if record else sorted(self.gates)
        self._modules = {layer: output_projection(loaded, layer) for layer in layers}

    def __enter__(self) -> HeadGates:
        with _REGISTRY_LOCK:
            try:
                for layer, module in self._modules.items():
                    self._handles.append(module.register_forward_pre_hook(self._hook(layer)))
            except BaseException:
                self._remove_all()
                raise
        return self

    def __exit__(self, *exc: Any) -> None:
        with _REGISTRY_LOCK:
            self._remove_all()

    def _remove_all(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def _hook(self, layer: int) -> Any:
        H = self.num_heads

        def hook(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            x = args[0]  # (B, T, H*d): the heads side by side
            B, T, width = x.shape
            heads = x.view(B, T, H, width // H)  # (B, T, H, d)
            if self.record:
                self.recorded[layer] = heads if self.record_grad else heads.detach()
            gate = self.gates.get(layer)
            if gate is None:
                return None
            gate = gate.to(x.dtype)
            g = gate[None, None, :, None] if gate.dim() == 1 else gate[:, None, :, None]
            replacement = self.replacements.get(layer)
            if replacement is None:
                gated = heads * g  # (B, T, H, d)
            else:
                gated = heads * g + (1 - g) * replacement.to(x.dtype)
            return (gated.reshape(B, T, width), *args[1:])

        return hook
