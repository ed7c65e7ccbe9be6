"""The generation view: what a model looked at when it wrote each word.

``at.generation_view(trace)`` takes a generation Trace (from :func:`attnscope.generate`: the
prompt and the answer as one token sequence, ``answer_start``, each step's probability and
top-k) and returns an :class:`~attnscope.AttnView` whose page shows the prompt and the answer
as running, wrapping text. Selecting a generated token colours its context by the attention
of the step that chose it: one head, a layer's heads averaged, every layer averaged, or
attention rollout.

Which row: the token at position ``t`` was chosen from the model's output at position
``t - 1``, so the view shows query row ``t - 1`` over keys ``0 .. t - 1`` (the tokens the model
saw when it wrote token ``t``). A step whose row the Trace does not hold (a Trace that kept
rows from ``answer_start`` on has no row for the first answer token) says so on the page.

The page carries only these rows (one per step and head, each over the tokens before the
token it chose: no padded square) as deflated typed arrays, within a size budget
(:data:`PAGE_BUDGET`, 50 MB of attention data before compression). It takes the first of
these that fits (:data:`_PLANS`):

1. every plane as float16 (three significant digits in readouts and tooltips): the average of
   every layer and head, the rollout, each layer's heads averaged, and each head;
2. the single heads in a one-byte logarithmic code (each weight from 1e-4 up within 1.9%,
   smaller ones shown as "< 1e-4"), the rest float16;
3. every plane in the one-byte code;
4. no single heads;
5. only the average of every layer and the rollout.

The page says what it left out and how to keep it (``max_bytes=``). Rollout is computed where
it is quick (:data:`ROLLOUT_AUTO`) or asked for (``rollout=True``).
"""

from __future__ import annotations

import functools
import math
import re
import uuid
from typing import Any

import numpy as np

from attnscope.errors import AttnscopeError, check_index
from attnscope.mixing import MEASURE_NAMES
from attnscope.readable import readable_tokens, token_labels
from attnscope.render import html as page_html
from attnscope.render.static import WEIGHT_STOPS
from attnscope.render.views import HEAD_COLORS, AttnView
from attnscope.trace import Trace

__all__ = ["MODES", "PAGE_BUDGET", "GenerationView", "generation_view", "generation_payload",
           "rollout_rows"]

#: The attention data a generation page carries at most, in bytes before compression.
PAGE_BUDGET = 50_000_000
#: What the context can be coloured by.
MODES = ("head", "layer", "all", "rollout")
#: The one-byte code of per-head rows past the float16 budget: code c (1..255) stands for
#: exp(-(255 - c) * LOG8_STEP); 0 for a weight below LOG8_FLOOR.
LOG8_FLOOR = 1e-4
LOG8_STEP = math.log(1.0 / LOG8_FLOOR) / 254
#: Rollout multiplies each row by the layers below it (about L x S x T^2 / 3 multiply-adds for
#: S steps over T tokens); by default a page carries it up to this many (a fraction of a
#: second), and ``rollout=True`` asks for it at any length.
ROLLOUT_AUTO = 2e9


def _answer_start(trace: Trace) -> int:
    """Where the answer starts in a generation Trace (the view refuses any other Trace)."""
    if trace.answer_start is None:
        raise AttnscopeError("This Trace holds no generated answer (answer_start is None).")
    return trace.answer_start


class GenerationView(AttnView):
    """An :class:`AttnView` of a generation Trace (see :func:`generation_view`)."""

    def __init__(self, trace: Trace, *, layer: int = -1, head: int = 0, mode: str = "all",
                 step: int | None = None, theme: str = "light", top_tokens: Any = None,
                 max_bytes: int = PAGE_BUDGET, rollout: bool | None = None,
                 measures: Any = (), steps: int = 20) -> None:
        if not isinstance(trace, Trace):
            raise AttnscopeError(
                f"The generation view needs a Trace from attnscope.generate, not "
                f"{type(trace).__name__}.")
        if not trace.is_generation:
            raise AttnscopeError(
                "This Trace holds no generated answer (answer_start is None): make one with "
                "attnscope.generate(model, prompt), or use at.head_view for a fixed text.")
        if trace.num_tokens <= _answer_start(trace):
            raise AttnscopeError("This Trace's answer is empty: there is no generated token to "
                                 "show.")
        self.measures = _measures(measures, top_tokens)
        if mode not in MODES and mode not in self.measures:
            raise AttnscopeError(
                f"Unknown mode {mode!r}: choose from {', '.join((*MODES, *self.measures))}.")
        if theme not in ("light", "dark"):
            raise AttnscopeError(f"Unknown theme {theme!r}: choose 'light' or 'dark'.")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise AttnscopeError(f"max_bytes must be a positive whole number, not {max_bytes!r}.")
        trace.check(rows_only=True)
        self.trace = trace
        self.kinds = ("generation",)
        self.part = "self"
        self.layer = check_index(layer, trace.num_layers, "layer")
        self.head = check_index(head, trace.num_heads, "head")
        self.heads = None
        steps = trace.num_tokens - _answer_start(trace)
        self.step = check_index(0 if step is None else step, steps, "step")
        self.query = _answer_start(trace) + self.step
        self.mode = mode
        self.theme = theme
        self.minus = None
        self.exact = False
        self.max_bytes = max_bytes
        if rollout is not None and not isinstance(rollout, bool):
            raise AttnscopeError(f"rollout must be True, False or None, not {rollout!r}.")
        self.rollout = rollout
        self._top_tokens = _top_token_texts(trace, top_tokens)
        self._model = top_tokens
        self._steps = steps
        self._sources: dict[str, np.ndarray] | None = None
        self._layer_labels = None
        self._head_labels = None
        self._page: str | None = None
        self._root_id: str | None = None

    def payload(self) -> dict[str, Any]:
        return generation_payload(self)

    def sources(self) -> dict[str, np.ndarray]:
        """The measures' sources of each generated token, measure -> float32 ``[S, T]`` (see
        :func:`attnscope.analysis.context_mixing.generation_sources`), computed once."""
        if self._sources is None:
            from attnscope.analysis.context_mixing import generation_sources

            self._sources = generation_sources(self._model, self.trace, self.measures,
                                               steps=self._steps) if self.measures else {}
        return self._sources

    @property
    def html(self) -> str:
        """The complete, self-contained HTML page."""
        if self._page is None:
            self._root_id, fragment = _fragment(self.payload())
            self._page = page_html.build_page(
                fragment, f"attnscope generation view: {self.trace.model_name}")
        return self._page

    def figure(self) -> Any:
        raise AttnscopeError(
            "The generation view saves as .html; its page's Save PNG and Save SVG buttons "
            "export the coloured text.")

    def _repr_html_(self) -> str:
        lines = self.trace.num_tokens // 12 + 1
        return page_html.iframe(self.html, int(min(900, 330 + lines * 22)))

    def __repr__(self) -> str:
        return f"GenerationView({self.trace!r})"


def generation_view(trace: Trace, *, mode: str = "all", layer: int = -1, head: int = 0,
                    step: int | None = None, theme: str = "light", model: Any = None,
                    max_bytes: int = PAGE_BUDGET, rollout: bool | None = None,
                    measures: Any = (), steps: int = 20) -> AttnView:
    """The prompt and the answer as running text; select a generated token to colour its
    context by the attention that chose it.

    Args:
        trace: a generation Trace (``answer_start`` set); ``attentions`` ``[L, H, T, T]`` or
            answer rows only ``[L, H, T - query_start, T]``.
        mode: what colours the context first: "head" (``layer``, ``head``), "layer" (the
            layer's heads averaged), "all" (every layer and head averaged) or "rollout"
            (attention rollout of the step's row: see :func:`rollout_rows`). The page can
            change it.
        layer, head: the layer and head shown first (negative counts from the end).
        step: the generated token selected first (0 is the answer's first token).
        theme: "light" or "dark".
        model: the LoadedModel (or its tokenizer) that generated the trace, to spell the
            top-k alternatives; without it they show as token ids unless the trace's
            ``generation["top_tokens"]`` holds them.
        max_bytes: the page's budget for attention data, before compression (default
            :data:`PAGE_BUDGET`, 50 MB); see the module's documentation for what a page
            leaves out past it.
        rollout: carry the rollout (:func:`rollout_rows`); None (default) where it takes
            well under a second to compute (:data:`ROLLOUT_AUTO`), as up to about 1,000
            tokens of a 30-layer model.
        measures: context-mixing measures to carry beside raw attention (keys of
            :data:`attnscope.mixing.METHODS`: "value_zeroing", "alti", "norms2", "attattr",
            "grad_rollout"); the page's "Colour by" offers each. A generated token's sources
            under a measure are its last-layer rollout row to the input at the position that
            predicted it, as shares (see
            :func:`attnscope.analysis.context_mixing.generation_sources` for the cost: one run
            for the first three, batched backward passes per generated token for the
            gradient ones). Needs ``model``, the LoadedModel that generated the trace.
        steps: Riemann steps of "attattr".
    """
    return GenerationView(trace, mode=mode, layer=layer, head=head, step=step, theme=theme,
                          top_tokens=model, max_bytes=max_bytes, rollout=rollout,
                          measures=measures, steps=steps)


# ----- payload ---------------------------------------------------------------------------------

def _top_token_texts(trace: Trace, source: Any) -> list[list[str]] | None:
    """The top-k alternatives' texts ``[A][k]``, or None (the page shows ids)."""
    ids = trace.answer_top_ids
    if ids is None:
        return None
    tokenizer = getattr(source, "tokenizer", source)
    if tokenizer is not None and hasattr(tokenizer, "convert_ids_to_tokens"):
        raw = [tokenizer.convert_ids_to_tokens([int(i) for i in row]) for row in ids]
        return [readable_tokens(row) for row in raw]
    if source is not None:
        raise AttnscopeError(
            f"model must be the LoadedModel (or tokenizer) that generated the trace, not "
            f"{type(source).__name__}.")
    given = (trace.generation or {}).get("top_tokens")
    if isinstance(given, list) and len(given) == ids.shape[0]:
        return [[str(t) for t in row] for row in given]
    return None


def _measures(measures: Any, model: Any) -> tuple[str, ...]:
    """The context-mixing measures a page carries, checked (names, and a model to run)."""
    from attnscope.mixing import METHODS

    if isinstance(measures, str):
        measures = (measures,)
    if not isinstance(measures, (list, tuple)):
        raise AttnscopeError(
            f"measures must be a list of context-mixing methods ({', '.join(METHODS)}), not "
            f"{type(measures).__name__}.")
    for name in measures:
        if not isinstance(name, str) or name not in METHODS:
            raise AttnscopeError(f"There is no context-mixing method {name!r}; valid methods: "
                                 f"{', '.join(METHODS)}.")
    if measures and not hasattr(model, "lm_model"):
        raise AttnscopeError(
            "measures= needs model=, the LoadedModel that generated the trace: the measures "
            "run it again on the prompt and the answer.")
    return tuple(dict.fromkeys(measures))


def _roles(trace: Trace) -> list[str]:
    if trace.roles is not None:
        return list(trace.roles)
    start = _answer_start(trace)
    return ["prompt"] * start + ["answer"] * (trace.num_tokens - start)


def _step_rows(trace: Trace) -> tuple[int, np.ndarray]:
    """The first step whose choosing row the trace holds, and those rows' positions
    ``[S]`` (row ``answer_start + s - 1`` chose the token of step ``s``)."""
    first = max(0, trace.query_start - _answer_start(trace) + 1)
    steps = trace.num_tokens - _answer_start(trace)
    return first, _answer_start(trace) - 1 + np.arange(first, steps)


def _flat_rows(block: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows ``block`` ``[S, T]`` (row ``k`` is query ``rows[k]``), each cut after its query:
    ``[sum(rows + 1)]``, row after row."""
    return np.concatenate([block[k, : int(r) + 1] for k, r in enumerate(rows)])


def rollout_rows(trace: Trace, rows: np.ndarray) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020) of query rows ``rows`` ``[S]`` through every
    layer, float32 ``[S, T]``.

    Each layer's attention, its heads averaged, is mixed with the residual stream:
    ``Â_l = 0.5 * mean_h A_l + 0.5 * I``; rollout is ``R_L = Â_L · ... · Â_1`` and a step's
    rollout row is ``R_L[r]``. It needs ``Â_l``'s row for every token a row attends to: a
    Trace with every row (``query_start == 0``) gives the exact rollout; one that holds only
    the answer's rows treats each row it lacks (the prompt's) as the identity, so rollout
    then follows attention through the rows held and stops at the prompt's tokens.
    """
    import torch

    n = trace.num_tokens
    qs = trace.query_start
    held = np.arange(qs, n)
    att = trace.attentions  # (L, H, T - qs, T)
    with torch.inference_mode():
        flow = torch.eye(n, dtype=torch.float32)  # R, (T, T); rows not held stay identity
        eye_held = torch.zeros(len(held), n)
        eye_held[torch.arange(len(held)), torch.from_numpy(held)] = 0.5
        block = 512
        for layer in range(att.shape[0]):
            mixed = 0.5 * torch.from_numpy(np.array(att[layer], np.float32)).mean(0)
            mixed += eye_held  # (T - qs, T): Â_l's rows held
            new = torch.empty_like(mixed)
            # causal rows: row r needs R's first r + 1 rows and columns only
            for start in range(0, len(held), block):
                end = min(len(held), start + block)
                top = int(held[end - 1]) + 1
                new[start:end, :top] = mixed[start:end, :top] @ flow[:top, :top]
                new[start:end, top:] = 0.0
            flow[torch.from_numpy(held)] = new
        return flow[torch.from_numpy(np.asarray(rows))].numpy()


def _f16_plane(values: np.ndarray) -> bytes:
    return np.asarray(values, np.float32).astype("<f2").tobytes()


@functools.cache
def _log8_table() -> np.ndarray:
    """The one-byte code of every float32 in [0, 2) by its top 20 bits (sign, exponent and 11
    bits of mantissa): uint8 ``[2**19]``. Each bucket spans a relative width of 2**-11 (0.05%),
    and its code is that of its middle."""
    bits = (np.arange(2**19, dtype=np.uint32) << 12) | (1 << 11)
    # bits of infinities and NaNs (never attention) stand for 1.0 and code as 255
    bits[bits >= 0x7F800000] = 0x3F800000
    middle = bits.view(np.float32).astype(np.float64)
    with np.errstate(divide="ignore"):
        code = np.clip(255 + np.rint(np.log(np.maximum(middle, 1e-300)) / LOG8_STEP), 1, 255)
    return np.where(middle >= LOG8_FLOOR, code, 0).astype(np.uint8)


def _log8_plane(values: np.ndarray) -> bytes:
    """Weights (0 to 1) as one-byte codes, through a table of their float32 bits (a shift
    and a lookup: a log of each weight takes ten times longer)."""
    w = np.ascontiguousarray(values, np.float32)
    top = w.view(np.uint32) >> 12
    np.minimum(top, 2**19 - 1, out=top)  # weights > 1 code as 255
    return _log8_table().take(top).tobytes()  # (take: a third quicker than indexing)


#: What a page carries, in order of preference: the first that fits the budget wins. Each
#: entry: (coding of the all-layer mean and rollout, of per-layer means, of single heads);
#: None leaves the plane out.
_PLANS = (
    ("f16", "f16", "f16"),
    ("f16", "f16", "log8"),
    ("log8", "log8", "log8"),
    ("log8", "log8", None),
    ("log8", None, None),
)
_BYTES = {"f16": 2, "log8": 1, None: 0}


def _plan(weights: int, layers: int, heads: int, budget: int,
          rollout: bool, measures: int = 0) -> tuple[str, str | None, str | None]:
    """How the planes travel (see :data:`_PLANS`): the first plan within ``budget`` bytes, or
    the last (the all-layer mean, the rollout and the measures are always kept, coded as the
    mean is)."""
    for plan in _PLANS:
        size = weights * (_BYTES[plan[0]] * ((2 if rollout else 1) + measures)
                          + _BYTES[plan[1]] * layers
                          + _BYTES[plan[2]] * layers * heads)
        if size <= budget:
            return plan
    return _PLANS[-1]


def generation_payload(view: GenerationView) -> dict[str, Any]:
    """The data the page script reads for a generation view (see the module's docs)."""
    trace = view.trace
    tokens = list(trace.tokens)
    special = [bool(s) for s in np.asarray(trace.special_mask, dtype=bool)]
    first, rows = _step_rows(trace)
    layers, heads = trace.num_layers, trace.num_heads
    weights = int((rows + 1).sum())
    rollout = view.rollout
    if rollout is None:  # by default only where it takes well under a second
        rollout = layers * len(rows) * trace.num_tokens ** 2 / 3 <= ROLLOUT_AUTO
    mean_code, layer_code, head_code = _plan(weights, layers, heads, view.max_bytes, rollout,
                                             len(view.measures))
    coders = {"f16": _f16_plane, "log8": _log8_plane}
    qs = trace.query_start
    planes: dict[str, Any] = {}
    notes = []
    if rows.size:
        # the steps' rows are consecutive: a view of each layer, never a copy of them all
        held = slice(int(rows[0]) - qs, int(rows[-1]) - qs + 1)
        total = np.zeros((len(rows), trace.num_tokens), np.float32)  # (S, T)
        mean = np.empty_like(total)  # (S, T), one layer's heads averaged
        layer_planes: list[Any] = []
        head_planes: list[Any] = []
        for layer in range(layers):
            block = trace.attentions[layer, :, held, :]  # (H, S, T)
            # head after head into one buffer: the same sums as block.mean(axis=0), about
            # 2.5 times quicker (no temporaries, one contiguous pass a head)
            np.copyto(mean, block[0])
            for h in range(1, heads):
                mean += block[h]
            mean /= heads
            total += mean
            if layer_code:
                layer_planes.append(coders[layer_code](_flat_rows(mean, rows)))
            if head_code:
                head_planes.extend(coders[head_code](_flat_rows(block[h], rows))
                                   for h in range(heads))
        total /= layers
        planes["all"] = _pack([coders[mean_code](_flat_rows(total, rows))], mean_code)
        del total
        if layer_code:
            planes["layer"] = _pack(layer_planes, layer_code)
        if head_code:
            planes["head"] = _pack(head_planes, head_code)
        del layer_planes, head_planes
        if rollout:
            flow = rollout_rows(trace, rows)
            planes["rollout"] = _pack([coders[mean_code](_flat_rows(flow, rows))], mean_code)
            del flow
        else:
            notes.append("Rollout is left out: on a trace this long it takes a while to "
                         "compute; at.generation_view(trace, rollout=True) adds it.")
        for name, table in view.sources().items():
            planes[name] = _pack([coders[mean_code](_flat_rows(table[first:], rows))],
                                 mean_code)
    if view.measures:
        notes.append(
            "Measures carried: " + ", ".join(MEASURE_NAMES[m] for m in view.measures)
            + " (a generated token's sources: the measure's rollout to the input at the "
            "position that predicted it, as shares of 1).")
    budget_mb = f"{view.max_bytes / 1e6:g} MB"
    if not head_code:
        notes.append(
            f"Single heads are left out: {layers * heads} heads' rows pass this page's "
            f"{budget_mb} budget; at.generation_view(trace, max_bytes=...) keeps them.")
        if not layer_code:
            notes.append("Per-layer averages are left out too (same budget); the average of "
                         "every layer is kept.")
    if "log8" in (mean_code, layer_code, head_code):
        notes.append(f"To fit the {budget_mb} budget, weights are coded in one byte: each "
                     "within 1.9% from 1e-4 up (\u2248 in readouts), smaller ones as < 1e-4.")
    steps = trace.num_tokens - _answer_start(trace)
    top = None
    if trace.answer_top_ids is not None:
        texts = view._top_tokens
        top = [[[texts[s][k] if texts else f"#{int(trace.answer_top_ids[s, k])}",
                 float(trace.answer_top_probs[s, k]) if trace.answer_top_probs is not None
                 else None] for k in range(trace.answer_top_ids.shape[1])]
               for s in range(steps)]
    settings = dict(trace.generation or {})
    settings.pop("top_tokens", None)
    initial_mode = view.mode if view.mode in planes else "all"
    measures = [[name, MEASURE_NAMES[name]] for name in view.measures if name in planes]
    return {
        "title": trace.model_name,
        "subtitle": (f"{trace.num_layers} layers \u00d7 {trace.num_heads} heads, prompt "
                     f"{_answer_start(trace)} tokens, answer {steps}"),
        **single_text_payload("generation", view.theme, tokens, special, view.layer, view.head,
                              view.query),
        "gen": {
            "text": readable_tokens(tokens, special),
            "labels": token_labels(tokens, special),
            "roles": _roles(trace),
            "answer_start": _answer_start(trace),
            "steps": steps,
            "first_step": first,
            "layers": layers,
            "heads": heads,
            "probs": (None if trace.answer_probs is None
                      else [float(p) for p in trace.answer_probs]),
            "top": top,
            "settings": _json_safe(settings),
            "planes": planes,
            "measures": measures,
            "log8": {"step": LOG8_STEP, "floor": LOG8_FLOOR},
            "notes": notes,
            "budget": view.max_bytes,
            "initial": {"mode": initial_mode, "layer": view.layer, "head": view.head,
                        "step": view.step},
        },
    }


#: Base85 text goes into the page unescaped only while its alphabet needs no escaping in JSON
#: or in a <script> element (see attnscope.render.html.script_json).
_SPLICE_SAFE = not set('"\\<>&\u2028\u2029') & set(page_html.BASE85)


def _fragment(payload: dict[str, Any]) -> tuple[str, str]:
    """:func:`attnscope.render.html.build_fragment` of ``payload``, its planes' text spliced in
    after the JSON is written: tens of megabytes of base85 need no JSON or HTML escaping (the
    alphabet has no quote, backslash, "<", ">" or "&"), and encoding them as JSON strings
    took a fifth of the build."""
    if not _SPLICE_SAFE:
        return page_html.build_fragment(payload)
    planes = payload["gen"]["planes"]
    marker = "planes-" + uuid.uuid4().hex
    texts: list[str] = []
    skeleton_planes = {}
    for mode, packed in planes.items():
        slots = []
        for text in packed["planes"]:
            slots.append(f"{marker}:{len(texts)}:")
            texts.append(text)
        skeleton_planes[mode] = {**packed, "planes": slots}
    skeleton = {**payload, "gen": {**payload["gen"], "planes": skeleton_planes}}
    root_id, fragment = page_html.build_fragment(skeleton)
    slot = re.compile(re.escape(marker) + r":(\d+):")
    if len(slot.findall(fragment)) != len(texts):  # the marker is fresh: never happens
        return page_html.build_fragment(payload)
    return root_id, slot.sub(lambda m: texts[int(m[1])], fragment)


def _pack(chunks: list[bytes], dtype: str) -> dict[str, Any]:
    """Planes, each deflated and in base85 (as the other views carry attention)."""
    level = 1 if sum(len(c) for c in chunks) > 4 * 2**20 else 6
    return {"dtype": dtype, "planes": page_html._deflate_all(chunks, level)}


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return str(value)


def single_text_payload(kind: str, theme: str, tokens: list[str], special: list[bool],
                        layer: int, head: int, query: int) -> dict[str, Any]:
    """The parts of a view payload the one view script reads for every page of one text with
    no sentence pair (the generation view, the long view): kind, theme, colours, tokens and
    the initial selection."""
    return {
        "kinds": [kind],
        "theme": theme,
        "colors": list(HEAD_COLORS),
        "ramp": [list(map(list, WEIGHT_STOPS[name])) for name in ("light", "dark")],
        "sentence_b_start": None,
        "tokens": {"self": tokens},
        "special": {"self": [int(s) for s in special]},
        "parts": [],
        "initial": {"part": "self", "layer": layer, "heads": None, "head": head, "query": query},
        "qk": None,
        "token_table": [],
    }
