"""The fast subset of onnx's backend conformance suite, through onnx's own harness:
`onnx.backend.test.BackendTest(irgrad.onnx.backend, __name__)` with the cases listed in
tests/onnx_fast_cases.txt (every supported op type; the whole suite is
`make onnx-conformance`, which writes docs/onnx.md)."""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest

pytest.importorskip("onnx")
import onnx.backend.test  # noqa: E402

import irgrad.onnx.backend as irgrad_backend  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = [ln.strip() for ln in open(os.path.join(HERE, "onnx_fast_cases.txt"))
         if ln.strip() and not ln.startswith("#")]

with warnings.catch_warnings(), np.errstate(all="ignore"):
    warnings.simplefilter("ignore")
    _suite = onnx.backend.test.BackendTest(irgrad_backend, __name__)
for _name in CASES:
    _suite.include(f"^{re.escape(_name)}_cpu$")
_wanted = {f"{n}_cpu" for n in CASES}
_classes = _suite.test_cases  # (a property that builds new classes each time)
for _cls in _classes.values():  # drop the thousands of cases that would only skip
    for _attr in [a for a in vars(_cls) if a.startswith("test_") and a not in _wanted]:
        delattr(_cls, _attr)
globals().update(_classes)


def test_the_subset_covers_every_op_family():
    # the list names real cases (a renamed case would silently drop out of the subset)
    from irgrad.onnx.conformance import load_cases
    names = {c.name for c in load_cases()}
    missing = [n for n in CASES if n not in names]
    assert not missing, f"cases no longer in onnx's suite: {missing[:5]}"
    assert len(CASES) >= 300


def test_backend_interface():
    assert irgrad_backend.supports_device("CPU") and not irgrad_backend.supports_device("CUDA")
    import onnx.helper as h
    from onnx import TensorProto as T
    g = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [3])], [h.make_tensor_value_info("y", T.FLOAT, [3])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    (y,) = irgrad_backend.run_model(m, [np.array([-1, 0, 2], np.float32)])
    assert y.tolist() == [0, 0, 2]
    rep = irgrad_backend.prepare(m)
    assert rep.run([np.array([3, -3, 1], np.float32)])[0].tolist() == [3, 0, 1]
