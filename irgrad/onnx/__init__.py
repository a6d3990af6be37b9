"""ONNX in and out: `ig.onnx.load` imports a model as IR, `ig.onnx.export` writes a Function.

Needs the `onnx` package (`pip install 'irgrad[onnx]'`); importing this module does not.
See docs/onnx.md for the op coverage and the conformance score.
"""

from __future__ import annotations

import numpy as np

from ..errors import ArgumentError, OnnxError, UnsupportedOnnxError
from . import dtypes
from .graph import NeedsConstant
from .export import export  # (imports onnx only when called)


class OnnxModel:
    """An imported ONNX model.

    `fn` is an irgrad Function `fn(params, *inputs)` over IR dtypes (float16 computed in
    f32, narrow integers in i32/i64: see onnx/dtypes.py); `params` the initializers that
    are parameters, a dict of numpy arrays; `m(*inputs)` runs the reference interpreter
    (the numpy backend) and `m.compile(backend=...)` a native backend, both taking and
    returning arrays of the model's own ONNX types.
    """

    def __init__(self, fn, params, param_elems, inputs, output_elems, opset, output_names):
        self.fn = fn
        self.params = params
        self.param_elems = param_elems
        self.input_names = [n for n, _ in inputs]
        self.input_elems = [e for _, e in inputs]
        self.output_names = output_names
        self.output_elems = output_elems
        self.opset = opset
        self._compiled = {}

    @property
    def ir(self):
        return self.fn.ir

    def __str__(self) -> str:
        return str(self.fn.ir)

    def __repr__(self) -> str:
        ins = ", ".join(f"{n}: {s}" for n, s in zip(self.input_names, self.fn.specs[len(self.params):]))
        return f"<irgrad.onnx.OnnxModel opset {self.opset} ({ins}) with {len(self.params)} parameters>"

    def widen_inputs(self, inputs) -> list[np.ndarray]:
        if len(inputs) != len(self.input_names):
            raise ArgumentError(f"the model takes {len(self.input_names)} inputs "
                                f"({', '.join(self.input_names)}), got {len(inputs)}")
        out = []
        for nm, x, e in zip(self.input_names, inputs, self.input_elems):
            x = np.asarray(x)
            want = dtypes.storage_np(e)
            if x.dtype != want and not (x.dtype.kind == want.kind == "f"):
                raise ArgumentError(f"input '{nm}' is ONNX {dtypes.name(e)} ({want}), got {x.dtype}")
            out.append(dtypes.widen(x, e))
        return out

    def narrow_outputs(self, outs):
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        return [dtypes.narrow(o, e) for o, e in zip(outs, self.output_elems)]

    def compile(self, backend: str = "cpu", pipeline: str = "O2", **options):
        """A callable `f(*inputs) -> list of outputs` on `backend`, compiled once."""
        from ..api import compile as ig_compile
        key = (backend, pipeline, tuple(sorted(options.items())))
        c = self._compiled.get(key)
        if c is None:
            c = self._compiled[key] = ig_compile(self.fn, backend=backend, pipeline=pipeline, **options)

        def run(*inputs, params=None):
            out = c(self.params if params is None else params, *self.widen_inputs(inputs))
            return self.narrow_outputs(out)

        run.compiled = c
        return run

    def __call__(self, *inputs, params=None):
        """Outputs (a list, in the graph's order) on the reference interpreter."""
        return self.compile("numpy")(*inputs, params=params)


def load(model, input_shapes=None, constants=None, check: bool = True) -> OnnxModel:
    """Import an ONNX model (a path, bytes or an onnx.ModelProto).

    `input_shapes` fixes symbolic dimensions ({name: shape} or a list in input order);
    `constants` gives values of graph inputs that must be known at import (a shape fed to
    Reshape). Unsupported ops, attributes or dtypes raise UnsupportedOnnxError naming the op
    type, the node and the opset; a malformed model raises OnnxError."""
    from .importer import import_model, read_model
    proto, name = read_model(model)
    fn, params, elems, inputs, out_elems, opset = import_model(proto, name, input_shapes, constants, check)
    return OnnxModel(fn, params, elems, inputs, out_elems, opset, [o.name for o in proto.graph.output])


__all__ = ["OnnxModel", "load", "export", "OnnxError", "UnsupportedOnnxError", "NeedsConstant"]
