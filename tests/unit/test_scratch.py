"""The hand-written attention on its own: numpy and torch agree, softmax runs over keys, masks,
heads, rotary embeddings and T5's buckets behave as the maths says."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnscope.adapters.base import RelativePositionBias, Rotary
from attnscope.scratch import (
    MultiHeadAttention,
    SelfAttention,
    apply_rotary,
    relative_position_buckets,
    repeat_kv,
    rotary_cos_sin,
    scaled_dot_product_attention,
    softmax,
)


def _qkv(seed: int = 0, shape=(2, 5, 8)):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]


def test_numpy_and_torch_give_the_same_attention():
    q, k, v = _qkv()
    out_np, w_np = scaled_dot_product_attention(q, k, v)
    out_t, w_t = scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v)))
    assert isinstance(out_np, np.ndarray) and isinstance(out_t, torch.Tensor)
    assert out_np.shape == (2, 5, 8) and w_np.shape == (2, 5, 5)
    np.testing.assert_allclose(w_np, w_t.numpy(), atol=1e-6)
    np.testing.assert_allclose(out_np, out_t.numpy(), atol=1e-5)
    # and both equal the formula written out once more
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(8)
    expected = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    np.testing.assert_allclose(w_np, expected, atol=1e-6)
    np.testing.assert_allclose(out_np, expected @ v, atol=1e-5)


def test_softmax_rows_sum_to_one_over_keys_not_over_queries():
    """Seed 003 wrote softmax(dim=1) on [B, T_q, T_k] scores: that normalises over queries."""
    q, k, _ = _qkv(1)
    scores = torch.from_numpy(q @ k.transpose(0, 2, 1) / math.sqrt(8))  # (B, T_q, T_k)
    over_keys = torch.softmax(scores, dim=-1)
    over_queries = torch.softmax(scores, dim=1)  # the notebook's bug
    torch.testing.assert_close(over_keys.sum(-1), torch.ones(2, 5))
    assert not torch.allclose(over_queries.sum(-1), torch.ones(2, 5), atol=1e-3)
    torch.testing.assert_close(over_queries.sum(1), torch.ones(2, 5))  # its columns sum to 1
    assert (over_keys - over_queries).abs().max() > 0.05
    _, ours = scaled_dot_product_attention(*(torch.from_numpy(a) for a in _qkv(1)))
    torch.testing.assert_close(ours, over_keys)


def test_causal_mask_hides_later_keys_and_rows_still_sum_to_one():
    q, k, v = _qkv(2)
    _, w = scaled_dot_product_attention(q, k, v, causal=True)
    assert np.all(np.triu(w[0], 1) == 0) and np.all(np.triu(w[1], 1) == 0)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
    assert w[0, 0, 0] == pytest.approx(1.0)  # the first token can only see itself


def test_padding_mask_gives_the_same_rows_as_the_short_input_alone():
    q, k, v = _qkv(3)
    keep = np.array([[1, 1, 1, 0, 0]], dtype=bool)[:, None, :]  # (1, 1, T_k): last 2 are padding
    out, w = scaled_dot_product_attention(q[:1], k[:1], v[:1], mask=keep)
    out_short, w_short = scaled_dot_product_attention(q[:1, :3], k[:1, :3], v[:1, :3])
    assert np.all(w[..., 3:] == 0)
    np.testing.assert_allclose(w[:, :3, :3], w_short, atol=1e-6)
    np.testing.assert_allclose(out[:, :3], out_short, atol=1e-6)
    assert np.isfinite(w).all()


def test_scale_and_bias_enter_the_scores():
    q, k, v = _qkv(4)
    bias = np.zeros((5, 5), np.float32)
    bias[:, 2] = 50.0  # a huge bias on key 2 takes all the weight
    _, w = scaled_dot_product_attention(q, k, v, scale=1.0, bias=bias)
    np.testing.assert_allclose(w[..., 2], 1.0, atol=1e-6)
    _, w1 = scaled_dot_product_attention(q, k, v, scale=1.0)
    _, w2 = scaled_dot_product_attention(q * 1.0, k, v, scale=1.0 / math.sqrt(8))
    assert np.abs(w1 - w2).max() > 1e-3


def test_numpy_softmax_is_stable_for_large_scores():
    x = np.array([[1000.0, 1001.0, 999.0]])
    out = softmax(x)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(-1), 1.0)


def test_self_attention_module_as_in_the_notebook():
    torch.manual_seed(0)
    attn = SelfAttention(16, dropout=0.1).eval()
    x = torch.randn(2, 6, 16)
    mask = torch.ones(2, 6, 6)
    mask[1, :, 4:] = 0  # second text: 2 padding keys
    out, w = attn(x, mask)
    assert out.shape == (2, 6, 16) and w.shape == (2, 6, 6)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 6))
    assert torch.all(w[1, :, 4:] == 0)
    q, k, v = attn.query(x[0]), attn.key(x[0]), attn.value(x[0])
    expected = torch.softmax(q @ k.T / math.sqrt(16), dim=-1)
    torch.testing.assert_close(w[0], expected)
    torch.testing.assert_close(out[0], expected @ v)
    attn.train()  # dropout acts in training mode only
    _, w_train = attn(x)
    assert not torch.allclose(w_train, attn.eval()(x)[1])



def test_a_new_self_attention_module_returns_weights_that_sum_to_one():
    """A fresh module is in training mode; without dropout by default its weights are a real
    distribution over the keys, as a learner plots them."""
    torch.manual_seed(0)
    attn = SelfAttention(16)
    assert attn.training
    _, w = attn(torch.randn(1, 7, 16))
    torch.testing.assert_close(w.sum(-1), torch.ones(1, 7))
    assert torch.all(w > 0)

def test_multi_head_attention_equals_a_loop_over_heads():
    """The split/concat of exercise 3 in seed 004: each head is its own small attention."""
    torch.manual_seed(1)
    mha = MultiHeadAttention(8, 2).eval()
    x = torch.rand(1, 3, 8)
    out, w = mha(x)
    assert out.shape == (1, 3, 8) and w.shape == (1, 2, 3, 3)
    heads = []
    for h in range(2):
        rows = slice(4 * h, 4 * h + 4)
        q = x[0] @ mha.q_proj.weight[rows].T + mha.q_proj.bias[rows]
        k = x[0] @ mha.k_proj.weight[rows].T + mha.k_proj.bias[rows]
        v = x[0] @ mha.v_proj.weight[rows].T + mha.v_proj.bias[rows]
        weights = torch.softmax(q @ k.T / math.sqrt(4), dim=-1)
        torch.testing.assert_close(w[0, h], weights)
        heads.append(weights @ v)
    concat = torch.cat(heads, dim=-1)  # (3, 8)
    torch.testing.assert_close(out[0], mha.out_proj(concat))


def test_grouped_query_heads_share_keys():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)  # (B, H_kv, T, d)
    rep = repeat_kv(x, 2)  # (B, 4, T, d)
    assert rep.shape == (1, 4, 3, 4)
    for h in range(4):
        torch.testing.assert_close(rep[0, h], x[0, h // 2])
    mha = MultiHeadAttention(16, 4, num_kv_heads=2)
    q, k, v = mha.project(torch.randn(1, 5, 16))
    assert q.shape == k.shape == v.shape == (1, 4, 5, 4)
    torch.testing.assert_close(k[:, 0], k[:, 1])
    assert not torch.allclose(k[:, 1], k[:, 2])


def test_rotary_scores_depend_only_on_the_distance():
    rotary = Rotary(inv_freq=1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8)))
    cos, sin = rotary_cos_sin(torch.arange(12), rotary)  # (T, d)
    torch.manual_seed(2)
    q = torch.randn(8).expand(1, 1, 12, 8)  # the same query vector at every position
    k = torch.randn(8).expand(1, 1, 12, 8)
    qr, kr = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    scores = (qr @ kr.transpose(-1, -2))[0, 0]  # (T, T)
    torch.testing.assert_close(scores[5, 3], scores[9, 7])  # distance 2 both
    torch.testing.assert_close(scores[2, 2], scores[10, 10])
    assert not torch.allclose(scores[5, 3], scores[5, 4])
    torch.testing.assert_close(qr.norm(dim=-1), q.norm(dim=-1))  # a rotation keeps lengths


def test_relative_buckets_match_t5():
    from transformers.models.t5.modeling_t5 import T5Attention

    for bidirectional in (True, False):
        ours = relative_position_buckets(40, 40, bidirectional, 32, 128)
        distance = torch.arange(40)[None, :] - torch.arange(40)[:, None]
        theirs = T5Attention._relative_position_bucket(
            distance, bidirectional=bidirectional, num_buckets=32, max_distance=128)
        assert torch.equal(ours, theirs)
    buckets = relative_position_buckets(6, 6, True, 8, 20)
    assert buckets[0, 1] != buckets[1, 0]  # encoder: before and after differ
    table = torch.randn(8, 3)
    bias = RelativePositionBias(table, 8, 20, True)
    from attnscope.scratch import relative_position_bias

    values = relative_position_bias(bias, 6, 6)  # (H, T, T)
    assert values.shape == (3, 6, 6)
    torch.testing.assert_close(values[2, 4, 1], table[buckets[4, 1], 2])


def test_sliding_window_keeps_the_last_keys_only():
    q, k, v = _qkv(5, (1, 6, 8))
    _, w = scaled_dot_product_attention(q, k, v, causal=True, window=2)
    _, w_t = scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v)),
                                          causal=True, window=2)
    np.testing.assert_allclose(w, w_t.numpy(), atol=1e-6)
    seen = w[0] > 0
    expected = np.array([[j in (i - 1, i) for j in range(6)] for i in range(6)])
    np.testing.assert_array_equal(seen, expected)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
