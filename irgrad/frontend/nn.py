"""`ig.nn`: layers as pairs of (seeded numpy init, IR builder).

A layer's `init(seed)` returns a dict of numpy arrays (nested for composite layers);
calling it as `layer(params, x)` inside a traced function builds its IR. Weights of a
`Linear` are stored as (in, out), so a layer is `x @ W + b`; initialization is uniform in
+-1/sqrt(fan_in), as PyTorch's default.
"""

from __future__ import annotations

import math

import numpy as np

from . import library as L
from .specs import as_dtype
from .tensor import as_tensor, fail


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


class Module:
    """Base class: `init(seed) -> params dict`, `__call__(params, x) -> Tensor`."""

    dtype = np.float32

    def init(self, seed=0) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, params, x):  # pragma: no cover - abstract
        raise NotImplementedError


class Linear(Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype="f32"):
        self.in_features, self.out_features, self.bias = in_features, out_features, bias
        self.dtype = as_dtype(dtype).np

    def init(self, seed=0) -> dict:
        rng = _rng(seed)
        bound = 1.0 / math.sqrt(self.in_features)
        p = {"W": rng.uniform(-bound, bound, (self.in_features, self.out_features)).astype(self.dtype)}
        if self.bias:
            p["b"] = rng.uniform(-bound, bound, (self.out_features,)).astype(self.dtype)
        return p

    def __call__(self, params, x):
        y = as_tensor(x) @ params["W"]
        return y + params["b"] if self.bias else y


_ACTIVATIONS = {"relu": L.relu, "tanh": L.tanh, "gelu": L.gelu, "sigmoid": L.sigmoid,
                "identity": lambda x: x}


def activation(name):
    if callable(name):
        return name
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise fail(f"unknown activation {name!r} (known: {', '.join(_ACTIVATIONS)})") from None


class MLP(Module):
    """Linear layers `fc0, fc1, ...` with `activation` between them (none after the last)."""

    def __init__(self, sizes, activation="relu", dtype="f32"):
        if len(sizes) < 2:
            raise ValueError("MLP needs at least an input and an output size")
        self.sizes = list(sizes)
        self.layers = [Linear(a, b, dtype=dtype) for a, b in zip(sizes, sizes[1:])]
        self.act = activation

    def init(self, seed=0) -> dict:
        rng = _rng(seed)
        return {f"fc{i}": layer.init(rng) for i, layer in enumerate(self.layers)}

    def __call__(self, params, x):
        act = activation(self.act)
        for i, layer in enumerate(self.layers):
            x = layer(params[f"fc{i}"], x)
            if i < len(self.layers) - 1:
                x = act(x)
        return x


class Embedding(Module):
    """A table of `num` rows of size `dim`, initialized N(0, 1) as in PyTorch."""

    def __init__(self, num: int, dim: int, dtype="f32"):
        self.num, self.dim = num, dim
        self.dtype = as_dtype(dtype).np

    def init(self, seed=0) -> dict:
        return {"weight": _rng(seed).standard_normal((self.num, self.dim)).astype(self.dtype)}

    def __call__(self, params, ids):
        return L.take(params["weight"], ids, axis=0)


class LayerNorm(Module):
    def __init__(self, dim: int, eps: float = 1e-5, dtype="f32"):
        self.dim, self.eps = dim, eps
        self.dtype = as_dtype(dtype).np

    def init(self, seed=0) -> dict:
        return {"gamma": np.ones(self.dim, self.dtype), "beta": np.zeros(self.dim, self.dtype)}

    def __call__(self, params, x):
        return L.layer_norm(x, params["gamma"], params["beta"], self.eps)


class CausalSelfAttention(Module):
    """Multi-head self-attention where position t attends to positions <= t.

    x [B, T, C] -> qkv projection -> heads [B, H, T, C/H] -> softmax(q k^T / sqrt(C/H)
    masked) v -> output projection.
    """

    def __init__(self, d_model: int, n_heads: int, dtype="f32"):
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.d_model, self.n_heads = d_model, n_heads
        self.qkv = Linear(d_model, 3 * d_model, dtype=dtype)
        self.proj = Linear(d_model, d_model, dtype=dtype)

    def init(self, seed=0) -> dict:
        rng = _rng(seed)
        return {"qkv": self.qkv.init(rng), "proj": self.proj.init(rng)}

    def __call__(self, params, x):
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[2] != self.d_model:
            raise fail(f"CausalSelfAttention expects [batch, time, {self.d_model}], got {x.type}")
        B, T, C = x.shape
        H, D = self.n_heads, C // self.n_heads
        qkv = self.qkv(params["qkv"], x)  # [B, T, 3C]

        def heads(i):
            part = qkv[:, :, i * C:(i + 1) * C]
            return part.reshape(B, T, H, D).transpose(0, 2, 1, 3)  # [B, H, T, D]

        q, k, v = heads(0), heads(1), heads(2)
        scores = (q @ k.transpose(0, 1, 3, 2)) * (1.0 / math.sqrt(D))  # [B, H, T, T]
        causal = np.tril(np.ones((T, T), dtype=bool))
        scores = L.where(causal, scores, -1e9)  # finite, so fast-math stays exact
        att = L.softmax(scores, axis=-1)
        out = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
        return self.proj(params["proj"], out)


class TransformerBlock(Module):
    """Pre-LayerNorm decoder block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, activation="gelu", dtype="f32"):
        self.ln1 = LayerNorm(d_model, dtype=dtype)
        self.attn = CausalSelfAttention(d_model, n_heads, dtype=dtype)
        self.ln2 = LayerNorm(d_model, dtype=dtype)
        self.mlp = MLP([d_model, d_ff, d_model], activation=activation, dtype=dtype)

    def init(self, seed=0) -> dict:
        rng = _rng(seed)
        return {"ln1": self.ln1.init(rng), "attn": self.attn.init(rng),
                "ln2": self.ln2.init(rng), "mlp": self.mlp.init(rng)}

    def __call__(self, params, x):
        x = x + self.attn(params["attn"], self.ln1(params["ln1"], x))
        return x + self.mlp(params["mlp"], self.ln2(params["ln2"], x))


class TinyTransformer(Module):
    """Token + learned position embeddings, `n_layers` blocks, final LayerNorm, output head:
    the W4 model of the benchmarks. `__call__(params, ids[B, T]) -> logits [B, T, vocab]`."""

    def __init__(self, vocab: int = 256, seq: int = 64, d_model: int = 128, n_heads: int = 4,
                 d_ff: int = 512, n_layers: int = 1, dtype="f32"):
        self.vocab, self.seq, self.d_model = vocab, seq, d_model
        self.tok = Embedding(vocab, d_model, dtype=dtype)
        self.pos = Embedding(seq, d_model, dtype=dtype)
        self.blocks = [TransformerBlock(d_model, n_heads, d_ff, dtype=dtype) for _ in range(n_layers)]
        self.ln_f = LayerNorm(d_model, dtype=dtype)
        self.head = Linear(d_model, vocab, dtype=dtype)

    def init(self, seed=0) -> dict:
        rng = _rng(seed)
        p = {"tok": self.tok.init(rng), "pos": self.pos.init(rng)}
        for i, blk in enumerate(self.blocks):
            p[f"block{i}"] = blk.init(rng)
        p["ln_f"] = self.ln_f.init(rng)
        p["head"] = self.head.init(rng)
        return p

    def __call__(self, params, ids):
        ids = as_tensor(ids)
        B, T = ids.shape
        x = self.tok(params["tok"], ids) + params["pos"]["weight"][:T]
        for i, blk in enumerate(self.blocks):
            x = blk(params[f"block{i}"], x)
        return self.head(params["head"], self.ln_f(params["ln_f"], x))

    def loss(self, params, ids, targets):
        """Next-token cross-entropy; targets[b, t] is the token after ids[b, t]."""
        logits = self(params, ids)
        B, T, V = logits.shape
        return L.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T))


# convolutional and stateful layers (frontend/layers.py)
from .layers import (AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Layer, MaxPool2d,  # noqa: E402,F401
                     ReLU, Sequential)
