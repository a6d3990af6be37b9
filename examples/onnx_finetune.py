"""Fine-tune an imported ONNX model: a small CNN on scikit-learn's handwritten digits.

The model is an ONNX graph, Conv 3x3 (16) -> Relu -> MaxPool 2 -> Conv 3x3 (32) -> Relu ->
Reshape (512) -> Gemm (10), built here with onnx.helper (weights as initializers, drawn
like PyTorch's default initialization), exported from PyTorch (--torch), or read from a
file (--model). `ig.onnx.load` imports it as an irgrad Function `m.fn(params, image)`
whose `params` are the float initializers (`m.params`, a dict by initializer name), so
the training step is written as for any irgrad model: the loss calls `m.fn` inside the
trace, `ig.compile_step` differentiates it and compiles forward, backward and the SGD
update into one native call. --save writes the fine-tuned weights back into the ONNX
model (the same graph, new initializers), which onnxruntime or PyTorch can then run.

Run it:  python examples/onnx_finetune.py        or   irgrad train examples/onnx_finetune.py
Any model taking one image input of shape [N, 1, 8, 8] (or [N, 64]) and giving [N, 10]
logits works with --model; its batch dimension must be symbolic (or the batch size).

From PyTorch (what --torch does, when torch is installed):

    import torch
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(32 * 4 * 4, 10))
    torch.onnx.export(net, torch.zeros(1, 1, 8, 8), "cnn.onnx", input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})

then `python examples/onnx_finetune.py --model cnn.onnx`. A dynamic batch axis lets irgrad
import the model twice, at the training batch and at the test-set size (irgrad's shapes
are static: `input_shapes=` fixes them at import).
Look inside (after --save /tmp/cnn.onnx):
    irgrad dump /tmp/cnn.onnx --input-shape image=64x1x8x8       the imported IR
    irgrad run /tmp/cnn.onnx --input-shape image=1x1x8x8          one forward pass
    irgrad bench /tmp/cnn.onnx --input-shape image=64x1x8x8 --pipelines O0 O2
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

import irgrad as ig
import irgrad.tools.train
from irgrad import f32, i32

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from digits_mlp import load_data  # noqa: E402  (the same data and split)

BATCH = 64
LR = 0.05
MOMENTUM = 0.9
CHANNELS = (16, 32)
OPSET = 17


def _onnx():
    return irgrad.tools.train.require("onnx", "onnx", "this example")


def build_model(seed: int = 0, channels=CHANNELS):
    """The CNN as an onnx.ModelProto with a symbolic batch dimension 'N'.

    Weights and biases are uniform in +-1/sqrt(fan_in), PyTorch's default for Conv2d and
    Linear (kaiming_uniform with a = sqrt(5): bound = sqrt(6 / ((1 + a^2) fan_in)))."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    c1, c2 = channels
    flat = c2 * 4 * 4  # 8x8 -> max-pool 2 -> 4x4

    def uniform(shape, fan_in):
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    weights = {
        "conv1.weight": uniform((c1, 1, 3, 3), 9), "conv1.bias": uniform((c1,), 9),
        "conv2.weight": uniform((c2, c1, 3, 3), 9 * c1), "conv2.bias": uniform((c2,), 9 * c1),
        "fc.weight": uniform((10, flat), flat), "fc.bias": uniform((10,), flat),
    }
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    # an int64 initializer: a constant at import (Reshape needs its value), not a parameter
    inits.append(numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"))
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["c1"], "conv1", **conv),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], "pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], "conv2", **conv),
        helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
        helper.make_node("Reshape", ["r2", "flat_shape"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], "fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "digits_cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="irgrad examples/onnx_finetune.py")
    onnx.checker.check_model(model)
    return model


def torch_model(seed: int = 0, channels=CHANNELS):
    """The same CNN built in PyTorch and exported with torch.onnx.export (as the docstring
    shows); needs torch."""
    torch = irgrad.tools.train.require("torch", "examples", "--torch")
    onnx = _onnx()
    torch.manual_seed(seed)
    c1, c2 = channels
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, c1, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(c1, c2, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(c2 * 4 * 4, 10))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "cnn.onnx")
        kw = dict(input_names=["image"], output_names=["logits"], opset_version=OPSET,
                  dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
        try:  # torch >= 2.5 has two exporters; the TorchScript one needs no onnxscript
            torch.onnx.export(net, torch.zeros(1, 1, 8, 8), path, dynamo=False, **kw)
        except TypeError:
            torch.onnx.export(net, torch.zeros(1, 1, 8, 8), path, **kw)
        return onnx.load(path)


def image_input(model):
    """(name, [dims]) of the model's one graph input, checked to take digits images."""
    init = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in init]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ig.IrgradError(f"the model must have one input (images) and one output (logits); it "
                             f"has inputs {[v.name for v in inputs]} and outputs "
                             f"{[o.name for o in model.graph.output]}")
    vi = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    if dims[1:] not in ([1, 8, 8], [64]):
        shown = [d.dim_param or "?" if d.dim_param or not d.HasField("dim_value") else d.dim_value
                 for d in vi.type.tensor_type.shape.dim]
        raise ig.IrgradError(f"the model's input '{vi.name}' has shape [{', '.join(map(str, shown))}]; "
                             f"this example feeds 8x8 digits as [N, 1, 8, 8] or [N, 64]")
    return vi.name, dims


def import_at(model, batch: int):
    """The model imported with its batch dimension fixed to `batch`."""
    name, dims = image_input(model)
    if dims[0] not in (None, 0, batch):
        raise ig.IrgradError(f"the model's input '{name}' has a fixed batch of {dims[0]}; export it "
                             f"with a dynamic batch axis (torch.onnx.export(..., dynamic_axes="
                             f"{{'{name}': {{0: 'N'}}}}))")
    return ig.onnx.load(model, input_shapes={name: (batch, *dims[1:])})


def save_model(model, params: dict, path: str):
    """`model` with its float initializers replaced by `params` (same names and types)."""
    onnx = _onnx()
    from onnx import helper, numpy_helper
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name in params:
            dt = helper.tensor_dtype_to_np_dtype(t.data_type)
            t.CopyFrom(numpy_helper.from_array(np.asarray(params[t.name]).astype(dt), t.name))
    onnx.save(out, path)


def add_arguments(parser):
    parser.add_argument("--model", default=None, metavar="MODEL.onnx",
                        help="fine-tune this ONNX model instead of building one")
    parser.add_argument("--torch", action="store_true",
                        help="build the CNN with PyTorch and import its torch.onnx.export")
    parser.add_argument("--save", default=None, metavar="OUT.onnx",
                        help="write the fine-tuned model (the graph with the new weights)")
    parser.add_argument("--lr", type=float, default=None, help=f"SGD learning rate (default {LR})")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def train(backend="cpu", epochs=15, pipeline="O2", threads=None, seed=0, lr=LR, quiet=False,
          model=None, torch=False, save=None, split_seed=0):
    """Fine-tune; returns {"losses", "accuracy" (per epoch, test set), "seconds", "backend",
    "params" (the fine-tuned weights by initializer name)}."""
    backend = irgrad.tools.train.resolve_backend(backend, threads)
    opts = irgrad.tools.train.backend_options(backend, threads)
    if model is not None and torch:
        raise ig.IrgradError("give --model or --torch, not both")
    if isinstance(model, str):
        from irgrad.onnx.importer import read_model  # clean errors for a bad file
        _onnx()
        source = model
        model, _ = read_model(model)
    elif model is not None:
        source = "the given ModelProto"
    elif torch:
        model, source = torch_model(seed), "PyTorch (torch.onnx.export)"
    else:
        model, source = build_model(seed), "onnx.helper"
    x_train, y_train, x_test, y_test = load_data(split_seed)
    _, dims = image_input(model)
    x_train, x_test = x_train.reshape(-1, *dims[1:]), x_test.reshape(-1, *dims[1:])

    t0 = time.perf_counter()
    m = import_at(model, BATCH)
    m_test = import_at(model, len(x_test))
    n_weights = sum(int(np.prod(v.shape)) for v in m.params.values())
    print(f"digits: {len(x_train)} training and {len(x_test)} test images; ONNX model from {source} "
          f"(opset {m.opset}, {len(model.graph.node)} nodes, {len(m.params)} parameters, "
          f"{n_weights} weights), SGD lr {lr} momentum {MOMENTUM}, batch {BATCH}")

    def loss(params, x, y):
        return ig.cross_entropy(m.fn(params, x), y)

    train_step = ig.compile_step(loss, m.params, ig.optim.SGD(lr, momentum=MOMENTUM),
                                 (f32[(BATCH, *dims[1:])], i32[BATCH]), backend=backend,
                                 pipeline=pipeline, **opts)
    evaluate = ig.compile(m_test.fn, backend=backend, pipeline=pipeline, **opts)
    print(f"imported the model and compiled the training step and the evaluation for the "
          f"{backend} backend (pipeline {pipeline}) in {time.perf_counter() - t0:.2f} s")

    def test_accuracy():
        logits = evaluate(train_step.params, x_test)
        return float(np.mean(np.argmax(logits, axis=1) == y_test))

    n_batches = len(x_train) // BATCH
    losses, accuracy, seconds = irgrad.tools.train.train_epochs(
        train_step, test_accuracy, x_train, y_train, epochs, BATCH, seed, quiet)
    print(f"fine-tuned {epochs} epochs ({epochs * n_batches} steps) in {seconds:.2f} s on the "
          f"{backend} backend; final test accuracy {accuracy[-1]:.2%}")
    params = {k: np.array(v) for k, v in train_step.params.items()}
    if save:
        save_model(model, params, save)
        print(f"wrote {save} (the model with the fine-tuned weights)")
    return {"losses": losses, "accuracy": accuracy, "seconds": seconds, "backend": backend,
            "params": params}


if __name__ == "__main__":
    sys.exit(irgrad.tools.train.main(sys.modules[__name__]))
