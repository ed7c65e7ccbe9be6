"""Read the residual stream through the unembedding: direct logit attribution and logit lens
(causal LMs: the LLaMA family and GPT-2).

**Direct logit attribution.** A causal LM's logit for token t at position p is
``u_t · N(r)`` (+ the head's bias), where r ``[D]`` is the residual stream after the last layer,
N the final norm and ``u_t`` the unembedding row of t. The residual is a sum: the embeddings,
every MLP's output, and every attention layer's output, which is itself a sum over heads,
``W_O[:, head h's slice] @ z_h`` (+ the output bias). N is not linear, but with its scale frozen
at the value measured on r (RMSNorm: ``1 / sqrt(mean(r²) + eps)``; LayerNorm: also the mean it
subtracts) it is: ``N(x) = s * w * x`` (+ b). So each head's *direct* contribution is
``u_t · (s * w * W_O,h z_h)``, and the contributions of every head plus the rest of the residual
(embeddings, MLPs, output biases, the norm's bias) add up to the model's logit exactly, up to
float error. "Direct" means through the residual stream alone: what a head does to the layers
above it is not counted.

**Logit lens.** Each layer's residual stream read as if it were the last: through the final
norm (at its own scale) and the unembedding, the top tokens per layer and position.

Shapes: L layers, H heads of size d, T tokens, D hidden size, V vocabulary, k top tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attnscope.errors import AttnscopeError, check_index
from attnscope.interventions.ablation import _one, _target_id, samples_from
from attnscope.interventions.gates import HeadGates, layer_modules, output_projection
from attnscope.interventions.objectives import Objective

__all__ = ["LogitAttribution", "LogitLens", "direct_logit_attribution", "logit_lens"]


@dataclass(frozen=True)
class LogitAttribution:
    """Each head's direct contribution to one logit.

    Attributes:
        heads: float64 ``[L, H]``: head h of layer l's contribution to the target's logit.
        rest: everything else in the residual stream (embeddings, MLPs, output and norm biases).
        logit: the model's own logit; ``heads.sum() + rest`` equals it up to float error.
        target, target_id, position: the token whose logit is attributed, and where.
        scale: the final norm's frozen scale (1 / rms, or 1 / std for LayerNorm).
    """

    model_name: str
    heads: np.ndarray
    rest: float
    logit: float
    target: str
    target_id: int
    position: int
    scale: float

    def top(self, k: int = 10) -> list[tuple[int, int, float]]:
        """The ``k`` heads with the largest contributions (layer, head, value), largest first."""
        H = self.heads.shape[1]
        order = np.argsort(-self.heads, axis=None, kind="stable")[:k]
        return [(int(i // H), int(i % H), float(self.heads.flat[i])) for i in order]

    def __str__(self) -> str:
        lines = [f"{self.model_name}: logit of {self.target!r} at position {self.position} = "
                 f"{self.logit:.4f} = heads {self.heads.sum():.4f} + rest {self.rest:.4f}"]
        lines += [f"  L{layer}H{head}: {value:+.4f}" for layer, head, value in self.top(5)]
        return "\n".join(lines)


@dataclass(frozen=True)
class LogitLens:
    """The top tokens of every layer's residual read through the final norm and unembedding.

    Attributes:
        tokens: the input tokens ``[T]``.
        top_ids: int64 ``[L+1, T, k]`` (row 0: the embeddings; row L: the model's own output).
        top_probs: float32 ``[L+1, T, k]``.
        top_tokens: the same as strings, nested ``[L+1][T][k]``.
    """

    model_name: str
    tokens: tuple[str, ...]
    top_ids: np.ndarray
    top_probs: np.ndarray
    top_tokens: tuple[tuple[tuple[str, ...], ...], ...]

    def at(self, position: int) -> list[tuple[str, float]]:
        """The top token and its probability at ``position`` after each layer (``[L+1]``)."""
        position = check_index(position, len(self.tokens), "position")
        return [(self.top_tokens[layer][position][0], float(self.top_probs[layer, position, 0]))
                for layer in range(self.top_ids.shape[0])]

    def __str__(self) -> str:
        lines = [f"{self.model_name}: logit lens, top token after each layer (rows) at each "
                 "position (columns)"]
        for layer, row in enumerate(self.top_tokens):
            lines.append(f"{layer:3d}  " + " ".join(f"{cell[0]!r:>10}" for cell in row))
        return "\n".join(lines)


def _causal(model: Any, what: str) -> Objective:
    objective = Objective(model)
    if objective.kind != "causal" or objective.final_norm is None or objective.head is None:
        raise AttnscopeError(
            f"{what} reads a causal LM's residual stream through its final norm and "
            f"unembedding; {model.name!r} is not one (it works on LLaMA-family and GPT-2 models)."
        )
    return objective


def _frozen_norm(norm: Any, residual: torch.Tensor) -> tuple[Any, torch.Tensor, float]:
    """The final norm as a linear map with its scale frozen at ``residual`` ``[D]``:
    (linear part, the constant it adds ``[D]``, the scale)."""
    weight = norm.weight.double()
    bias = getattr(norm, "bias", None)
    eps = float(getattr(norm, "variance_epsilon", 0) or getattr(norm, "eps", 1e-6))
    r = residual.double()
    if bias is not None or type(norm).__name__ == "LayerNorm":  # LayerNorm: centre, then scale
        scale = float(1.0 / torch.sqrt(r.var(unbiased=False) + eps))

        def linear(x: torch.Tensor) -> torch.Tensor:
            return (x - x.mean(-1, keepdim=True)) * scale * weight

        constant = bias.double() if bias is not None else torch.zeros_like(weight)
        return linear, constant, scale
    scale = float(1.0 / torch.sqrt(r.pow(2).mean() + eps))
    return (lambda x: x * scale * weight), torch.zeros_like(weight), scale


@torch.no_grad()
def direct_logit_attribution(
    model: Any, text_or_ids: Any, target: str | int, position: int | None = None
) -> LogitAttribution:
    """Each head's direct contribution to the logit of ``target`` predicted at ``position``
    (default: the last token, the next-token prediction). See the module docstring.

    Returns:
        A :class:`LogitAttribution`: ``heads`` ``[L, H]``, ``rest``, ``logit``.
    """
    from attnscope.interventions.ablation import _position

    objective = _causal(model, "Direct logit attribution")
    (sample,) = _one(samples_from(model, text_or_ids))
    target_id = _target_id(model, target)
    p = _position(model, sample, position, objective)
    batch = objective.batch([sample])
    seen: dict[str, torch.Tensor] = {}
    handle = objective.final_norm.register_forward_pre_hook(
        lambda m, args: seen.__setitem__("residual", args[0].detach()))
    try:
        with HeadGates(model, record=True) as gates:
            logits = model.lm_model(**batch.inputs).logits  # (1, T, V)
    finally:
        handle.remove()
    residual = seen["residual"][0, p]  # (D,): the stream after the last layer
    assert objective.head is not None and objective.final_norm is not None  # a causal LM's
    linear, constant, scale = _frozen_norm(objective.final_norm, residual)
    unembed = objective.head.weight[target_id].double()  # (D,)
    head_bias = getattr(objective.head, "bias", None)
    L, H = model.num_layers, model.num_heads
    contributions = np.zeros((L, H))
    for layer in range(L):
        z = gates.recorded[layer][0, p].double()  # (H, d): each head's output at p
        module = output_projection(model, layer)
        w = module.weight.double()
        w_o = w.T if type(module).__name__ == "Conv1D" else w  # (D, H*d)
        d = z.shape[-1]
        per_head = torch.stack([w_o[:, h * d : (h + 1) * d] @ z[h] for h in range(H)])  # (H, D)
        contributions[layer] = (linear(per_head) @ unembed).cpu().numpy()
    total = float(unembed @ (linear(residual) + constant))
    if head_bias is not None:
        total += float(head_bias[target_id])
    logit = float(logits[0, p, target_id])
    return LogitAttribution(model.name, contributions, total - float(contributions.sum()), logit,
                            model.tokenizer.convert_ids_to_tokens(target_id), target_id, p,
                            scale)


@torch.no_grad()
def logit_lens(model: Any, text_or_ids: Any, k: int = 5) -> LogitLens:
    """Every layer's residual stream read through the final norm and unembedding: the top
    ``k`` tokens per layer and position. See the module docstring.

    Returns:
        A :class:`LogitLens`: ``top_ids``/``top_probs`` ``[L+1, T, k]``.
    """
    objective = _causal(model, "The logit lens")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise AttnscopeError(f"k must be a whole number of 1 or more, not {k!r}.")
    (sample,) = _one(samples_from(model, text_or_ids))
    batch = objective.batch([sample])
    layers = layer_modules(model)
    residuals: list[Any] = [None] * (model.num_layers + 1)

    def keep(index: int) -> Any:
        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            residuals[index] = hidden.detach()[0]  # (T, D)
        return hook

    handles = [layer.register_forward_pre_hook(keep(i), with_kwargs=True)
               for i, layer in enumerate(layers)]
    handles.append(objective.final_norm.register_forward_pre_hook(
        keep(model.num_layers), with_kwargs=True))
    try:
        model.lm_model(**batch.inputs)
    finally:
        for handle in handles:
            handle.remove()
    ids, probs = [], []
    assert objective.head is not None and objective.final_norm is not None  # a causal LM's
    for residual in residuals:
        logits = objective.head(objective.final_norm(residual))  # (T, V)
        top = torch.softmax(logits.float(), -1).topk(min(k, logits.shape[-1]), dim=-1)
        ids.append(top.indices)
        probs.append(top.values)
    top_ids = torch.stack(ids).cpu().numpy()  # (L+1, T, k)
    convert = model.tokenizer.convert_ids_to_tokens
    top_tokens = tuple(tuple(tuple(convert(row.tolist())) for row in layer) for layer in top_ids)
    tokens = tuple(convert(batch.inputs["input_ids"][0].tolist()))
    return LogitLens(model.name, tokens, top_ids, torch.stack(probs).cpu().numpy(), top_tokens)
