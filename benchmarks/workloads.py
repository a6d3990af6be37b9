"""The benchmark workloads W1-W4 (../shared/notes/peers.md), shared by benchmarks and tests
(which put benchmarks/ on sys.path).

One training step = forward, loss, backward, SGD update of every parameter, float32.

- W1 digits-mlp: batch 64, 64 -> 128 (ReLU) -> 10, softmax cross-entropy, SGD lr 0.1.
- W2 mnist-mlp: batch 128, 784 -> 512 (ReLU) -> 512 (ReLU) -> 10, cross-entropy, SGD.
- W3 wide-mlp: batch 512, 1024 -> 4096 (tanh) -> 1024, mean squared error, SGD.
- W4 tiny-transformer: token + learned position embeddings, one pre-LayerNorm decoder
  block (causal 4-head attention, MLP 512 with tanh GELU), final LayerNorm, output head;
  vocab 256, seq 64, batch 8, d_model 128; next-token cross-entropy; SGD.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from irgrad.frontend import library as L
from irgrad.frontend import nn, optim
from irgrad.frontend.specs import TensorSpec, f32, i32


@dataclass
class Workload:
    name: str
    title: str
    model: nn.Module
    loss_fn: Callable  # (params, *batch) -> scalar loss
    batch_specs: tuple[TensorSpec, ...]
    make_batch: Callable  # (rng) -> tuple of arrays
    lr: float = 0.01
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def init_params(self) -> dict:
        return self.model.init(self.seed)

    def optimizer(self):
        return optim.SGD(self.lr)

    def batches(self, n: int, seed: int = 1) -> list[tuple]:
        rng = np.random.default_rng(seed)
        return [self.make_batch(rng) for _ in range(n)]


def _mlp_workload(name, title, sizes, batch, act, loss, lr):
    model = nn.MLP(sizes, activation=act)
    n_in, n_out = sizes[0], sizes[-1]
    if loss == "ce":
        def loss_fn(params, x, y):
            return L.cross_entropy(model(params, x), y)
        specs = (f32[batch, n_in], i32[batch])

        def make_batch(rng):
            return (rng.standard_normal((batch, n_in)).astype(np.float32),
                    rng.integers(0, n_out, batch).astype(np.int32))
    else:
        def loss_fn(params, x, t):
            return L.mse_loss(model(params, x), t)
        specs = (f32[batch, n_in], f32[batch, n_out])

        def make_batch(rng):
            return (rng.standard_normal((batch, n_in)).astype(np.float32),
                    rng.standard_normal((batch, n_out)).astype(np.float32))
    return Workload(name, title, model, loss_fn, specs, make_batch, lr)


def _transformer_workload():
    vocab, seq, batch = 256, 64, 8
    model = nn.TinyTransformer(vocab=vocab, seq=seq, d_model=128, n_heads=4, d_ff=512, n_layers=1)

    def loss_fn(params, ids, targets):
        return model.loss(params, ids, targets)

    def make_batch(rng):
        tokens = rng.integers(0, vocab, (batch, seq + 1)).astype(np.int32)
        return tokens[:, :-1].copy(), tokens[:, 1:].copy()

    return Workload("W4", "tiny-transformer", model, loss_fn, (i32[batch, seq], i32[batch, seq]),
                    make_batch, lr=0.01)


def get(name: str) -> Workload:
    name = name.upper()
    if name == "W1":
        return _mlp_workload("W1", "digits-mlp", [64, 128, 10], 64, "relu", "ce", 0.1)
    if name == "W2":
        return _mlp_workload("W2", "mnist-mlp", [784, 512, 512, 10], 128, "relu", "ce", 0.01)
    if name == "W3":
        return _mlp_workload("W3", "wide-mlp", [1024, 4096, 1024], 512, "tanh", "mse", 0.01)
    if name == "W4":
        return _transformer_workload()
    raise KeyError(f"unknown workload {name!r} (W1 W2 W3 W4)")


ALL = ("W1", "W2", "W3", "W4")
