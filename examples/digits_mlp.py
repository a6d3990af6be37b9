"""Train the W1 MLP (64 -> 128 ReLU -> 10) on scikit-learn's handwritten digits.

The whole training step (forward, cross-entropy, backward by `reverse-ad`, SGD update)
is one traced IR function, optimized by a pass pipeline (O2: simplify, fuse, plan
memory) and compiled to native code by the CPU backend: one call per batch.

Run it:  python examples/digits_mlp.py        or   irgrad train examples/digits_mlp.py
Look inside (these names are module-level Functions, usable as FILE.py:NAME targets):
    irgrad dump examples/digits_mlp.py:loss -p O2
    irgrad dump examples/digits_mlp.py:step -p O2
    irgrad viz examples/digits_mlp.py:step -o step.svg
    irgrad memplan examples/digits_mlp.py:step -o step-memory.png
    irgrad bench examples/digits_mlp.py:step --pipelines O0 O1 O2 --plot bench.png
"""

from __future__ import annotations

import os
import shutil
import sys
import time

import numpy as np

import irgrad as ig
import irgrad.tools.train
from irgrad import f32, i32

BATCH = 64
SIZES = [64, 128, 10]
LR = 0.1

model = ig.nn.MLP(SIZES, activation="relu")
param_specs = ig.tree_map(ig.TensorSpec.of, model.init(0))


def loss_fn(params, x, y):
    """Mean softmax cross-entropy of the MLP's logits."""
    return ig.cross_entropy(model(params, x), y)


def forward(params, x):
    return model(params, x)


# Traced at import (milliseconds); nothing trains until train() is called.
loss = ig.trace(loss_fn, param_specs, f32[BATCH, 64], i32[BATCH], name="loss")
step = ig.training_step(loss, ig.optim.SGD(LR), name="step")
predict = ig.trace(forward, param_specs, f32[BATCH, 64], name="predict")


def load_data(seed: int = 0, test_fraction: float = 0.2):
    """Digits as float32 in [0, 1] (pixels / 16) and int32 labels, a fixed seeded split."""
    datasets = irgrad.tools.train.require("sklearn.datasets", "examples", "the digits data")
    digits = datasets.load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, tr = order[:n_test], order[n_test:]
    return x[tr], y[tr], x[test], y[test]


def add_arguments(parser):
    parser.add_argument("--lr", type=float, default=None, help=f"SGD learning rate (default {LR})")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (there are none "
                        "when the output is not a terminal)")


def train(backend="cpu", epochs=60, pipeline="O2", threads=None, seed=0, lr=LR, quiet=False,
          split_seed=0):
    """Train; returns {"losses": per-epoch mean loss, "accuracy": per-epoch test accuracy,
    "seconds": training time without compilation, "backend": the backend used}."""
    backend = irgrad.tools.train.resolve_backend(backend, threads)
    opts = irgrad.tools.train.backend_options(backend, threads)
    x_train, y_train, x_test, y_test = load_data(split_seed)
    print(f"digits: {len(x_train)} training and {len(x_test)} test images of 8x8 pixels; "
          f"MLP {' -> '.join(map(str, SIZES))}, SGD lr {lr}, batch {BATCH}")

    t0 = time.perf_counter()
    params = model.init(seed)
    train_step = ig.compile_step(loss_fn, params, ig.optim.SGD(lr), (f32[BATCH, 64], i32[BATCH]),
                                 backend=backend, pipeline=pipeline, **opts)
    # the forward pass over the whole test set, compiled once
    evaluate = ig.compile(ig.trace(forward, param_specs, f32[len(x_test), 64], name="evaluate"),
                          backend=backend, pipeline=pipeline, **opts)
    print(f"compiled the training step and the evaluation for the {backend} backend "
          f"(pipeline {pipeline}) in {time.perf_counter() - t0:.2f} s")

    def test_accuracy():
        logits = evaluate(train_step.params, x_test)
        return float(np.mean(np.argmax(logits, axis=1) == y_test))

    n_batches = len(x_train) // BATCH  # a fixed batch shape: the remainder waits a turn
    losses, accuracy, seconds = irgrad.tools.train.train_epochs(
        train_step, test_accuracy, x_train, y_train, epochs, BATCH, seed, quiet)
    print(f"trained {epochs} epoch{'s' * (epochs != 1)} ({epochs * n_batches} steps) in "
          f"{seconds:.2f} s on the {backend} backend; final test accuracy {accuracy[-1]:.2%}")
    print(NEXT_STEPS + path_hint())
    return {"losses": losses, "accuracy": accuracy, "seconds": seconds, "backend": backend}


NEXT_STEPS = """
Where to look next (FILE.py:NAME names a module-level Function of this file):
  irgrad dump examples/digits_mlp.py:loss               the traced IR of the loss
  irgrad dump examples/digits_mlp.py:loss --grad -p O1  its gradient, by reverse-mode AD
  irgrad dump examples/digits_mlp.py:step -p O2         the whole training step, fused and planned
  irgrad dump examples/digits_mlp.py:step -p O2 --print-after-all | less   every pass in turn
  IRGRAD_DUMP=ir-dumps irgrad dump examples/digits_mlp.py:step -p O2   one file per pass
  irgrad dump examples/digits_mlp.py:step -p O2 --emit llvm            the generated LLVM IR
  irgrad viz examples/digits_mlp.py:step -o step.svg    the graph, fused kernels as clusters
  irgrad memplan examples/digits_mlp.py:step -o step-memory.png        the memory plan
  irgrad bench examples/digits_mlp.py:step --pipelines O0 O1 O2 --plot bench.png
  irgrad train examples/digits_cnn.py                   a CNN with batch norm and dropout (99.7%)
  irgrad train examples/char_transformer.py             a tiny transformer on real text
"""


def path_hint() -> str:
    """How to reach the `irgrad` command when it is not on PATH (after `make demo`)."""
    if shutil.which("irgrad"):
        return ""
    script = os.path.join(os.path.dirname(sys.executable), "irgrad")
    if not os.path.exists(script):
        return "(the irgrad command comes with `pip install -e .`; `python -m irgrad` works too)\n"
    rel = os.path.relpath(script)
    rel = script if rel.startswith("..") else rel
    return (f"(irgrad is {rel}: run `source {os.path.dirname(rel)}/activate` first, or type "
            f"the whole path)\n")


if __name__ == "__main__":
    sys.exit(irgrad.tools.train.main(sys.modules[__name__]))
