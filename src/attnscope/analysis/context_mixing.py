"""Context mixing beyond raw weights: how much each token shapes each layer's output.

An attention weight says where a head looked, not how much the token it looked at changed the
result: the value vector can be short, the residual stream carries a token past the heads, and
layer norms rescale everything. The methods here measure the mixing itself, per layer
(``scores`` ``[L, T, T]``: row i, output token; column j, input token) and rolled out to the
model's input (``rollout``):

- ``value_zeroing`` (Mohebbi et al., EACL 2023): ``1 - cos(y_i with token j's value vectors
  zeroed, y_i)``, y the layer's output. Zeroing v_j changes every head's output by the closed
  form ``-A[h, i, j] v_j W_o^h``, so only the rest of the layer (residual, norm, feed-forward)
  runs on the T perturbed copies, batched.
- ``alti`` (Ferrando et al., EMNLP 2022): the attention block's output y_i (residual and layer
  norm included) split exactly into per-token terms T_i(x_j);
  ``c_ij = max(0, ||y_i||_1 - ||y_i - T_i(x_j)||_1)``, normalised per row, then rolled out.
- ``norms2`` (Kobayashi et al., EMNLP 2021): ``||T_i(x_j)||_2`` of the same terms: norm-based
  attention with the residual and the layer norm.
- ``attattr`` (Hao et al., AAAI 2021): ``A ⊙ ∫_0^1 ∂F(αA)/∂A dα`` per head, for a target F, by a
  Riemann sum over ``steps`` values of α, all in one batch per layer.
- ``grad_rollout`` (Chefer et al., ICCV 2021): ``R <- R + mean_h[(∂F/∂A ⊙ A)^+] R`` from R = I.

Every method reads the real modules through the family's knowledge (where the output
projection and the norms live, pre- or post-norm, grouped-query heads): BERT-like encoders
(bert, roberta, electra), distilbert, gpt2, and llama/mistral/qwen2.

Targets (``target=``), for the gradient methods, the sources bar and the faithfulness check:

- ``None``: a causal LM's next token (the greedy one) at the last position; a masked LM's top
  prediction at the first mask token; for a model without a language-modelling head (the
  embedded MiniLM), the strongest dimension of the mean-pooled sentence embedding;
- a string: that token's log-probability (next token for causal models, at the mask for masked
  LMs); it must be one token of the vocabulary;
- ``{"token": "Paris"}``: the same; ``{"cosine": "other text"}``: cosine similarity of the
  mean-pooled embedding to the other text's; ``{"dim": k}``: dimension k of the pooled embedding;
- ``{"class": k}`` or ``{"class": "POSITIVE"}``: class k's logit of a sequence-classification
  model (``*ForSequenceClassification``; by index or by its ``config.id2label`` name); such a
  model's default target (None, or a label name as a plain string) is its predicted class.

Shapes: L layers, H heads (query heads; grouped key/value heads repeated), T tokens, D hidden.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attnscope.analysis.drawing import draw, draws
from attnscope.errors import AttnscopeError, check_index
from attnscope.mixing import METHODS
from attnscope.trace import Trace

__all__ = [
    "METHODS",
    "ContextMixing",
    "Faithfulness",
    "context_mixing",
    "decompose",
    "faithfulness",
    "generation_sources",
    "value_zeroing_loop",
]

# Families whose layers this module knows, by the layout of their blocks.
_POST_NORM = ("bert", "roberta", "electra")
_PRE_NORM_LLAMA = ("llama", "mistral", "qwen2")
_FAMILIES = (*_POST_NORM, "distilbert", "gpt2", *_PRE_NORM_LLAMA)


# ----- the model's blocks ------------------------------------------------------------------

def _family(model: Any, method: str) -> str:
    model_type = str(model.model_type)
    if model_type not in _FAMILIES or model.architecture == "encoder-decoder":
        raise AttnscopeError(
            f"{method} cannot yet handle {model_type!r} models; it handles "
            f"{', '.join(sorted(_FAMILIES))}."
        )
    return model_type


def _base(model: Any) -> Any:
    """The transformer without any head (``model.model`` may be a head-bearing model passed to
    :func:`attnscope.load` as an object): its output has ``last_hidden_state``."""
    return model.model.base_model


def _block(model: Any, layer: int) -> Any:
    base = model.model.base_model
    family = model.model_type
    if family in _POST_NORM:
        return base.encoder.layer[layer]
    if family == "distilbert":
        return base.transformer.layer[layer]
    if family == "gpt2":
        return base.h[layer]
    return base.layers[layer]


def _output_projection(model: Any, layer: int) -> Any:
    """The module whose input is the heads side by side ``[B, T, H*d]``."""
    block = _block(model, layer)
    family = model.model_type
    if family in _POST_NORM:
        return block.attention.output.dense
    if family == "distilbert":
        return block.attention.out_lin
    if family == "gpt2":
        return block.attn.c_proj
    return block.self_attn.o_proj


def _value_projection(model: Any, layer: int) -> tuple[Any, slice | None]:
    """(module whose output holds the values, the slice of its last axis that is v)."""
    block = _block(model, layer)
    family = model.model_type
    if family in _POST_NORM:
        return block.attention.self.value, None
    if family == "distilbert":
        return block.attention.v_lin, None
    if family == "gpt2":
        width = int(block.attn.embed_dim)
        return block.attn.c_attn, slice(2 * width, 3 * width)  # [q | k | v]
    return block.self_attn.v_proj, None


def _post_norm(model: Any, layer: int) -> Any | None:
    """The LayerNorm after the attention's residual (post-norm families), else None."""
    block = _block(model, layer)
    if model.model_type in _POST_NORM:
        return block.attention.output.LayerNorm
    if model.model_type == "distilbert":
        return block.sa_layer_norm
    return None


def _after_attention(model: Any, layer: int, hidden: torch.Tensor, attn_out: torch.Tensor,
                     feed_forward: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rest of the layer from the attention output (output projection applied, its bias
    included), with the real modules: ``(mid, out)``, each shaped like ``hidden`` ``[..., T, D]``.

    ``mid`` is the attention block's output (residual added, post-norm applied); ``out`` the
    layer's output (feed-forward block added; None with ``feed_forward=False``). Every step is
    position-wise.
    """
    block = _block(model, layer)
    family = model.model_type
    if family in _POST_NORM:
        mid = block.attention.output.LayerNorm(attn_out + hidden)
        return mid, block.output(block.intermediate(mid), mid) if feed_forward else None
    if family == "distilbert":
        mid = block.sa_layer_norm(attn_out + hidden)
        return mid, block.output_layer_norm(block.ffn(mid) + mid) if feed_forward else None
    mid = hidden + attn_out
    if not feed_forward:
        return mid, None
    if family == "gpt2":
        return mid, mid + block.mlp(block.ln_2(mid))
    return mid, mid + block.mlp(block.post_attention_layernorm(mid))


@dataclass(frozen=True)
class _Layer:
    """One layer's attention, read from a qkv capture and the real output projection.

    ``hidden`` ``[T, D]`` the layer's input; ``weights`` ``[H, T, T]``; ``projected``
    ``[H, T, D]``: each head's value vectors through its slice of the output projection (value
    bias included, output bias not); ``bias`` ``[D]`` the output projection's bias (zeros when
    none); ``attn_out`` ``[T, D]`` the attention's output, bias included.
    """

    hidden: torch.Tensor
    weights: torch.Tensor
    projected: torch.Tensor
    bias: torch.Tensor
    attn_out: torch.Tensor


def _layer(model: Any, trace: Trace, layer: int) -> _Layer:
    from attnscope.adapters import get_adapter

    params = get_adapter(model, "context mixing").attention(model.model, layer, "self")
    device = model.device
    assert trace.values is not None
    values = torch.tensor(np.asarray(trace.values[layer], dtype=np.float32)).to(device)
    heads, _, head_dim = values.shape  # (H, T, d): key/value heads already repeated to H
    w_o = params.w_o.detach().float().reshape(-1, heads, head_dim)  # (D, H, d)
    projected = torch.einsum("htd,ehd->hte", values, w_o)  # (H, T, D)
    weights = torch.tensor(np.asarray(trace.attentions[layer], dtype=np.float32)).to(device)
    width = projected.shape[-1]
    bias = (params.b_o.detach().float() if params.b_o is not None
            else torch.zeros(width, device=device))
    attn_out = torch.einsum("hij,hjd->id", weights, projected) + bias  # (T, D)
    hidden = torch.tensor(np.asarray(trace.hidden_states[layer], dtype=np.float32)).to(device)
    return _Layer(hidden, weights, projected, bias, attn_out)


# ----- helpers -----------------------------------------------------------------------------

def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum; rows that sum to 0 stay 0. ``[..., T, T]``."""
    sums = matrix.sum(axis=-1, keepdims=True)
    return np.divide(matrix, sums, out=np.zeros_like(matrix), where=sums > 0)


def _rollout(per_layer: np.ndarray) -> np.ndarray:
    """Cumulative product ``R_l = S_l @ R_{l-1}`` (``R_0 = S_0``): ``[L, T, T]``, row i of
    ``R_l`` is how much of layer l's output token i comes from each input token."""
    out = np.empty_like(per_layer)
    current = None
    for layer, matrix in enumerate(torch.from_numpy(per_layer.astype(np.float64))):
        current = matrix if current is None else matrix @ current
        out[layer] = current.numpy()
    return out


def one_minus_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - cos(a, b)`` over the last axis, as ``||a/|a| - b/|b|||² / 2`` in float64: exact
    where the plain formula loses its digits (two nearly equal vectors in float32)."""
    a, b = a.double(), b.double()
    unit_a = a / a.norm(dim=-1, keepdim=True)
    unit_b = b / b.norm(dim=-1, keepdim=True)
    return 0.5 * (unit_a - unit_b).pow(2).sum(-1)


def _progress(iterable: Any, total: int, desc: str, show: bool) -> Any:
    if not show:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="layer", leave=False, dynamic_ncols=True)


def _token_level(model: Any, trace_or_text: Any, method: str) -> Trace:
    """A token-level Trace with values (``qkv=True``), captured again when needed."""
    from attnscope.capture import capture

    if isinstance(trace_or_text, str):
        return capture(model, trace_or_text, qkv=True, attention="eager")
    if not isinstance(trace_or_text, Trace):
        raise AttnscopeError(
            f"{method} takes a text or a Trace from attnscope.capture, "
            f"not a {type(trace_or_text).__name__}."
        )
    trace = trace_or_text
    if trace.model_type != model.model_type or trace.num_layers != model.num_layers:
        raise AttnscopeError(
            f"This trace comes from {trace.model_name!r}, not from {model.name!r}: pass the "
            "model it was captured with."
        )
    if trace.values is None or trace.unit != "token":
        return capture(model, trace.text, trace.text_b, qkv=True, attention="eager")
    return trace


def _model_inputs(model: Any, trace: Trace | None,
                  input_ids: Any = None) -> dict[str, torch.Tensor]:
    """The keyword arguments that run ``model.model`` on the trace's tokens ``[B, T]`` (or on
    ``input_ids`` alone, without token types, when ``trace`` is None)."""
    device = model.device
    ids = torch.tensor(np.array(input_ids if trace is None else
                                trace.input_ids if input_ids is None else input_ids),
                          dtype=torch.long, device=device)
    if ids.ndim == 1:
        ids = ids[None]
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if trace is not None and model.model_type in _POST_NORM and \
            "token_type_ids" in getattr(model.tokenizer, "model_input_names", ()):
        types = torch.tensor(np.array(trace.token_type_ids), dtype=torch.long, device=device)
        inputs["token_type_ids"] = types[None].expand_as(ids)
    return inputs


# ----- the language-modelling head ---------------------------------------------------------

def _lm_model(model: Any) -> Any | None:
    """The model with its language-modelling head (:attr:`LoadedModel.lm_model`, sharing every
    weight with ``model.model``), or None when the checkpoint has none: a head is never built
    here, so no untrained weight ever scores a token."""
    return model.lm_model


def _head(lm: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """The head of ``lm`` as a function of the base model's last hidden state ``[B, T, D]``
    -> logits ``[B, T, V]``: its children other than the base model, in order."""
    base = lm.base_model
    parts = [module for _, module in lm.named_children() if module is not base]

    def head(hidden: torch.Tensor) -> torch.Tensor:
        for part in parts:
            hidden = part(hidden)
        return hidden

    return head


# ----- targets -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Target:
    """A scalar F of the base model's last hidden state, resolved for one text.

    ``fn`` maps ``[B, T, D]`` to ``[B]``; ``row`` is the output position that reads the target
    (None when the whole pooled sentence does); ``log_prob`` says that exp(F) is a probability.
    """

    label: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    row: int | None
    log_prob: bool


def _single_token(tokenizer: Any, word: str, causal: bool = False) -> int:
    """The id of ``word`` as one token, else one sentence saying why it is not."""
    if not isinstance(word, str) or not word.strip():
        raise AttnscopeError(f"A target token must be a non-empty string, not {word!r}.")
    tried = []
    spellings = [word, " " + word.strip(), word.strip()]
    if causal and word[:1].isalnum():
        # a causal LM's next word starts with a space ("Paris" after "is" is " Paris")
        spellings.insert(0, " " + word)
    for spelling in spellings:
        ids = tokenizer(spelling, add_special_tokens=False)["input_ids"]
        tried.append(ids)
        if len(ids) == 1 and ids[0] != getattr(tokenizer, "unk_token_id", None):
            return int(ids[0])
    ids = min(tried, key=len)
    if len(ids) == 1:
        raise AttnscopeError(f"The target {word!r} is not in the model's vocabulary.")
    pieces = tokenizer.convert_ids_to_tokens(ids)
    raise AttnscopeError(
        f"The target {word!r} splits into {len(ids)} tokens {pieces}; choose a single token "
        "(for example its first piece)."
    )


def _pooled(hidden: torch.Tensor) -> torch.Tensor:
    return hidden.mean(dim=1)  # (B, D): sentence-transformers' mean pooling over the tokens


def _resolve_target(model: Any, trace: Trace, target: Any, evaluate: bool = True) -> _Target:
    """Turn ``target=`` into a :class:`_Target` for this text (see the module docstring).

    ``evaluate=False`` (methods without gradients) skips the forward pass that only choosing
    the default pooled dimension needs: the target is then "the pooled sentence"."""
    tokenizer = model.tokenizer
    classifier = _classifier(model)
    understood = (f"target={target!r} is not understood: pass None, a token, "
                  "{'token': 'word'}, {'class': k or 'label'}, {'cosine': 'other text'} or "
                  "{'dim': k}.")
    if isinstance(target, dict):
        if len(target) != 1 or next(iter(target)) not in ("token", "class", "cosine", "dim"):
            raise AttnscopeError(understood)
        ((kind, value),) = target.items()
    elif classifier is not None and (target is None or isinstance(target, str)):
        kind, value = ("class", target)  # a classifier's default: its predicted class
    elif target is None or isinstance(target, str):
        kind, value = ("token", target)
    else:
        raise AttnscopeError(understood)
    if kind == "class":
        return _class_target(model, trace, classifier, value)
    lm = _lm_model(model) if kind == "token" else None
    if kind == "token" and lm is None:
        if value is not None:
            raise AttnscopeError(
                f"{model.name!r} has no language-modelling head, so a token cannot be a target; "
                "use {'cosine': 'other text'} or {'dim': k} (the pooled sentence embedding)."
            )
        kind = "dim"
    if kind == "token":
        head = _head(lm)
        if model.is_causal:
            row = trace.num_tokens - 1
            where = "after the text"
        else:
            mask_id = tokenizer.mask_token_id
            masks = np.flatnonzero(np.asarray(trace.input_ids) == mask_id) if mask_id is not None \
                else np.array([], dtype=int)
            if masks.size == 0:
                raise AttnscopeError(
                    f"A token target on a masked LM needs a {tokenizer.mask_token or '[MASK]'} "
                    "token in the text: the target is the prediction at that position."
                )
            row = int(masks[0])
            where = f"at {tokenizer.mask_token} (position {row})"
        if value is None:
            with torch.no_grad():
                hidden = _base(model)(**_model_inputs(model, trace)).last_hidden_state
                token_id = int(head(hidden[:, row]).argmax(-1)[0])
        else:
            token_id = _single_token(tokenizer, value, model.is_causal)
        shown = tokenizer.convert_ids_to_tokens(token_id)

        def token_fn(hidden: torch.Tensor) -> torch.Tensor:
            logits = head(hidden[:, row])  # (B, V)
            return torch.log_softmax(logits.float(), dim=-1)[:, token_id]

        return _Target(f"log p({shown!r}) {where}", token_fn, row, True)
    if kind == "cosine":
        from attnscope.capture import capture

        other = capture(model, value, attention="eager")
        with torch.no_grad():
            reference = _pooled(_base(model)(**_model_inputs(model, other)).last_hidden_state)[0]

        def cosine_fn(hidden: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cosine_similarity(_pooled(hidden), reference[None], dim=-1)

        return _Target(f"cosine to {value!r}", cosine_fn, None, False)
    width = int(trace.hidden_states.shape[-1])
    if value is None and not evaluate:
        return _Target("the pooled sentence", lambda hidden: _pooled(hidden).norm(dim=-1), None,
                       False)
    if value is None:
        with torch.no_grad():
            pooled = _pooled(_base(model)(**_model_inputs(model, trace)).last_hidden_state)[0]
        value = int(pooled.abs().argmax())
    dim = check_index(value, width, "dimension")
    return _Target(f"pooled embedding, dimension {dim}",
                   lambda hidden: _pooled(hidden)[:, dim], None, False)


def _classifier(model: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The classification head of a ``*ForSequenceClassification`` model as a function of the
    base model's last hidden state ``[B, T, D]`` -> class logits ``[B, C]`` (the head's own
    modules, in eval mode), or None for any other model."""
    seq = model.model
    if seq is _base(model) or not type(seq).__name__.endswith("ForSequenceClassification"):
        return None
    family = model.model_type
    base = _base(model)
    if family == "bert":  # the pooler reads [CLS]
        return lambda hidden: seq.classifier(seq.dropout(base.pooler(hidden)))
    if family in ("roberta", "electra"):  # their heads take the whole sequence, read [CLS]
        return lambda hidden: seq.classifier(hidden)
    if family == "distilbert":
        return lambda hidden: seq.classifier(
            seq.dropout(torch.relu(seq.pre_classifier(hidden[:, 0]))))
    return lambda hidden: seq.score(hidden)[:, -1]  # gpt2, llama...: the last token (no pad)


def _class_target(model: Any, trace: Trace,
                  classifier: Callable[[torch.Tensor], torch.Tensor] | None,
                  value: Any) -> _Target:
    """A class logit of a sequence-classification model: ``value`` a class index, a label
    name of ``config.id2label``, or None (the predicted class)."""
    if classifier is None:
        raise AttnscopeError(
            f"{model.name!r} is not a sequence-classification model, so a class cannot be a "
            "target; load a *ForSequenceClassification model, or use a token, "
            "{'cosine': 'other text'} or {'dim': k}.")
    labels = {int(k): str(v) for k, v in (model.model.config.id2label or {}).items()}
    count = int(model.model.config.num_labels)
    listed = ", ".join(f"{k} {labels.get(k, '')}".strip() for k in range(count))
    if value is None:
        with torch.no_grad():
            hidden = _base(model)(**_model_inputs(model, trace)).last_hidden_state
            index = int(classifier(hidden).argmax(-1)[0])
    elif isinstance(value, str):
        matches = [k for k, name in labels.items() if name == value] or \
            [k for k, name in labels.items() if name.lower() == value.lower()]
        if not matches:
            raise AttnscopeError(
                f"{value!r} is not a label of {model.name!r}; its classes are {listed}.")
        index = matches[0]
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        index = int(value)
        if not 0 <= index < count:
            raise AttnscopeError(
                f"There is no class {index}: {model.name!r} has {count} classes ({listed}).")
    else:
        raise AttnscopeError(
            f"A class target is a class index or a label name, not {value!r}; the classes "
            f"are {listed}.")
    row = 0 if model.model_type in (*_POST_NORM, "distilbert") else trace.num_tokens - 1

    def class_fn(hidden: torch.Tensor) -> torch.Tensor:
        return classifier(hidden)[:, index].float()

    name = labels.get(index, str(index))
    return _Target(f"logit of class {index} ({name})", class_fn, row, False)


# ----- the methods -------------------------------------------------------------------------

@torch.no_grad()
def _value_zeroing_layer(model: Any, trace: Trace, layer: int) -> np.ndarray:
    """Raw Value Zeroing of one layer ``[T, T]`` (float64): 1 - cos of each output token i
    with token j's value vectors zeroed against the untouched output."""
    T = trace.num_tokens
    part = _layer(model, trace, layer)
    _, original = _after_attention(model, layer, part.hidden, part.attn_out)  # (T, D)
    scores = np.zeros((T, T), dtype=np.float64)
    # Zeroing v_j takes A[h, i, j] f_h(x_j) out of every row i: (T_j, T_i, D), the batched
    # inputs of the rest of the layer, a block of zeroed tokens at a time (bounded memory).
    block = max(1, (1 << 24) // max(1, T * part.hidden.shape[-1] * 4))
    for start in range(0, T, block):
        stop = min(T, start + block)
        removed = torch.einsum("hij,hjd->jid", part.weights[:, :, start:stop],
                               part.projected[:, start:stop])  # (J, T, D)
        _, zeroed = _after_attention(model, layer, part.hidden[None],
                                     part.attn_out[None] - removed)  # (J, T, D)
        assert zeroed is not None and original is not None  # the whole layer was run
        distance = one_minus_cos(zeroed, original[None])  # (J, T)
        scores[:, start:stop] = distance.T.cpu().numpy()
    return scores


def _value_zeroing(model: Any, trace: Trace, progress: bool, **_: Any) -> dict[str, Any]:
    layers = trace.num_layers
    scores = np.stack([_value_zeroing_layer(model, trace, layer) for layer in
                       _progress(range(layers), layers, "value zeroing", progress)])
    per_layer = _normalise_rows(np.clip(scores, 0.0, None))
    return {"raw": scores, "scores": per_layer, "rollout": _rollout(per_layer)}


def value_zeroing_loop(model: Any, trace_or_text: Any, progress: bool = False,
                       layers: Sequence[int] | None = None) -> np.ndarray:
    """Value Zeroing the plain way: one forward pass of the whole model per layer and zeroed
    token (L·T passes), a hook zeroing token j's value vectors in that layer's value projection.

    The reference the fast path is checked and timed against. Returns the raw ``1 - cos``
    scores ``[L, T, T]`` (row i: output token, column j: zeroed token); ``layers`` limits the
    work to some layers (the others stay 0).
    """
    _family(model, "value_zeroing")
    trace = _token_level(model, trace_or_text, "value_zeroing")
    chosen = range(trace.num_layers) if layers is None else \
        [check_index(layer, trace.num_layers, "layer") for layer in layers]
    count, T = trace.num_layers, trace.num_tokens
    inputs = _model_inputs(model, trace)
    scores = np.zeros((count, T, T), dtype=np.float64)
    outputs: dict[int, torch.Tensor] = {}

    def keep(layer: int) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: Any) -> None:
            outputs[layer] = (output[0] if isinstance(output, tuple) else output).detach()
        return hook

    handles = [_block(model, layer).register_forward_hook(keep(layer)) for layer in range(count)]
    try:
        with torch.no_grad():
            _base(model)(**inputs)
            original = dict(outputs)
            for layer in _progress(chosen, len(chosen), "value zeroing (loop)", progress):
                module, part = _value_projection(model, layer)
                for token in range(T):
                    def zero(module: Any, args: Any, output: torch.Tensor, token: int = token,
                             part: Any = part) -> torch.Tensor:
                        output = output.clone()
                        if part is None:
                            output[:, token] = 0.0
                        else:
                            output[:, token, part] = 0.0
                        return output

                    handle = module.register_forward_hook(zero)
                    try:
                        _base(model)(**inputs)
                    finally:
                        handle.remove()
                    distance = one_minus_cos(outputs[layer][0], original[layer][0])  # (T,)
                    scores[layer, :, token] = distance.cpu().numpy()
    finally:
        for handle in handles:
            handle.remove()
    return scores


@torch.no_grad()
def decompose(model: Any, trace: Trace, layer: int) -> tuple[torch.Tensor, torch.Tensor,
                                                              torch.Tensor]:
    """The attention block's output split into per-token terms (ALTI's decomposition).

    Returns ``(terms [T_i, T_j, D], bias [T_i, D], output [T_i, D])`` with
    ``terms.sum(1) + bias == output``: term (i, j) is what input token j adds to output token i
    through the heads (value bias included) and, for j = i, the residual; the layer norm after
    the residual (post-norm families) is linear once its scale 1/σ_i is fixed, so it applies to
    each term, its mean removed; ``bias`` holds the output projection's bias and the norm's shift.
    """
    pieces = _Pieces(model, trace, layer)
    terms, bias = pieces.rows(0, pieces.size)
    return terms, bias, pieces.output


class _Pieces:
    """One layer's decomposition, computed a block of output rows at a time (a ``[rows, T, D]``
    block stays small and in cache; the whole ``[T, T, D]`` is never needed at once)."""

    def __init__(self, model: Any, trace: Trace, layer: int) -> None:
        self.part = _layer(model, trace, layer)
        self.size = self.part.hidden.shape[0]
        self.output, _ = _after_attention(model, layer, self.part.hidden, self.part.attn_out,
                                          feed_forward=False)
        self.norm = _post_norm(model, layer)
        if self.norm is not None:
            summed = self.part.hidden + self.part.attn_out  # (T, D): the norm's input
            variance = summed.var(-1, unbiased=False, keepdim=True)
            self.scale = self.norm.weight / torch.sqrt(variance + self.norm.eps)  # (T, D)

    def rows(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(terms ``[R, T, D]``, bias ``[R, D]``) of output rows ``start:stop``."""
        part = self.part
        terms = torch.einsum("hij,hjd->ijd", part.weights[:, start:stop], part.projected)
        here = torch.arange(start, stop)
        terms[here - start, here] += part.hidden[start:stop]  # the residual: x_i for j = i
        bias = part.bias.expand(stop - start, -1).clone()  # (R, D)
        if self.norm is not None:
            scale = self.scale[start:stop]  # (R, D): γ / σ_i
            terms.sub_(terms.mean(-1, keepdim=True)).mul_(scale[:, None])
            bias = (bias - bias.mean(-1, keepdim=True)) * scale + self.norm.bias
        return terms, bias


@torch.no_grad()
def _alti_like(model: Any, trace: Trace, progress: bool, kind: str) -> dict[str, Any]:
    layers, T = trace.num_layers, trace.num_tokens
    raw = np.zeros((layers, T, T), dtype=np.float32)
    block = max(1, (1 << 20) // max(1, T * trace.hidden_states.shape[-1]))  # ~4 MB of terms
    for layer in _progress(range(layers), layers, kind, progress):
        pieces = _Pieces(model, trace, layer)
        for start in range(0, T, block):
            stop = min(T, start + block)
            terms, _ = pieces.rows(start, stop)  # (R, T, D)
            if kind == "alti":
                output = pieces.output[start:stop]  # (R, D)
                # ||y_i - T_i(x_j)||_1, in place: terms becomes y_i - T_i(x_j)
                distance = terms.neg_().add_(output[:, None]).abs_().sum(-1)  # (R, T)
                score = torch.clamp(output.abs().sum(-1)[:, None] - distance, min=0)
            else:
                score = torch.linalg.vector_norm(terms, dim=-1)  # ||T_i(x_j)||_2
            raw[layer, start:stop] = score.cpu().numpy()
    per_layer = _normalise_rows(raw)
    return {"raw": raw, "scores": per_layer, "rollout": _rollout(per_layer)}


def _alti(model: Any, trace: Trace, progress: bool, **_: Any) -> dict[str, Any]:
    return _alti_like(model, trace, progress, "alti")


def _norms2(model: Any, trace: Trace, progress: bool, **_: Any) -> dict[str, Any]:
    return _alti_like(model, trace, progress, "norms2")


def _mixed_value_gradients(model: Any, trace: Trace | None, ids: np.ndarray,
                           fn: Callable[[torch.Tensor], torch.Tensor], layers: Sequence[int],
                           scaled: int | None,
                           alphas: torch.Tensor | None) -> list[torch.Tensor]:
    """Gradients of ``fn(last hidden state).sum()`` on each layer's mixed values ``c = A' V``
    (the output projection's input), ``[B, T, H*d]`` per layer of ``layers``.

    ``ids`` ``[B, T]`` (with ``trace``'s token types when it is given); layer ``scaled`` has
    its mixed values scaled by ``alphas`` ``[B]`` (one α per batch row), the others are left
    as they are. Only these gradients are asked of autograd: no weight gradients, nothing
    below the layers.
    """
    kept: dict[int, torch.Tensor] = {}

    def hook_for(index: int) -> Callable[..., tuple[torch.Tensor]]:
        def hook(module: Any, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            mixed = args[0] * alphas[:, None, None] if index == scaled and alphas is not None \
                else args[0] * 1.0
            kept[index] = mixed
            return (mixed, *args[1:])
        return hook

    handles = [_output_projection(model, i).register_forward_pre_hook(hook_for(i))
               for i in layers]
    try:
        with torch.enable_grad():
            hidden = _base(model)(**_model_inputs(model, trace, ids)).last_hidden_state
            value = fn(hidden).sum()
            grads = torch.autograd.grad(value, [kept[i] for i in layers], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    return list(grads)


def _gradient_on_weights(grad: torch.Tensor | None, values: np.ndarray, index: int,
                         label: str) -> torch.Tensor:
    """∂F/∂A' ``[B, H, T, T]`` from the gradient on the mixed values ``[B, T, H*d]`` and the
    layer's values ``[H, T, d]``: ``∂F/∂A'[h, i, j] = g_h[i] · v_h[j]``; one sentence naming the
    layer when the gradient is not finite."""
    if grad is None or not torch.isfinite(grad).all():
        raise AttnscopeError(
            f"The gradient of the target is not finite at layer {index}; the target "
            f"({label}) cannot be explained by gradients on this text."
        )
    v = torch.tensor(np.asarray(values, dtype=np.float32)).to(grad.device)
    heads, length, head_dim = v.shape
    g = grad.reshape(grad.shape[0], length, heads, head_dim).transpose(1, 2)  # (B, H, T, d)
    return torch.einsum("bhid,hjd->bhij", g, v)


def _attention_gradients(model: Any, trace: Trace, target: _Target, layer: int | None,
                         alphas: Sequence[float]) -> list[np.ndarray]:
    """∂F/∂A' at A' = α·A for every α (one batch), per layer ``[H, T, T]`` summed over α.

    The heads' mixed values enter the output projection side by side, ``c = A' V``; a pre-hook
    scales them by α and keeps their gradient g, and ``∂F/∂A'[h, i, j] = g_h[i] · v_h[j]``.
    ``layer=None`` leaves every layer's attention as it is (α = 1) and returns every layer's.
    """
    layers = range(trace.num_layers) if layer is None else [layer]
    scale = torch.tensor(list(alphas), dtype=torch.float32, device=model.device)  # (B,)
    ids = np.broadcast_to(np.asarray(trace.input_ids), (len(alphas), trace.num_tokens))
    grads = _mixed_value_gradients(model, trace, ids, target.fn, list(layers), layer, scale)
    assert trace.values is not None
    return [_gradient_on_weights(grad, trace.values[index], index, target.label)
            .sum(0).cpu().numpy() for index, grad in zip(layers, grads, strict=True)]


def _attattr(model: Any, trace: Trace, progress: bool, target: _Target, steps: int = 20,
             **_: Any) -> dict[str, Any]:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise AttnscopeError(f"steps must be a whole number of at least 1, not {steps!r}.")
    alphas = [(k + 1) / steps for k in range(steps)]  # right Riemann sum of α over (0, 1]
    layers, T = trace.num_layers, trace.num_tokens
    heads = np.zeros((layers, trace.num_heads, T, T), dtype=np.float32)
    for layer in _progress(range(layers), layers, "attention x gradient", progress):
        (grad_sum,) = _attention_gradients(model, trace, target, layer, alphas)
        heads[layer] = trace.attentions[layer] * grad_sum / steps
    per_layer = _normalise_rows(np.clip(heads.sum(1), 0.0, None))
    eye = np.eye(T, dtype=np.float32)
    return {"raw": heads.sum(1), "scores": per_layer, "heads": heads,
            "rollout": _rollout(_normalise_rows(0.5 * (per_layer + eye)))}


def _grad_rollout(model: Any, trace: Trace, progress: bool, target: _Target,
                  **_: Any) -> dict[str, Any]:
    grads = _attention_gradients(model, trace, target, None, [1.0])
    layers, T = trace.num_layers, trace.num_tokens
    heads = np.stack([np.asarray(trace.attentions[i]) * grads[i] for i in range(layers)])
    per_layer = np.clip(heads, 0.0, None).mean(1).astype(np.float32)  # (L, T, T)
    rollout = np.empty_like(per_layer)
    relevance = np.eye(T, dtype=np.float64)
    for layer in range(layers):
        relevance = relevance + per_layer[layer].astype(np.float64) @ relevance
        rollout[layer] = relevance
    return {"raw": heads.sum(1), "scores": per_layer, "heads": heads.astype(np.float32),
            "rollout": rollout}


def _method(name: Any) -> Callable[..., dict[str, Any]]:
    """The function of method ``name`` (a key of :data:`attnscope.mixing.METHODS`)."""
    if not isinstance(name, str) or name not in METHODS:
        raise AttnscopeError(
            f"There is no context-mixing method {name!r}; valid methods: "
            f"{', '.join(METHODS)}."
        )
    return globals()[METHODS[name].function]


# ----- the result --------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ContextMixing:
    """Context-mixing scores of one text under one method.

    Attributes:
        method: the method's name (a key of :data:`attnscope.mixing.METHODS`).
        trace: the token-level Trace the scores belong to.
        scores: float32 ``[L, T, T]``, per layer, row i (output token) over input tokens j;
            rows sum to 1 except for ``grad_rollout`` (Chefer's positive head mean).
        raw: float32 ``[L, T, T]``, before normalisation (1 - cos, ALTI's clipped distances,
            norms, attributions summed over heads).
        rollout: ``[L, T, T]``, the scores rolled out to the model's input after each layer.
        target: what the target is, in words ("" when the method used none).
        target_row: the output position that reads the target, or None (the pooled sentence).
        heads: float32 ``[L, H, T, T]`` per-head attributions (gradient methods), else None.
    """

    method: str
    trace: Trace
    scores: np.ndarray
    raw: np.ndarray
    rollout: np.ndarray
    target: str
    target_row: int | None
    heads: np.ndarray | None = None

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.trace.tokens

    def sources(self) -> np.ndarray:
        """How much each input token feeds the target ``[T]``: the last layer's rollout row of
        the target's position, or the mean over rows for a pooled target."""
        final = np.asarray(self.rollout[-1], dtype=np.float64)
        row = final[self.target_row] if self.target_row is not None else final.mean(axis=0)
        return row.astype(np.float32)

    def layer(self, layer: int = -1) -> np.ndarray:
        """One layer's scores ``[T, T]`` (negative indices count from the end)."""
        return self.scores[check_index(layer, self.scores.shape[0], "layer")]

    def figure(self, layer: int | None = None) -> Any:
        """The rollout to the input (or one layer's scores) as a heatmap, beside a bar of the
        target's sources."""
        return draw(self, "figure", layer)

    def html(self, layer: int | None = None) -> str:
        """A self-contained HTML page: the figure (an inline PNG) and the sources as a table."""
        import base64
        import html as html_lib

        png = base64.b64encode(self.figure(layer)._repr_png_()).decode("ascii")
        sources = self.sources()
        order = np.argsort(-sources)
        rows = "".join(
            f"<tr><td>{rank + 1}</td><td>{j}</td><td>{html_lib.escape(self.tokens[j])}</td>"
            f"<td>{sources[j]:.4f}</td></tr>" for rank, j in enumerate(order))
        title = html_lib.escape(f"{self.trace.model_name}: {self.method}, sources of "
                                f"{self.target or 'the pooled sentence'}")
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}"
            "td,th{padding:2px 10px;text-align:left}img{max-width:100%}</style></head><body>"
            f"<h1>{title}</h1><p>{html_lib.escape(self.trace.text)}</p>"
            f"<img alt='{html_lib.escape(self.method)}' src='data:image/png;base64,{png}'>"
            "<table><tr><th>rank</th><th>position</th><th>token</th><th>share</th></tr>"
            f"{rows}</table></body></html>"
        )

    def save(self, path: Any, layer: int | None = None) -> Any:
        """Write the figure (.png, .svg, .pdf) or the HTML page (.html); returns the path."""
        from pathlib import Path

        from attnscope.files import write_text

        path = Path(path)
        if path.suffix.lower() in (".html", ".htm"):
            return write_text(path, self.html(layer), what="the page")
        return self.figure(layer).save(path)

    def __repr__(self) -> str:
        L, T, _ = self.scores.shape
        return (f"ContextMixing({self.method!r}, {L} layers x {T} tokens, "
                f"target={self.target or None!r})")


def context_mixing(
    trace_or_text: Trace | str,
    model: Any,
    method: str = "alti",
    target: Any = None,
    *,
    steps: int = 20,
    progress: bool = True,
) -> ContextMixing:
    """Context-mixing scores of every layer, and their rollout to the input.

    Args:
        trace_or_text: a text, or a Trace of ``model`` (captured again with ``qkv=True`` when
            it lacks the value vectors or is merged into words).
        model: the LoadedModel (attnscope.load).
        method: a key of :data:`attnscope.mixing.METHODS`: "value_zeroing", "alti", "norms2",
            "attattr", "grad_rollout".
        target: what the prediction is (see the module docstring): None, a token,
            ``{"token": ...}``, ``{"cosine": "other text"}`` or ``{"dim": k}``. The gradient
            methods differentiate it; every method uses its position for :meth:`sources`.
        steps: Riemann steps of ``attattr``.
        progress: show a progress bar over the layers.

    Returns:
        A :class:`ContextMixing` with ``scores`` and ``rollout`` ``[L, T, T]``.
    """
    function = _method(method)
    _family(model, method)
    trace = _token_level(model, trace_or_text, method)
    resolved = _resolve_target(model, trace, target, evaluate=METHODS[method].needs_target)
    result = function(model, trace, progress, target=resolved, steps=steps)
    return ContextMixing(
        method=method, trace=trace, scores=result["scores"].astype(np.float32),
        raw=result["raw"].astype(np.float32), rollout=result["rollout"].astype(np.float32),
        target=resolved.label, target_row=resolved.row, heads=result.get("heads"),
    )


# ----- a generated answer's sources, step by step ----------------------------------------

#: Bytes a batch of gradient steps may hold: the chunk of generated tokens per batch follows,
#: reckoning :data:`_BUFFERS_PER_LAYER` attention-sized float32 buffers per layer and batch row
#: while autograd keeps the forward pass (about what SmolLM2 holds at 232 tokens: 470 MB per
#: row). A long sequence runs one token a batch, whatever its length.
_STEP_BATCH_BYTES = 1 << 28
_BUFFERS_PER_LAYER = 8


def _shares(row: np.ndarray) -> np.ndarray:
    total = float(row.sum())
    return (row / total if total > 0 else row).astype(np.float32)


def generation_sources(model: Any, trace: Trace, measures: Sequence[str], *,
                       steps: int = 20, progress: bool = False) -> dict[str, np.ndarray]:
    """Each generated token's sources under each measure: the rollout row to the input of the
    position that predicted it.

    The token at position ``t`` was chosen from the model's output at row ``t - 1``, so step
    ``s`` (token ``answer_start + s``) reads row ``r = answer_start + s - 1`` of the measure's
    last-layer rollout, over the tokens ``0 .. r``.

    Cost: the measures without a target (``value_zeroing``, ``alti``, ``norms2``) run once on
    the whole sequence (a causal model's row ``r`` only sees tokens ``0 .. r``, so every step's
    row comes from the same run). The gradient measures differentiate each step's own target,
    log p(chosen token) at row ``r``: ``grad_rollout`` one forward and backward pass per step,
    ``attattr`` ``L x steps`` per step; the steps go through in batches, each run on the tokens
    up to its last row.

    Args:
        model: the causal LoadedModel that generated ``trace`` (with its LM head for the
            gradient measures).
        trace: a generation Trace (``answer_start`` set).
        measures: keys of :data:`attnscope.mixing.METHODS`.
        steps: Riemann steps of ``attattr``.

    Returns:
        measure -> float32 ``[S, T]``: one row per generated token, the shares of its sources
        (each row sums to 1; zero past ``r``).
    """
    from attnscope.capture import capture

    names = list(dict.fromkeys(measures))
    for name in names:
        _method(name)
        _family(model, name)
    if trace.answer_start is None:
        raise AttnscopeError("This Trace holds no generated answer (answer_start is None).")
    if not model.is_causal:
        raise AttnscopeError(
            f"{model.name!r} is not a causal language model: a generated token's sources need "
            "the model that generated it.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AttnscopeError(f"steps must be a whole number of at least 1, not {steps!r}.")
    ids = np.asarray(trace.input_ids, dtype=np.int64)
    full = capture(model, ids, qkv=True, attention="eager")
    if full.num_tokens != trace.num_tokens:
        raise AttnscopeError(
            f"The model read {full.num_tokens} of this trace's {trace.num_tokens} tokens (its "
            "limit): a generated token's sources need the whole sequence.")
    start, T = trace.answer_start, trace.num_tokens
    rows = np.arange(start - 1, T - 1)  # (S,) the rows that chose each generated token
    out: dict[str, np.ndarray] = {}
    for name in names:
        table = np.zeros((len(rows), T), dtype=np.float32)
        if not METHODS[name].needs_target:
            result = _method(name)(model, full, progress, target=None)
            final = np.asarray(result["rollout"][-1], dtype=np.float64)
            for k, r in enumerate(rows):
                table[k, : r + 1] = _shares(final[r, : r + 1])
        else:
            _step_gradient_sources(model, full, name, rows, steps, table, progress)
        out[name] = table
    return out


def _step_gradient_sources(model: Any, trace: Trace, name: str, rows: np.ndarray, steps: int,
                           table: np.ndarray, progress: bool) -> None:
    """Fill ``table`` ``[S, T]`` with each step's gradient-measure sources (see
    :func:`generation_sources`), a batch of steps at a time."""
    lm = _lm_model(model)
    if lm is None:
        raise AttnscopeError(
            f"{name} differentiates each generated token's probability, and {model.name!r} has "
            "no language-modelling head.")
    head = _head(lm)
    layers, heads = trace.num_layers, trace.num_heads
    ids = np.asarray(trace.input_ids, dtype=np.int64)
    alphas = [(k + 1) / steps for k in range(steps)] if name == "attattr" else [1.0]
    per_step = len(alphas) * heads * int(rows[-1] + 1) ** 2 * 4 * _BUFFERS_PER_LAYER * layers
    chunk = max(1, _STEP_BATCH_BYTES // per_step)
    attentions = trace.attentions
    assert trace.values is not None
    batches = range(0, len(rows), chunk)
    for first in _progress(batches, len(batches), name, progress):
        chosen = rows[first:first + chunk]  # (C,) rows, ascending
        length = int(chosen[-1]) + 1  # causal: the tokens after the last row change nothing
        count = len(chosen)
        picked = torch.tensor(chosen, dtype=torch.long, device=model.device)
        tokens = torch.tensor(ids[chosen + 1], dtype=torch.long, device=model.device)
        batch_rows = picked.repeat_interleave(len(alphas))  # (C * m,) step-major
        batch_tokens = tokens.repeat_interleave(len(alphas))

        def fn(hidden: torch.Tensor, batch_rows: torch.Tensor = batch_rows,
               batch_tokens: torch.Tensor = batch_tokens) -> torch.Tensor:
            at_rows = hidden[torch.arange(hidden.shape[0]), batch_rows]  # (B, D)
            logits = head(at_rows[:, None])[:, 0].float()  # (B, V)
            return torch.log_softmax(logits, dim=-1)[torch.arange(len(batch_tokens)),
                                                     batch_tokens]

        batch_ids = np.repeat(ids[None, :length], count * len(alphas), axis=0)
        eye = np.eye(length)
        relevance = np.repeat(eye[None], count, axis=0)  # (C, t, t) float64
        scale = torch.tensor(alphas * count, dtype=torch.float32, device=model.device)
        grads: list[torch.Tensor | None] = []
        if name == "grad_rollout":
            grads = list(_mixed_value_gradients(model, None, batch_ids, fn, list(range(layers)),
                                                None, None))
        for layer in range(layers):
            if name == "attattr":
                (grad,) = _mixed_value_gradients(model, None, batch_ids, fn, [layer], layer,
                                                 scale)
            else:
                grad = grads[layer]
            weights = np.asarray(attentions[layer][:, :length, :length], dtype=np.float32)
            on_weights = _gradient_on_weights(
                grad, trace.values[layer][:, :length], layer, "log p of each generated token"
            ).reshape(count, len(alphas), heads, length, length).sum(1).cpu().numpy()
            edges = weights[None] * on_weights  # (C, H, t, t)
            if name == "grad_rollout":
                mean = np.clip(edges, 0.0, None).mean(1).astype(np.float64)
                relevance = relevance + mean @ relevance
            else:
                summed = _normalise_rows(np.clip(edges.sum(1) / steps, 0.0, None))
                mixed = _normalise_rows(0.5 * (summed + eye)).astype(np.float64)
                relevance = mixed @ relevance
        for k, r in enumerate(chosen):
            table[first + k, : r + 1] = _shares(relevance[k, r, : r + 1])


# ----- faithfulness ------------------------------------------------------------------------

@dataclass(frozen=True)
class Faithfulness:
    """How much removing the top-k sources each method ranks lowers the target's probability.

    Attributes:
        ks: the numbers of removed tokens ``[K]``.
        drops: method -> mean drop ``[K]`` over the texts (probability for LM targets; the
            target's value, e.g. a cosine, for pooled targets); ``"random"`` is the mean over
            ``trials`` random choices of k removable tokens.
        texts: how many texts were measured. removal: what replaced a removed token.
    """

    ks: tuple[int, ...]
    drops: dict[str, np.ndarray]
    texts: int
    removal: str
    target: str

    def table(self) -> str:
        """The drops as a plain-text table, methods by k."""
        head = "method".ljust(14) + "".join(f"k={k}".rjust(9) for k in self.ks)
        rows = [head]
        for name, drop in self.drops.items():
            rows.append(name.ljust(14) + "".join(f"{d:9.4f}" for d in drop))
        return "\n".join(rows)

    def figure(self) -> Any:
        """The drop against k, one line per method (random dashed)."""
        return draw(self, "figure")

    def __str__(self) -> str:
        return self.table()


def _removal_token(model: Any) -> tuple[int, str]:
    tokenizer = model.tokenizer
    candidates = ("mask_token",) if not model.is_causal else ()
    for name in (*candidates, "pad_token", "unk_token", "eos_token"):
        token = getattr(tokenizer, name, None)
        if token is not None:
            return int(tokenizer.convert_tokens_to_ids(token)), token
    raise AttnscopeError(f"{model.name!r}'s tokenizer has no mask, pad, unk or eos token to "
                         "stand in for a removed token.")


def faithfulness(
    texts: str | Sequence[str],
    model: Any,
    methods: Sequence[str] | None = None,
    target: Any = None,
    *,
    ks: Sequence[int] = (1, 2, 3),
    trials: int = 20,
    seed: int = 0,
    steps: int = 20,
    progress: bool = True,
) -> Faithfulness:
    """For each method, the drop in the target when its top-k source tokens are removed
    (replaced by the mask token in encoders, a pad/unk/eos token in decoders), against random
    removal of k tokens.

    Special tokens and the target's own position are never removed. Args as
    :func:`context_mixing`; ``ks`` the numbers of tokens removed; ``trials`` random choices
    per text and k.

    Returns:
        A :class:`Faithfulness` (``table()``, ``figure()``).
    """
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise AttnscopeError("faithfulness needs at least one text.")
    names = list(METHODS) if methods is None else list(methods)
    for name in names:
        _method(name)
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise AttnscopeError(f"ks must be whole numbers of at least 1, not {ks!r}.")
    removal_id, removal = _removal_token(model)
    rng = random.Random(seed)
    sums = {name: np.zeros(len(ks)) for name in [*names, "random"]}
    label = ""
    for text in _progress(texts, len(texts), "faithfulness", progress):
        from attnscope.capture import capture

        trace = capture(model, text, qkv=True, attention="eager")
        resolved = _resolve_target(model, trace, target)
        label = resolved.label
        special = np.asarray(trace.special_mask, dtype=bool)
        removable = [j for j in range(trace.num_tokens)
                     if not special[j] and j != resolved.row]
        if len(removable) < max(ks):
            raise AttnscopeError(
                f"{text!r} has {len(removable)} removable tokens, fewer than k={max(ks)}."
            )
        rankings: dict[str, list[int]] = {}
        for name in names:
            result = context_mixing(trace, model, name, target, steps=steps, progress=False)
            weight = result.sources()
            rankings[name] = sorted(removable, key=lambda j: -float(weight[j]))
        choices: list[tuple[str, int, list[int]]] = [("original", 0, [])]
        for name in names:
            for index, k in enumerate(ks):
                choices.append((name, index, rankings[name][:k]))
        for index, k in enumerate(ks):
            for _ in range(trials):
                choices.append(("random", index, rng.sample(removable, k)))
        ids = np.repeat(np.asarray(trace.input_ids)[None], len(choices), axis=0)
        for row, (_, _, removed) in enumerate(choices):
            ids[row, removed] = removal_id
        values = []
        with torch.no_grad():
            for start in range(0, len(choices), 64):
                inputs = _model_inputs(model, trace, ids[start:start + 64])
                hidden = _base(model)(**inputs).last_hidden_state
                values.append(resolved.fn(hidden).float().cpu().numpy())
        measured = np.concatenate(values).astype(np.float64)
        if resolved.log_prob:
            measured = np.exp(measured)
        for (name, index, _), value in zip(choices[1:], measured[1:], strict=True):
            share = 1.0 / trials if name == "random" else 1.0
            sums[name][index] += share * (measured[0] - value)
    drops = {name: (total / len(texts)).astype(np.float32) for name, total in sums.items()}
    return Faithfulness(ks, drops, len(texts), removal, label)


# ----- figures -----------------------------------------------------------------------------

@draws(ContextMixing, "figure")
def _context_mixing_figure(result: ContextMixing, layer: int | None = None) -> Any:
    from attnscope.render.static import AttnFigure, _set_token_ticks, weight_cmap

    tokens = list(result.tokens)
    if layer is None:
        matrix, what = result.rollout[-1], "rollout to the input"
    else:
        index = check_index(layer, result.scores.shape[0], "layer")
        matrix, what = result.scores[index], f"layer {index}"
    n = len(tokens)
    side = min(12.0, max(4.0, 2.0 + 0.24 * n))
    fig = AttnFigure(figsize=(side * 2 + 1.0, side), layout="constrained")
    left, right = fig.subplots(1, 2)
    image = left.imshow(matrix, cmap=weight_cmap(), aspect="auto", interpolation="nearest",
                        vmin=0.0)
    _set_token_ticks(left, tokens, tokens, 9 if n <= 40 else 6)
    left.set_xlabel("input token")
    left.set_ylabel("output token")
    left.set_title(f"{result.trace.model_name}: {result.method}, {what}", fontsize=10)
    fig.colorbar(image, ax=left, shrink=0.8)
    sources = result.sources()
    positions = np.arange(n)
    right.barh(positions, sources, color="#3b6ea8")
    right.set_yticks(positions, tokens, fontsize=9 if n <= 40 else 6)
    right.invert_yaxis()
    row = tokens[result.target_row] if result.target_row is not None else "pooled sentence"
    right.set_title(f"sources of {result.target or row}", fontsize=10)
    right.set_xlabel(f"{result.method} rollout")
    return fig


@draws(Faithfulness, "figure")
def _faithfulness_figure(result: Faithfulness) -> Any:
    from attnscope.render.static import AttnFigure

    fig = AttnFigure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for name, drop in result.drops.items():
        style: dict[str, Any] = ({"linestyle": "--", "color": "grey"} if name == "random"
                                 else {"marker": "o"})
        ax.plot(result.ks, drop, label=name, **style)
    ax.set_xlabel("top-k source tokens removed")
    ax.set_ylabel("drop of the target")
    ax.set_xticks(result.ks)
    ax.set_title(f"faithfulness over {result.texts} texts ({result.removal} replaces)\n"
                 f"{result.target}", fontsize=9)
    ax.legend(fontsize=8)
    return fig

