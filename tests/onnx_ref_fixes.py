"""Corrections to onnx.reference for three ops the light models use (onnx 1.23):
ReferenceEvaluator(model, new_ops=FIXED_OPS). Each is checked against onnxruntime in
tests/test_onnx_models.py, so a wrong "fix" fails there too."""

import numpy as np
from onnx.reference.op_run import OpRun


class BatchNormalization(OpRun):
    """Inference-mode batch norm at every opset (onnx's BatchNormalization_9 normalizes
    with a momentum mix of the batch statistics even when only Y is asked for)."""
    op_domain = ""

    def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None, spatial=None,
             training_mode=None):
        shp = (1, -1) + (1,) * (x.ndim - 2)
        eps = 1e-5 if epsilon is None else epsilon
        y = (x - mean.reshape(shp)) / np.sqrt(var.reshape(shp) + eps) * scale.reshape(shp) + bias.reshape(shp)
        return (y.astype(x.dtype),)


class LRN(OpRun):
    """onnx's LRN loops over the batch axis where it means the channels."""
    op_domain = ""

    def _run(self, x, alpha=None, beta=None, bias=None, size=None):
        c = x.shape[1]
        lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
        sq = np.pad(x * x, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
        total = sum(sq[:, i:i + c] for i in range(size))
        return ((x / (bias + alpha / size * total) ** beta).astype(x.dtype),)


class Softmax(OpRun):
    """Before opset 13 Softmax flattens to 2-D at `axis` (default 1); onnx's reference
    applies opset 13's semantics (one axis, default -1) at every opset."""
    op_domain = ""

    def _run(self, x, axis=None):
        opset = self.run_params["opsets"].get("", 1)
        given = [a.i for a in self.onnx_node.attribute if a.name == "axis"]
        ax = given[0] if given else (-1 if opset >= 13 else 1)
        axes = (ax,) if opset >= 13 else tuple(range(ax % x.ndim, x.ndim))
        e = np.exp(x - x.max(axis=axes, keepdims=True))
        return ((e / e.sum(axis=axes, keepdims=True)).astype(x.dtype),)

FIXED_OPS = [BatchNormalization, LRN, Softmax]
