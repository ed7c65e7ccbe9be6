"""Where a token is, and which heads share keys: the position pieces that differ by family.

Rotary embeddings (LLaMA, Mistral, Qwen2) turn queries and keys by their position; T5 adds a
learned bias per (distance bucket, head) to the scores; grouped-query attention lets several
query heads share one key/value head. The hand-written attention (:mod:`attnscope.scratch`) and
the q/k/v recorder (:mod:`attnscope.adapters.hooks`) both use these, so they live here, beside
the adapters that describe each family.

Shapes: B texts, H heads, T tokens (T_q queries, T_k keys), d the size of one head.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from attnscope.adapters.base import RelativePositionBias, Rotary

__all__ = [
    "apply_rotary",
    "distance_buckets",
    "relative_position_bias",
    "relative_position_buckets",
    "repeat_kv",
    "rotary_cos_sin",
]


def rotary_cos_sin(positions: Any, rotary: Rotary) -> tuple[Any, Any]:
    """cos and sin ``[T, d]`` of rotary embeddings for integer ``positions`` ``[T]``.

    Dimension pair j turns by ``position * inv_freq[j]``; the two halves of a head share the
    angles (LLaMA pairs dimension j with j + d/2).
    """
    inv_freq = rotary.inv_freq.float()
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, d/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, d)
    return angles.cos() * rotary.scaling, angles.sin() * rotary.scaling


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] over the last axis: a 90 degree turn of each (j, j + d/2) pair."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys ``x`` ``[B, H, T, d]`` by ``cos``/``sin`` ``[T, d]`` or ``[B, T, d]``.

    After rotation, q_i · k_j depends on the positions only through i - j.
    """
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, d): the same for every head
    return x * cos + _rotate_half(x) * sin


def relative_position_buckets(
    t_q: int, t_k: int, bidirectional: bool, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """T5's bucket ``[T_q, T_k]`` for every (query, key) pair, from the distance key - query.

    Small distances get a bucket each; larger ones share logarithmically wider buckets up to
    ``max_distance``. Bidirectional (encoder): half of the buckets are for keys after the query.
    Unidirectional (decoder): only keys at or before the query are told apart.
    """
    distance = torch.arange(t_k)[None, :] - torch.arange(t_q)[:, None]  # (T_q, T_k): key - query
    return distance_buckets(distance, bidirectional, num_buckets, max_distance)


def distance_buckets(distance: torch.Tensor, bidirectional: bool, num_buckets: int,
                     max_distance: int) -> torch.Tensor:
    """T5's bucket of each key - query ``distance`` (a long tensor of any shape), as
    :func:`relative_position_buckets` gives for a whole square: any tile of rows and columns
    (lazy attention computes them on demand)."""
    bucket = torch.zeros_like(distance)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (distance > 0).long() * num_buckets  # keys after the query
        distance = distance.abs()
    else:
        distance = (-distance).clamp(min=0)  # keys after the query all count as distance 0
    exact = num_buckets // 2
    # Beyond `exact`, the bucket grows with log(distance), reaching num_buckets - 1 at max_distance.
    log_ratio = torch.log(distance.float() / exact) / math.log(max_distance / exact)
    far = exact + (log_ratio * (num_buckets - exact)).long()
    far = far.clamp(max=num_buckets - 1)
    return bucket + torch.where(distance < exact, distance, far)


def relative_position_bias(bias: RelativePositionBias, t_q: int, t_k: int) -> torch.Tensor:
    """The bias ``[H, T_q, T_k]`` that T5 adds to the scores: the table looked up by bucket."""
    buckets = relative_position_buckets(
        t_q, t_k, bias.bidirectional, bias.num_buckets, bias.max_distance
    )  # (T_q, T_k)
    table = torch.as_tensor(bias.table).detach().float()  # (num_buckets, H)
    return table[buckets.to(table.device)].permute(2, 0, 1)  # (T_q, T_k, H) -> (H, T_q, T_k)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Grouped-query attention: ``[B, H_kv, T, d] -> [B, H_kv*n_rep, T, d]``, so query head h
    uses key/value head ``h // n_rep``."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)
