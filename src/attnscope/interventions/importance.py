"""How much each head matters: :func:`head_importance` for every head of a model.

Two methods, read by the same measure as :func:`~attnscope.interventions.ablation.ablate`:

* ``"ablation"``: the exact effect of removing each head alone (L x H runs). Removing a head of
  layer l leaves everything below layer l as it was, so each batch runs the whole model once,
  keeps what entered every layer, and reruns only layers l and above for the heads of layer l:
  about ``H * (L + 1) / 2`` passes' work instead of ``L * H`` (42 for 6 layers x 12 heads).
* ``"gradient"``: Michel et al. (2019), "Are Sixteen Heads Really Better than One?": a gate
  xi_h = 1 on every head's output and the importance |d loss / d xi_h|, from one backward pass
  (one gate per text, so each text gets its own value). For a model without a language-model
  head the measure 1 - cosine has zero gradient at xi = 1 (it is at its minimum); there the
  proxy is its second-order estimate ``0.5 * ||P J_h||^2 / ||e||^2`` (J_h = d embedding / d
  xi_h, P the projection off the embedding e), from one backward pass with one random probe per
  text (Hutchinson): unbiased, noisy for one text, steady over many.

Shapes: N texts, L layers, H heads.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attnscope.errors import AttnscopeError
from attnscope.interventions.ablation import HOWS, head_means, samples_from
from attnscope.interventions.gates import HeadGates, layer_modules
from attnscope.interventions.objectives import Batch, Objective

__all__ = ["METHODS", "HeadImportance", "head_importance"]

METHODS = ("ablation", "gradient")


@dataclass(frozen=True)
class HeadImportance:
    """Every head's importance, layers x heads.

    Attributes:
        model_name: the model. method: "ablation" or "gradient". how: "zero" or "mean".
        measure: what the values are in (see :func:`head_importance`).
        per_text: float64 ``[N, L, H]``: each text's value for each head.
        baseline: float64 ``[N]``: each text's loss with every head (0 for embedding models).
    """

    model_name: str
    method: str
    how: str
    measure: str
    per_text: np.ndarray
    baseline: np.ndarray

    @property
    def values(self) -> np.ndarray:
        """The mean over texts, ``[L, H]``."""
        return self.per_text.mean(axis=0)

    @property
    def spread(self) -> np.ndarray:
        """The standard deviation over texts, ``[L, H]`` (0 for one text)."""
        return self.per_text.std(axis=0)

    @property
    def num_layers(self) -> int:
        return int(self.per_text.shape[1])

    @property
    def num_heads(self) -> int:
        return int(self.per_text.shape[2])

    def top(self, k: int = 10) -> list[tuple[int, int, float]]:
        """The ``k`` most important heads, as (layer, head, value), most important first."""
        values = self.values
        order = np.argsort(-values, axis=None, kind="stable")[:k]
        return [(int(i // self.num_heads), int(i % self.num_heads), float(values.flat[i]))
                for i in order]

    def to_text(self) -> str:
        values, spread = self.values, self.spread
        lines = [f"{self.model_name}: head importance by {self.method} ({self.measure}, "
                 f"{self.per_text.shape[0]} texts; mean ± spread)",
                 "layer  " + "  ".join(f"{'head ' + str(h):>15}" for h in range(self.num_heads))]
        for layer in range(self.num_layers):
            cells = "  ".join(f"{values[layer, h]:>7.4f}±{spread[layer, h]:<7.4f}"
                              for h in range(self.num_heads))
            lines.append(f"{layer:5d}  {cells}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(self.to_text())}</pre>"

    def figure(self) -> Any:
        """Layers (rows) x heads (columns), each cell coloured by importance with its value."""
        from attnscope.interventions.figures import importance_figure

        return importance_figure(self)


def head_importance(
    model: Any,
    texts: Sequence[str] | Any,
    method: str = "ablation",
    *,
    how: str = "zero",
    reference: Sequence[str] | None = None,
    batch_size: int = 16,
    max_seconds: float | None = 600.0,
    seed: int = 0,
) -> HeadImportance:
    """The importance of every head of ``model`` over ``texts``.

    Args:
        model: from :func:`attnscope.load` (an encoder or a decoder-only model).
        texts: a list of texts (or one text, or the token ids of one text).
        method: "ablation" (exact: the effect of removing each head alone, as
            :func:`~attnscope.ablate` measures it) or "gradient" (Michel et al.'s proxy
            |d loss / d gate|, one backward pass).
        how: with "ablation", "zero" or "mean" (then ``reference`` texts give each head's mean).
        batch_size: texts per batch (smaller where a batch's logits would pass 256 MB).
        max_seconds: exact ablation is refused when the estimate from the first batch passes
            this; None runs it whatever it costs.
        seed: the random probes of the gradient method for models without a language-model
            head.

    Returns:
        A :class:`HeadImportance`: ``values`` ``[L, H]`` (mean over texts), ``per_text``
        ``[N, L, H]``, ``figure()``.
    """
    if method not in METHODS:
        raise AttnscopeError(f'method must be "ablation" or "gradient", not {method!r}.')
    if how not in HOWS:
        raise AttnscopeError(f'how must be "zero" or "mean", not {how!r}.')
    if how == "mean" and method == "gradient":
        raise AttnscopeError('The gradient method has no how="mean": it differentiates the gate '
                             'at 1; use method="ablation" for mean ablation.')
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AttnscopeError(f"batch_size must be a whole number of 1 or more, not "
                             f"{batch_size!r}.")
    samples = samples_from(model, texts)
    layers = layer_modules(model)  # an unsupported model says so before any work
    objective = Objective(model)
    replacements = None
    if how == "mean":
        replacements = head_means(model, reference, range(model.num_layers))
    order = sorted(range(len(samples)), key=lambda i: samples[i].length)  # less padding
    size = objective.batch_size(samples, batch_size)
    N, L, H = len(samples), model.num_layers, model.num_heads
    per_text = np.zeros((N, L, H))
    baseline = np.zeros(N)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    started = time.perf_counter()
    for first in range(0, N, size):
        chosen = order[first : first + size]
        batch = objective.batch([samples[i] for i in chosen])
        if method == "gradient":
            values, base = _gradient_batch(model, objective, batch, generator)
        else:
            budget = None
            if first == 0 and max_seconds is not None:
                budget = (max_seconds, math.ceil(N / size), started)
            values, base = _ablation_batch(model, objective, batch, layers, replacements, budget)
        per_text[chosen] = values
        baseline[chosen] = base
    measure = objective.description
    if method == "gradient":
        measure = ("|d loss / d gate| " + measure if objective.has_lm_head else
                   "second-order estimate of " + measure)
    return HeadImportance(model.name, method, how, measure, per_text, baseline)


def _call_layer(layer: Any, recorded: tuple[tuple[Any, ...], dict[str, Any]], x: Any) -> Any:
    """Run one real layer module on ``x`` ``[B, T, D]`` with the other arguments the model gave
    it (masks, rotary cos/sin...) in the recorded pass."""
    args, kwargs = recorded
    out = layer(x, *args[1:], **kwargs) if args else layer(**{**kwargs, "hidden_states": x})
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def _ablation_batch(
    model: Any, objective: Objective, batch: Batch, layers: Any,
    replacements: dict[int, torch.Tensor] | None,
    budget: tuple[float, int, float] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact single-head ablation effects ``[B, L, H]`` and baselines ``[B]`` for one batch."""
    L, H = model.num_layers, model.num_heads
    recorded: list[Any] = [None] * L
    last: dict[str, Any] = {}

    def keep_inputs(index: int) -> Any:
        def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            recorded[index] = (args, dict(kwargs))
        return hook

    def keep_output(module: Any, args: Any, output: Any) -> None:
        last["out"] = output[0] if isinstance(output, tuple) else output

    handles = []
    try:
        for index, layer in enumerate(layers):
            handles.append(layer.register_forward_pre_hook(keep_inputs(index), with_kwargs=True))
        handles.append(layers[L - 1].register_forward_hook(keep_output))
        clock = time.perf_counter()
        # No key/value cache: layers rerun from the recorded arguments must not append to it.
        extra = {"use_cache": False} if model.is_causal else {}
        model.model(**batch.inputs, **extra)
        one_pass = time.perf_counter() - clock
    finally:
        for handle in handles:
            handle.remove()
    before = objective.from_last_layer(last["out"], batch)
    if budget is not None:
        max_seconds, batches, _ = budget
        work = H * (L + 1) / 2  # passes' worth: layer l's heads rerun L - l of L layers
        estimate = one_pass * work * batches * 1.15  # the readout and Python on top
        if estimate > max_seconds:
            raise AttnscopeError(
                f"Exact ablation of {L * H} heads over these texts would take about "
                f"{estimate:.0f} s ({work:.0f} passes' work per batch, {batches} batches), past "
                f"max_seconds={max_seconds:g}; pass max_seconds=None to run it anyway, or "
                'method="gradient" (about 3 passes).'
            )
    effects = np.zeros((batch.size, L, H))
    for layer in range(L):
        hidden = recorded[layer][0][0] if recorded[layer][0] else (
            recorded[layer][1]["hidden_states"])
        for head in range(H):
            gate = torch.ones(H, device=hidden.device)
            gate[head] = 0.0
            repl = None if replacements is None else {layer: replacements[layer]}
            with HeadGates(model, {layer: gate}, repl):
                x = hidden
                for above in range(layer, L):
                    x = _call_layer(layers[above], recorded[above], x)
            after = objective.from_last_layer(x, batch)
            effects[:, layer, head] = objective.effect(before, after).cpu().numpy()
    base = np.zeros(batch.size) if objective.kind == "embedding" else (
        before.double().cpu().numpy())
    return effects, base


def _gradient_batch(model: Any, objective: Objective, batch: Batch,
                    generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Michel et al.'s |d loss / d gate| ``[B, L, H]`` (or the second-order estimate for an
    embedding model) and baselines ``[B]``, from one forward and one backward pass."""
    L, H, B = model.num_layers, model.num_heads, batch.size
    device = model.device
    gates = {layer: torch.ones(B, H, device=device, requires_grad=True) for layer in range(L)}
    with torch.enable_grad(), HeadGates(model, gates):
        readout = objective.run(batch)  # (B,) loss, or (B, D) embedding
        if objective.kind == "embedding":
            e0 = readout.detach()
            unit = e0 / e0.norm(dim=-1, keepdim=True)
            probe = torch.randn(e0.shape, generator=generator).to(device)  # (B, D)
            probe = probe - (probe * unit).sum(-1, keepdim=True) * unit  # P v: off e
            scalar = ((probe * readout).sum(-1) / e0.norm(dim=-1)).sum()
            base = np.zeros(B)
        else:
            scalar = readout.sum()  # texts are independent: d sum / d gate_b = d loss_b / d gate_b
            base = readout.detach().double().cpu().numpy()
        grads = torch.autograd.grad(scalar, [gates[layer] for layer in range(L)])
    g = torch.stack(grads, dim=1).double().cpu().numpy()  # (B, L, H)
    values = 0.5 * g**2 if objective.kind == "embedding" else np.abs(g)
    return values, base
