"""The benchmark workloads W1-W4 (../shared/notes/peers.md), shared by benchmarks and tests
(which put benchmarks/ on sys.path).

One training step = forward, loss, backward, SGD update of every parameter, float32.

- W1 digits-mlp: batch 64, 64 -> 128 (ReLU) -> 10, softmax cross-entropy, SGD lr 0.1.
- W2 mnist-mlp: batch 128, 784 -> 512 (ReLU) -> 512 (ReLU) -> 10, cross-entropy, SGD.
- W3 wide-mlp: batch 512, 1024 -> 4096 (tanh) -> 1024, mean squared error, SGD.
- W4 tiny-transformer: token + learned position embeddings, one pre-LayerNorm decoder
  block (causal 4-head attention, MLP 512 with tanh GELU), final LayerNorm, output head;
  vocab 256, seq 64, batch 8, d_model 128; next-token cross-entropy; SGD.
- W5 LeNet-5: batch 64 of 1x28x28; conv 5x5 (6) -> ReLU -> max-pool 2 -> conv 5x5 (16) ->
  ReLU -> max-pool 2 -> flatten (256) -> 120 -> ReLU -> 84 -> ReLU -> 10; cross-entropy;
  SGD lr 0.05.
- W6 ResNet-8: batch 32 of 3x32x32; conv 3x3 (16, no bias) + BatchNorm + ReLU; three basic
  blocks (16 stride 1; 32 stride 2; 64 stride 2; each two 3x3 convs + BatchNorm, a 1x1
  conv + BatchNorm shortcut where the shape changes, ReLU after the sum); global average
  pool; linear 64 -> 10; cross-entropy; SGD lr 0.05, momentum 0.9; batch norm in training
  mode (its statistics are state the step carries).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from irgrad.frontend import library as L
from irgrad.frontend import nn, optim
from irgrad.frontend.function import trace
from irgrad.frontend.specs import TensorSpec, f32, i32
from irgrad.pytree import tree_map
from irgrad.transforms.training import training_step


def _spec_tree(tree):
    return tree_map(TensorSpec.of, tree)


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
    momentum: float = 0.0
    stateful: bool = False  # loss_fn(params, *batch, state=...) -> (loss, new_state)

    def init_params(self) -> dict:
        return self.model.init(self.seed)

    def init_state(self):
        return self.model.init_state() if self.stateful else None

    def step_options(self) -> dict:
        """What ig.compile_step needs beyond the loss, params, optimizer and batch."""
        return {"state": self.init_state()} if self.stateful else {}

    def optimizer(self):
        return optim.SGD(self.lr, momentum=self.momentum)

    def loss_function(self):
        """The traced loss: (params, *batch), or (params, state, *batch) -> (loss, new_state)."""
        params = _spec_tree(self.init_params())
        if not self.stateful:
            return trace(self.loss_fn, params, *self.batch_specs)
        return trace(lambda p, s, *b: self.loss_fn(p, *b, state=s), params,
                     _spec_tree(self.init_state()), *self.batch_specs, name=f"loss_{self.name}")

    def step_function(self):
        """ig.training_step of the loss: (params, opt_state, [state], *batch) -> ..."""
        return training_step(self.loss_function(), self.optimizer(), state=self.stateful)

    def step_state(self, params=None) -> tuple:
        """The step's leading arguments for `params`: (params, opt_state[, state])."""
        params = self.init_params() if params is None else params
        head = (params, self.optimizer().init(params))
        return head + ((self.init_state(),) if self.stateful else ())

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


def _lenet_workload():
    batch = 64
    model = nn.Sequential(nn.Conv2d(1, 6, 5), L.relu, nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), L.relu,
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 120), L.relu,
                          nn.Linear(120, 84), L.relu, nn.Linear(84, 10))

    def loss_fn(params, x, y):
        return L.cross_entropy(model(params, x), y)

    def make_batch(rng):
        return (rng.standard_normal((batch, 1, 28, 28)).astype(np.float32),
                rng.integers(0, 10, batch).astype(np.int32))

    return Workload("W5", "lenet-5", model, loss_fn, (f32[batch, 1, 28, 28], i32[batch]), make_batch,
                    lr=0.05)


class BasicBlock(nn.Layer):
    """ResNet's basic block: conv3x3(stride) BN ReLU conv3x3 BN, plus the input (through a
    1x1 conv + BN where the shape changes), then ReLU."""

    has_params = stateful = True

    def __init__(self, cin: int, cout: int, stride: int):
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)) \
            if stride != 1 or cin != cout else None

    def init(self, seed=0):
        rng = np.random.default_rng(seed) if not isinstance(seed, np.random.Generator) else seed
        p = {"conv1": self.conv1.init(rng), "bn1": self.bn1.init(), "conv2": self.conv2.init(rng),
             "bn2": self.bn2.init()}
        if self.down:
            p["down_conv"], p["down_bn"] = self.down[0].init(rng), self.down[1].init()
        return p

    def init_state(self):
        s = {"bn1": self.bn1.init_state(), "bn2": self.bn2.init_state()}
        if self.down:
            s["down_bn"] = self.down[1].init_state()
        return s

    def __call__(self, params, x, state=None, train=True, **kw):
        new = {}
        h, new["bn1"] = self.bn1(params["bn1"], self.conv1(params["conv1"], x), state=state["bn1"], train=train)
        h, new["bn2"] = self.bn2(params["bn2"], self.conv2(params["conv2"], L.relu(h)), state=state["bn2"],
                                 train=train)
        if self.down:
            x, new["down_bn"] = self.down[1](params["down_bn"], self.down[0](params["down_conv"], x),
                                             state=state["down_bn"], train=train)
        return L.relu(h + x), new


def _resnet_workload():
    batch = 32
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), L.relu,
                          BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2),
                          lambda x: L.mean(x, axis=(2, 3)), nn.Linear(64, 10))

    def loss_fn(params, x, y, state, train=True):
        logits, new_state = model(params, x, state=state, train=train)
        return L.cross_entropy(logits, y), new_state

    def make_batch(rng):
        return (rng.standard_normal((batch, 3, 32, 32)).astype(np.float32),
                rng.integers(0, 10, batch).astype(np.int32))

    return Workload("W6", "resnet-8", model, loss_fn, (f32[batch, 3, 32, 32], i32[batch]), make_batch,
                    lr=0.05, momentum=0.9, stateful=True)


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
    if name == "W5":
        return _lenet_workload()
    if name == "W6":
        return _resnet_workload()
    raise KeyError(f"unknown workload {name!r} (W1 W2 W3 W4 W5 W6)")


FIRST = ("W1", "W2", "W3", "W4")  # the MLPs and the transformer
CONV = ("W5", "W6")  # the convolutional networks
ALL = FIRST + CONV
