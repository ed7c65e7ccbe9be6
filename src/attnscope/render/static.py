"""Static attention figures with matplotlib: one head, one layer's heads, every head.

Every function returns an :class:`AttnFigure`, a matplotlib ``Figure`` with a ``save`` method
(PNG, SVG or PDF by the file's extension). Figures are made without pyplot, so nothing piles up
in pyplot's global state when a notebook draws hundreds of them; Jupyter still shows them inline.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from attnscope.errors import AttnscopeError, check_index, check_number
from attnscope.files import atomic_write
from attnscope.readable import token_labels, trace_labels
from attnscope.trace import Trace, float_array

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap, Normalize

__all__ = [
    "AttnFigure",
    "WEIGHT_STOPS",
    "heads_grid",
    "heatmap",
    "matrix_and_tokens",
    "model_grid",
    "weight_cmap",
]

#: One colour language for attention weights, shared with the interactive views (which read
#: these stops from the page's data): from the background to a deep blue (light theme), or to
#: a pale blue (dark theme). Signed values use the diverging "RdBu_r" (blue below zero, red
#: above) in both.
WEIGHT_STOPS = {
    "light": ((255, 255, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107)),
    "dark": ((13, 17, 23), (8, 48, 107), (33, 113, 181), (107, 174, 214), (222, 235, 247)),
}


#: The contrast choices of the figures, as in the views' contrast control (views.js).
CONTRASTS = ("linear", "sqrt", "log")
#: The smallest weight the logarithmic contrast tells from 0 (views.js's LOG_FLOOR).
LOG_FLOOR = 1e-4


def contrast_norm(contrast: str, full: float) -> Normalize:
    """How a weight maps to a colour position in [0, 1], exactly as the views' contrast
    control does it, as a matplotlib norm: ``"linear"`` (``w / full``), ``"sqrt"``
    (``sqrt(w / full)``: small weights lifted) or ``"log"`` (``log w`` from
    ``min(1e-4, full / 10)`` up to ``full``). Weights at or above ``full`` get the full
    colour; 0 stays blank in every contrast. The image keeps the weights themselves."""
    from matplotlib.colors import FuncNorm, Normalize, PowerNorm

    top = max(1e-6, full)
    if contrast == "sqrt":
        return PowerNorm(0.5, vmin=0.0, vmax=top, clip=True)
    if contrast == "log":
        low = min(LOG_FLOOR, top / 10)
        return FuncNorm((lambda w: np.log(np.maximum(w, low)), np.exp), vmin=low, vmax=top,
                        clip=True)
    return Normalize(0.0, top, clip=True)


def _check_contrast(contrast: Any, full: Any) -> float | None:
    if contrast not in CONTRASTS:
        raise AttnscopeError(
            f"contrast must be 'linear', 'sqrt' or 'log', not {str(contrast)[:40]!r}."
        )
    return check_number(full, "full", above=0, none_ok=True)


def _contrast_colorbar(fig: Figure, axes: Any, cmap: Colormap | str | None, norm: Normalize,
                       label: str, **kwargs: Any) -> None:
    """One colour bar, in weights, for pictures drawn with ``norm``."""
    from matplotlib.cm import ScalarMappable

    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, label=label, **kwargs)


def weight_cmap(theme: str = "light") -> Colormap:
    """The attention colour map of the views as a matplotlib colour map ("light" or "dark")."""
    from matplotlib.colors import LinearSegmentedColormap

    stops = [tuple(c / 255 for c in rgb) for rgb in WEIGHT_STOPS[theme]]
    return LinearSegmentedColormap.from_list(f"attnscope-{theme}", stops)

# Above this many tokens, labels would overlap: ticks are thinned out.
_MAX_LABELLED_TOKENS = 80
_FORMATS = {".png", ".svg", ".pdf"}


class AttnFigure(Figure):
    """A matplotlib Figure that can ``save(path)`` itself (PNG, SVG or PDF)."""

    def save(self, path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
        """Write the figure; the format follows the extension. Returns the path."""
        path = Path(path)
        if path.suffix.lower() not in _FORMATS:
            raise AttnscopeError(
                f"Cannot save a figure as '{path.suffix or path.name}': use .png, .svg or .pdf."
            )
        with atomic_write(path, "wb", what="the figure") as handle, _quiet_glyph_warnings():
            self.savefig(handle, format=path.suffix.lower()[1:], dpi=dpi, bbox_inches="tight")
        return path

    def draw(self, renderer: Any) -> None:
        """Draw with every text as plain text: tokens and model names such as "$x$" or
        "my$model" are words, never formulas (an unbalanced "$" would fail to draw)."""
        from matplotlib import rc_context
        from matplotlib.text import Text

        for text in self.findobj(Text):
            text.set_parse_math(False)
        with rc_context({"text.parse_math": False}):  # tick labels are made while drawing
            super().draw(renderer)

    def _repr_png_(self) -> bytes:
        import io

        buffer = io.BytesIO()
        with _quiet_glyph_warnings():
            self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        return buffer.getvalue()


@contextlib.contextmanager
def _quiet_glyph_warnings() -> Iterator[None]:
    # Tokens in scripts the default font lacks (CJK, emoji) draw as boxes; that is expected
    # and not worth a warning per glyph.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
        warnings.filterwarnings("ignore", message=r"Matplotlib currently does not support")
        yield


def _label(token: str) -> str:
    """A token as a tick label: control characters and odd spaces escaped, kept short."""
    shown = repr(token)[1:-1] if not token.isprintable() else token
    return shown if len(shown) <= 24 else shown[:23] + "…"


def _set_token_ticks(ax: Axes, rows: Sequence[str], cols: Sequence[str], fontsize: float) -> None:
    for axis, tokens in ((ax.xaxis, cols), (ax.yaxis, rows)):
        n = len(tokens)
        step = max(1, math.ceil(n / _MAX_LABELLED_TOKENS))
        positions = list(range(0, n, step))
        # parse_math=False: a token such as "$" or "$x$" is text, not a formula.
        axis.set_ticks(positions, labels=[_label(tokens[i]) for i in positions],
                       fontsize=fontsize, parse_math=False)
    for label in ax.get_xticklabels():
        label.set_rotation(90)


def _part_name(trace: Trace, part: str) -> str:
    if len(trace.parts) == 1:
        return ""
    return {"self": "encoder ", "encoder": "encoder ", "decoder": "decoder ",
            "cross": "cross "}.get(part, part + " ")


def _require_trace(trace: Any, what: str) -> None:
    if not isinstance(trace, Trace):
        raise AttnscopeError(
            f"{what} draws every head of a Trace (from attnscope.capture or "
            f"Trace.from_attentions), not {type(trace).__name__}; for one matrix use heatmap."
        )


def heatmap(
    trace: Trace | Any,
    layer: int | Sequence[str] | None = -1,
    head: int | Sequence[str] | None = 0,
    *,
    part: str = "self",
    cmap: Colormap | str | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    contrast: str = "linear",
    full: float | None = None,
) -> AttnFigure:
    """One head's attention as a heatmap: query tokens down, key tokens across.

    Call it as ``heatmap(trace, layer, head)`` for a head of a Trace, or with one 2-D matrix
    ``[T_query, T_key]`` (numpy, torch or nested lists) and its tokens: ``heatmap(matrix,
    tokens)`` (square) or ``heatmap(matrix, query_tokens, key_tokens)``. A matrix with negative
    values (scores, differences) gets a diverging colour map centred on 0.

    Args:
        trace: from :func:`attnscope.capture` (or :meth:`Trace.from_attentions`), or a matrix.
        layer, head: which head; negative indices count from the end (``layer=-1``: last).
            For a matrix: its query tokens and key tokens (default: positions 0, 1, ...).
        part: "self", or for encoder-decoder traces "decoder" or "cross".
        cmap: a matplotlib colour map (name or object); default the views' own
            (:func:`weight_cmap`), so figures and pages read the same, and "RdBu_r" for a
            signed matrix.
        title: the figure's title (default: the model, layer and head).
        ax: draw into this Axes instead of a new figure (its figure is returned).
        contrast: how weights map to colour, as in the views' contrast control: "linear",
            "sqrt" (square root: small weights lifted) or "log" (from 1e-4 up); over a long
            text each weight is small, and "log" shows what "linear" leaves nearly blank.
        full: the weight that gets the full colour (default: the largest in the matrix).

    Returns:
        The figure: a ``[T_query, T_key]`` image with token labels on both axes, a colour bar,
        and a title.
    """
    full = _check_contrast(contrast, full)
    if isinstance(trace, Trace):
        attentions, _, _ = trace.part(part)
        rows, cols = (tuple(labels) for labels in trace_labels(trace, part))
        layer = check_index(layer, attentions.shape[0], "layer")  # type: ignore[arg-type]
        head = check_index(head, attentions.shape[1], "head")  # type: ignore[arg-type]
        matrix = attentions[layer, head]
        if title is None:
            title = (f"{trace.model_name}\n{_part_name(trace, part)}layer "
                     f"{trace.layer_numbers[layer]}, head {trace.head_numbers[head]}")
        label = "attention weight"
    else:
        matrix, rows, cols = matrix_and_tokens(trace, layer, head, "heatmap")
        label = "attention weight" if _is_weights(matrix) else "value"
    return _draw_matrix(matrix, rows, cols, cmap=cmap, title=title, label=label, ax=ax,
                        contrast=contrast, full=full)


def _is_weights(matrix: np.ndarray) -> bool:
    """Whether every row is a distribution (non-negative, summing to 1)."""
    return bool(matrix.min(initial=0.0) >= 0
                and np.allclose(matrix.sum(axis=-1), 1.0, atol=1e-2))


def matrix_and_tokens(
    matrix: Any, query_tokens: Any, key_tokens: Any, what: str
) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """A raw 2-D matrix ``[T_query, T_key]`` as float32, with its query and key tokens.

    ``query_tokens`` and ``key_tokens`` are sequences of strings (``key_tokens`` defaults to the
    query tokens when the matrix is square); None or an int (a caller's default layer/head
    index) means positions. Anything that is neither a Trace nor a matrix gets one sentence.
    """
    is_array = isinstance(matrix, (np.ndarray, list, tuple)) or hasattr(matrix, "__array__") \
        or hasattr(matrix, "detach")
    if not is_array:
        raise AttnscopeError(
            f"{what} takes a Trace (from attnscope.capture or Trace.from_attentions) or a 2-D "
            f"matrix with its tokens, not {type(matrix).__name__}."
        )
    array = float_array(matrix, "The matrix")
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]  # [1, 1, T_q, T_k] -> [T_q, T_k]
    if array.ndim != 2 or 0 in array.shape:
        raise AttnscopeError(
            f"{what} draws one 2-D matrix [query tokens, key tokens], got shape "
            f"{list(array.shape)}; for a whole layer, build a Trace with Trace.from_attentions."
        )
    if not np.isfinite(array).all():
        raise AttnscopeError(f"The matrix given to {what} holds NaN or infinite values.")
    n_q, n_k = array.shape

    def tokens(value: Any, n: int, which: str) -> tuple[str, ...]:
        if value is None or isinstance(value, (int, np.integer)):
            return tuple(str(i) for i in range(n))
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise AttnscopeError(
                f"The {which} tokens must be a list of strings, not {type(value).__name__}."
            )
        if len(value) != n:
            raise AttnscopeError(
                f"The matrix has {n} {'rows' if which == 'query' else 'columns'} but "
                f"{len(value)} {which} tokens were given."
            )
        return tuple(str(v) for v in value)

    if (key_tokens is None or isinstance(key_tokens, (int, np.integer))) and n_q == n_k:
        key_tokens = query_tokens
    # Tokens given with a matrix are shown as the text they stand for, as a Trace's are.
    return (array, tuple(token_labels(tokens(query_tokens, n_q, "query"))),
            tuple(token_labels(tokens(key_tokens, n_k, "key"))))


def _draw_matrix(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], *,
                 cmap: Colormap | str | None, title: str | None, label: str,
                 ax: Any = None, contrast: str = "linear",
                 full: float | None = None) -> AttnFigure:
    """Draw ``matrix`` ``[T_query, T_key]`` with token ticks; signed values on a diverging,
    zero-centred scale, others from 0."""
    if ax is None:
        side = min(16.0, max(5.0, 2.5 + 0.26 * max(len(rows), len(cols))))
        fig = AttnFigure(figsize=(side + 1.2, side), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    scale: dict[str, Any]
    signed = float(matrix.min()) < 0
    if signed:  # scores, differences: diverging around 0 (the contrast is for weights)
        bound = max(float(np.abs(matrix).max()), 1e-9)
        scale = {"cmap": cmap or "RdBu_r", "vmin": -bound, "vmax": bound}
    else:
        full = full or max(float(matrix.max()), 1e-9)
        scale = {"cmap": cmap or weight_cmap(), "norm": contrast_norm(contrast, full)}
    image = ax.imshow(matrix, aspect="auto", interpolation="nearest", **scale)
    fontsize = 9 if max(len(rows), len(cols)) <= 40 else 6
    _set_token_ticks(ax, rows, cols, fontsize)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if title:
        ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label=label, shrink=0.8)
    return fig


def heads_grid(trace: Trace, layer: int = -1, *, part: str = "self",
               cmap: Colormap | str | None = None, ncols: int | None = None,
               contrast: str = "linear", full: float | None = None) -> AttnFigure:
    """Every head of one layer, side by side, on one colour scale (0 to 1) with a colour bar.

    ``contrast`` ("linear", "sqrt", "log") and ``full`` (the weight that gets the full
    colour, default 1) as in :func:`heatmap` and the views' contrast control.

    Token labels sit on the outer panels only (the left column and the lowest panel of each
    column): the grid reads like one table, and there are fewer labels to lay out.
    """
    _require_trace(trace, "heads_grid")
    norm = contrast_norm(contrast, _check_contrast(contrast, full) or 1.0)
    attentions, _, _ = trace.part(part)
    rows, cols = trace_labels(trace, part)
    layer = check_index(layer, attentions.shape[0], "layer")
    heads = attentions.shape[1]
    ncols = ncols or min(heads, 4 if heads <= 8 else 6)
    nrows = math.ceil(heads / ncols)
    labelled = max(len(rows), len(cols)) <= 24
    cell = 2.6 if labelled else 2.2
    fig = AttnFigure(figsize=(ncols * cell + 1.0, nrows * cell + 0.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for h, ax in enumerate(axes):
        if h >= heads:
            ax.set_axis_off()
            continue
        ax.imshow(attentions[layer, h], cmap=cmap or weight_cmap(), norm=norm,
                  interpolation="nearest")
        ax.set_title(f"head {trace.head_numbers[h]}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if labelled and (h % ncols == 0 or h + ncols >= heads):
            _set_token_ticks(ax, rows, cols, 6)
            if h % ncols:
                ax.set_yticks([])
            if h + ncols < heads:
                ax.set_xticks([])
    fig.suptitle(f"{trace.model_name}: {_part_name(trace, part)}layer "
                 f"{trace.layer_numbers[layer]}, all heads")
    _contrast_colorbar(fig, list(np.ravel(axes)), cmap or weight_cmap(), norm,
                       "attention weight", shrink=0.6, fraction=0.03)
    return fig


# A model-grid thumbnail needs no more than this many cells a side; longer texts are averaged
# down in blocks so the one mosaic image stays small.
_THUMB_CELLS = 160


def _mosaic(attentions: np.ndarray, gap: int) -> np.ndarray:
    """``[L, H, Tq, Tk]`` -> one ``[L*(tq+gap)-gap, H*(tk+gap)-gap]`` image, NaN between
    panels; each panel block-averaged to at most ``_THUMB_CELLS`` cells a side."""
    layers, heads, tq, tk = attentions.shape
    fq, fk = math.ceil(tq / _THUMB_CELLS), math.ceil(tk / _THUMB_CELLS)
    if fq > 1 or fk > 1:
        pad = ((0, 0), (0, 0), (0, -tq % fq), (0, -tk % fk))
        padded = np.pad(attentions.astype(np.float32), pad)
        attentions = padded.reshape(layers, heads, padded.shape[2] // fq, fq,
                                    padded.shape[3] // fk, fk).mean(axis=(3, 5))
        tq, tk = attentions.shape[2:]
    out = np.full((layers * (tq + gap) - gap, heads * (tk + gap) - gap), np.nan, np.float32)
    for layer in range(layers):
        for head in range(heads):
            out[layer * (tq + gap):layer * (tq + gap) + tq,
                head * (tk + gap):head * (tk + gap) + tk] = attentions[layer, head]
    return out


def model_grid(trace: Trace, *, part: str = "self", cmap: Colormap | str | None = None,
               contrast: str = "linear", full: float | None = None) -> AttnFigure:
    """Every layer (rows) x head (columns) as a thumbnail, on one colour scale (0 to 1) with a
    colour bar; ``contrast`` and ``full`` as in :func:`heads_grid`.

    The thumbnails are one mosaic image on one axes (a figure of 144 small axes takes seconds
    to lay out); texts longer than 160 tokens are averaged down in blocks to 160 cells a side.
    """
    import matplotlib

    _require_trace(trace, "model_grid")
    norm = contrast_norm(contrast, _check_contrast(contrast, full) or 1.0)
    attentions, _, _ = trace.part(part)
    layers, heads = attentions.shape[:2]
    if layers * heads == 0:
        raise AttnscopeError("This trace has no attention heads to draw.")
    gap = max(1, math.ceil(min(attentions.shape[2], _THUMB_CELLS) / 8))
    mosaic = _mosaic(attentions, gap)  # (L*(tq+gap)-gap, H*(tk+gap)-gap)
    tq = (mosaic.shape[0] + gap) // layers - gap
    tk = (mosaic.shape[1] + gap) // heads - gap
    colours = cmap or weight_cmap()
    colours = (matplotlib.colormaps[colours] if isinstance(colours, str) else colours)
    cell = 1.1
    fig = AttnFigure(figsize=(heads * cell + 1.6, layers * cell + 0.8), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(mosaic, cmap=colours.with_extremes(bad="none"), norm=norm,
              interpolation="nearest")
    # the model's own numbers (a capture with layers= / heads= holds some of them only)
    head_ids, layer_ids = trace.head_numbers, trace.layer_numbers
    ax.set_xticks([h * (tk + gap) + (tk - 1) / 2 for h in range(heads)],
                  labels=[f"h{head_ids[h]}" for h in range(heads)], fontsize=8)
    ax.set_yticks([la * (tq + gap) + (tq - 1) / 2 for la in range(layers)],
                  labels=[f"L{layer_ids[la]}" for la in range(layers)], fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.suptitle(f"{trace.model_name}: {_part_name(trace, part)}every layer x head")
    _contrast_colorbar(fig, [ax], colours, norm, "attention weight", shrink=0.6,
                       fraction=0.03)
    return fig
