"""Hidden states in two dimensions: PCA of the input embeddings and of any layer's output.

PCA here is a centred singular value decomposition in NumPy (the same components, signs and
variance shares as scikit-learn's full-SVD ``PCA``, without the second of importing it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from attnscope.analysis.drawing import draw
from attnscope.errors import AttnscopeError, check_index
from attnscope.readable import token_labels
from attnscope.trace import Trace, require_trace

if TYPE_CHECKING:
    from attnscope.render.static import AttnFigure

__all__ = ["JointEmbedding", "Projection", "joint_embedding", "pca", "token_path"]


@dataclass(frozen=True)
class Projection:
    """Points of hidden states projected to 2-D.

    ``points`` float64 ``[N, 2]``; ``labels`` the token of each point; ``levels`` the hidden
    state level of each point (0 = embeddings, l = output of layer l - 1, as in
    ``hidden_states``); ``positions`` the token
    position of each point; ``explained`` the variance share of the two components.
    """

    points: np.ndarray
    labels: tuple[str, ...]
    levels: np.ndarray
    positions: np.ndarray
    explained: tuple[float, float]
    model_name: str
    title: str

    def figure(self, *, path: bool = False) -> AttnFigure:
        """Scatter plot with token labels (``path=True``: points joined in level order)."""
        return draw(self, "figure", path=path)


def _hidden_states(trace: Trace) -> np.ndarray:
    """``trace.hidden_states`` ``[L+1, T, D]``, or one sentence when the Trace holds none."""
    if not trace.has_hidden_states:
        raise AttnscopeError(
            "This trace holds no hidden states (it was built from attention weights alone), so "
            "there is nothing to project; pass hidden_states to Trace.from_attentions, or "
            "capture the text with attnscope.capture."
        )
    return trace.hidden_states


def _project(x: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """``x`` ``[N, D]`` -> (``[N, 2]`` PCA coordinates, explained variance shares)."""
    if x.shape[0] < 2:
        raise AttnscopeError("PCA needs at least two points; give a longer text.")
    centred = x.astype(np.float64) - x.mean(axis=0, dtype=np.float64)  # (N, D)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)  # u (N, K), s (K,), vt (K, D)
    u, vt = u[:, :2], vt[:2]
    # Each component's sign is fixed so that its largest weight over the hidden dimensions is
    # positive (scikit-learn's convention), so the picture does not flip between machines.
    u = u * np.sign(vt[range(len(vt)), np.abs(vt).argmax(axis=1)])
    variance = s**2
    total = variance.sum()
    ratio = variance[:2] / total if total > 0 else np.zeros(2)
    ratio = np.pad(ratio, (0, 2 - len(ratio)))
    points = u * s[:2]  # (N, 2)
    if points.shape[1] < 2:
        points = np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
    return points, (float(ratio[0]), float(ratio[1]))


def pca(trace: Trace, level: int = 0, *, skip_special: bool = False) -> Projection:
    """PCA of one level's hidden states ``trace.hidden_states[level]`` ``[T, D]`` to 2-D.

    ``level`` 0 is the embedding output (the input embeddings), l the output of layer l;
    negatives count from the end (-1: the last layer).
    """
    require_trace(trace, "pca")
    states = _hidden_states(trace)
    level = check_index(level, states.shape[0], "hidden-state level")
    keep = np.arange(trace.num_tokens)
    if skip_special:
        keep = keep[~np.asarray(trace.special_mask, dtype=bool)]
    points, explained = _project(states[level][keep])
    name = "input embeddings" if level == 0 else f"layer {level - 1} output"
    labels = token_labels(trace.tokens, trace.special_mask)
    return Projection(points, tuple(labels[i] for i in keep),
                      np.full(len(keep), level), keep, explained, trace.model_name,
                      f"{name} ({trace.unit}s)")


def token_path(trace: Trace, token: int) -> Projection:
    """One token's hidden state at every level, in the PCA plane of all tokens at all levels.

    The PCA is fitted on ``hidden_states`` ``[L+1, T, D]`` flattened to ``[(L+1)*T, D]``, and
    the returned points are the token's L+1 states in level order.
    """
    require_trace(trace, "token_path")
    states = _hidden_states(trace)
    token = check_index(token, trace.num_tokens, "token")
    levels, n, dim = states.shape
    points, explained = _project(states.reshape(levels * n, dim))  # ((L+1)*T, 2)
    mine = points.reshape(levels, n, 2)[:, token]  # (L+1, 2)
    # Labels name what each point is, as pca's titles do: "the@emb", then "the@L0" for the
    # output of layer 0 (hidden-state level 1), up to the last layer's output.
    label = token_labels(trace.tokens, trace.special_mask)[token]
    names = ["emb", *(f"L{layer}" for layer in range(levels - 1))]
    return Projection(mine, tuple(f"{label}@{name}" for name in names),
                      np.arange(levels), np.full(levels, token), explained, trace.model_name,
                      f"path of {label!r} ({trace.unit} {token}) across layers")


@dataclass(frozen=True)
class JointEmbedding:
    """One head's queries and keys in one 2-D plane (see :func:`joint_embedding`).

    ``points`` float64 ``[2N, 2]``: the N queries first, then the N keys; ``explained`` the
    variance share of the two components; ``scale`` the factor c the queries were multiplied
    by (the keys were divided by it); ``shift`` ``[d]`` what was added to the scaled keys.
    """

    points: np.ndarray
    explained: tuple[float, float]
    scale: float
    shift: np.ndarray


def joint_embedding(queries: np.ndarray, keys: np.ndarray) -> JointEmbedding:
    """Queries and keys of one head projected together to 2-D, as AttentionViz does (Yeh et
    al. 2023).

    Queries and keys live in one space (the head scores ``q . k``), but their clouds usually
    sit apart. Two changes that leave every attention weight as it is bring them together
    before the PCA: the queries are multiplied by ``c = sqrt(mean |k| / mean |q|)`` and the
    keys divided by it, so both have the same mean norm (``q . k`` is unchanged); then the
    keys are translated so that their mean is the queries' mean (``q . (k + t)`` adds
    ``q . t`` to every score of a query's row, which the softmax ignores). The PCA is then a
    centred SVD of the ``2N`` vectors (:func:`pca`'s, with its sign convention).

    Args:
        queries: ``[N, d]``, one head's queries of N tokens.
        keys: ``[N, d]``, the same head's keys (of the same or other tokens).

    Returns:
        A :class:`JointEmbedding`; ``points`` ``[2N, 2]``, queries first.
    """
    q = np.asarray(queries, dtype=np.float64)
    k = np.asarray(keys, dtype=np.float64)
    if q.ndim != 2 or k.ndim != 2 or q.shape[1] != k.shape[1] or len(q) == 0 or len(k) == 0:
        raise AttnscopeError(f"joint_embedding needs queries and keys as [N, d] arrays of the "
                             f"same width d, not {q.shape} and {k.shape}.")
    if not (np.isfinite(q).all() and np.isfinite(k).all()):
        raise AttnscopeError("joint_embedding needs finite queries and keys; some are NaN or "
                             "infinite.")
    q_norm = float(np.linalg.norm(q, axis=1).mean())
    k_norm = float(np.linalg.norm(k, axis=1).mean())
    scale = float(np.sqrt(k_norm / q_norm)) if q_norm > 0 and k_norm > 0 else 1.0
    q, k = q * scale, k / scale
    shift = q.mean(axis=0) - k.mean(axis=0)  # (d,)
    points, explained = _project(np.concatenate([q, k + shift]))  # (2N, 2)
    return JointEmbedding(points, explained, scale, shift)
