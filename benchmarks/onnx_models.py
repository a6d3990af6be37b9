"""The nine "light" ONNX models shipped inside the onnx package, and weights for them.

The light models (opset 9) keep their structure and make every weight with a
ConstantOfShape of 0.02, so activations of deep ones grow without bound. For timing and
for tests that want realistic numbers, `with_random_weights` turns each such weight into
an initializer of He-scaled random numbers (what a trained model's file holds): the
importer then makes them parameters, passed to the compiled function like a real model's.
"""

from __future__ import annotations

import glob
import os

import numpy as np

NAMES = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
         "shufflenet", "squeezenet", "vgg19", "zfnet512")


def light_dir() -> str:
    import onnx
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def light_path(name: str) -> str:
    return os.path.join(light_dir(), f"light_{name}.onnx")


def available() -> list[str]:
    return [n for n in NAMES if os.path.exists(light_path(n))]


def with_random_weights(model, seed: int = 0):
    """A copy of a light model whose ConstantOfShape weights are random initializers."""
    import onnx
    from onnx import numpy_helper
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    rng = np.random.default_rng(seed)
    keep = []
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            shape = tuple(int(d) for d in numpy_helper.to_array(inits[n.input[0]]))
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 0
            if fan_in:  # conv / dense weights: He-scaled normals
                w = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            else:  # biases, batch-norm vectors: near their neutral values
                w = 1.0 + 0.1 * rng.standard_normal(shape) if "scale" in n.output[0] or "_s_" in n.output[0] \
                    else 0.1 * rng.standard_normal(shape)
                if "var" in n.output[0] or "_riv" in n.output[0]:
                    w = np.abs(w) + 0.5
            g.initializer.append(numpy_helper.from_array(w.astype(np.float32), n.output[0]))
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input}
    kept_inits = [t for t in g.initializer if t.name in used or t.name in {o.name for o in g.output}]
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    # IR version 3 (these files) lists every initializer among the graph inputs too
    removed = set(inits) - {t.name for t in kept_inits}
    ins = [vi for vi in g.input if vi.name not in removed]
    del g.input[:]
    g.input.extend(ins)
    listed = {vi.name for vi in g.input}
    for t in kept_inits:
        if t.name not in listed:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return m


def with_logits(model):
    """The model with its last Softmax's input (the logits) as a second output: random
    weights saturate a 1000-way softmax, so outputs alone would compare one-hots."""
    import onnx
    m = onnx.ModelProto()
    m.CopyFrom(model)
    sm = [n for n in m.graph.node if n.op_type == "Softmax"]
    if sm:
        inferred = onnx.shape_inference.infer_shapes(m)
        m.graph.output.append(next(v for v in inferred.graph.value_info if v.name == sm[-1].input[0]))
    return m


__all__ = ["NAMES", "available", "light_path", "with_logits", "with_random_weights"]
