"""ig.onnx.export: IR functions written as ONNX models, checked by onnx.checker, run by
onnxruntime against irgrad's interpreter, and read back by ig.onnx.load."""

from __future__ import annotations

import numpy as np
import pytest

import irgrad as ig
from irgrad.errors import ArgumentError, IrgradError, OnnxError
from irgrad.frontend import library as L
from irgrad.frontend.function import trace
from irgrad.frontend.specs import TensorSpec
from irgrad.ir.interpreter import run_function
from irgrad.onnx.export import EMITTERS, export

onnx = pytest.importorskip("onnx")

import workloads  # noqa: E402  (benchmarks/, on the path from conftest.py)

TOL = dict(rtol=1e-5, atol=1e-5)


def _ir(text):
    (f,) = list(ig.parse(text))
    return f


def _inputs(f, rng, overrides=None):
    """One array per graph input of `f` (an IR function): normal floats, small ints,
    random bools; `overrides` by parameter name."""
    out = []
    for p in f.params:
        if overrides and p.name in overrides:
            out.append(np.asarray(overrides[p.name], dtype=p.dtype.np))
        elif p.dtype.is_float:
            out.append(rng.standard_normal(p.shape).astype(p.dtype.np))
        elif p.dtype.is_int:
            out.append(rng.integers(-6, 7, p.shape).astype(p.dtype.np))
        else:
            out.append(rng.random(p.shape) < 0.5)
    return out


def _ort(model, feeds):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _same(got, want, tol=TOL):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, g.shape, w.dtype, w.shape)
        np.testing.assert_allclose(g, w, **tol)


def _check_ort(f, args, model=None, tol=TOL, **options):
    """Export `f` (IR), check the model, run onnxruntime on the graph inputs; returns the
    model and irgrad's outputs."""
    model = export(f, **options) if model is None else model
    onnx.checker.check_model(model, full_check=True)
    want = run_function(f, args)
    inputs = {i.name for i in model.graph.input}
    feeds = {p.name: a for p, a in zip(f.params, args) if p.name in inputs}
    _same(_ort(model, feeds), want, tol)
    return model, want


# --- hand-written functions, one family of ops each ----------------------------------------------

CASES = {
    "unary": ("""func @unary(%x: f32[3,4], %y: f64[5]) -> (f32[3,4], f32[3,4], f32[3,4], f32[3,4], f32[3,4], f32[3,4], f32[3,4], f32[3,4], f32[3,4], f32[3,4], f32[3,4], f32[3,4], f32[3,4], f64[5], f64[5]) {
  %a = abs %x : f32[3,4]
  %0 = neg %x : f32[3,4]
  %1 = exp %x : f32[3,4]
  %2 = log %a : f32[3,4]
  %3 = sin %x : f32[3,4]
  %4 = cos %x : f32[3,4]
  %5 = tanh %x : f32[3,4]
  %6 = sqrt %a : f32[3,4]
  %7 = sign %x : f32[3,4]
  %8 = erf %x : f32[3,4]
  %9 = floor %x : f32[3,4]
  %10 = ceil %x : f32[3,4]
  %11 = round %x : f32[3,4]
  %12 = exp %y : f64[5]
  %13 = tanh %y : f64[5]
  return %a, %0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13
}""", {"x": [[0.5, -0.5, 1.5, 2.5], [-2.5, 3.7, -1.2, 0.0], [4.0, -4.0, 0.25, 9.0]]}),
    "binary": ("""func @binary(%a: f32[2,3], %b: f32[2,3], %i: i32[2,3], %j: i32[2,3]) -> (f32[2,3], f32[2,3], f32[2,3], f32[2,3], f32[2,3], f32[2,3], f32[2,3], i32[2,3], i32[2,3], i32[2,3], i32[2,3], i32[2,3]) {
  %0 = add %a, %b : f32[2,3]
  %1 = sub %a, %b : f32[2,3]
  %2 = mul %a, %b : f32[2,3]
  %3 = div %a, %b : f32[2,3]
  %ab = abs %a : f32[2,3]
  %4 = pow %ab, %b : f32[2,3]
  %5 = max %a, %b : f32[2,3]
  %6 = min %a, %b : f32[2,3]
  %7 = add %i, %j : i32[2,3]
  %8 = mul %i, %j : i32[2,3]
  %9 = max %i, %j : i32[2,3]
  %10 = neg %i : i32[2,3]
  %11 = abs %i : i32[2,3]
  return %0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11
}""", None),
    "compare_select_cast": ("""func @cmp(%a: f32[2,3], %b: f32[2,3], %i: i32[2,3], %p: bool[2,3]) -> (bool[2,3], bool[2,3], bool[2,3], bool[2,3], bool[2,3], bool[2,3], f32[2,3], i32[2,3], f32[2,3], f32[2,3], bool[2,3], i64[2,3], bool[2,3]) {
  %0 = eq %a, %b : bool[2,3]
  %1 = ne %a, %a : bool[2,3]
  %2 = lt %a, %b : bool[2,3]
  %3 = le %i, %i : bool[2,3]
  %4 = gt %a, %b : bool[2,3]
  %5 = ge %a, %b : bool[2,3]
  %6 = select %p, %a, %b : f32[2,3]
  %7 = cast %a {dtype=i32} : i32[2,3]
  %8 = cast %i {dtype=f32} : f32[2,3]
  %9 = cast %p {dtype=f32} : f32[2,3]
  %10 = cast %a {dtype=bool} : bool[2,3]
  %11 = cast %i {dtype=i64} : i64[2,3]
  %12 = eq %p, %0 : bool[2,3]
  return %0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12
}""", {"a": [[1.5, -2.7, 0.0], [3.0, 2.0, -0.5]], "b": [[1.5, 1.0, 0.0], [-3.0, 2.0, 0.5]]}),
    "bitwise": ("""func @bits(%a: i32[6], %b: i32[6], %c: i64[3]) -> (i32[6], i32[6], i32[6], i32[6], i32[6], i64[3]) {
  %0 = bitwise_and %a, %b : i32[6]
  %1 = bitwise_or %a, %b : i32[6]
  %2 = bitwise_xor %a, %b : i32[6]
  %3 = shift_left %a, %b : i32[6]
  %4 = shift_right_logical %a, %b : i32[6]
  %5 = shift_right_logical %c, %c : i64[3]
  return %0, %1, %2, %3, %4, %5
}""", {"a": [-1, 5, -8, 123456789, 0, -2147483648], "b": [1, 33, 31, 4, -1, 3], "c": [-5, 64, 70]}),
    "data": ("""func @data(%x: f32[3,4], %v: f32[3], %r: f32[1,4]) -> (f32[4,3], f32[2,6], f32[2,2], f32[5,7], f32[6,4], f32[3,4], f32[3,4], f32[3,4], f32[2,3], f32[3,4], i32[3,4], f32[], f32[2,2], f32[3,4]) {
  %0 = transpose %x {perm=[1, 0]} : f32[4,3]
  %1 = reshape %x : f32[2,6]
  %2 = slice %x {start=[1, 1], limit=[3, 3]} : f32[2,2]
  %3 = pad %x {low=[1, 0], high=[1, 3]} : f32[5,7]
  %4 = concat %x, %x {axis=0} : f32[6,4]
  %5 = reverse %x {axes=[0, 1]} : f32[3,4]
  %6 = broadcast %v {dims=[0]} : f32[3,4]
  %7 = broadcast %r {dims=[0, 1]} : f32[3,4]
  %c = const {value=2.5} : f32[2,3]
  %8 = add %c, %c : f32[2,3]
  %9 = add %6, %7 : f32[3,4]
  %10 = iota {axis=1} : i32[3,4]
  %11 = const {value=-1.0} : f32[]
  %12 = const {value=[[1.0, 2.0], [3.0, 4.0]]} : f32[2,2]
  %s = const {value=3.0} : f32[]
  %sb = broadcast %s {dims=[]} : f32[3,4]
  %13 = mul %sb, %x : f32[3,4]
  return %0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13
}""", None),
    "reduce_matmul": ("""func @red(%x: f32[2,3,4], %y: f32[2,4,5], %i: i32[3,4]) -> (f32[3], f32[2,4], f32[2,3], f32[], i32[4], f32[2,3,5], f32[2,3,4]) {
  %0 = reduce_sum %x {axes=[0, 2]} : f32[3]
  %1 = reduce_max %x {axes=[1]} : f32[2,4]
  %2 = reduce_min %x {axes=[2]} : f32[2,3]
  %3 = reduce_sum %x {axes=[0, 1, 2]} : f32[]
  %4 = reduce_max %i {axes=[0]} : i32[4]
  %5 = matmul %x, %y : f32[2,3,5]
  %6 = reduce_sum %x {axes=[]} : f32[2,3,4]
  return %0, %1, %2, %3, %4, %5, %6
}""", None),
    "gather_scatter": ("""func @idx(%a: f32[5,3], %i: i32[2,3], %u: f32[5,2,3], %k: i64[4]) -> (f32[2,3,3], f32[5,2,3], f32[5,3], f32[5,4]) {
  %0 = gather %a, %i {axis=0} : f32[2,3,3]
  %1 = gather %a, %i {axis=1} : f32[5,2,3]
  %2 = scatter_add %a, %i, %u {axis=1} : f32[5,3]
  %3 = gather %a, %k {axis=1} : f32[5,4]
  return %0, %1, %2, %3
}""", {"i": [[0, 4, -1], [9, -7, 2]], "k": [2, 2, 0, 1]}),
    "conv": ("""func @conv(%x: f32[2,4,9,8], %w: f32[6,2,3,3], %v: f32[2,3,10], %k: f32[4,3,3]) -> (f32[2,6,5,5], f32[2,6,6,2], f32[2,4,10]) {
  %0 = conv %x, %w {stride=[2, 2], dilation=[1, 1], pad_low=[1, 1], pad_high=[1, 2], groups=2} : f32[2,6,5,5]
  %1 = conv %x, %w {stride=[1, 3], dilation=[2, 1], pad_low=[-1, 0], pad_high=[2, -1], groups=2} : f32[2,6,6,2]
  %2 = conv %v, %k {stride=[1], dilation=[1], pad_low=[1], pad_high=[1], groups=1} : f32[2,4,10]
  return %0, %1, %2
}""", None),
    "window": ("""func @win(%x: f32[2,3,7,6], %i: i32[2,5]) -> (f32[2,3,4,3], f32[2,3,2,3], f32[2,3,2,2,4,3], i32[2,2,3]) {
  %w = window %x {kernel=[2, 2], stride=[2, 2], dilation=[1, 1], pad_low=[1, 0], pad_high=[0, 0], fill=-inf} : f32[2,3,2,2,4,3]
  %0 = reduce_max %w {axes=[2, 3]} : f32[2,3,4,3]
  %v = window %x {kernel=[3, 2], stride=[2, 2], dilation=[1, 2], pad_low=[0, -1], pad_high=[-1, 2], fill=0.0} : f32[2,3,3,2,2,3]
  %1 = reduce_sum %v {axes=[2, 3]} : f32[2,3,2,3]
  %j = window %i {kernel=[2], stride=[2], dilation=[1], pad_low=[1], pad_high=[0], fill=7.0} : i32[2,2,3]
  return %0, %1, %w, %j
}""", None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hand_written_functions_run_on_onnxruntime(case):
    text, overrides = CASES[case]
    f = _ir(text)
    _check_ort(f, _inputs(f, np.random.default_rng(0), overrides))


def test_log1p_and_expm1_keep_their_precision_for_tiny_arguments():
    # log(1 + x) and exp(x) - 1 lose every digit at |x| = 1e-10; the export must not
    f = _ir("""func @f(%x: f32[9]) -> (f32[9], f32[9]) {
  %0 = log1p %x : f32[9]
  %1 = expm1 %x : f32[9]
  return %0, %1
}""")
    x = np.array([1e-10, -3e-9, 0.0, 0.5, -0.5, 3.0, 20.0, np.inf, -1e-30], np.float32)
    _check_ort(f, [x], tol=dict(rtol=2e-6, atol=0))


def test_implicit_broadcasts_are_not_expanded():
    # a bias broadcast and a splat constant feeding elementwise ops need no Expand
    f = _ir("""func @f(%x: f32[4,5], %b: f32[5]) -> f32[4,5] {
  %0 = broadcast %b {dims=[1]} : f32[4,5]
  %1 = add %x, %0 : f32[4,5]
  %2 = const {value=0.0} : f32[4,5]
  %3 = max %1, %2 : f32[4,5]
  return %3
}""")
    model, _ = _check_ort(f, _inputs(f, np.random.default_rng(1)))
    assert [n.op_type for n in model.graph.node if n.op_type != "Constant"] == ["Add", "Max"]


def test_outputs_that_are_parameters_constants_or_repeated():
    f = _ir("""func @f(%x: f32[3]) -> (f32[3], f32[3], f32[3], f32[3], f32[3]) {
  %0 = exp %x : f32[3]
  %1 = const {value=1.5} : f32[3]
  return %x, %0, %0, %1, %x
}""")
    model, _ = _check_ort(f, [np.arange(3, dtype=np.float32)])
    assert [o.name for o in model.graph.output] == [f"output.{i}" for i in range(5)]


# --- models ----------------------------------------------------------------------------------

def _forward(name, batch):
    """A workload's forward pass (inference) at a small batch: (Function, params, args)."""
    w = workloads.get(name)
    params = w.init_params()
    pspec = ig.tree_map(TensorSpec.of, params)
    x0 = w.batch_specs[0]
    xs = TensorSpec(x0.dtype, (batch,) + tuple(x0.shape[1:]))
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(xs.shape).astype(np.float32) if x0.dtype.is_float
         else rng.integers(0, 256, xs.shape).astype(np.int32))
    if w.stateful:
        state = w.init_state()
        fn = trace(lambda p, s, x: w.model(p, x, state=s, train=False)[0], pspec,
                   ig.tree_map(TensorSpec.of, state), xs, name=f"forward_{name}")
        return fn, params, (state, x)
    fn = trace(lambda p, x: w.model(p, x), pspec, xs, name=f"forward_{name}")
    return fn, params, (x,)


def _model_check(name, batch):
    fn, params, args = _forward(name, batch)
    model = export(fn, params=params)
    assert len(model.graph.initializer) == len(ig.pytree.flatten(params)[0])
    leaves = ig.pytree.flatten((params,) + args)[0]
    _check_ort(fn.ir, leaves, model=model)
    return fn, params, args, model


WORKLOADS = [("W1", 4), ("W4", 1), ("W5", 2), ("W6", 1)]  # (W2, W3: MLPs as W1, larger)


@pytest.mark.parametrize("name,batch", WORKLOADS)
def test_workload_forward_runs_on_onnxruntime(name, batch):
    _model_check(name, batch)


def test_digits_models():
    # the examples' predict (MLP) and evaluation forward (CNN: batch norm with its running
    # statistics, max-pool, dropout off), exported with their weights, run and read back
    import os
    from irgrad.tools.cli import load_python_file
    examples = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
    mlp = load_python_file(os.path.join(examples, "digits_mlp.py"))
    cnn = load_python_file(os.path.join(examples, "digits_cnn.py"))
    rng = np.random.default_rng(5)
    forward = trace(cnn.forward, cnn.param_specs, cnn.state_specs, ig.f32[3, 1, 8, 8])
    for fn, head, x in ((mlp.predict, (mlp.model.init(0),), rng.random((64, 64), np.float32)),
                        (forward, (cnn.model.init(0), cnn.model.init_state()),
                         rng.random((3, 1, 8, 8), np.float32))):
        model = export(fn, params=head[0])
        inputs = ig.pytree.flatten(head[1:] + (x,))[0]
        want = [np.asarray(fn(*head, x))]
        _same(_ort(model, dict(zip([i.name for i in model.graph.input], inputs))), want)
        _same(ig.onnx.load(model)(*inputs), want)


def test_exported_model_is_written_and_parameters_can_stay_inputs(tmp_path):
    fn, params, (x,) = _forward("W1", 3)
    path = tmp_path / "w1.onnx"
    model = export(fn, str(path))
    assert onnx.load(str(path)) == model and not model.graph.initializer
    assert [i.name for i in model.graph.input][-1] == "x"
    _check_ort(fn.ir, ig.pytree.flatten((params, x))[0], model=model)


@pytest.mark.xfail(isinstance(ig.onnx.export, type(ig)), strict=True,
                   reason="irgrad/onnx/__init__.py: importing the submodule irgrad.onnx.export "
                          "replaces the package's export function by the module")
def test_public_export_is_the_function():
    fn, params, _ = _forward("W1", 2)
    model = ig.onnx.export(fn, params=params)
    assert len(model.graph.initializer) == 4


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_older_opsets(opset):
    # ReduceMax/ReduceMin take their axes as an attribute before opset 18
    fn = trace(lambda x: (L.max(x, axis=1), L.min(x, axis=0), L.sum(x, axis=1)), ig.f32[3, 4])
    x = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    model, _ = _check_ort(fn.ir, [x], model=export(fn, opset=opset))
    assert model.opset_import[0].version == opset


def test_export_after_a_pipeline():
    fn, params, (x,) = _forward("W1", 2)
    model = export(fn, params=params, pipeline="O1")
    _check_ort(fn.ir, ig.pytree.flatten((params, x))[0], model=model)


# --- errors ----------------------------------------------------------------------------------

@pytest.fixture
def unexportable():
    """A throwaway op with no ONNX form."""
    from irgrad.ir.registry import REGISTRY, OpDef, register
    register(OpDef(name="test_export_cube", infer=lambda types, attrs, declared: [types[0]],
                   reference=lambda xs, op: [xs[0] ** 3], num_operands=1, elementwise=True,
                   differentiable=False))
    try:
        yield
    finally:
        del REGISTRY["test_export_cube"]


def test_an_op_without_an_onnx_form_is_named(unexportable):
    f = trace(lambda x: L.primitive("test_export_cube", L.exp(x)), ig.f32[4])
    with pytest.raises(OnnxError, match="cannot export IR op 'test_export_cube' to ONNX: no ONNX form"):
        export(f)


def test_every_primitive_has_an_export():
    from irgrad.ir.registry import all_ops
    assert set(all_ops()) - {"fused"} <= set(EMITTERS)


def test_fused_kernels_are_refused():
    fn, _, _ = _forward("W1", 2)
    with pytest.raises(IrgradError, match="before 'fuse'"):
        export(fn, pipeline="O2")
    with pytest.raises(OnnxError, match="'fused'"):
        export(ig.run_pipeline(fn.ir, "O2"))


def test_bad_arguments():
    fn, params, _ = _forward("W1", 2)
    with pytest.raises(ArgumentError, match="opset 7"):
        export(fn, opset=7)
    with pytest.raises(ArgumentError, match="structure"):
        export(fn, params={"fc0": params["fc0"]})
    bad = {k: {kk: vv.astype(np.float64) for kk, vv in v.items()} for k, v in params.items()}
    with pytest.raises(ArgumentError, match="p.fc0.W"):
        export(fn, params=bad)
    with pytest.raises(ArgumentError, match="irgrad Function"):
        export(lambda x: x)


# --- round trip: import(export(f)) computes f ---------------------------------------------------

def _round_trip(model, ir_fn, args):
    """ig.onnx.load of the model, run on the graph inputs, against irgrad's outputs."""
    m = ig.onnx.load(model)
    inputs = {i.name for i in model.graph.input}
    feeds = [a for p, a in zip(ir_fn.params, args) if p.name in inputs]
    _same(m(*feeds), run_function(ir_fn, args))


# the importer's dtypes.widen makes a 0-d constant 1-d (np.ascontiguousarray), so a
# scalar constant in a model imports as [1] and a scalar result as [1]
SCALARS_WIDENED = pytest.mark.xfail(
    __import__("irgrad.onnx.dtypes", fromlist=["x"]).widen(np.float32(1), 1).ndim != 0,
    reason="importer: irgrad/onnx/dtypes.py widen() turns 0-d arrays into 1-d ones", strict=True)


@pytest.mark.parametrize("case", [pytest.param(c, marks=SCALARS_WIDENED) if c == "data" else c
                                  for c in sorted(CASES)])
def test_round_trip_hand_written(case):
    text, overrides = CASES[case]
    f = _ir(text)
    args = _inputs(f, np.random.default_rng(0), overrides)
    _round_trip(export(f), f, args)


@pytest.mark.parametrize("name,batch", WORKLOADS)
def test_round_trip_workloads(name, batch):
    fn, params, args = _forward(name, batch)
    model = export(fn, params=params)
    m = ig.onnx.load(model)
    inputs = ig.pytree.flatten(args)[0]  # (W6: the batch-norm statistics, then x)
    want = [np.asarray(fn(params, *args))]
    _same(m(*inputs), want)
    # the initializers are the imported model's parameters: export(import) exports them again
    again = export(m)
    assert len(again.graph.initializer) == len(model.graph.initializer)
    _same(_ort(again, dict(zip([i.name for i in again.graph.input], inputs))), want)


# --- derivatives and random numbers: training steps export too ----------------------------------

CONV_GEOMETRIES = [  # spatial size, kernel, stride, dilation, padding low and high, groups
    ((9, 8), (3, 3), (2, 2), (1, 1), (1, 1), (1, 2), 2),
    ((9, 8), (3, 2), (1, 3), (2, 1), (-1, 0), (2, -1), 2),
    ((10,), (3,), (2,), (1,), (0,), (0,), 1),
    ((7, 7), (2, 2), (3, 3), (1, 1), (0, 0), (2, 0), 1),
]


def _cotangent_functions(S, K, s, d, lo, hi, G):
    """conv_input_grad, conv_weight_grad and window_transpose of one geometry: [(IR, args)]."""
    from irgrad.ir.ops.window import out_size
    rng = np.random.default_rng(4)
    J = tuple(out_size(*a) for a in zip(S, K, s, d, lo, hi))
    attrs = dict(stride=s, dilation=d, pad_low=lo, pad_high=hi)
    x = rng.standard_normal((2, 4) + S).astype(np.float32)
    w = rng.standard_normal((6, 4 // G) + K).astype(np.float32)
    g = rng.standard_normal((2, 6) + J).astype(np.float32)
    cols = rng.standard_normal((2, 3) + K + J).astype(np.float32)
    cases = [
        (lambda g_, w_: L.primitive("conv_input_grad", g_, w_, size=S, groups=G, **attrs), (g, w)),
        (lambda x_, g_: L.primitive("conv_weight_grad", x_, g_, kernel=K, groups=G, **attrs), (x, g)),
        (lambda c_: L.primitive("window_transpose", c_, size=S, kernel=K, **attrs), (cols,)),
    ]
    return [(trace(fn, *args).ir, list(args)) for fn, args in cases]


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES)
def test_convolution_cotangents_and_col2im(geometry):
    for f, args in _cotangent_functions(*geometry):
        _check_ort(f, args)


def _random_bits(shape):
    return trace(lambda k: L.primitive("random_bits", k, result_type=ig.i32[shape]), ig.i32[2]).ir


@pytest.mark.parametrize("shape", [(5,), (3, 4)])
def test_random_bits_are_the_same_bits(shape):
    _check_ort(_random_bits(shape), [np.array([12345, -7], np.int32)], tol=dict(rtol=0, atol=0))


def _training_step(name):
    w = workloads.get(name)
    return w.step_function().ir, ig.pytree.flatten(w.step_state() + w.batches(1)[0])[0]


def test_training_step_exports():
    _check_ort(*_training_step("W1"))


def test_round_trip_cotangents_and_random_bits():
    for f, args in _cotangent_functions(*CONV_GEOMETRIES[1]):
        _round_trip(export(f), f, args)
    f = _random_bits((3, 4))
    _round_trip(export(f), f, [np.array([12345, -7], np.int32)])


@SCALARS_WIDENED
def test_round_trip_training_step():
    f, args = _training_step("W1")
    _round_trip(export(f), f, args)


def test_some_parameters_by_name():
    fn, params, (x,) = _forward("W1", 2)
    model = export(fn, params={"p.fc1.W": params["fc1"]["W"], "p.fc0.b": params["fc0"]["b"]})
    assert sorted(t.name for t in model.graph.initializer) == ["p.fc0.b", "p.fc1.W"]
    assert [i.name for i in model.graph.input] == ["p.fc0.W", "p.fc1.b", "x"]
    _check_ort(fn.ir, ig.pytree.flatten((params, x))[0], model=model)
