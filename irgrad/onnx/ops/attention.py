"""Attention (opset 23-25), RotaryEmbedding, SwiGLU and LinearAttention.

Attention follows ONNX's reference (onnx/reference/ops/op_attention.py) step by step,
since its edge cases are defined there: Q and K are each scaled by sqrt(scale); an
additive bias collects the float mask (or a bool mask as 0 / -inf), the causal frontier
`j <= i + offset`, the sliding window and the padding of `nonpad_kv_seqlen`; softmax
takes its max as 0 on a row of -inf and its sum as 1 where it is 0; and a query row
whose *bias* is all -inf (no key may be attended) is zeroed before P V, so Y is 0 there
even when the scores are NaN. The masks whose shape alone decides them (causal with a
static offset, windows) are numpy constants built at import.
"""

from __future__ import annotations

import math

import numpy as np

from ...frontend import library as L
from ...frontend.tensor import Tensor
from ...ir.types import DType
from .. import dtypes
from . import onnx_op
from .reduce import iota

NEG_INF = -math.inf


# --- Attention -----------------------------------------------------------------------------------

def _heads(x: Tensor, n: int, node, what: str) -> Tensor:
    """[B, S, n * D] -> [B, n, S, D]."""
    b, s, hidden = x.shape
    if n <= 0 or hidden % n:
        raise node.error(f"{what} hidden size {hidden} is not a multiple of its {n} heads")
    return L.transpose(L.reshape(x, (b, s, n, hidden // n)), (0, 2, 1, 3))


def _add(a, b):
    """a + b where either may be None (nothing) or a numpy constant (known at import)."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _bias_of_mask(node, mask: Tensor, total: int, dt: DType):
    # a mask shorter than the keys is padded with -inf (False for a bool mask)
    pad = total - mask.shape[-1]
    if pad < 0:
        raise node.error(f"attn_mask has {mask.shape[-1]} key positions, more than the "
                         f"{total} keys")
    if mask.dtype is DType.bool:
        if pad:
            mask = L.concatenate([mask, L.zeros(mask.shape[:-1] + (pad,), DType.bool)], -1)
        return L.where(mask, L.zeros(mask.shape, dt), NEG_INF)
    mask = mask.astype(dt)
    if pad:
        mask = L.concatenate([mask, L.full(mask.shape[:-1] + (pad,), NEG_INF, dt)], -1)
    return mask


def _frontier(sq: int, skv: int, offset, allowed_fn, dt: DType):
    """An additive bias, 0 where allowed_fn(diff) holds and -inf elsewhere, with diff =
    (i + offset) - j for query i and key j. A static offset gives a numpy [Sq, Skv]
    constant; a per-batch offset (a tensor [B]) gives a traced [B, 1, Sq, Skv]."""
    if isinstance(offset, int):
        diff = (np.arange(sq)[:, None] + offset) - np.arange(skv)[None, :]
        return np.where(allowed_fn(diff), 0.0, NEG_INF).astype(dt.np)
    b = offset.shape[0]
    shape = (b, 1, sq, skv)
    diff = iota(shape, 2) + L.reshape(offset.astype(DType.i64), (b, 1, 1, 1)) - iota(shape, 3)
    return L.where(allowed_fn(diff), L.zeros(shape, dt), NEG_INF)


def _window_allowed(left: int, right: int):
    def allowed(diff):
        ok = None
        if left >= 0:
            ok = diff <= left
        if right >= 0:
            r = -diff <= right
            ok = r if ok is None else ok & r
        return ok
    return allowed


def masked_softmax(x: Tensor) -> Tensor:
    """The reference's softmax: a row of -inf softmaxes to zeros, not NaN (its max is
    taken as 0, then its sum of 0 as 1)."""
    m = L.stop_gradient(L.max(x, -1, keepdims=True))
    m = L.where(m == NEG_INF, 0.0, m)
    e = L.exp(x - m)
    s = L.sum(e, -1, keepdims=True)
    return e / L.where(s == 0.0, 1.0, s)


@onnx_op("Attention", since=23)
def attention(node):
    q, k, v = node.tensor(0), node.tensor(1), node.tensor(2)
    if not q.ndim == k.ndim == v.ndim or q.ndim not in (3, 4):
        raise node.error(f"Q, K and V must all be 3-D or all 4-D, got {list(q.shape)}, "
                         f"{list(k.shape)} and {list(v.shape)}")
    dt = q.dtype
    if not dt.is_float:
        raise node.error(f"Q must be a float tensor, got {dt}")
    rank3 = q.ndim == 3
    q_heads, kv_heads = node.attr("q_num_heads", None), node.attr("kv_num_heads", None)
    if rank3:
        if q_heads is None or kv_heads is None:
            raise node.error("3-D inputs need the q_num_heads and kv_num_heads attributes")
        q, k = _heads(q, q_heads, node, "Q"), _heads(k, kv_heads, node, "K")
        v = _heads(v, kv_heads, node, "V")
    k, v = k.astype(dt), v.astype(dt)
    batch, hq, sq, dq = q.shape
    scale = node.attr("scale", None)
    # Q sqrt(scale) (K sqrt(scale))^T, with scale = 1 / sqrt(head size) by default
    s = math.sqrt(1.0 / math.sqrt(dq) if scale is None else scale)

    has_past = node.has(4) or node.has(5)
    if has_past and not (node.has(4) and node.has(5)):
        raise node.error("past_key and past_value must be given together")
    past_len = 0
    if has_past:
        pk, pv = node.tensor(4).astype(dt), node.tensor(5).astype(dt)
        past_len = pk.shape[2]
        k, v = L.concatenate([pk, k], 2), L.concatenate([pv, v], 2)
    present_k, present_v = k, v
    skv = k.shape[2]
    nonpad = node.tensor(6) if node.opset >= 24 and node.has(6) else None
    if nonpad is not None and has_past:
        raise node.error("nonpad_kv_seqlen cannot be combined with past_key/past_value")
    # the causal and window frontiers' offset: the cached keys before this query block
    offset = nonpad - sq if nonpad is not None else past_len

    bias = _bias_of_mask(node, node.tensor(3), skv, dt) if node.has(3) else None
    if node.attr("is_causal", 0):
        bias = _add(bias, _frontier(sq, skv, offset, lambda d: d >= 0, dt))
    left = node.attr("left_window_size", -1) if node.opset >= 25 else -1
    right = node.attr("right_window_size", -1) if node.opset >= 25 else -1
    if left >= 0 or right >= 0:
        bias = _add(bias, _frontier(sq, skv, offset, _window_allowed(left, right), dt))
    if nonpad is not None:
        keep = iota((batch, 1, 1, skv), 3) < L.reshape(nonpad.astype(DType.i64), (batch, 1, 1, 1))
        bias = _add(bias, L.where(keep, L.zeros(keep.shape, dt), NEG_INF))

    hk = k.shape[1]
    if v.shape[1] != hk or (hq != hk and hq % hk):
        raise node.error(f"{hq} query heads do not fit {hk} key and {v.shape[1]} value heads")
    if hq != hk:
        # grouped-query attention: each KV head serves hq/hk consecutive query heads
        rep = hq // hk

        def repeat(t):
            b, h, n, d = t.shape
            t = L.reshape(t, (b, h, 1, n, d))
            t = L.concatenate([t] * rep, 2) if rep > 1 else t
            return L.reshape(t, (b, h * rep, n, d))
        k, v = repeat(k), repeat(v)

    qk = L.matmul(q * s, L.transpose(k * s, (0, 1, 3, 2)))
    softcap = node.attr("softcap", 0.0)
    if softcap > 0:  # softcap tanh(x / softcap), before the mask so that -inf stays -inf
        qk = L.tanh(qk * (1.0 / softcap)) * softcap
    mode = node.attr("qk_matmul_output_mode", 0)
    if mode not in (0, 1, 2, 3):
        raise node.error(f"qk_matmul_output_mode must be 0 to 3, got {mode}")
    scores = _add(qk, bias)
    # modes 0 and 1 both give the softcapped scores, as the reference does
    qk_out = scores if mode == 2 else qk
    prec = node.attr("softmax_precision", None)
    sdt = dtypes.compute_dtype(prec, f"{node.desc}: softmax_precision: ") if prec is not None else dt
    p = masked_softmax(scores.astype(sdt))
    if bias is not None:
        if isinstance(bias, np.ndarray):
            dead = np.isneginf(bias.max(-1, keepdims=True)) if bias.shape[-1] else None
            if dead is not None and dead.any():
                p = L.where(dead, 0.0, p)
        else:
            p = L.where(L.max(bias, -1, keepdims=True) == NEG_INF, 0.0, p)
    p = p.astype(dt)
    if mode == 3:
        qk_out = p
    y = L.matmul(p, v)
    if rank3:
        y = L.reshape(L.transpose(y, (0, 2, 1, 3)), (batch, sq, -1))
    return [y, present_k, present_v, qk_out]


# --- RotaryEmbedding -----------------------------------------------------------------------------

@onnx_op("RotaryEmbedding", since=23)
def rotary_embedding(node):
    # (x1, x2) -> (cos x1 - sin x2, sin x1 + cos x2) over the first rotary_embedding_dim
    # features of each head, x1/x2 the two halves (or the even and odd features)
    x = node.tensor(0)
    rank = x.ndim
    cos, sin = node.tensor(1), node.tensor(2)
    if x.ndim == 4:
        x = L.transpose(x, (0, 2, 1, 3))  # [B, S, H, D]
    elif x.ndim == 3:
        nh = node.attr("num_heads", 0)
        if nh <= 0 or x.shape[2] % nh:
            raise node.error(f"a 3-D input of hidden size {x.shape[2]} needs num_heads dividing it")
        x = L.reshape(x, x.shape[:2] + (nh, x.shape[2] // nh))
    else:
        raise node.error(f"X must be 3-D or 4-D, got {list(x.shape)}")
    b, sl, nh, d = x.shape
    rot = node.attr("rotary_embedding_dim", 0) or d
    if rot > d or rot % 2:
        raise node.error(f"rotary_embedding_dim {rot} must be even and at most the head size {d}")
    half = rot // 2
    if node.has(3):
        pos = node.tensor(3)
        cos, sin = L.take(cos, pos, axis=0), L.take(sin, pos, axis=0)
    if tuple(cos.shape) != (b, sl, half) or tuple(sin.shape) != (b, sl, half):
        raise node.error(f"the cos/sin caches give {list(cos.shape)}, need [{b}, {sl}, {half}]")
    cos = L.reshape(cos.astype(x.dtype), (b, sl, 1, half))
    sin = L.reshape(sin.astype(x.dtype), (b, sl, 1, half))
    xr = x[..., :rot]
    interleaved = node.attr("interleaved", 0)
    if interleaved:
        pairs = L.reshape(xr, (b, sl, nh, half, 2))
        x1, x2 = pairs[..., 0], pairs[..., 1]
    else:
        x1, x2 = xr[..., :half], xr[..., half:]
    real = cos * x1 - sin * x2
    imag = sin * x1 + cos * x2
    if interleaved:
        out = L.reshape(L.stack([real, imag], -1), (b, sl, nh, rot))
    else:
        out = L.concatenate([real, imag], -1)
    if rot < d:
        out = L.concatenate([out, x[..., rot:]], -1)
    if rank == 3:
        return L.reshape(out, (b, sl, nh * d))
    return L.transpose(out, (0, 2, 1, 3))


# --- SwiGLU --------------------------------------------------------------------------------------

@onnx_op("SwiGLU")
def swiglu(node):
    # Y = A sigmoid(alpha A) B
    a, b = node.tensor(0), node.tensor(1)
    if a.shape != b.shape:
        raise node.error(f"A {list(a.shape)} and B {list(b.shape)} must have one shape")
    alpha = node.attr("alpha", 1.0)
    return a * L.sigmoid(a * alpha) * b


# --- LinearAttention -----------------------------------------------------------------------------

@onnx_op("LinearAttention")
def linear_attention(node):
    # per step t, state S [B, Hkv, dk, dv]:
    #   gated:  S = exp(g_t) S        delta: v_t = beta_t (v_t - S^T k_t)
    #   S = S + k_t (x) v_t           o_t = scale q_t^T S   (q heads share their KV head's S)
    rule = node.attr("update_rule", "gated_delta")
    if rule not in ("linear", "gated", "delta", "gated_delta"):
        raise node.error(f"update_rule must be linear, gated, delta or gated_delta, got '{rule}'")
    gating, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    hq, hk = node.attr("q_num_heads"), node.attr("kv_num_heads")
    if hq <= 0 or hk <= 0 or hq % hk:
        raise node.error(f"q_num_heads ({hq}) must be a positive multiple of kv_num_heads ({hk})")
    if gating != node.has(4) or delta != node.has(5):
        raise node.error(f"update_rule '{rule}' {'needs' if gating else 'forbids'} decay and "
                         f"{'needs' if delta else 'forbids'} beta")
    q, k, v = node.tensor(0), node.tensor(1), node.tensor(2)
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise node.error("query, key and value must be 3-D (B, T, H*D)")
    dt = q.dtype
    b, t_len, _ = q.shape
    q4, k4 = _heads(q, hq, node, "query"), _heads(k.astype(dt), hk, node, "key")
    v4 = _heads(v.astype(dt), hk, node, "value")
    dk, dv, group = q4.shape[3], v4.shape[3], hq // hk
    if k4.shape[3] != dk:
        raise node.error(f"key head size {k4.shape[3]} differs from the query's {dk}")
    decay = beta = None
    if gating:
        g = node.tensor(4).astype(dt)
        if g.ndim != 3 or g.shape[-1] not in (hk, hk * dk):
            raise node.error(f"decay must be (B, T, {hk}) or (B, T, {hk * dk}), got {list(g.shape)}")
        per = 1 if g.shape[-1] == hk else dk
        decay = L.transpose(L.reshape(g, (b, t_len, hk, per)), (0, 2, 1, 3))  # [B, Hkv, T, per]
    if delta:
        be = node.tensor(5).astype(dt)
        if be.ndim != 3 or be.shape[-1] not in (hk, 1):
            raise node.error(f"beta must be (B, T, {hk}) or (B, T, 1), got {list(be.shape)}")
        beta = L.transpose(be, (0, 2, 1))  # [B, Hkv or 1, T]
    if node.has(3):
        state = node.tensor(3).astype(dt)
        if tuple(state.shape) != (b, hk, dk, dv):
            raise node.error(f"past_state must be ({b}, {hk}, {dk}, {dv}), got {list(state.shape)}")
    else:
        state = L.zeros((b, hk, dk, dv), dt)
    scale = node.attr("scale", 0.0) or 1.0 / math.sqrt(dk)
    # the query heads of one KV head side by side: [B, Hkv, group, T, dk]
    qg = L.reshape(q4, (b, hk, group, t_len, dk))
    outs = []
    for t in range(t_len):
        kt = k4[:, :, t:t + 1, :]  # [B, Hkv, 1, dk]
        vt = v4[:, :, t:t + 1, :]  # [B, Hkv, 1, dv]
        if gating:
            state = state * L.exp(L.reshape(decay[:, :, t, :], (b, hk, -1, 1)))
        if delta:
            retrieved = L.matmul(kt, state)  # S^T k_t as a row: [B, Hkv, 1, dv]
            vt = L.reshape(beta[:, :, t], (b, -1, 1, 1)) * (vt - retrieved)
        state = state + L.transpose(kt, (0, 1, 3, 2)) * vt  # k_t (x) v_t
        o = L.matmul(qg[:, :, :, t, :], state) * scale  # [B, Hkv, group, dv]
        outs.append(L.reshape(o, (b, 1, hq * dv)))
    out = L.concatenate(outs, 1)
    state_elem = node.elem(3) if node.has(3) else node.elem(0)
    return [out, node.out(state, state_elem)]
