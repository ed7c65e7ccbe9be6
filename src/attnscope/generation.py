"""Generation with its attention: a prompt (text or chat messages) and the answer a causal
language model writes for it, as one :class:`~attnscope.Trace`.

    import attnscope as at
    model = at.load("smollm2")
    trace = at.generate(model, [{"role": "user", "content": "What is the capital of France?"}])
    trace.generation["answer"]                     # 'The capital of France is Paris.'

attnscope runs its own decoding loop on ``model.lm_model`` with the key/value cache, as
``transformers``' ``generate`` does: the prompt runs once (the prefill, which gives the prompt's
square ``[L, H, P, P]``), then each new token runs alone and gives one row per head
``[L, H, 1, t]`` over every earlier token. What is stored:

* each token's row from ``query_start`` on, over all tokens: ``attentions``
  ``[L, H, T - query_start, T]`` (a causal row is zero past its own position);
* the prompt's own square only when ``prompt_attention=True``, or by default when the whole
  ``[L, H, T, T]`` float32 array fits :data:`SQUARE_BUDGET_BYTES`; otherwise ``query_start`` is
  ``answer_start - 1``: the last prompt token's row is kept because it is the attention that
  chose the first answer token;
* ``hidden_states`` ``[L+1, T, D]``; no queries, keys or values.

A causal model predicts token ``p`` from the query at position ``p - 1``: the attention that
*wrote* answer token ``j`` (at position ``answer_start + j``) is row ``answer_start + j - 1``.
:func:`writing_rows` returns those rows, and :func:`role_shares` sums them by the part of the
prompt they fall on.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from attnscope.errors import AttnscopeError, check_index
from attnscope.models import LoadedModel
from attnscope.tokens import Tokenization, check_messages, tokenize, tokenize_chat
from attnscope.trace import ROLES, Trace

__all__ = ["SQUARE_BUDGET_BYTES", "generate", "role_shares", "writing_rows"]

#: By default (``prompt_attention=None``) the prompt's own square is kept when the whole
#: ``[L, H, T, T]`` float32 attention of prompt and answer takes at most this many bytes.
SQUARE_BUDGET_BYTES = 256 * 2**20

#: Why generation stopped (``trace.generation["stopped"]``).
STOP_REASONS = ("eos", "stop_string", "max_new_tokens", "interrupted")

_GENERATIVE_FAMILIES = "GPT-2, Llama, Mistral, Qwen, Gemma, Phi, SmolLM"


def generate(
    model: LoadedModel,
    prompt: str | Sequence[dict[str, str]],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: str | Sequence[str] | None = None,
    top_k: int = 5,
    system: str | None = None,
    chat: bool = False,
    prompt_attention: bool | None = None,
    on_token: Callable[[str], Any] | None = None,
    progress: bool | None = None,
    layers: Any = None,
    heads: Any = None,
) -> Trace:
    """Generate an answer to ``prompt`` with ``model`` and return the Trace of prompt + answer.

    Args:
        model: a decoder-only model with its language-modelling head, from
            :func:`attnscope.load` (``model.lm_model``).
        prompt: plain text, or chat messages ``[{"role": "system" | "user" | "assistant",
            "content": str}, ...]`` rendered by the tokenizer's own chat template (see
            :func:`attnscope.tokens.tokenize_chat`).
        max_new_tokens: the most tokens to generate (prompt + answer must fit the model).
        temperature: 0 (the default) chooses the most likely token each step (greedy, the
            tokens of ``model.lm_model.generate(do_sample=False)``); above 0, samples from the
            probabilities sharpened (< 1) or flattened (> 1) by it.
        top_p: when sampling, only the most likely tokens whose probabilities add up to
            ``top_p`` are drawn from (nucleus sampling); in (0, 1].
        seed: the random seed for sampling; the same seed gives the same answer. None draws
            one, recorded in ``trace.generation["settings"]["seed"]``.
        stop: a string or strings that end the answer when it writes them (the answer ends at
            the token that completes one). The end-of-sequence token always ends it.
        top_k: how many most likely tokens to keep at each step (``answer_top_ids`` and
            ``answer_top_probs``).
        system: a system prompt; makes the prompt a chat (a string prompt becomes the user's
            message).
        chat: with a string prompt, send it through the chat template as the user's message.
        prompt_attention: keep the prompt's own square (True), only the answer's rows (False),
            or decide by size (None: the square when the whole ``[L, H, T, T]`` array fits
            :data:`SQUARE_BUDGET_BYTES`).
        on_token: called with the text each generated token adds, as it is generated (an
            empty string while a character is split over tokens, and for special tokens).
        progress: draw a progress bar (tqdm; a notebook widget in Jupyter). None: only in a
            notebook, and only when ``on_token`` is not given.
        layers, heads: record only these layers / heads (see :func:`attnscope.capture`): the
            attention kept, and the memory it takes, shrink to them.

    Returns:
        A Trace (``trace.is_generation``) with, for T = P prompt + A answer tokens:
        ``answer_start`` (= P), ``roles`` [T] (system, user, assistant, markup, or prompt for a
        plain-text prompt; answer), ``answer_probs`` [A] (each chosen token's probability under
        the model, before temperature and top-p), ``answer_top_ids``/``answer_top_probs``
        [A, top_k], ``attentions`` [L, H, T - query_start, T], ``hidden_states`` [L+1, T, D]
        and ``generation``: ``settings`` (the arguments above, seed included), ``stopped``
        (one of :data:`STOP_REASONS`), ``stop_string``, ``prompt_kind`` ("text" or "chat"),
        ``messages`` (chat only), ``answer`` (the answer's text) and ``square_budget_bytes``.
        Ctrl-C during generation returns what was generated so far, with
        ``generation["stopped"] == "interrupted"``.

    Raises:
        AttnscopeError: an encoder-only or encoder-decoder model, a checkpoint without a
            language-modelling head, a prompt that is not text or messages, empty text or
            messages, a tokenizer without a chat template, ``max_new_tokens`` below 1 or past
            the model's context, a negative ``temperature``, ``top_p`` outside (0, 1].
    """
    from attnscope.selection import choose

    lm = _check_model(model)
    layer_ids = choose(layers, model.num_layers, "layer", model.name)
    head_ids = choose(heads, model.num_heads, "head", model.name)
    settings = _check_settings(max_new_tokens, temperature, top_p, seed, stop, top_k)
    if on_token is not None and not callable(on_token):
        raise AttnscopeError(f"on_token must be a function, not {type(on_token).__name__}.")
    prompt_kind, encoded, messages = _encode_prompt(model, prompt, system, chat)

    n_prompt = len(encoded)
    n_max = n_prompt + settings["max_new_tokens"]
    limit = model.max_length
    if limit is not None and n_max > limit:
        room = limit - n_prompt
        raise AttnscopeError(
            f"max_new_tokens={settings['max_new_tokens']} goes past the model's context: the "
            f"prompt has {n_prompt} tokens and {model.name} takes at most {limit}, so at most "
            f"{room} new tokens fit." if room > 0 else
            f"The prompt has {n_prompt} tokens, which fills {model.name}'s context of {limit} "
            "tokens; shorten it to leave room for an answer."
        )
    n_layers = model.num_layers if layer_ids is None else len(layer_ids)
    n_heads = model.num_heads if head_ids is None else len(head_ids)
    hidden_size = int(lm.config.get_text_config().hidden_size)
    square_bytes = 4 * n_layers * n_heads * n_max * n_max
    if prompt_attention is None:
        keep_square = square_bytes <= SQUARE_BUDGET_BYTES
    elif isinstance(prompt_attention, bool):
        keep_square = prompt_attention
    else:
        raise AttnscopeError(
            f"prompt_attention must be True, False or None, not {prompt_attention!r}."
        )
    query_start = 0 if keep_square else n_prompt - 1
    buffers = _Buffers(n_layers, n_heads, hidden_size, n_max, query_start, layer_ids,
                       head_ids)

    show = _notebook() and on_token is None if progress is None else bool(progress)
    loop = _Decoder(model, lm, settings, buffers, on_token)
    stopped = loop.run(encoded.input_ids, show)

    return _build_trace(model, encoded, prompt_kind, messages, loop, settings, stopped,
                        keep_square, query_start)


# ----- checks ----------------------------------------------------------------------------------

def _check_model(model: Any) -> Any:
    if not isinstance(model, LoadedModel):
        raise AttnscopeError(
            f"generate takes a model from attnscope.load(), not {type(model).__name__}."
        )
    if model.architecture != "decoder":
        kind = "an encoder-decoder" if model.architecture == "encoder-decoder" else "an encoder"
        raise AttnscopeError(
            f"{model.name} is {kind} ({model.model_type}) model; attnscope generates with "
            f"decoder-only language models ({_GENERATIVE_FAMILIES}...)."
        )
    if model.lm_model is None:
        raise AttnscopeError(
            f"{model.name} has no language-modelling head (it was saved as a base model), so it "
            "cannot choose tokens; load a checkpoint saved with its head (*ForCausalLM)."
        )
    return model.lm_model


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_settings(max_new_tokens: Any, temperature: Any, top_p: Any, seed: Any, stop: Any,
                    top_k: Any) -> dict[str, Any]:
    if not _whole(max_new_tokens) or max_new_tokens < 1:
        raise AttnscopeError(
            f"max_new_tokens must be a whole number of at least 1, not {max_new_tokens!r}."
        )
    if not _real(temperature) or not math.isfinite(temperature) or temperature < 0:
        raise AttnscopeError(
            f"temperature must be 0 (greedy) or a positive number, not {temperature!r}."
        )
    if not _real(top_p) or not 0 < top_p <= 1:
        raise AttnscopeError(f"top_p must be a number above 0 and at most 1, not {top_p!r}.")
    if seed is not None and not _whole(seed):
        raise AttnscopeError(f"seed must be a whole number or None, not {seed!r}.")
    if not _whole(top_k) or top_k < 0:
        raise AttnscopeError(f"top_k must be a whole number, 0 or more, not {top_k!r}.")
    stops = [stop] if isinstance(stop, str) else stop
    if stops is None:
        stops = []
    elif not isinstance(stops, (list, tuple)) or not all(
            isinstance(s, str) and s for s in stops):
        raise AttnscopeError(f"stop must be a string or a list of non-empty strings, not "
                             f"{stop!r}.")
    sampling = temperature > 0
    if sampling and seed is None:
        seed = int.from_bytes(os.urandom(8), "little") >> 1  # recorded, so it can be replayed
    return {"max_new_tokens": int(max_new_tokens), "temperature": float(temperature),
            "top_p": float(top_p), "seed": None if seed is None else int(seed),
            "stop": list(stops), "top_k": int(top_k), "greedy": not sampling}


def _encode_prompt(model: LoadedModel, prompt: Any, system: str | None,
                   chat: bool) -> tuple[str, Tokenization, list[dict[str, str]] | None]:
    """``(prompt_kind, tokenization with roles, messages)`` for a text or chat prompt."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise AttnscopeError("The prompt is empty: give at least one word.")
        if chat or system is not None:
            prompt = [{"role": "user", "content": prompt}]
        else:
            encoded = tokenize(model, prompt, truncate=False)
            roles = ("prompt",) * len(encoded)
            return "text", _with_roles(encoded, roles), None
    if isinstance(prompt, (list, tuple)):
        messages = check_messages(prompt, system)
        return "chat", tokenize_chat(model, messages), messages
    raise AttnscopeError(
        "The prompt must be a string or a list of chat messages ({'role': ..., 'content': ...}), "
        f"not {type(prompt).__name__}."
    )


def _with_roles(encoded: Tokenization, roles: tuple[str, ...]) -> Tokenization:
    import dataclasses

    return dataclasses.replace(encoded, roles=roles)


def _notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    get = getattr(shell, "get_ipython", None)
    return get is not None and type(get()).__name__ == "ZMQInteractiveShell"


def _available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# ----- the loop --------------------------------------------------------------------------------

class _Buffers:
    """The arrays a generation fills: attention rows ``[L, H, T_max - query_start, T_max]``
    and hidden states ``[L+1, T_max, D]``, zero where nothing was computed (a causal row past
    its own position). ``np.zeros`` maps untouched pages lazily, so memory grows with what is
    written, not with ``T_max``."""

    def __init__(self, layers: int, heads: int, hidden: int, n_max: int, query_start: int,
                 layer_ids: tuple[int, ...] | None = None,
                 head_ids: tuple[int, ...] | None = None):
        self.query_start = query_start
        self.layer_ids, self.head_ids = layer_ids, head_ids
        rows = n_max - query_start
        need = 4 * (layers * heads * rows * n_max + (layers + 1) * n_max * hidden)
        available = _available_bytes()
        gib = need / 2**30
        if available is not None and need > available // 2:
            raise AttnscopeError(
                f"Recording this generation's attention takes up to {gib:.1f} GiB, more than "
                f"half of the memory available ({available / 2**30:.1f} GiB); ask for fewer "
                "new tokens, or prompt_attention=False."
            )
        try:
            self.attentions = np.zeros((layers, heads, rows, n_max), dtype=np.float32)
            self.hidden_states = np.zeros((layers + 1, n_max, hidden), dtype=np.float32)
        except MemoryError:
            raise AttnscopeError(
                f"Recording this generation's attention takes up to {gib:.1f} GiB, which cannot "
                "be allocated here; ask for fewer new tokens, or prompt_attention=False."
            ) from None

    def record(self, out: Any, first: int) -> None:
        """Copy one forward pass's attention and hidden states: its queries are the tokens at
        positions ``first, first + 1, ...``."""
        import torch

        if not out.attentions or out.attentions[0] is None:
            raise AttnscopeError(
                "The model returned no attention weights; load it with attnscope.load() or "
                "with attn_implementation='eager'."
            )
        queries, keys = out.attentions[0].shape[-2:]
        skip = max(0, self.query_start - first)  # rows before query_start are not kept
        attentions, hidden = list(out.attentions), list(out.hidden_states)
        if self.layer_ids is not None:  # the chosen layers; the embedding and their outputs
            attentions = [attentions[i] for i in self.layer_ids]
            hidden = [hidden[0], *(hidden[i + 1] for i in self.layer_ids)]
        heads = slice(None) if self.head_ids is None else list(self.head_ids)
        if skip < queries:
            rows = torch.stack([a[0, heads, skip:] for a in attentions])  # (L, H, q, keys)
            start = first + skip - self.query_start
            self.attentions[:, :, start:start + queries - skip, :keys] = rows.float().cpu().numpy()
        states = torch.stack([h[0] for h in hidden])  # (L+1, q, D)
        self.hidden_states[:, first:first + queries] = states.float().cpu().numpy()


class _TextStream:
    """Text pieces of generated tokens as they come: a piece is shown once its characters are
    whole (a character split over byte-level tokens waits for its last byte), and decoding
    starts from the previous piece, so a tokenizer that drops the first token's leading space
    drops it only once."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = self.read = 0
        self.text = ""
        self.spans: list[tuple[int, int]] = []  # each token's character span in self.text
        self.pending = 0  # first token whose characters are not yet shown

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        self.spans.append((-1, -1))
        before = self._decode(self.ids[self.prefix:self.read])
        now = self._decode(self.ids[self.prefix:])
        if len(now) <= len(before) or now.endswith("\ufffd"):
            return ""
        piece = now[len(before):]
        start = len(self.text)
        self.text += piece
        for i in range(self.pending, len(self.ids)):
            self.spans[i] = (start, len(self.text))
        self.prefix, self.read, self.pending = self.read, len(self.ids), len(self.ids)
        return piece

    def finish(self) -> None:
        """Add the text of tokens still waiting for the rest of a character."""
        before = self._decode(self.ids[self.prefix:self.read])
        rest = self._decode(self.ids[self.prefix:])[len(before):]
        if rest:
            start = len(self.text)
            self.text += rest
            for i in range(self.pending, len(self.ids)):
                self.spans[i] = (start, len(self.text))


class _Decoder:
    """One generation: the prefill, then one token per step on the key/value cache."""

    def __init__(self, model: LoadedModel, lm: Any, settings: dict[str, Any],
                 buffers: _Buffers, on_token: Callable[[str], Any] | None):
        import inspect

        self.model, self.lm, self.settings, self.buffers = model, lm, settings, buffers
        self.on_token = on_token
        params = inspect.signature(lm.forward).parameters
        # transformers 5 names the cache argument `cache`; earlier versions `past_key_values`
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.keep_last = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.eos = _eos_ids(lm)
        self.stream = _TextStream(model.tokenizer)
        self.answer: list[int] = []
        self.probs: list[float] = []
        self.top_ids: list[np.ndarray] = []
        self.top_probs: list[np.ndarray] = []
        self.stop_string: str | None = None
        self.checked = 0  # length of the answer text already searched for stop strings
        self.cache: Any = None
        self.fed = 0  # tokens whose rows are recorded (and held in the cache)
        self.ids: list[int] = []

    def _forward(self, ids: list[int]) -> Any:
        import torch

        inputs = torch.tensor([ids], dtype=torch.long, device=self.model.device)
        kwargs: dict[str, Any] = {"use_cache": True, "output_attentions": True,
                                  "output_hidden_states": True, "return_dict": True,
                                  **self.keep_last}
        if self.cache is not None:
            kwargs[self.cache_arg] = self.cache
        out = self.lm(input_ids=inputs, **kwargs)
        cache = getattr(out, "cache", None)
        self.cache = cache if cache is not None else out.past_key_values
        self.buffers.record(out, self.fed)
        self.fed += len(ids)
        return out.logits[0, -1]

    def run(self, prompt_ids: np.ndarray, show: bool) -> str:
        """Generate; returns why it stopped (one of :data:`STOP_REASONS`)."""
        import torch
        from tqdm.auto import tqdm

        settings = self.settings
        self.ids = [int(i) for i in prompt_ids]
        generator = None
        if not settings["greedy"]:
            generator = torch.Generator(device=self.model.device)
            generator.manual_seed(settings["seed"])
        bar = tqdm(total=settings["max_new_tokens"], unit="token", disable=not show)
        stopped = "max_new_tokens"
        try:
            with torch.inference_mode():
                try:
                    logits = self._forward(self.ids)
                    while True:
                        token = self._choose(logits, generator)
                        self.ids.append(token)
                        self.answer.append(token)
                        bar.update(1)
                        piece = self.stream.push(token)
                        if self.on_token is not None:
                            self.on_token(piece)
                        reason = self._stop_reason(token)
                        if reason is not None:
                            stopped = reason
                            break
                        logits = self._forward([token])
                except KeyboardInterrupt:
                    if not self.answer:
                        raise  # nothing generated yet: nothing to keep
                    stopped = "interrupted"
                    self._crop_cache()
                if self.fed < len(self.ids):
                    # the last tokens' own rows: one more pass, as the answer's Trace holds
                    # every token's row (its logits are not used)
                    self._forward(self.ids[self.fed:])
        finally:
            bar.close()
        self.stream.finish()
        return stopped

    def _crop_cache(self) -> None:
        """After Ctrl-C inside a forward pass, some layers' caches may hold the interrupted
        token: cut them back to the tokens whose rows were recorded."""
        layers = getattr(self.cache, "layers", None)
        if layers is None:  # older caches crop to a length
            if self.cache is not None and hasattr(self.cache, "crop"):
                self.cache.crop(self.fed)
            return
        for layer in layers:
            keys = getattr(layer, "keys", None)
            extra = 0 if keys is None or keys.dim() < 2 else keys.shape[-2] - self.fed
            if extra > 0:
                layer.crop(-extra)  # transformers 5: a negative count removes tokens

    def _choose(self, logits: Any, generator: Any) -> int:
        import torch

        logits = logits.float()
        probs = torch.softmax(logits, dim=-1)
        k = min(self.settings["top_k"], probs.shape[-1])
        top = torch.topk(probs, k)
        self.top_ids.append(top.indices.cpu().numpy().astype(np.int64))
        self.top_probs.append(top.values.cpu().numpy().astype(np.float32))
        if self.settings["greedy"]:
            token = int(torch.argmax(logits))
        else:
            sharpened = torch.softmax(logits / self.settings["temperature"], dim=-1)
            if self.settings["top_p"] < 1:
                ordered, order = torch.sort(sharpened, descending=True)
                before = torch.cumsum(ordered, dim=-1) - ordered  # mass of more likely tokens
                ordered[before >= self.settings["top_p"]] = 0  # the most likely always stays
                sharpened = torch.zeros_like(sharpened).scatter_(-1, order, ordered)
            token = int(torch.multinomial(sharpened, 1, generator=generator))
        self.probs.append(float(probs[token]))
        return token

    def _stop_reason(self, token: int) -> str | None:
        if token in self.eos:
            return "eos"
        text, checked = self.stream.text, self.checked
        self.checked = len(text)
        for stop in self.settings["stop"]:
            # a new match ends in the text this token added (earlier steps saw the rest)
            if stop in text[max(0, checked - len(stop) + 1):]:
                self.stop_string = stop
                return "stop_string"
        if len(self.answer) >= self.settings["max_new_tokens"]:
            return "max_new_tokens"
        return None


def _eos_ids(lm: Any) -> set[int]:
    ids: set[int] = set()
    for config in (getattr(lm, "generation_config", None), lm.config):
        value = getattr(config, "eos_token_id", None) if config is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


# ----- the Trace -------------------------------------------------------------------------------

def _answer_word_ids(tokenizer: Any, text: str, spans: list[tuple[int, int]],
                     special: np.ndarray, first: int) -> np.ndarray:
    """Word index of each answer token (numbered from ``first``), by the tokenizer's own
    pre-tokenizer where it has one, else one word per token; -1 for special tokens."""
    words: list[tuple[int, int]] = []
    try:
        pre = tokenizer.backend_tokenizer.pre_tokenizer
        words = [span for _, span in pre.pre_tokenize_str(text)] if pre is not None else []
    except (AttributeError, TypeError, ValueError):
        words = []
    out = np.full(len(spans), -1, dtype=np.int64)
    word_of_start = {}
    for index, (start, end) in enumerate(words):
        for c in range(start, end):
            word_of_start[c] = index
    next_word, previous = first, None
    for i, (start, _) in enumerate(spans):
        if special[i] or start < 0:
            continue
        key = word_of_start.get(start, ("token", i))
        if key != previous:
            previous = key
            out[i] = next_word
            next_word += 1
        else:
            out[i] = next_word - 1
    return out


def _build_trace(model: LoadedModel, encoded: Tokenization, prompt_kind: str,
                 messages: list[dict[str, str]] | None, loop: _Decoder,
                 settings: dict[str, Any], stopped: str, keep_square: bool,
                 query_start: int) -> Trace:
    tokenizer = model.tokenizer
    n_prompt, answer = len(encoded), np.asarray(loop.answer, dtype=np.int64)
    n = n_prompt + len(answer)
    specials = np.asarray(sorted(tokenizer.all_special_ids), dtype=np.int64)
    answer_special = np.isin(answer, specials)
    stream = loop.stream
    shift = len(encoded.text)
    answer_offsets = np.asarray(stream.spans, dtype=np.int64).reshape(-1, 2)
    answer_offsets = np.where(answer_offsets >= 0, answer_offsets + shift, -1)
    answer_offsets[answer_special] = -1
    prompt_words = encoded.word_ids
    first_word = int(prompt_words.max()) + 1 if len(prompt_words) else 0
    answer_words = _answer_word_ids(tokenizer, stream.text, stream.spans, answer_special,
                                    first_word)
    k = settings["top_k"]
    top_ids = np.stack(loop.top_ids) if loop.top_ids else np.zeros((0, k), np.int64)
    top_probs = np.stack(loop.top_probs) if loop.top_probs else np.zeros((0, k), np.float32)
    generation = {
        "settings": {**settings, "prompt_attention": keep_square},
        "stopped": stopped,
        "stop_string": loop.stop_string,
        "prompt_kind": prompt_kind,
        "messages": messages,
        "answer": stream.text,
        "square_budget_bytes": SQUARE_BUDGET_BYTES,
    }
    assert encoded.roles is not None
    buffers = loop.buffers
    return Trace(
        model_name=model.name,
        model_type=model.model_type,
        architecture=model.architecture,
        text=encoded.text + stream.text,
        text_b=None,
        tokens=(*encoded.tokens, *tokenizer.convert_ids_to_tokens(answer.tolist())),
        input_ids=np.concatenate([encoded.input_ids, answer]),
        token_type_ids=np.zeros(n, dtype=np.int64),
        special_mask=np.concatenate([encoded.special_mask, answer_special]),
        word_ids=np.concatenate([prompt_words, answer_words]),
        offsets=np.concatenate([encoded.offsets, answer_offsets]),
        segment_ids=np.concatenate([encoded.segment_ids, np.where(answer_special, -1, 0)]),
        sentence_b_start=None,
        attentions=np.ascontiguousarray(buffers.attentions[:, :, : n - query_start, :n]),
        hidden_states=np.ascontiguousarray(buffers.hidden_states[:, :n]),
        answer_start=n_prompt,
        roles=(*encoded.roles, *("answer",) * len(answer)),
        answer_probs=np.asarray(loop.probs, dtype=np.float32),
        answer_top_ids=top_ids,
        answer_top_probs=top_probs,
        generation=generation,
        query_start=query_start,
        layer_ids=buffers.layer_ids,
        head_ids=buffers.head_ids,
    )


# ----- reading a generation --------------------------------------------------------------------

def _check_generation(trace: Any) -> Trace:
    if not isinstance(trace, Trace) or not trace.is_generation:
        raise AttnscopeError(
            "This needs a Trace from attnscope.generate (one that holds a prompt and an answer)."
        )
    assert trace.answer_start is not None  # is_generation
    if trace.answer_start - 1 < trace.query_start:
        raise AttnscopeError(
            "This trace does not hold the row of the last prompt token (query_start is "
            f"{trace.query_start}), which chose the first answer token."
        )
    return trace


def writing_rows(trace: Trace) -> np.ndarray:
    """The attention that chose each answer token: ``[L, H, A, T]``.

    Row ``j`` is the query at position ``answer_start + j - 1`` (a causal model predicts each
    token from the position before it), over every key; keys from ``answer_start + j`` on are
    zero. A view of ``trace.attentions`` (no copy).
    """
    trace = _check_generation(trace)
    start = trace.answer_start
    assert start is not None  # a generation
    first = start - 1 - trace.query_start
    return trace.attentions[:, :, first:first + trace.num_tokens - start]


def role_shares(trace: Trace, layer: int | None = None,
                head: int | None = None) -> dict[str, np.ndarray]:
    """How each answer token's attention divides over the parts of the sequence.

    For answer token ``j``, the row that chose it (see :func:`writing_rows`) is summed over the
    keys of each role (``trace.roles``: system, user, assistant, markup, prompt, answer; the
    answer's earlier tokens count as "answer").

    Args:
        trace: from :func:`generate`.
        layer: one layer (negative counts from the end), or None for every layer.
        head: one head, or None for the mean over the layer's heads.

    Returns:
        role -> shares, for the roles present, in :data:`attnscope.trace.ROLES` order: ``[L, A]``
        (layer None) or ``[A]``; at each token the shares add up to 1. For example
        ``role_shares(trace)["system"].mean(axis=1)`` is how much of the answer's attention
        goes to the system prompt, per layer.
    """
    rows = writing_rows(trace)  # (L, H, A, T)
    if layer is not None:
        rows = rows[check_index(layer, rows.shape[0], "layer")][None]
    if head is not None:
        rows = rows[:, check_index(head, rows.shape[1], "head")]  # (L, A, T)
    else:
        rows = rows.mean(axis=1, dtype=np.float64)  # (L, A, T)
    roles = np.asarray(trace.roles if trace.roles is not None else ())
    shares = {}
    for role in ROLES:
        keys = roles == role
        if keys.any():
            share = rows[..., keys].sum(axis=-1, dtype=np.float64)  # (L, A)
            shares[role] = share[0] if layer is not None else share
    return shares
