"""The nine light models shipped inside the onnx package (opset 9): import, compile on the
CPU backend, and match onnx's ReferenceEvaluator on random inputs to 1e-4.

Each model runs twice: as shipped (every weight a ConstantOfShape of 0.02, which
irgrad keeps as a splat constant), against onnxruntime; and with random He-scaled weights
as initializers (parameters of the imported function) against the ReferenceEvaluator and
onnxruntime, with the logits (the softmax's input, made an extra output) compared too,
since the shipped weights make every logit equal. onnx 1.23's reference gets three of
these models' ops wrong at opset 9 (LRN over the batch axis, BatchNormalization with batch
statistics, Softmax with opset 13's axis): tests/onnx_ref_fixes.py corrects them, and
onnxruntime, an independent implementation, checks the corrected reference.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx.reference import ReferenceEvaluator  # noqa: E402

import irgrad as ig  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import onnx_models as M  # noqa: E402
from onnx_ref_fixes import FIXED_OPS  # noqa: E402

pytestmark = pytest.mark.slow


def _data_input(model) -> str:
    init = {t.name for t in model.graph.initializer}
    return next(vi.name for vi in model.graph.input if vi.name not in init)


def _ort(model, x):
    ort = pytest.importorskip("onnxruntime")
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {_data_input(model): x})


def _close(out, ref, rtol=1e-4, atol=1e-5):
    assert len(out) == len(ref)
    for o, r in zip(out, ref):
        assert o.shape == r.shape and o.dtype == r.dtype
        scale = max(float(np.max(np.abs(r))), 1e-30)
        np.testing.assert_allclose(o, r, rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize("name", M.available())
def test_light_model_matches_reference(name):
    model = onnx.load(M.light_path(name))
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    m = ig.onnx.load(model)
    shipped = len(m.params)  # the ConstantOfShape weights are constants
    _close(m.compile("cpu", "O2")(x), _ort(model, x))
    rand = M.with_logits(M.with_random_weights(model, seed=1))
    m = ig.onnx.load(rand)
    assert len(m.params) > shipped + 10  # the random weights are parameters, not constants
    out = m.compile("cpu", "O2")(x)
    ref = ReferenceEvaluator(rand, new_ops=FIXED_OPS).run(None, {_data_input(rand): x})
    _close(out, ref)
    _close(ref, _ort(rand, x))
