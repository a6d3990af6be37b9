"""ONNX import of the neural-network ops (convolutions, pooling, normalizations, Gemm/MatMul,
Dropout, softmax, Resize/Upsample), each compared with onnx's ReferenceEvaluator on small
models. Where the reference is wrong (LRN sums over the batch axis, BatchNormalization
before opset 14 normalizes with batch statistics at inference, Softmax before opset 13 has
opset 13's axis) the expected values are the spec's formula in numpy; where it has no
implementation (Resize-10, Upsample's linear mode) ONNX Runtime is the reference."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as TP  # noqa: E402
from onnx import helper as oh  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import irgrad.onnx as ox  # noqa: E402
from onnx_one_node import check, model  # noqa: E402
from irgrad.errors import UnsupportedOnnxError  # noqa: E402

RNG = np.random.default_rng(11)


def ort_ref(m, inputs):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v for k, v in inputs.items() if v is not None})


def randn(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


# --- convolutions ----------------------------------------------------------------------------

CONV_CASES = [
    ((1, 3, 7, 8), (4, 3, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((2, 4, 9, 7), (6, 2, 3, 2), dict(group=2, strides=[2, 1], dilations=[1, 2], pads=[0, 1, 2, 0])),
    ((1, 2, 8, 7), (3, 2, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    ((1, 2, 8, 7), (3, 2, 2, 4), dict(auto_pad="SAME_LOWER", strides=[3, 2], dilations=[2, 1])),
    ((1, 2, 8, 7), (3, 2, 3, 3), dict(auto_pad="VALID", strides=[2, 3])),
    ((2, 3, 11), (4, 3, 4), dict(strides=[3], pads=[2, 1])),
    ((1, 2, 5, 6, 4), (2, 1, 2, 3, 2), dict(group=2, pads=[1, 0, 1, 0, 1, 1])),
    ((1, 4, 6, 6), (4, 1, 3, 3), dict(group=4, kernel_shape=[3, 3])),  # depthwise
]


@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES)
def test_conv(xs, ws, attrs):
    x, w, b = randn(*xs), randn(*ws), randn(ws[0])
    check(model("Conv", {"x": x, "w": w, "b": b}, opset=11, **attrs), {"x": x, "w": w, "b": b}, rtol=1e-4)
    check(model("Conv", {"x": x, "w": w}, opset=11, **attrs), {"x": x, "w": w}, rtol=1e-4)


CONVT_CASES = [
    ((1, 2, 3, 4), (2, 3, 3, 3), dict()),
    ((1, 2, 3, 4), (2, 3, 3, 2), dict(strides=[3, 2], output_padding=[1, 1], pads=[1, 0, 0, 1])),
    ((2, 4, 3, 3), (4, 2, 3, 3), dict(group=2, strides=[2, 2], dilations=[2, 1])),
    ((1, 1, 3, 3), (1, 2, 3, 3), dict(strides=[3, 2], output_shape=[10, 8])),
    ((1, 1, 3, 3), (1, 2, 3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ((1, 1, 3, 4), (1, 2, 2, 3), dict(strides=[2, 3], auto_pad="SAME_LOWER")),
    ((1, 2, 5), (2, 3, 3), dict(strides=[2], pads=[1, 2])),
    ((1, 1, 2, 3, 2), (1, 2, 2, 2, 3), dict(strides=[2, 1, 2])),
]


@pytest.mark.parametrize("xs,ws,attrs", CONVT_CASES)
def test_conv_transpose(xs, ws, attrs):
    g = attrs.get("group", 1)
    x, w, b = randn(*xs), randn(*ws), randn(ws[1] * g)
    feeds = {"x": x, "w": w, "b": b}
    m = model("ConvTranspose", feeds, opset=11, out_type=TP.FLOAT, **attrs)
    # (onnx's reference mixes the groups up when a group has several output channels)
    check(m, feeds, rtol=1e-4, atol=1e-5, ref=ort_ref(m, feeds) if g > 1 else None)


def test_conv_transpose_output_shape_overrides_pads():
    # shorter than the full output: total = full - out split with the odd one at the start
    # (the pads attribute is ignored); longer: zeros at the end
    x, w = randn(1, 2, 3, 4), randn(2, 1, 3, 3)
    full = ReferenceEvaluator(model("ConvTranspose", {"x": x, "w": w}, strides=[2, 2])).run(
        None, {"x": x, "w": w})[0]  # [1, 1, 7, 9]
    m = model("ConvTranspose", {"x": x, "w": w}, strides=[2, 2], output_shape=[4, 11], pads=[1, 1, 1, 1])
    want = np.zeros((1, 1, 4, 11), np.float32)
    want[:, :, :, :9] = full[:, :, 2:6, :]
    check(m, {"x": x, "w": w}, ref=[want], rtol=1e-5, atol=1e-6)


def test_conv_integer_and_matmul_integer():
    x = RNG.integers(0, 255, (1, 2, 5, 5)).astype(np.uint8)
    w = RNG.integers(0, 255, (3, 2, 3, 3)).astype(np.uint8)
    consts = {"xz": np.array(7, np.uint8), "wz": np.array([1, 2, 3], np.uint8)}
    check(model("ConvInteger", {"x": x, "w": w}, opset=10, consts=consts, pads=[1, 1, 1, 1]),
          {"x": x, "w": w})
    a = RNG.integers(-128, 127, (4, 3)).astype(np.int8)
    b = RNG.integers(-128, 127, (3, 5)).astype(np.int8)
    az, bz = np.array([1, -2, 3, 0], np.int8), np.array([3, 0, -1, 2, 5], np.int8)  # per row, column
    want = (a.astype(np.int32) - az[:, None]) @ (b.astype(np.int32) - bz)
    check(model("MatMulInteger", {"a": a, "b": b}, opset=10, consts={"az": az, "bz": bz}), {"a": a, "b": b},
          ref=[want])


def test_col2im():
    for image, block, attrs in (([5, 5], [2, 2], {}), ([6, 5], [3, 2], dict(strides=[2, 1], pads=[1, 0, 1, 1],
                                                                            dilations=[1, 2]))):
        n_img = len(image)
        s = attrs.get("strides", [1] * n_img)
        d = attrs.get("dilations", [1] * n_img)
        p = attrs.get("pads", [0] * 2 * n_img)
        j = [(a + p[i] + p[i + n_img] - d[i] * (k - 1) - 1) // s[i] + 1
             for i, (a, k) in enumerate(zip(image, block))]
        x = randn(2, 3 * int(np.prod(block)), int(np.prod(j)))
        check(model("Col2Im", {"x": x}, consts={"image": np.array(image, np.int64),
                                                "block": np.array(block, np.int64)}, **attrs), {"x": x})


# --- pooling ---------------------------------------------------------------------------------

POOL_CASES = [
    ((1, 2, 7, 8), dict(kernel_shape=[3, 3], strides=[2, 2])),
    ((1, 2, 7, 8), dict(kernel_shape=[3, 2], strides=[2, 3], pads=[1, 0, 1, 1], ceil_mode=1)),
    ((1, 2, 6, 6), dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1, pads=[1, 1, 0, 0])),
    ((1, 2, 8, 7), dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    ((1, 2, 8, 7), dict(kernel_shape=[2, 3], strides=[3, 2], auto_pad="SAME_LOWER")),
    ((1, 2, 8, 7), dict(kernel_shape=[2, 2], strides=[2, 2], auto_pad="VALID")),
    ((1, 2, 9, 9), dict(kernel_shape=[2, 2], dilations=[2, 3], strides=[1, 2])),
    ((2, 3, 10), dict(kernel_shape=[3], strides=[2], pads=[1, 1], ceil_mode=1)),
    ((1, 1, 5, 6, 4), dict(kernel_shape=[2, 3, 2], strides=[2, 2, 1], pads=[1, 1, 0, 0, 1, 1])),
]


@pytest.mark.parametrize("xs,attrs", POOL_CASES)
def test_max_pool(xs, attrs):
    x = randn(*xs)
    m = model("MaxPool", {"x": x}, opset=12, out_type=TP.FLOAT, **attrs)
    # (onnx's reference takes floor(in / stride) outputs for SAME_LOWER, not ceil)
    check(m, {"x": x}, ref=ort_ref(m, {"x": x}) if attrs.get("auto_pad") == "SAME_LOWER" else None)


@pytest.mark.parametrize("xs,attrs", POOL_CASES)
@pytest.mark.parametrize("include", [0, 1])
def test_average_pool(xs, attrs, include):
    x = randn(*xs)
    check(model("AveragePool", {"x": x}, opset=19, count_include_pad=include, **attrs), {"x": x})


@pytest.mark.parametrize("xs,attrs", POOL_CASES[:2] + POOL_CASES[5:7] + POOL_CASES[8:])
@pytest.mark.parametrize("p", [1, 2, 3])
def test_lp_pool(xs, attrs, p):
    # (not POOL_CASES[7]: onnx's reference scales a ceil_mode window that overhangs the
    # padding by kernel size / its elements, PyTorch's convention; the spec's Lp norm of
    # the window's values is what irgrad and onnxruntime compute)
    x = randn(*xs)
    check(model("LpPool", {"x": x}, opset=18, p=p, **attrs), {"x": x}, rtol=1e-4)


@pytest.mark.parametrize("order", [0, 1])
def test_max_pool_indices(order):
    # a 2-d case whose windows overlap and leave the input (Indices count from the
    # start of x, row- or column-major)
    x = randn(2, 3, 5, 6)
    m = model("MaxPool", {"x": x}, n_out=2, opset=12, kernel_shape=[3, 2], strides=[2, 2],
              pads=[1, 0, 1, 1], storage_order=order)
    y, idx = check(m, {"x": x})
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(x.reshape(-1)[idx] if order == 0 else
                                  x.transpose(0, 1, 3, 2).reshape(-1)[idx], y)


def test_max_pool_integers():
    # (onnx's reference reads the pads wrongly for unit strides and pads with NaN for
    # integers: onnxruntime is the reference)
    for x, elem in ((RNG.integers(0, 255, (1, 2, 5, 5)).astype(np.uint8), TP.UINT8),
                    (RNG.integers(-128, 127, (1, 2, 5, 5)).astype(np.int8), TP.INT8)):
        m = model("MaxPool", {"x": x}, opset=12, out_type=elem, kernel_shape=[2, 2], pads=[1, 1, 0, 0])
        check(m, {"x": x}, ref=ort_ref(m, {"x": x}))


def test_global_pools_and_max_unpool():
    x = randn(2, 3, 4, 5)
    for op in ("GlobalAveragePool", "GlobalMaxPool"):
        check(model(op, {"x": x}, opset=13), {"x": x}, rtol=1e-5)
    for p in (2, 3):
        want = (np.abs(x) ** p).sum(axis=(2, 3), keepdims=True) ** (1 / p)
        check(model("GlobalLpPool", {"x": x}, opset=13, p=p), {"x": x}, ref=[want], rtol=1e-5)
    x = randn(1, 2, 2, 2)
    idx = np.array([[[[0, 3], [9, 15]], [[16, 18], [28, 31]]]], np.int64)
    check(model("MaxUnpool", {"x": x, "i": idx}, opset=11, kernel_shape=[2, 2], strides=[2, 2]),
          {"x": x, "i": idx})
    check(model("MaxUnpool", {"x": x, "i": idx}, opset=11, kernel_shape=[2, 2], strides=[2, 2],
                consts={"shape": np.array([1, 2, 5, 6], np.int64)}), {"x": x, "i": idx})


# --- normalizations --------------------------------------------------------------------------

def _bn_inputs(c, shape=None):
    return {"s": randn(*(shape or (c,))), "b": randn(*(shape or (c,))), "m": randn(*(shape or (c,))),
            "v": np.abs(randn(*(shape or (c,)))) + 0.5}


def _bn_spec(x, p, eps, stats=None):
    shp = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = stats if stats is not None else (p["m"], p["v"])
    return (x - mean.reshape(shp)) / np.sqrt(var.reshape(shp) + eps) * p["s"].reshape(shp) + p["b"].reshape(shp)


@pytest.mark.parametrize("opset", [7, 9, 14, 15])
def test_batch_norm_inference(opset):
    x = randn(2, 3, 4, 5)
    p = _bn_inputs(3)
    m = model("BatchNormalization", {"x": x}, opset=opset, consts=p, epsilon=1e-3)
    check(m, {"x": x}, ref=[_bn_spec(x, p, 1e-3)])


def test_batch_norm_training_outputs():
    x = randn(4, 3, 2, 5)
    p = _bn_inputs(3)
    axes = (0, 2, 3)
    bm, bv = x.mean(axis=axes), x.var(axis=axes)
    y = _bn_spec(x, p, 1e-5, (bm, bv))
    rm, rv = p["m"] * 0.8 + bm * 0.2, p["v"] * 0.8 + bv * 0.2
    # opset 14: training_mode with Y, running mean and variance (as the reference)
    m = model("BatchNormalization", {"x": x}, n_out=3, opset=15, consts=p, momentum=0.8, training_mode=1)
    check(m, {"x": x}, rtol=1e-4, atol=1e-5)
    # before 14, asking for the statistics is training: also the saved mean and variance
    m = model("BatchNormalization", {"x": x}, n_out=5, opset=9, consts=p, momentum=0.8)
    check(m, {"x": x}, ref=[y, rm, rv, bm, bv], rtol=1e-4, atol=1e-5)


def test_batch_norm_per_activation_opset7():
    x = randn(3, 2, 4)
    p = _bn_inputs(2, (2, 4))
    m = model("BatchNormalization", {"x": x}, opset=7, consts=p, spatial=0)
    want = (x - p["m"]) / np.sqrt(p["v"] + 1e-5) * p["s"] + p["b"]
    check(m, {"x": x}, ref=[want])


def test_instance_layer_group_rms_norm():
    x = randn(2, 4, 3, 5)
    c = {"s": randn(4), "b": randn(4)}
    check(model("InstanceNormalization", {"x": x}, opset=9, consts=c, epsilon=1e-3), {"x": x}, rtol=1e-4)
    for axis in (-1, 1, 0):
        shape = x.shape[axis % 4:]
        c = {"s": randn(*shape), "b": randn(*shape)}
        check(model("LayerNormalization", {"x": x}, n_out=3, opset=17, consts=c, axis=axis), {"x": x},
              rtol=1e-4, atol=1e-5)
        check(model("RMSNormalization", {"x": x}, opset=23, consts={"s": c["s"]}, axis=axis, epsilon=1e-3),
              {"x": x}, rtol=1e-4, atol=1e-5)
    check(model("LayerNormalization", {"x": x}, opset=17, consts={"s": randn(5)}), {"x": x}, rtol=1e-4)
    # GroupNormalization: scale and bias per channel from opset 21, per group before
    g = 2
    c = {"s": randn(4), "b": randn(4)}
    check(model("GroupNormalization", {"x": x}, opset=21, consts=c, num_groups=g), {"x": x},
          rtol=1e-4, atol=1e-5)
    cg = {"s": randn(g), "b": randn(g)}
    xg = x.reshape(2, g, -1)
    norm = ((xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + 1e-5)).reshape(x.shape)
    want = norm * np.repeat(cg["s"], 2).reshape(1, 4, 1, 1) + np.repeat(cg["b"], 2).reshape(1, 4, 1, 1)
    check(model("GroupNormalization", {"x": x}, opset=18, consts=cg, num_groups=g), {"x": x},
          ref=[want], rtol=1e-4, atol=1e-5)


def test_lrn_lp_normalization_mvn():
    x = randn(2, 7, 3, 3)
    for size in (3, 4, 5):
        sq = np.zeros_like(x)
        lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
        for ch in range(7):
            sq[:, ch] = (x[:, max(0, ch - lo):ch + hi + 1] ** 2).sum(1)
        want = x / (2.0 + 0.3 / size * sq) ** 0.6
        check(model("LRN", {"x": x}, opset=13, size=size, alpha=0.3, beta=0.6, bias=2.0), {"x": x},
              ref=[want], rtol=1e-5)
    for axis, p in ((-1, 2), (1, 2), (0, 1)):
        norm = np.linalg.norm(x, ord=p, axis=axis, keepdims=True) if p == 2 else \
            np.abs(x).sum(axis=axis, keepdims=True)
        check(model("LpNormalization", {"x": x}, opset=13, axis=axis, p=p), {"x": x}, ref=[x / norm])
    check(model("MeanVarianceNormalization", {"x": x}, opset=13), {"x": x}, rtol=1e-4, atol=1e-5)
    check(model("MeanVarianceNormalization", {"x": x}, opset=13, axes=[1, 3]), {"x": x}, rtol=1e-4,
          atol=1e-5)


# --- dense layers, dropout, softmax ----------------------------------------------------------

@pytest.mark.parametrize("ta,tb,cshape", [(0, 0, (4, 5)), (1, 0, (5,)), (0, 1, (4, 1)), (1, 1, ()), (0, 0, None)])
def test_gemm(ta, tb, cshape):
    a = randn(3, 4) if ta else randn(4, 3)
    b = randn(5, 3) if tb else randn(3, 5)
    inputs = {"a": a, "b": b, "c": randn(*cshape) if cshape is not None else None}
    check(model("Gemm", inputs, opset=13, transA=ta, transB=tb, alpha=0.5, beta=2.0), inputs, rtol=1e-5)
    if cshape is not None:  # C was required before opset 11
        check(model("Gemm", inputs, opset=9, transA=ta, transB=tb), inputs, rtol=1e-5)


def test_matmul_numpy_semantics():
    for sa, sb in (((3,), (3,)), ((3,), (2, 3, 4)), ((2, 1, 4, 3), (3,)), ((2, 1, 4, 3), (5, 3, 2)),
                   ((4, 3), (3, 2))):
        a, b = randn(*sa), randn(*sb)
        check(model("MatMul", {"a": a, "b": b}, opset=13), {"a": a, "b": b}, rtol=1e-5)
    a, b = RNG.integers(-5, 5, (2, 3)).astype(np.int64), RNG.integers(-5, 5, (3, 2)).astype(np.int64)
    check(model("MatMul", {"a": a, "b": b}, opset=13), {"a": a, "b": b})


def test_dropout_versions():
    x = randn(2, 3)
    # opset 7: the mask has x's type; 10: bool; 12 on: ratio and training_mode inputs
    check(model("Dropout", {"x": x}, n_out=2, opset=7, ratio=0.3), {"x": x}, ref=[x, np.ones_like(x)])
    check(model("Dropout", {"x": x}, n_out=2, opset=10, ratio=0.3), {"x": x}, ref=[x, np.ones(x.shape, bool)])
    consts = {"r": np.array(0.0, np.float32), "t": np.array(True)}
    check(model("Dropout", {"x": x}, n_out=2, opset=13, consts=consts), {"x": x})
    check(model("Dropout", {"x": x}, opset=13, consts={"r": np.array(0.4, np.float32)}), {"x": x})
    consts = {"r": np.array(0.4, np.float32), "t": np.array(True)}
    with pytest.raises(UnsupportedOnnxError, match="training mode"):
        ox.load(model("Dropout", {"x": x}, opset=13, consts=consts), check=False)


def _softmax_2d(x, axis, log=False, hard=False):
    """Softmax before opset 13: x flattened to 2-D at `axis`."""
    f = x.reshape(int(np.prod(x.shape[:axis])), -1)
    if hard:
        y = np.zeros_like(f)
        y[np.arange(f.shape[0]), f.argmax(1)] = 1
    else:
        e = np.exp(f - f.max(1, keepdims=True))
        y = e / e.sum(1, keepdims=True)
        y = np.log(y) if log else y
    return y.reshape(x.shape)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_softmax_axis_semantics(op):
    x = randn(2, 3, 4)
    x[0, 1, 2] = x[0, 1, 0]  # a tie: Hardmax picks the first
    for axis in (0, 1, 2, -1):
        check(model(op, {"x": x}, opset=13, axis=axis), {"x": x}, rtol=1e-5)
        want = _softmax_2d(x, axis % 3, log=op == "LogSoftmax", hard=op == "Hardmax")
        check(model(op, {"x": x}, opset=11, axis=axis), {"x": x}, ref=[want], rtol=1e-5)
    check(model(op, {"x": x}, opset=11), {"x": x},
          ref=[_softmax_2d(x, 1, log=op == "LogSoftmax", hard=op == "Hardmax")], rtol=1e-5)
    check(model(op, {"x": x}, opset=13), {"x": x}, rtol=1e-5)


# --- resize ----------------------------------------------------------------------------------

RESIZE_CASES = [
    ("nearest", "half_pixel", "round_prefer_floor", [1, 1, 2.0, 1.5], None),
    ("nearest", "asymmetric", "floor", [1, 1, 0.6, 0.8], None),
    ("nearest", "align_corners", "round_prefer_ceil", None, [1, 2, 7, 3]),
    ("nearest", "tf_half_pixel_for_nn", "ceil", [1, 1, 1.7, 2.5], None),
    ("linear", "half_pixel", None, [1, 1, 2.0, 0.5], None),
    ("linear", "pytorch_half_pixel", None, None, [1, 2, 1, 9]),
    ("linear", "align_corners", None, [1, 1, 1.5, 2.0], None),
    ("linear", "half_pixel_symmetric", None, [1, 1, 0.7, 1.3], None),
    ("cubic", "half_pixel", None, [1, 1, 1.6, 0.75], None),
    ("cubic", "asymmetric", None, None, [1, 2, 9, 3]),
]


@pytest.mark.parametrize("mode,ctm,nearest,scales,sizes", RESIZE_CASES)
def test_resize(mode, ctm, nearest, scales, sizes):
    x = randn(1, 2, 4, 5)
    consts = {"roi": np.array([], np.float32),
              "scales": np.array(scales if scales else [], np.float32)}
    if sizes:
        consts["sizes"] = np.array(sizes, np.int64)
    kw = {"nearest_mode": nearest} if nearest else {}
    old = ctm == "tf_half_pixel_for_nn"  # (opsets 11 and 12 only; onnx's reference lacks it)
    m = model("Resize", {"x": x}, opset=11 if old else 19, consts=consts, mode=mode, out_type=TP.FLOAT,
              coordinate_transformation_mode=ctm, **kw)
    check(m, {"x": x}, rtol=1e-4, atol=1e-5, ref=ort_ref(m, {"x": x}) if old else None)


def test_resize_axes_antialias_aspect_and_crop():
    x = randn(1, 2, 6, 8)
    base = {"roi": np.array([], np.float32)}
    for mode in ("linear", "cubic"):  # antialias when downsampling, exclude_outside
        m = model("Resize", {"x": x}, opset=19, consts={**base, "scales": np.array([1, 1, 0.5, 0.35], np.float32)},
                  mode=mode, antialias=1, exclude_outside=1)
        check(m, {"x": x}, rtol=1e-4, atol=1e-5)
    for policy in ("not_larger", "not_smaller"):
        m = model("Resize", {"x": x}, opset=19, consts={**base, "scales": np.array([], np.float32),
                                                        "sizes": np.array([4, 11], np.int64)},
                  mode="linear", axes=[3, 2], keep_aspect_ratio_policy=policy)
        check(m, {"x": x}, rtol=1e-4, atol=1e-5)
    roi = np.array([0.2, -0.3, 0.9, 1.2], np.float32)  # partly outside: extrapolation_value
    m = model("Resize", {"x": x}, opset=19, consts={"roi": roi, "scales": np.array([], np.float32),
                                                    "sizes": np.array([5, 7], np.int64)},
              mode="linear", axes=[2, 3], coordinate_transformation_mode="tf_crop_and_resize",
              extrapolation_value=-3.0)
    check(m, {"x": x}, rtol=1e-4, atol=1e-5)


def test_resize_integer_input_rounds_back():
    x = RNG.integers(0, 255, (1, 1, 3, 4)).astype(np.uint8)
    consts = {"roi": np.array([], np.float32), "scales": np.array([1, 1, 1.5, 1.7], np.float32)}
    for mode in ("nearest", "linear"):
        check(model("Resize", {"x": x}, opset=19, consts=consts, mode=mode), {"x": x}, atol=1)


def test_resize_opset10_and_upsample_follow_onnxruntime():
    # no coordinate mode before 11: x = o / scale, nearest floors up and ceils down
    x = randn(1, 2, 5, 4)
    for mode, scales in (("nearest", [1, 1, 0.6, 2.5]), ("linear", [1, 1, 2.0, 1.5]), ("nearest", [1, 1, 3, 2])):
        m = model("Resize", {"x": x}, opset=10, consts={"scales": np.array(scales, np.float32)}, mode=mode,
                  out_type=TP.FLOAT)
        check(m, {"x": x}, ref=ort_ref(m, {"x": x}), rtol=1e-5)
    for mode in ("nearest", "linear"):
        m = model("Upsample", {"x": x}, opset=9, consts={"scales": np.array([1, 1, 2, 1.5], np.float32)},
                  mode=mode, out_type=TP.FLOAT)
        check(m, {"x": x}, ref=ort_ref(m, {"x": x}), rtol=1e-5)
    m = model("Upsample", {"x": x}, opset=7, scales=[1.0, 1.0, 3.0, 2.0], mode="nearest")
    check(m, {"x": x}, ref=[x.repeat(3, axis=2).repeat(2, axis=3)])


# --- a small CNN compiled for the CPU backend ------------------------------------------------

def test_small_cnn_on_cpu_backend():
    """Conv, BatchNormalization, MaxPool, AveragePool, Gemm and Softmax at opset 9, as
    the model zoo's CNNs spell them, compiled natively."""
    rng = np.random.default_rng(3)
    w = {"w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3,
         "b1": rng.standard_normal(4).astype(np.float32),
         "s": np.float32(1) + 0.1 * rng.standard_normal(4).astype(np.float32),
         "bb": rng.standard_normal(4).astype(np.float32), "mu": rng.standard_normal(4).astype(np.float32),
         "var": np.abs(rng.standard_normal(4)).astype(np.float32) + 0.5,
         "wf": rng.standard_normal((5, 16)).astype(np.float32) * 0.3, "bf": rng.standard_normal(5).astype(np.float32),
         "shape": np.array([1, -1], np.int64)}
    nodes = [oh.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             oh.make_node("BatchNormalization", ["c", "s", "bb", "mu", "var"], ["n"], epsilon=1e-5),
             oh.make_node("Relu", ["n"], ["r"]),
             oh.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             oh.make_node("AveragePool", ["p"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             oh.make_node("Reshape", ["a", "shape"], ["f"]),
             oh.make_node("Gemm", ["f", "wf", "bf"], ["g"], transB=1),
             oh.make_node("Softmax", ["g"], ["y"])]
    g = oh.make_graph(nodes, "cnn", [oh.make_tensor_value_info("x", TP.FLOAT, [1, 3, 13, 13])],
                      [oh.make_tensor_value_info("y", TP.FLOAT, [1, 5])],
                      [numpy_helper.from_array(np.asarray(v), k) for k, v in w.items()])
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 9)])
    m.ir_version = 8
    x = rng.standard_normal((1, 3, 13, 13)).astype(np.float32)
    sess = pytest.importorskip("onnxruntime").InferenceSession(m.SerializeToString(),
                                                              providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    imported = ox.load(m)
    np.testing.assert_allclose(imported.compile("cpu")(x)[0], want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(imported(x)[0], want, rtol=1e-4, atol=1e-6)
