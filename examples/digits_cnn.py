"""Train a small CNN with batch norm and dropout on scikit-learn's handwritten digits.

conv 3x3 (16) -> BatchNorm -> ReLU -> conv 3x3 (32) -> BatchNorm -> ReLU -> max-pool 2 ->
dropout 0.25 -> flatten (512) -> 128 -> ReLU -> dropout 0.25 -> 10, on the same 8x8
digits and split as examples/digits_mlp.py (which reaches 96.9%). The compiled step
carries the batch-norm running statistics and a random key (dropout's masks come from
counter-based random numbers computed inside the kernels that use them), updates them
inside the one native call, and evaluation runs the same model with train=False.

Run it:  python examples/digits_cnn.py        or   irgrad train examples/digits_cnn.py
Look inside:
    irgrad dump examples/digits_cnn.py:loss               conv, window, batch norm in IR
    irgrad dump examples/digits_cnn.py:loss -p expand     a conv as im2col + matmul
    irgrad dump examples/digits_cnn.py:step -p O2         the training step, fused and planned
"""

from __future__ import annotations

import sys
import time

import numpy as np

import irgrad as ig
import irgrad.tools.train
from irgrad import f32, i32

sys.path.insert(0, __import__("os").path.dirname(__file__))
from digits_mlp import load_data  # noqa: E402  (the same data and split)

BATCH = 64
LR = 0.05
MOMENTUM = 0.9

model = ig.nn.Sequential(
    ig.nn.Conv2d(1, 16, 3, padding=1), ig.nn.BatchNorm2d(16), ig.relu,
    ig.nn.Conv2d(16, 32, 3, padding=1), ig.nn.BatchNorm2d(32), ig.relu,
    ig.nn.MaxPool2d(2), ig.nn.Dropout(0.25), ig.nn.Flatten(),
    ig.nn.Linear(32 * 4 * 4, 128), ig.relu, ig.nn.Dropout(0.25), ig.nn.Linear(128, 10))
param_specs = ig.tree_map(ig.TensorSpec.of, model.init(0))
state_specs = ig.tree_map(ig.TensorSpec.of, model.init_state())


def loss_fn(params, x, y, *, state, key, train=True):
    """Mean cross-entropy; returns the loss and the new batch-norm statistics."""
    logits, new_state = model(params, x, state=state, key=key, train=train)
    return ig.cross_entropy(logits, y), new_state


def forward(params, state, x):
    logits, _ = model(params, x, state=state, train=False)
    return logits


# Traced at import (milliseconds); nothing trains until train() is called.
loss = ig.trace(lambda p, s, k, x, y: loss_fn(p, x, y, state=s, key=k), param_specs, state_specs,
                ig.i32[2], f32[BATCH, 1, 8, 8], i32[BATCH], name="loss")
step = ig.training_step(loss, ig.optim.SGD(LR, momentum=MOMENTUM), name="step", state=True, key=True)


def add_arguments(parser):
    parser.add_argument("--lr", type=float, default=None, help=f"SGD learning rate (default {LR})")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def train(backend="cpu", epochs=30, pipeline="O2", threads=None, seed=0, lr=LR, quiet=False,
          split_seed=0):
    """Train; returns {"losses", "accuracy" (per epoch, test set), "seconds", "backend"}."""
    backend = irgrad.tools.train.resolve_backend(backend, threads)
    opts = irgrad.tools.train.backend_options(backend, threads)
    x_train, y_train, x_test, y_test = load_data(split_seed)
    x_train, x_test = x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8)
    print(f"digits: {len(x_train)} training and {len(x_test)} test images of 8x8 pixels; "
          f"CNN with batch norm and dropout, SGD lr {lr} momentum {MOMENTUM}, batch {BATCH}")

    t0 = time.perf_counter()
    train_step = ig.compile_step(loss_fn, model.init(seed), ig.optim.SGD(lr, momentum=MOMENTUM),
                                 (f32[BATCH, 1, 8, 8], i32[BATCH]), backend=backend,
                                 pipeline=pipeline, state=model.init_state(), key=ig.random.key(seed),
                                 **opts)
    evaluate = ig.compile(ig.trace(forward, param_specs, state_specs, f32[len(x_test), 1, 8, 8],
                                   name="evaluate"), backend=backend, pipeline=pipeline, **opts)
    print(f"compiled the training step and the evaluation for the {backend} backend "
          f"(pipeline {pipeline}) in {time.perf_counter() - t0:.2f} s")

    def test_accuracy():
        logits = evaluate(train_step.params, train_step.state, x_test)
        return float(np.mean(np.argmax(logits, axis=1) == y_test))

    n_batches = len(x_train) // BATCH
    losses, accuracy, seconds = irgrad.tools.train.train_epochs(
        train_step, test_accuracy, x_train, y_train, epochs, BATCH, seed, quiet)
    print(f"trained {epochs} epochs ({epochs * n_batches} steps) in {seconds:.2f} s on the {backend} "
          f"backend; final test accuracy {accuracy[-1]:.2%}")
    return {"losses": losses, "accuracy": accuracy, "seconds": seconds, "backend": backend}


if __name__ == "__main__":
    sys.exit(irgrad.tools.train.main(sys.modules[__name__]))
