"""ONNX import of control flow (If, Loop, Scan), random ops, signal processing (DFT, STFT,
windows, MelWeightMatrix) and the rest of irgrad/onnx/ops/misc.py (GridSample, AffineGrid,
RoiAlign, NonMaxSuppression, DeformConv, CausalConvWithState, the training optimizers,
optionals), compared with onnx's reference evaluator on the numpy backend."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as TP  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import irgrad as ig  # noqa: E402
import irgrad.onnx  # noqa: E402,F401
from irgrad.onnx import NeedsConstant, UnsupportedOnnxError  # noqa: E402

F = TP.FLOAT
TRAINING = "ai.onnx.preview.training"
vi = h.make_tensor_value_info


def _tp(dt):
    return h.np_dtype_to_tensor_dtype(np.dtype(dt))


def build(nodes, inputs, outs, consts=(), opset=20, domains=(), expected=None):
    """A model of `nodes` over `inputs` (name -> array, None for an omitted input;
    `consts` become initializers), its feed, and the expected outputs (the reference
    evaluator's, unless given), whose types and shapes the graph outputs declare."""
    ins = [vi(k, _tp(v.dtype), v.shape) for k, v in inputs.items() if k not in consts and v is not None]
    inits = [nh.from_array(np.asarray(v), k) for k, v in inputs.items() if k in consts and v is not None]
    g = h.make_graph(nodes, "g", ins, [vi(n, F, None) for n in outs], initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)] + [h.make_opsetid(d, 1) for d in domains])
    feed = {k: v for k, v in inputs.items() if k not in consts and v is not None}
    ref = expected if expected is not None else ReferenceEvaluator(m).run(None, feed)
    del m.graph.output[:]
    for n, r in zip(outs, ref):
        r = np.asarray(r)
        m.graph.output.append(vi(n, _tp(r.dtype), r.shape))
    return m, feed, [np.asarray(r) for r in ref]


def check(nodes, inputs, outs, consts=(), opset=20, domains=(), expected=None, rtol=1e-4, atol=1e-5):
    m, feed, ref = build(nodes, inputs, outs, consts, opset, domains, expected)
    got = ig.onnx.load(m)(*feed.values())
    for r, g in zip(ref, got):
        assert g.shape == r.shape and g.dtype == r.dtype, (g.shape, r.shape, g.dtype, r.dtype)
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol)
    return m, got


def node(op, ins, outs, **attrs):
    ins = list(ins)
    while ins and ins[-1] is None:  # trailing omitted inputs are left out
        ins.pop()
    return h.make_node(op, [i if i is not None else "" for i in ins], outs, **attrs)


def graph(nodes, ins, outs, name="body"):
    return h.make_graph(nodes, name, ins, outs)


rng = np.random.default_rng(0)


def rand(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


# --- If -----------------------------------------------------------------------------------

def _branches():
    then_g = graph([node("Add", ["x", "y"], ["t"])], [], [vi("t", F, [3])], "then")
    else_g = graph([node("Sub", ["x", "y"], ["e"])], [], [vi("e", F, [3])], "else")
    return then_g, else_g


def test_if_computed_condition_runs_both_branches_and_selects():
    then_g, else_g = _branches()
    nodes = [node("ReduceSum", ["x"], ["s"], keepdims=0), node("Constant", [], ["z"], value_float=0.0),
             node("Greater", ["s", "z"], ["c"]), node("If", ["c"], ["o"], then_branch=then_g, else_branch=else_g)]
    for sign in (1.0, -1.0):
        m, _ = check(nodes, {"x": np.abs(rand(3)) * sign, "y": rand(3)}, ["o"])
    assert "select" in str(ig.onnx.load(m).ir)


def test_if_known_condition_imports_only_the_taken_branch():
    then_g, _ = _branches()
    # the other branch holds an op irgrad does not import: it is never looked at
    bad = graph([node("StringNormalizer", ["x"], ["e"])], [], [vi("e", F, [3])], "else")
    nodes = [node("If", ["c"], ["o"], then_branch=then_g, else_branch=bad)]
    x, y = rand(3), rand(3)
    m, feed, _ = build(nodes, {"c": np.array([True]), "x": x, "y": y}, ["o"], consts=("c",), expected=[x + y])
    np.testing.assert_allclose(ig.onnx.load(m)(*feed.values())[0], x + y, rtol=1e-6)


def test_if_branches_of_different_shapes_need_the_condition():
    then_g = graph([node("Identity", ["x"], ["t"])], [], [vi("t", F, [3])], "then")
    else_g = graph([node("Concat", ["x", "x"], ["e"], axis=0)], [], [vi("e", F, [6])], "else")
    nodes = [node("If", ["c"], ["o"], then_branch=then_g, else_branch=else_g)]
    x = rand(3)
    m, feed, _ = build(nodes, {"c": np.array([False]), "x": x}, ["o"], expected=[np.concatenate([x, x])])
    with pytest.raises(NeedsConstant, match="'c'"):
        ig.onnx.load(m)
    for c in (False, True):
        out = ig.onnx.load(m, constants={"c": np.array([c])})(x)[0]
        np.testing.assert_allclose(out, x if c else np.concatenate([x, x]))
    # computed from a graph input: that input is asked for
    m2, _, _ = build([node("ReduceSum", ["x"], ["s"], keepdims=0), node("Constant", [], ["z"], value_float=0.0),
                      node("Greater", ["s", "z"], ["c"])] + nodes, {"x": x}, ["o"], expected=[x])
    with pytest.raises(NeedsConstant, match="'x'"):
        ig.onnx.load(m2)
    want = x if x.sum() > 0 else np.concatenate([x, x])
    np.testing.assert_allclose(ig.onnx.load(m2, constants={"x": x})()[0], want)
    # computed from nothing the importer can fix (a random draw): unsupported, saying why
    m3, _, _ = build([node("RandomUniform", [], ["u"], shape=[1]), node("Constant", [], ["h"], value_float=0.5),
                      node("Less", ["u", "h"], ["c"])] + nodes, {"x": x}, ["o"], expected=[x])
    with pytest.raises(UnsupportedOnnxError, match="differs between the branches"):
        ig.onnx.load(m3)


# --- Loop ---------------------------------------------------------------------------------

def _counting_body():
    # acc += x i; scan output acc + tbl[i] (outer values x and tbl; the counter i indexes)
    return graph([
        node("Identity", ["c"], ["co"]),
        node("Cast", ["i"], ["fi"], to=F),
        node("Mul", ["x", "fi"], ["xs"]),
        node("Add", ["acc", "xs"], ["acc2"]),
        node("Gather", ["tbl", "i"], ["row"]),  # row i of an outer constant: folds
        node("Add", ["acc2", "row"], ["so"]),
    ], [vi("i", TP.INT64, []), vi("c", TP.BOOL, []), vi("acc", F, [2])],
        [vi("co", TP.BOOL, []), vi("acc2", F, [2]), vi("so", F, [2])])


@pytest.mark.parametrize("trips", [1, 4])
def test_loop_unrolls_with_carried_and_scan_outputs(trips):
    x, tbl = rand(2), rand(6, 2)
    ins = {"M": np.array(trips, np.int64), "c0": np.array(True), "a0": rand(2), "x": x, "tbl": tbl}
    nodes = [node("Loop", ["M", "c0", "a0"], ["af", "scan"], body=_counting_body())]
    m, (af, scan) = check(nodes, ins, ["af", "scan"], consts=("M", "c0", "tbl"), opset=13)
    assert scan.shape == (trips, 2)


def test_loop_zero_iterations_gives_empty_scan_outputs():
    a0 = rand(2)
    ins = {"M": np.array(0, np.int64), "a0": a0, "x": rand(2), "tbl": rand(6, 2)}
    nodes = [node("Loop", ["M", None, "a0"], ["af", "scan"], body=_counting_body())]
    m, feed, _ = build(nodes, ins, ["af", "scan"], consts=("M", "tbl"), opset=13,
                       expected=[a0, np.zeros((0, 2), np.float32)])
    af, scan = ig.onnx.load(m)(*feed.values())
    np.testing.assert_array_equal(af, a0)
    assert scan.shape == (0, 2)


def test_loop_while_condition_folds_at_import():
    # while i < 3: acc += x  (no trip count: the condition, computed from the counter, stops it)
    body = graph([node("Constant", [], ["three"], value=nh.from_array(np.array(3, np.int64))),
                  node("Less", ["i", "three"], ["co"]), node("Add", ["acc", "x"], ["acc2"])],
                 [vi("i", TP.INT64, []), vi("c", TP.BOOL, []), vi("acc", F, [2])],
                 [vi("co", TP.BOOL, []), vi("acc2", F, [2])])
    x = rand(2)
    check([node("Loop", [None, "c0", "a0"], ["af"], body=body)],
          {"c0": np.array(True), "a0": np.zeros(2, np.float32), "x": x}, ["af"], consts=("c0",), opset=13)


def _while_sum_below_5(scan_output: bool):
    # while sum(acc) < 5 (a value computed from the inputs): acc += x
    outs = [vi("co", TP.BOOL, []), vi("acc2", F, [2])] + ([vi("so", F, [2])] if scan_output else [])
    return graph([node("ReduceSum", ["acc"], ["s"], keepdims=0), node("Constant", [], ["z"], value_float=5.0),
                  node("Less", ["s", "z"], ["co"]), node("Add", ["acc", "x"], ["acc2"]),
                  node("Identity", ["acc2"], ["so"])],
                 [vi("i", TP.INT64, []), vi("c", TP.BOOL, []), vi("acc", F, [2])], outs)


def test_loop_with_a_computed_condition_masks_the_iterations_after_it():
    x = np.array([0.5, 0.75], np.float32)
    for a0 in (np.zeros(2, np.float32), np.array([3.0, 4.0], np.float32)):  # 4 iterations, 1
        m, (af,) = check([node("Loop", ["M", "c0", "a0"], ["af"], body=_while_sum_below_5(False))],
                         {"M": np.array(10, np.int64), "c0": np.array(True), "a0": a0, "x": x}, ["af"],
                         consts=("M", "c0"), opset=13)
    assert "select" in str(ig.onnx.load(m).ir)
    # with a scan output the output's length would depend on the values
    m, _, _ = build([node("Loop", ["M", "c0", "a0"], ["af", "sc"], body=_while_sum_below_5(True))],
                    {"M": np.array(10, np.int64), "c0": np.array(True), "a0": a0, "x": x}, ["af", "sc"],
                    consts=("M", "c0"), opset=13, expected=[a0, np.zeros((1, 2), np.float32)])
    with pytest.raises(UnsupportedOnnxError, match="condition of iteration 0 is computed"):
        ig.onnx.load(m)


def test_loop_trip_count_from_a_graph_input_is_fixed_by_the_backend():
    from irgrad.onnx import backend
    body = graph([node("Identity", ["c"], ["co"]), node("Add", ["acc", "x"], ["acc2"])],
                 [vi("i", TP.INT64, []), vi("c", TP.BOOL, []), vi("acc", F, [2])],
                 [vi("co", TP.BOOL, []), vi("acc2", F, [2])])
    x = rand(2)
    m, _, _ = build([node("Loop", ["M", None, "a0"], ["af"], body=body)],
                    {"M": np.array([3], np.int64), "a0": np.zeros(2, np.float32), "x": x}, ["af"],
                    opset=13, expected=[3 * x])
    with pytest.raises(NeedsConstant, match="'M'"):
        ig.onnx.load(m)
    rep = backend.prepare(m)
    rep.backend = "numpy"
    out = rep.run([np.array([3], np.int64), np.zeros(2, np.float32), x])[0]
    np.testing.assert_allclose(out, 3 * x, rtol=1e-6)


# --- Scan ---------------------------------------------------------------------------------

def _scan_body():
    # s' = s + a; out1 = s' * b; out2 = a + w (w from the outer scope)
    return graph([node("Add", ["s", "a"], ["s2"]), node("Mul", ["s2", "b"], ["o1"]),
                  node("Add", ["a", "w"], ["o2"])],
                 [vi("s", F, [3]), vi("a", F, [3]), vi("b", F, [3])],
                 [vi("s2", F, [3]), vi("o1", F, [3]), vi("o2", F, [3])])


@pytest.mark.parametrize("in_axes,in_dirs,out_axes,out_dirs", [
    ([0, 0], [0, 0], [0, 0], [0, 0]),
    ([1, 0], [1, 0], [1, 0], [0, 1]),
    ([-1, 0], [0, 1], [-1, 1], [1, 1]),
])
def test_scan_axes_and_directions(in_axes, in_dirs, out_axes, out_dirs):
    a = rand(3, 4) if in_axes[0] != 0 else rand(4, 3)
    b, w, s0 = rand(4, 3), rand(3), rand(3)
    seq_a = list(a.T if in_axes[0] != 0 else a)
    seq_b = list(b)
    seq_a, seq_b = (seq_a[::-1] if in_dirs[0] else seq_a), (seq_b[::-1] if in_dirs[1] else seq_b)
    s, o1, o2 = s0, [], []
    for at, bt in zip(seq_a, seq_b):
        s = s + at
        o1.append(s * bt)
        o2.append(at + w)
    o1, o2 = (o1[::-1] if out_dirs[0] else o1), (o2[::-1] if out_dirs[1] else o2)
    expected = [s, np.stack(o1, axis=out_axes[0] % 2), np.stack(o2, axis=out_axes[1] % 2)]
    nodes = [node("Identity", ["wi"], ["w"]),
             node("Scan", ["s0", "a", "b"], ["sf", "y1", "y2"], body=_scan_body(), num_scan_inputs=2,
                  scan_input_axes=in_axes, scan_input_directions=in_dirs,
                  scan_output_axes=out_axes, scan_output_directions=out_dirs)]
    check(nodes, {"s0": s0, "a": a, "b": b, "wi": w}, ["sf", "y1", "y2"], opset=16, expected=expected)


@pytest.mark.parametrize("direction", [0, 1])
def test_scan_opset8_has_a_batch_axis(direction):
    body = graph([node("Add", ["s", "a"], ["s2"]), node("Identity", ["s2"], ["o"])],
                 [vi("s", F, [2]), vi("a", F, [2])], [vi("s2", F, [2]), vi("o", F, [2])])
    s0, x = rand(3, 2), rand(3, 4, 2)
    xs = x[:, ::-1] if direction else x
    scan = s0[:, None, :] + np.cumsum(xs, axis=1)
    check([node("Scan", [None, "s0", "x"], ["sf", "y"], body=body, num_scan_inputs=1, directions=[direction])],
          {"s0": s0, "x": x}, ["sf", "y"], opset=8, expected=[scan[:, -1], scan])


# --- signal -------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("shape,attrs,length", [
    ((2, 8, 3, 1), {}, None), ((2, 8, 3, 2), {}, 6), ((2, 8, 3, 1), {"onesided": 1}, 11),
    ((2, 8, 3, 2), {"inverse": 1}, None), ((2, 5, 3, 2), {"inverse": 1, "onesided": 1}, None),
    ((2, 5, 3, 1), {"inverse": 1, "onesided": 1}, 7),
])
def test_dft(opset, shape, attrs, length):
    # opset 20 moved the axis from an attribute (default 1) to input 2 (default -2)
    axis = 1 if opset < 20 else -3
    ins = {"x": rand(*shape), "n": None if length is None else np.array(length, np.int64),
           "axis": np.array(axis, np.int64) if opset >= 20 else None}
    attrs = dict(attrs) if opset >= 20 else dict(attrs, axis=axis)
    check([node("DFT", list(k if v is not None else None for k, v in ins.items()), ["y"], **attrs)],
          ins, ["y"], consts=("n", "axis"), opset=opset)


@pytest.mark.parametrize("channels,onesided,window,frame", [(1, 1, True, None), (2, 0, False, 10), (1, 0, True, 12)])
def test_stft(channels, onesided, window, frame):
    ins = {"x": rand(2, 64, channels), "step": np.array(5, np.int64),
           "w": np.abs(rand(frame or 16)) if window else None,
           "fl": np.array(frame, np.int64) if frame else None}
    check([node("STFT", [k if v is not None else None for k, v in ins.items()], ["y"], onesided=onesided)],
          ins, ["y"], consts=("step", "fl"), opset=17)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic,elem", [(1, TP.FLOAT), (0, TP.DOUBLE)])
def test_windows(op, periodic, elem):
    check([node(op, ["n"], ["y"], periodic=periodic, output_datatype=elem)],
          {"n": np.array(10, np.int32)}, ["y"], consts=("n",), opset=17, atol=1e-6)


def test_window_size_from_a_graph_input_needs_its_value():
    m, _, _ = build([node("HannWindow", ["n"], ["y"])], {"n": np.array([8], np.int32)}, ["y"], opset=17,
                    expected=[np.sin(np.pi * np.arange(8) / 8) ** 2])
    with pytest.raises(NeedsConstant, match="'n'"):
        ig.onnx.load(m)


@pytest.mark.parametrize("args", [(8, 16, 8192, 0.0, 4096.0), (20, 512, 16000, 20.0, 8000.0)])
def test_mel_weight_matrix(args):
    ins = {k: np.array(v, np.int32 if i < 3 else np.float32) for i, (k, v) in enumerate(zip("abcde", args))}
    check([node("MelWeightMatrix", list(ins), ["y"])], ins, ["y"], consts=tuple(ins), opset=17)


# --- sampling -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode,padding,align", [
    ("linear", "zeros", 0), ("linear", "border", 1), ("linear", "reflection", 0),
    ("nearest", "zeros", 1), ("nearest", "reflection", 0), ("cubic", "border", 0), ("cubic", "reflection", 1),
])
def test_grid_sample_2d(mode, padding, align):
    x, g = rand(2, 3, 4, 5), rng.random((2, 3, 6, 2)).astype(np.float32) * 3.2 - 1.6
    check([node("GridSample", ["x", "g"], ["y"], mode=mode, padding_mode=padding, align_corners=align)],
          {"x": x, "g": g}, ["y"], opset=22)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_grid_sample_3d(mode):
    x, g = rand(1, 2, 3, 4, 5), rng.random((1, 2, 3, 4, 3)).astype(np.float32) * 2.4 - 1.2
    check([node("GridSample", ["x", "g"], ["y"], mode=mode, padding_mode="border")],
          {"x": x, "g": g}, ["y"], opset=22)


def test_grid_sample_opset16_mode_names():
    # opset 16 said bilinear/bicubic where 20 says linear/cubic (and default "linear")
    x, g = rand(1, 2, 4, 4), rng.random((1, 3, 3, 2)).astype(np.float32) * 2 - 1
    for old, new in (("bilinear", "linear"), ("bicubic", "cubic"), (None, "linear")):
        _, _, want = build([node("GridSample", ["x", "g"], ["y"], mode=new)], {"x": x, "g": g}, ["y"], opset=20)
        attrs = {"mode": old} if old else {}
        check([node("GridSample", ["x", "g"], ["y"], **attrs)], {"x": x, "g": g}, ["y"], opset=16, expected=want)


@pytest.mark.filterwarnings("ignore:divide by zero")  # the reference's 2 / (1 - 1) for a size-1 axis
@pytest.mark.parametrize("size,align", [([2, 3, 4, 5], 0), ([2, 3, 1, 4], 1), ([2, 3, 4, 5, 6], 1), ([2, 1, 3, 1, 2], 0)])
def test_affine_grid(size, align):
    nd = len(size) - 2
    check([node("AffineGrid", ["t", "s"], ["y"], align_corners=align)],
          {"t": rand(2, nd, nd + 1), "s": np.array(size, np.int64)}, ["y"], consts=("s",), opset=20)


ROIS = np.array([[0, 0, 9, 9], [1.3, 2.2, 7.5, 8.1], [-3, -2, 14, 5], [5, 5, 5.5, 5.2]], np.float32)


@pytest.mark.parametrize("mode,ctm,ratio", [("avg", "half_pixel", 2), ("max", "output_half_pixel", 1),
                                            ("avg", "output_half_pixel", 3), ("max", "half_pixel", 2)])
def test_roi_align(mode, ctm, ratio):
    ins = {"x": rand(2, 3, 10, 12), "r": ROIS, "b": np.array([0, 1, 1, 0], np.int64)}
    check([node("RoiAlign", ["x", "r", "b"], ["y"], mode=mode, coordinate_transformation_mode=ctm,
                sampling_ratio=ratio, spatial_scale=0.5, output_height=3, output_width=4)], ins, ["y"], opset=22)


def test_roi_align_opset10_default_is_output_half_pixel_and_ratio_0_needs_rois():
    ins = {"x": rand(1, 2, 8, 8), "r": np.array([[0, 0, 6, 6], [1, 1.5, 7, 7.5]], np.float32),
           "b": np.array([0, 0], np.int64)}
    nodes = [node("RoiAlign", ["x", "r", "b"], ["y"], output_height=3, output_width=3)]
    check(nodes, ins, ["y"], consts=("r",), opset=16)
    # opset 10 had no coordinate_transformation_mode: it behaves as output_half_pixel
    _, _, want = build([node("RoiAlign", ["x", "r", "b"], ["y"], output_height=3, output_width=3,
                             coordinate_transformation_mode="output_half_pixel")], ins, ["y"], opset=16)
    check(nodes, ins, ["y"], consts=("r",), opset=10, expected=want)
    m, _, _ = build(nodes, ins, ["y"], opset=16)
    with pytest.raises(NeedsConstant, match="'r'"):
        ig.onnx.load(m)


def test_non_max_suppression():
    boxes = np.concatenate([np.array([[0, 0], [0.1, 0.1], [5, 5], [5.2, 5.1], [0, 0]]) * 1.0,
                            np.array([[2, 2], [2.1, 2], [6, 6], [6.1, 6.2], [1, 1]])], axis=1)
    for center, bx in ((0, boxes), (1, np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1))):
        ins = {"b": np.stack([bx, bx[::-1]]).astype(np.float32),
               "s": np.array([[[0.9, 0.8, 0.7, 0.95, 0.1], [0.1, 0.2, 0.3, 0.4, 0.5]]] * 2, np.float32),
               "m": np.array([2], np.int64), "i": np.array([0.4], np.float32), "t": np.array([0.15], np.float32)}
        check([node("NonMaxSuppression", list(ins), ["y"], center_point_box=center)], ins, ["y"],
              consts=tuple(ins), opset=11)
    m, _, _ = build([node("NonMaxSuppression", list(ins), ["y"])], ins, ["y"], consts=("m", "i", "t"), opset=11)
    with pytest.raises(NeedsConstant):  # a value-dependent shape: the boxes must be known
        ig.onnx.load(m)


@pytest.mark.parametrize("groups,offset_groups,mask,bias", [(1, 1, False, False), (2, 2, True, True)])
def test_deform_conv(groups, offset_groups, mask, bias):
    c, oc, k = 4, 4, 3
    ins = {"x": rand(1, c, 5, 6), "w": rand(oc, c // groups, k, k),
           "o": rand(1, offset_groups * k * k * 2, 5, 6) * 1.5,
           "b": rand(oc) if bias else None, "m": np.abs(rand(1, offset_groups * k * k, 5, 6)) if mask else None}
    check([node("DeformConv", [n if v is not None else None for n, v in ins.items()], ["y"], group=groups,
                offset_group=offset_groups, pads=[1, 1, 1, 1])], ins, ["y"], opset=22)


@pytest.mark.parametrize("k,act,past,bias", [(4, "none", False, False), (3, "silu", True, True), (1, "swish", False, True)])
def test_causal_conv_with_state(k, act, past, bias):
    ins = {"x": rand(2, 3, 6), "w": rand(3, 1, k), "b": rand(3) if bias else None,
           "p": rand(2, 3, k - 1) if past else None}
    check([node("CausalConvWithState", [n if v is not None else None for n, v in ins.items()], ["y", "s"],
                activation=act)], ins, ["y", "s"], opset=27)


# --- training -----------------------------------------------------------------------------

@pytest.mark.parametrize("step", [0, 3])
def test_training_optimizers(step):
    ins = {"r": np.array(0.1, np.float32), "t": np.array(step, np.int64)}
    for nm, shape in (("x", (3,)), ("g", (3,)), ("v", (3,)), ("h", (3,))):
        ins[nm + "1"], ins[nm + "2"] = rand(*shape) if nm in "xg" else np.abs(rand(*shape)), np.abs(rand(2, 2))
    cs, dom = ("r", "t"), (TRAINING,)
    check([node("Adagrad", ["r", "t", "x1", "x2", "g1", "g2", "h1", "h2"], list("abcd"), domain=TRAINING,
                decay_factor=0.1, epsilon=1e-5, norm_coefficient=0.01)], ins, list("abcd"), cs, 17, dom)
    for mode in ("standard", "nesterov"):
        check([node("Momentum", ["r", "t", "x1", "x2", "g1", "g2", "v1", "v2"], list("abcd"), domain=TRAINING,
                    alpha=0.9, beta=0.3, mode=mode, norm_coefficient=0.01)], ins, list("abcd"), cs, 17, dom)
    check([node("Adam", ["r", "t", "x1", "x2", "g1", "g2", "v1", "v2", "h1", "h2"], list("abcdef"),
                domain=TRAINING, alpha=0.9, beta=0.8, epsilon=1e-3, norm_coefficient=0.01,
                norm_coefficient_post=0.02)], ins, list("abcdef"), cs, 17, dom)


# --- random -------------------------------------------------------------------------------

def _random_model():
    nodes = [node("RandomUniform", [], ["u"], shape=[2000], low=-2.0, high=3.0, seed=5.0),
             node("RandomUniform", [], ["u_same"], shape=[2000], low=-2.0, high=3.0, seed=5.0),
             node("RandomUniform", [], ["u_other"], shape=[2000], low=-2.0, high=3.0, seed=6.0),
             node("RandomNormal", [], ["n"], shape=[2000], mean=1.0, scale=2.0, dtype=TP.DOUBLE),
             node("RandomNormalLike", ["x"], ["n_like"]),  # no seeds: two independent draws
             node("RandomNormalLike", ["x"], ["n_like2"]),
             node("Bernoulli", ["p"], ["b"], dtype=TP.BOOL),
             node("Bernoulli", ["x"], ["b_half"]),
             node("Multinomial", ["lg"], ["mn"], sample_size=4000, dtype=TP.INT64)]
    outs = {"u": (F, [2000]), "u_same": (F, [2000]), "u_other": (F, [2000]), "n": (TP.DOUBLE, [2000]),
            "n_like": (F, [2000]), "n_like2": (F, [2000]), "b": (TP.BOOL, [4]), "b_half": (F, [2000]),
            "mn": (TP.INT64, [2, 4000])}
    g = h.make_graph(nodes, "g", [vi("x", F, [2000]), vi("p", F, [4]), vi("lg", F, [2, 3])],
                     [vi(k, t, s) for k, (t, s) in outs.items()])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 22)])


def test_random_ops_are_seeded_pure_and_distributed():
    m = ig.onnx.load(_random_model())
    assert "random_bits" in str(m.ir)  # not folded at import, though RandomUniform has no inputs
    x = np.full(2000, 0.5, np.float32)
    p = np.array([0, 1, 0, 1], np.float32)
    with np.errstate(divide="ignore"):  # log 0 = -inf: a class that is never drawn
        lg = np.log(np.array([[0.2, 0.3, 0.5], [0.0, 1.0, 0.0]], np.float32))
    outs = dict(zip(["u", "u_same", "u_other", "n", "n_like", "n_like2", "b", "b_half", "mn"], m(x, p, lg)))
    again = m(x, p, lg)
    assert all(np.array_equal(a, b) for a, b in zip(outs.values(), again))  # a pure function
    u = outs["u"]
    assert u.dtype == np.float32 and -2 <= u.min() and u.max() < 3 and abs(u.mean() - 0.5) < 0.15
    assert np.array_equal(u, outs["u_same"]) and not np.array_equal(u, outs["u_other"])
    n = outs["n"]
    assert n.dtype == np.float64 and abs(n.mean() - 1.0) < 0.2 and abs(n.std() - 2.0) < 0.2
    assert not np.array_equal(outs["n_like"], outs["n_like2"])
    assert outs["b"].tolist() == [False, True, False, True]
    assert abs(outs["b_half"].mean() - 0.5) < 0.05 and set(np.unique(outs["b_half"])) == {0.0, 1.0}
    freq = np.bincount(outs["mn"][0], minlength=3) / 4000
    np.testing.assert_allclose(freq, [0.2, 0.3, 0.5], atol=0.04)
    assert (outs["mn"][1] == 1).all()  # probability-0 classes are never drawn


# --- optionals ----------------------------------------------------------------------------

def test_optional_plumbing():
    x = rand(4)
    nodes = [node("OptionalHasElement", [], ["empty"]), node("OptionalHasElement", ["x"], ["full"]),
             node("Optional", ["x"], ["ox"]), node("OptionalGetElement", ["ox"], ["y"])]
    check(nodes, {"x": x}, ["empty", "full", "y"], opset=18, expected=[np.array(False), np.array(True), x])


def test_sampling_and_unrolled_loops_compile_on_the_cpu_backend():
    # the gathers of GridSample and a stacked scan output through the native backend once
    x, g = rand(1, 2, 4, 5), rng.random((1, 3, 6, 2)).astype(np.float32) * 2.4 - 1.2
    m, feed, ref = build([node("GridSample", ["x", "g"], ["y"], mode="cubic", padding_mode="reflection")],
                         {"x": x, "g": g}, ["y"], opset=22)
    np.testing.assert_allclose(ig.onnx.load(m).compile("cpu")(*feed.values())[0], ref[0], rtol=1e-4, atol=1e-5)
    s0, xs = rand(3), rand(4, 3)
    body = graph([node("Add", ["s", "a"], ["s2"]), node("Identity", ["s2"], ["o"])],
                 [vi("s", F, [3]), vi("a", F, [3])], [vi("s2", F, [3]), vi("o", F, [3])])
    m, feed, ref = build([node("Scan", ["s0", "x"], ["sf", "y"], body=body, num_scan_inputs=1)],
                         {"s0": s0, "x": xs}, ["sf", "y"], opset=16)
    for r, got in zip(ref, ig.onnx.load(m).compile("cpu")(*feed.values())):
        np.testing.assert_allclose(got, r, rtol=1e-5, atol=1e-6)


def test_scan_slices_keep_their_graph_inputs_for_values_needed_at_import():
    # each step reshapes a constant to a shape read from the scan input: that graph input
    # is what must be given (the backend does so), not an anonymous "computed" value
    body = graph([node("Reshape", ["d", "shp"], ["r"]), node("ReduceSum", ["r"], ["o"], axes=[1], keepdims=0),
                  node("Identity", ["s"], ["s2"])],
                 [vi("s", F, [1]), vi("shp", TP.INT64, [2])], [vi("s2", F, [1]), vi("o", F, [2])])
    d, shapes = np.arange(6, dtype=np.float32), np.array([[2, 3], [2, 3]], np.int64)
    ins = {"s0": np.zeros(1, np.float32), "shapes": shapes, "d": d}
    want = np.stack([d.reshape(2, 3).sum(1)] * 2)
    m, feed, _ = build([node("Scan", ["s0", "shapes"], ["sf", "y"], body=body, num_scan_inputs=1)], ins,
                       ["sf", "y"], consts=("d",), opset=11, expected=[np.zeros(1, np.float32), want])
    with pytest.raises(NeedsConstant, match="'shapes'"):
        ig.onnx.load(m)
    np.testing.assert_allclose(ig.onnx.load(m, constants={"shapes": shapes})(feed["s0"])[1], want)
