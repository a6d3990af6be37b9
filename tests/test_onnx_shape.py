"""ONNX shape, layout and indexing handlers (irgrad/onnx/ops/shape.py, indexing.py) against
onnx's ReferenceEvaluator: one-node models, run on the reference interpreter (the numpy
backend), across the opset versions where an op's attributes became inputs."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import irgrad as ig  # noqa: E402
from irgrad.errors import UnsupportedOnnxError  # noqa: E402

rng = np.random.default_rng(0)


class C:
    """An input given as an initializer (a constant at import), not a graph input."""

    def __init__(self, value):
        self.value = np.asarray(value)


def _elem(a):
    return helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype)


def _model(op, args, opset, n_out, outs_like, attrs):
    names, inputs, inits = [], [], []
    for k, a in enumerate(args):
        if a is None:
            names.append("")
            continue
        nm = f"in{k}"
        names.append(nm)
        if isinstance(a, C):
            inits.append(numpy_helper.from_array(a.value, nm))
        else:
            inputs.append(helper.make_tensor_value_info(nm, _elem(a), a.shape))
    outs = [f"out{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph([node], op.lower(), inputs, [
        helper.make_tensor_value_info(o, _elem(r), r.shape) for o, r in zip(outs, outs_like)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def check(op, args, opset=18, n_out=1, **attrs):
    """Run a one-node model on both and compare; returns irgrad's outputs."""
    feeds = [a for a in args if a is not None and not isinstance(a, C)]
    probe = _model(op, args, opset, n_out, [np.zeros(0, np.float32)] * n_out, attrs)
    ref = ReferenceEvaluator(probe).run(None, {f"in{k}": a for k, a in enumerate(args)
                                               if a is not None and not isinstance(a, C)})
    model = _model(op, args, opset, n_out, ref, attrs)
    out = ig.onnx.load(model)(*feeds)
    assert len(out) == len(ref)
    for o, r in zip(out, ref):
        assert o.shape == r.shape and o.dtype == r.dtype, (o.shape, r.shape, o.dtype, r.dtype)
        np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-6)
    return out


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def i64(x):
    return np.asarray(x, dtype=np.int64)


# --- rank changes, transpose, concat ----------------------------------------------------------

def test_transpose_and_flatten():
    x = f32(2, 3, 4)
    check("Transpose", [x])
    check("Transpose", [x], perm=[1, 2, 0])
    for axis in (0, 2, 3, -1):
        check("Flatten", [x], opset=13, axis=axis)


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze_axes_attribute_then_input(opset):
    x = f32(1, 3, 1, 4)
    axes = [0, -2]
    if opset < 13:
        check("Squeeze", [x], opset=opset, axes=axes)
        # (sorted: onnx's reference inserts Unsqueeze-11's axes one by one)
        check("Unsqueeze", [x], opset=opset, axes=[0, 4, -1])
    else:
        check("Squeeze", [x, C(i64(axes))], opset=opset)
        check("Squeeze", [x], opset=opset)  # no axes: every size-1 axis
        check("Unsqueeze", [x, C(i64([4, 0, -1]))], opset=opset)


def test_concat_mixed_and_empty():
    a, b = f32(2, 3), f32(2, 0)
    check("Concat", [a, b, C(np.ones((2, 1), np.float32))], opset=13, axis=-1)


# --- split ------------------------------------------------------------------------------------

def test_split_versions():
    x = f32(7, 2)
    check("Split", [x], opset=11, n_out=3, split=[2, 4, 1])
    check("Split", [f32(6, 2)], opset=11, n_out=3)  # equal parts
    check("Split", [x, C(i64([3, 0, 4]))], opset=13, n_out=3)
    check("Split", [x], opset=18, n_out=3, num_outputs=3)  # uneven: 3, 3, 1
    check("Split", [x, C(i64([1, 6]))], opset=18, n_out=2, axis=0)


# --- slice ------------------------------------------------------------------------------------

@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([1, 0], [3, 10], [0, 1], [1, 1]),
    ([0], [-1], [1], [2]),                 # stride 2
    ([-1], [-1000], [1], [-1]),            # reversed whole axis
    ([8, 0], [1, 4], [1, 0], [-3, 3]),     # negative and positive strides together
    ([20], [30], [0], [1]),                # empty
    ([1], [2 ** 62], [-1], [4]),           # huge end clamps
])
def test_slice_strides(starts, ends, axes, steps):
    x = f32(4, 10)
    check("Slice", [x, C(i64(starts)), C(i64(ends)), C(i64(axes)), C(i64(steps))], opset=13)


def test_slice_opset1_attributes_and_default_axes():
    x = f32(4, 6)
    check("Slice", [x], opset=9, starts=[1, -4], ends=[3, 100])
    check("Slice", [x, C(i64([1])), C(i64([-1]))], opset=10)


# --- expand, tile, pad ------------------------------------------------------------------------

def test_expand_tile():
    check("Expand", [f32(3, 1), C(i64([2, 1, 4]))], opset=13)
    check("Expand", [f32(2, 3), C(i64([1, 1]))], opset=13)  # bidirectional: keeps 2, 3
    check("Tile", [f32(2, 3), C(i64([2, 3]))], opset=13)
    check("Tile", [np.array([[True, False]]), C(i64([3, 1]))], opset=13)


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "wrap"])
def test_pad_modes(mode):
    x = f32(3, 4)
    pads = i64([2, 3, 1, 5])  # reflect/wrap beyond the axis size repeat the pattern
    check("Pad", [x, C(pads)], opset=19, mode=mode)
    # negative pads crop (before the positive ones pad; np.pad, onnx's reference, refuses them)
    node = helper.make_node("Pad", ["x", "p"], ["y"], mode=mode)
    vi = helper.make_tensor_value_info
    g = helper.make_graph([node], "crop", [vi("x", onnx.TensorProto.FLOAT, [3, 4])],
                          [vi("y", onnx.TensorProto.FLOAT, [3, 2])],
                          [numpy_helper.from_array(i64([-1, 1, 0, -3]), "p")])
    out = ig.onnx.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)]))(x)[0]
    np.testing.assert_array_equal(out, np.pad(x[1:, :1], [(0, 0), (1, 0)], mode=mode))


def test_pad_versions():
    x = f32(2, 3)
    check("Pad", [x], opset=7, pads=[1, 0, 0, 2], value=1.5)
    check("Pad", [x, C(i64([0, 1, 1, 0])), C(np.float32(-2.0))], opset=13)
    # opset 18: axes
    check("Pad", [x, C(i64([2, 1])), C(np.float32(3.0)), C(i64([-1]))], opset=18)
    # a computed constant_value (a graph input)
    check("Pad", [x, C(i64([1, 1, 1, 1])), np.array([7.0], np.float32)], opset=13)
    check("Pad", [np.array([[True, False]]), C(i64([1, 0, 0, 1]))], opset=13)


def test_center_crop_pad():
    x = f32(5, 4, 3)
    check("CenterCropPad", [x, C(i64([3, 7, 3]))])
    check("CenterCropPad", [x, C(i64([2, 6]))], axes=[0, -2])


# --- generated tensors ------------------------------------------------------------------------

def test_generated():
    x = f32(3, 4)
    check("ConstantOfShape", [C(i64([2, 3]))], opset=9)
    check("ConstantOfShape", [C(i64([2, 0]))], opset=9,
          value=numpy_helper.from_array(np.array([7], np.int32)))
    check("Range", [C(np.float32(1.0)), C(np.float32(3.1)), C(np.float32(0.5))], opset=11)
    check("Range", [C(np.int32(10)), C(np.int32(3)), C(np.int32(-3))], opset=11)
    check("EyeLike", [x], opset=9, k=1)
    check("EyeLike", [x], opset=9, k=-2, dtype=onnx.TensorProto.INT64)
    for upper in (0, 1):
        for k in (-1, 0, 2):
            check("Trilu", [f32(2, 3, 5), C(i64(k))], opset=14, upper=upper)
    check("Trilu", [np.ones((3, 3), bool)], opset=14, upper=0)


# --- block moves, scans -----------------------------------------------------------------------

def test_depth_space():
    x = f32(2, 8, 3, 2)
    check("DepthToSpace", [x], opset=13, blocksize=2)
    check("DepthToSpace", [x], opset=13, blocksize=2, mode="CRD")
    y = f32(1, 2, 4, 6)
    check("SpaceToDepth", [y], opset=13, blocksize=2)


@pytest.mark.parametrize("op", ["CumSum", "CumProd"])
@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_scans(op, exclusive, reverse):
    x = (rng.standard_normal((3, 7)) * 0.5 + 1).astype(np.float32)
    check(op, [x, C(i64(1))], opset=26, exclusive=exclusive, reverse=reverse)
    check(op, [np.arange(1, 7, dtype=np.int32).reshape(2, 3), C(np.int32(-2))], opset=26,
          exclusive=exclusive, reverse=reverse)


# --- einsum, det ------------------------------------------------------------------------------

@pytest.mark.parametrize("eq,shapes", [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("ii", [(3, 3)]),                      # implicit: the trace
    ("...ii->...i", [(2, 3, 3)]),          # batched diagonal
    ("bij,bjk", [(2, 2, 3), (2, 3, 4)]),   # implicit output bik
    ("iij->j", [(2, 2, 3)]),
    ("i,i", [(5,), (5,)]),
])
def test_einsum(eq, shapes):
    check("Einsum", [f32(*s) for s in shapes], opset=12, equation=eq)


@pytest.mark.parametrize("shape", [(2, 2), (3, 3), (2, 4, 4), (5, 5), (1, 1)])
def test_det(shape):
    check("Det", [f32(*shape)], opset=11)


def test_det_singular_and_permuted():
    a = np.array([[[1, 2, 3], [2, 4, 6], [0, 1, 1]],      # singular
                  [[0, 0, 1], [0, 1, 0], [1, 0, 0]],      # a permutation: det -1
                  [[0, 2, 0], [3, 0, 0], [0, 0, 4]]], np.float32)
    check("Det", [a], opset=11)


# --- gathers ----------------------------------------------------------------------------------

def test_gather_negative_and_scalar_indices():
    x = f32(5, 4)
    check("Gather", [x, i64([[0, -1], [-5, 3]])], opset=13, axis=0)
    check("Gather", [x, C(i64(-2))], opset=13, axis=1)
    check("Gather", [x, np.array([3, -4], np.int32)], opset=13, axis=-1)


def test_gather_elements():
    x = f32(3, 4)
    check("GatherElements", [x, i64([[0, -1], [2, 1], [-3, 0]])], opset=13, axis=1)
    check("GatherElements", [x, i64([[2, 0, -1, 1]])], opset=13, axis=0)


@pytest.mark.parametrize("batch_dims,xs,idx", [
    (0, (2, 3, 4), [[1, -1], [0, 2]]),
    (0, (2, 3, 4), [[[1], [0]]]),
    (1, (2, 3, 4), [[1], [-1]]),
    (1, (2, 3, 4), [[[1, 3], [0, 0]], [[2, 1], [-1, -4]]]),
    (2, (2, 3, 4), [[[1], [0], [3]], [[2], [2], [-1]]]),
])
def test_gather_nd(batch_dims, xs, idx):
    check("GatherND", [f32(*xs), i64(idx)], opset=13, batch_dims=batch_dims)


# --- scatters ---------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_elements(reduction):
    data = f32(3, 5)
    idx = i64([[1, -1, 3], [0, 0, 4]]) if reduction != "none" else i64([[1, -1, 3], [0, 2, 4]])
    upd = f32(2, 3)
    check("ScatterElements", [data, idx, upd], opset=18, axis=1, reduction=reduction)
    check("ScatterElements", [data, i64([[2, 0, 2, 1, 0]]), f32(1, 5)], opset=18, axis=0,
          reduction=reduction)
    ints = np.arange(15, dtype=np.int32).reshape(3, 5) - 7
    check("ScatterElements", [ints, idx, np.array([[4, -9, 2], [1, 3, 8]], np.int32)], opset=18,
          axis=1, reduction=reduction)


def test_scatter_opset9_and_11():
    data, idx, upd = f32(3, 3), i64([[1, 0, 2], [0, 2, 1]]), f32(2, 3)
    want = check("ScatterElements", [data, idx, upd], opset=11, axis=0)[0]
    # Scatter (opset 9, 10; onnx's reference has none) is ScatterElements without reductions
    node = helper.make_node("Scatter", ["d", "i", "u"], ["y"], axis=0)
    vi = helper.make_tensor_value_info
    g = helper.make_graph([node], "s", [vi("d", 1, [3, 3]), vi("i", 7, [2, 3]), vi("u", 1, [2, 3])],
                          [vi("y", 1, [3, 3])])
    got = ig.onnx.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 9)]))(data, idx, upd)[0]
    np.testing.assert_array_equal(got, want)


def test_scatter_none_repeated_equal_writes_are_exact():
    data = np.zeros((6,), np.float32)
    out = check("ScatterElements", [data, i64([1, 1, 1, 4]), np.array([0.1, 0.1, 0.1, 2.0], np.float32)],
                opset=13)
    assert out[0][1] == np.float32(0.1)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd(reduction):
    data = f32(4, 3, 2)
    dup = reduction != "none"
    idx = i64([[[0], [-1]], [[2], [0 if dup else 1]]])
    check("ScatterND", [data, idx, f32(2, 2, 3, 2)], opset=18, reduction=reduction)
    idx2 = i64([[0, 1, 1], [3, 2, 0], [0, 1, 1] if dup else [1, 1, 1]])
    check("ScatterND", [data, idx2, f32(3)], opset=18, reduction=reduction)


@pytest.mark.parametrize("reduction", ["none", "add", "max"])
def test_scatter_constant_indices(reduction):
    # constant indices: rows worked out at import (repeated ones take the general path)
    data = f32(4, 3)
    check("ScatterND", [data, C(i64([[2], [-4]])), f32(2, 3)], opset=18, reduction=reduction)
    second = [3, 2, 0] if reduction == "none" else [1, 0, 2]  # (repeats: reductions only)
    check("ScatterElements", [data, C(i64([[1, 0, 2], second])), f32(2, 3)], opset=18,
          reduction=reduction)
    mask = rng.random((4, 3)) > 0.5
    check("ScatterElements", [mask, C(i64([[1, 0, -1]])), np.array([[True, False, True]])],
          opset=18, axis=0, reduction=reduction if reduction != "add" else "none")


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter(mode):
    past = f32(2, 3, 6, 4)
    upd = f32(2, 3, 3, 4)
    w = i64([1, 3]) if mode == "linear" else i64([4, 0])
    check("TensorScatter", [past, upd, w], opset=24, mode=mode, axis=2)
    check("TensorScatter", [past, upd], opset=24, mode=mode, axis=-2)


# --- one-hot, reverse-sequence ----------------------------------------------------------------

@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_onehot(axis):
    idx = i64([[1, -1, 9], [0, 3, -5]])  # 9 and -5 are out of range: all off
    check("OneHot", [idx, C(np.float32(4)), np.array([-1.0, 2.0], np.float32)], opset=11, axis=axis)
    check("OneHot", [np.array([0, 2], np.int32), C(i64(3)), C(i64([0, 5]))], opset=11, axis=axis)


def test_reverse_sequence():
    x = f32(5, 3, 2)
    check("ReverseSequence", [x, i64([5, 1, 3])], opset=10, time_axis=0, batch_axis=1)
    check("ReverseSequence", [f32(3, 5), i64([2, 5, 0])], opset=10, time_axis=1, batch_axis=0)


# --- value-dependent shapes -------------------------------------------------------------------

def test_compress_nonzero_unique_with_constants():
    x = f32(3, 4)
    check("Compress", [x, C(np.array([True, False, True]))], opset=11, axis=0)
    check("Compress", [x, C(np.array([False, True, False, True, True]))], opset=11)
    check("Compress", [x, C(np.array([0, 1, 1, 0]) > 0)], opset=11, axis=-1)
    check("NonZero", [C(np.array([[1, 0, 2], [0, 0, 3]], np.float32))], opset=13)
    check("Unique", [C(np.array([[3, 1, 1], [2, 3, 0]], np.float32))], opset=11, n_out=4)
    # (1-D: onnx's reference takes unsorted values from the unflattened input)
    check("Unique", [C(np.array([3, 1, 1, 2, 3, 0], np.float32))], opset=11, n_out=4, sorted=0)
    check("Unique", [C(np.array([[1, 0, 0], [1, 0, 0], [2, 3, 4]], np.int64))], opset=11, n_out=4,
          axis=0)


def test_value_dependent_shapes_of_computed_inputs_are_refused():
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("NonZero", ["r"], ["y"])]
    y = helper.make_tensor_value_info("y", onnx.TensorProto.INT64, [1, 4])
    g = helper.make_graph(nodes, "nz", [x], [y])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(UnsupportedOnnxError, match="output shape depends on the values"):
        ig.onnx.load(model)


def test_constant_subgraph_folds_through_handlers():
    # NonZero of a constant feeds a Gather of a graph input: folded at import
    x = f32(6)
    nodes = [helper.make_node("NonZero", ["c"], ["nz"]),
             helper.make_node("Squeeze", ["nz", "ax"], ["i"]),
             helper.make_node("Gather", ["x", "i"], ["y"])]
    inits = [numpy_helper.from_array(np.array([0, 3, 0, 1, 0, 2], np.float32), "c"),
             numpy_helper.from_array(i64([0]), "ax")]
    g = helper.make_graph(nodes, "fold", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [6])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m = ig.onnx.load(model)
    np.testing.assert_array_equal(m(x)[0], x[[1, 3, 5]])
    assert "gather" in str(m.ir) and "scatter" not in str(m.ir)


def test_integer_and_bool_layouts():
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    check("Einsum", [a, np.arange(12, dtype=np.int32).reshape(3, 4)], opset=12, equation="ij,jk->ik")
    b = rng.random((4, 7)) > 0.5
    check("Slice", [b, C(i64([6, 0])), C(i64([-9, 4])), C(i64([1, 0])), C(i64([-2, 3]))], opset=13)
    check("Pad", [b, C(i64([1, 2, 0, 1]))], opset=19, mode="reflect")
    check("GatherND", [b, i64([[0, 1], [3, -1]])], opset=13)


def test_compiled_on_cpu():
    # the compositions the conformance cases do not reach, through the native backend
    x = f32(2, 4, 4)
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Det", ["x"], ["d"]),
             helper.make_node("ScatterND", ["x", "i", "u"], ["s"], reduction="mul"),
             helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["c"])]
    inits = [numpy_helper.from_array(i64([[0, 1], [0, 1], [1, -1]]), "i"),
             numpy_helper.from_array(i64([3, 0]), "st"), numpy_helper.from_array(i64([-5, 4]), "en"),
             numpy_helper.from_array(i64([1, 2]), "ax"), numpy_helper.from_array(i64([-2, 3]), "sp")]
    g = helper.make_graph(nodes, "cpu", [vi("x", 1, [2, 4, 4]), vi("u", 1, [3, 4])],
                          [vi("d", 1, [2]), vi("s", 1, [2, 4, 4]), vi("c", 1, [2, 2, 2])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    u = f32(3, 4)
    ref = ReferenceEvaluator(model).run(None, {"x": x, "u": u})
    out = ig.onnx.load(model).compile("cpu")(x, u)
    for o, r in zip(out, ref):
        np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-6)
