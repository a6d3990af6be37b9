"""One-node ONNX models and their check against onnx's ReferenceEvaluator, shared by the
handler tests (tests/test_onnx_nn.py, tests/test_onnx_reduce.py)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto as TP
from onnx import helper as oh
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

import irgrad.onnx as ox

ELEM = {np.dtype(np.float32): TP.FLOAT, np.dtype(np.float64): TP.DOUBLE,
        np.dtype(np.int32): TP.INT32, np.dtype(np.int64): TP.INT64, np.dtype(np.bool_): TP.BOOL,
        np.dtype(np.uint8): TP.UINT8, np.dtype(np.int8): TP.INT8}


def model(op, inputs, n_out=1, opset=18, consts=None, out_type=TP.UNDEFINED, **attrs):
    """A one-node model: `inputs` (name -> array, None for an omitted input) are graph
    inputs, `consts` (name -> array) initializers (onnxruntime wants an `out_type`)."""
    consts = consts or {}
    order = list(inputs) + [k for k in consts if k not in inputs]
    names = [n if (inputs.get(n) is not None or n in consts) else "" for n in order]
    while names and names[-1] == "":
        names.pop()
    outs = [f"out{i}" for i in range(n_out)]
    node = oh.make_node(op, names, outs, **attrs)
    vis = [oh.make_tensor_value_info(n, ELEM[a.dtype], a.shape) for n, a in inputs.items() if a is not None]
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in consts.items()]
    g = oh.make_graph([node], "g", vis, [oh.make_tensor_value_info(o, out_type, None) for o in outs],
                      inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def check(m, inputs, rtol=1e-5, atol=1e-6, ref=None):
    """irgrad's outputs (the interpreter) against `ref`, by default the reference's:
    shapes, dtypes and values (NaN where the reference has NaN)."""
    feeds = {k: v for k, v in inputs.items() if v is not None}
    want = ref if ref is not None else ReferenceEvaluator(m).run(None, feeds)
    got = ox.load(m, check=False)(*feeds.values())
    assert len(got) >= len(want)
    for w, g in zip(want, got):
        w = np.asarray(w)
        assert g.shape == w.shape, (g.shape, w.shape)
        assert g.dtype == w.dtype, (g.dtype, w.dtype)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    return got
