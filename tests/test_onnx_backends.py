"""Imported ONNX models on the native backends: the CPU backend (elsewhere: the
conformance subset and the light models) and the CUDA backend, through its emulated
device and NVRTC compile checks (no GPU in CI), against the reference interpreter."""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as T, helper as h  # noqa: E402

import irgrad as ig  # noqa: E402
from irgrad.backends.cuda import runtime  # noqa: E402
from irgrad.backends.cuda.emulate import run_emulated  # noqa: E402
from irgrad.backends.cuda.renderer import render_cuda_program  # noqa: E402
from irgrad.codegen.lowering import lower_function, plan_for_codegen  # noqa: E402
from irgrad.ir.interpreter import run_function  # noqa: E402

from cuda_markers import ARCHS, needs_cxx, needs_nvrtc  # noqa: E402

pytestmark = pytest.mark.usefixtures("private_cache")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_cnn():
    return ig.onnx.load(os.path.join(ROOT, "docs", "examples", "tiny_cnn.onnx"),
                        input_shapes={"x": (2, 1, 6, 6)})


def _new_primitives():
    """Atan, Asin (through atan), integer Div and Mod (idiv, rem), uint8 wrapping."""
    nodes = [h.make_node("Asin", ["s"], ["a"]), h.make_node("Atan", ["x"], ["t"]),
             h.make_node("Div", ["i", "j"], ["q"]), h.make_node("Mod", ["i", "j"], ["r"], fmod=1),
             h.make_node("Mod", ["i", "j"], ["m"]), h.make_node("Add", ["u", "u"], ["w"])]
    g = h.make_graph(nodes, "prims",
                     [h.make_tensor_value_info("s", T.FLOAT, [7]), h.make_tensor_value_info("x", T.FLOAT, [7]),
                      h.make_tensor_value_info("i", T.INT32, [7]), h.make_tensor_value_info("j", T.INT32, [7]),
                      h.make_tensor_value_info("u", T.UINT8, [7])],
                     [h.make_tensor_value_info(n, t, [7]) for n, t in
                      (("a", T.FLOAT), ("t", T.FLOAT), ("q", T.INT32), ("r", T.INT32), ("m", T.INT32),
                       ("w", T.UINT8))])
    return ig.onnx.load(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))


def _args(m, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for p in m.fn.ir.params:
        if p.type.dtype.is_float:
            out.append(rng.uniform(-0.9, 0.9, p.type.shape).astype(p.type.dtype.np))
        else:  # integer operands with zeros, negatives and the narrow type's range
            out.append(rng.integers(-9, 200, p.type.shape).astype(p.type.dtype.np))
    return out


MODELS = {"tiny_cnn": _tiny_cnn, "new_primitives": _new_primitives}


@needs_cxx
@pytest.mark.parametrize("name", sorted(MODELS))
def test_imported_models_on_the_emulated_cuda_device(name):
    m = MODELS[name]()
    args = _args(m)
    want = run_function(m.fn.ir, args)
    got = run_emulated(plan_for_codegen(m.fn.ir, "O2"), args)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_imported_models_on_the_cpu_backend(name):
    m = MODELS[name]()
    args = _args(m, seed=1)
    want = run_function(m.fn.ir, args)
    got = ig.compile(m.fn, backend="cpu").executable.run(args)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@needs_nvrtc
@pytest.mark.parametrize("name", sorted(MODELS))
def test_imported_models_compile_with_nvrtc(name):
    cp = render_cuda_program(lower_function(plan_for_codegen(MODELS[name]().fn.ir, "O2")))
    for arch in ARCHS:
        cubin, _ = runtime.nvrtc_compile(cp.source, arch)
        assert cubin[:4] == b"\x7fELF"
