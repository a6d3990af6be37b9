"""ONNX import of the elementwise ops (onnx/ops/elementwise.py) and of Cast/CastLike, and
the IR primitives they brought (atan, idiv, rem).

Each model is compared with onnx's ReferenceEvaluator on irgrad's interpreter; one model
per family (many nodes) is also compiled on the CPU backend. Integers are drawn over
their whole range (extremes, zero divisors), so the narrow and unsigned types, which are
computed widened, must wrap and order as ONNX's do; casts to float16/bfloat16 are checked
bit for bit at every rounding boundary.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as TP  # noqa: E402
from onnx import helper as oh  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import irgrad as ig  # noqa: E402
import irgrad.onnx as ox  # noqa: E402
from irgrad.ir.types import DType  # noqa: E402

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
RNG = np.random.default_rng(11)
INF, NAN = np.inf, np.nan
INT_TYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]


def elem(dt) -> int:
    return oh.np_dtype_to_tensor_dtype(np.dtype(dt))


def model(nodes, inputs: dict, opset: int = 18, consts=None, ml: bool = False):
    """A model of `nodes` (op, [input names], [output names], attrs) on graph `inputs`
    (name -> array) and initializers `consts`; its outputs are every node's outputs."""
    consts = consts or {}
    protos = [oh.make_node(op, ins, outs, domain="ai.onnx.ml" if op == "Binarizer" else "",
                           **attrs) for op, ins, outs, attrs in nodes]
    vis = [oh.make_tensor_value_info(n, elem(a.dtype), a.shape) for n, a in inputs.items()]
    outs = [oh.make_tensor_value_info(o, TP.UNDEFINED, None) for n in protos for o in n.output]
    inits = [numpy_helper.from_array(np.asarray(a), n) for n, a in consts.items()]
    opsets = [oh.make_opsetid("", opset)] + ([oh.make_opsetid("ai.onnx.ml", 1)] if ml else [])
    m = oh.make_model(oh.make_graph(protos, "g", vis, outs, inits), opset_imports=opsets)
    m.ir_version = 10
    return m


def one(op, inputs: dict, opset: int = 18, consts=None, **attrs):
    names = list(inputs) + list(consts or {})
    return model([(op, names, ["y"], attrs)], inputs, opset, consts, ml=op == "Binarizer")


def run(m, inputs: dict, backend: str = "numpy"):
    with np.errstate(all="ignore"):
        return ox.load(m, check=False).compile(backend)(*inputs.values())


def reference(m, inputs: dict):
    with np.errstate(all="ignore"):
        return [np.asarray(r) for r in ReferenceEvaluator(m).run(None, inputs)]


def check(m, inputs: dict, rtol=1e-6, atol=0.0, backend="numpy", want=None):
    want = reference(m, inputs) if want is None else want
    got = run(m, inputs, backend)
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == w.dtype, (k, g.shape, g.dtype, w.shape, w.dtype)
        if w.dtype.kind in "fc" or w.dtype == BF16:
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol,
                                       atol=atol, equal_nan=True, err_msg=f"output {k}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"output {k}")
    return got


def ints(dt, n=64):
    """n values of an integer type over its whole range, its extremes and small ones first."""
    info = np.iinfo(dt)
    edge = [v for v in (info.min, info.min + 1, -2, -1, 0, 1, 2, 3, 7, info.max - 1, info.max)
            if info.min <= v <= info.max]
    rnd = RNG.integers(info.min, info.max, n - len(edge), dtype=dt, endpoint=True)
    return np.concatenate([np.array(edge, dt), rnd])


# --- unary float ops ------------------------------------------------------------------------------

WIDE = np.concatenate([np.linspace(-30, 30, 41), [-1e6, -100, -0.5, -1e-7, 0, 1e-7, 0.5, 100,
                                                    1e6, 1e30, -1e30, INF, -INF, NAN]])
UNIT = np.concatenate([np.linspace(-1, 1, 41), [1e-7, -1e-7, 0.9999, -0.9999, 1.5, -1.5, NAN]])
POS = np.array([0, 1e-30, 1e-8, 1e-3, 0.5, 1, 1.0001, 1.5, 2, 10, 1e5, 1e30, INF, -1, NAN])
GE1 = np.array([1, 1.0001, 1.01, 1.5, 2, 10, 1e3, 3e8, 1e20, 1e30, INF, 0.5, NAN])
UNARY = {"Exp": np.linspace(-100, 100, 41), "Log": POS, "Sqrt": POS, "Reciprocal": WIDE,
         "Sin": WIDE[:-5], "Cos": WIDE[:-5], "Tan": np.linspace(-1.5, 1.5, 31), "Tanh": WIDE,
         "Asin": UNIT, "Acos": UNIT, "Atan": WIDE, "Sinh": np.linspace(-95, 95, 39),
         "Cosh": np.linspace(-95, 95, 39), "Asinh": WIDE, "Acosh": GE1, "Atanh": UNIT,
         "Erf": WIDE, "Floor": WIDE, "Ceil": WIDE, "Round": np.arange(-4, 4.5, 0.25),
         "Sign": WIDE, "Abs": WIDE, "Neg": WIDE, "Relu": WIDE, "IsNaN": WIDE, "IsInf": WIDE,
         "Sigmoid": WIDE, "Softplus": WIDE, "Softsign": WIDE, "HardSwish": WIDE,
         "HardSigmoid": WIDE, "Elu": WIDE, "Selu": WIDE, "Celu": WIDE, "LeakyRelu": WIDE,
         "ThresholdedRelu": WIDE, "Mish": np.linspace(-30, 30, 41), "Gelu": WIDE,
         "Shrink": WIDE}
SMALL = {"Sinh": np.array([1e-6, -1e-4, 0.01, -0.3, 0.9]), "Asinh": np.array([1e-6, -1e-4, 0.01]),
         "Atanh": np.array([1e-6, -1e-4, 0.01]), "Tan": np.array([1e-6, 1.5707, -1.5707])}


def _unary_model(dt, opset=20):
    inputs = {f"x_{op}": np.concatenate([v, SMALL.get(op, [])]).astype(dt)
              for op, v in UNARY.items()}
    nodes = [(op, [f"x_{op}"], [f"y_{op}"], {}) for op in UNARY]
    return model(nodes, inputs, opset), inputs


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_unary_ops_match_the_reference(dt):
    m, inputs = _unary_model(dt)
    want = reference(m, inputs)
    if dt == np.float64:  # the reference computes Erf (and Gelu) in float32, HardSwish's 1/6 too
        erf, at = np.vectorize(math.erf), list(UNARY).index
        x, g, h = inputs["x_Erf"], inputs["x_Gelu"], inputs["x_HardSwish"]
        with np.errstate(all="ignore"):
            want[at("Erf")] = erf(x)
            want[at("Gelu")] = g * 0.5 * (1 + erf(g / np.sqrt(2)))
            want[at("HardSwish")] = h * np.clip(h / 6 + 0.5, 0, 1)
    tol = 2e-6 if dt == np.float32 else 1e-13  # a few ulps: the formulas are not numpy's
    check(m, inputs, rtol=tol, atol=1e-300 if dt == np.float64 else 1e-38, want=want)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_unary_ops_on_the_cpu_backend(dt):
    m, inputs = _unary_model(dt)
    check(m, inputs, rtol=2e-6 if dt == np.float32 else 1e-13, atol=1e-37, backend="cpu",
          want=run(m, inputs))


@pytest.mark.parametrize("op, attrs, opset", [
    ("LeakyRelu", {"alpha": 0.3}, 16), ("Elu", {"alpha": 0.5}, 7),
    ("Selu", {"alpha": 2.0, "gamma": 0.5}, 7),
    ("Celu", {"alpha": 2.5}, 12), ("HardSigmoid", {"alpha": 0.4, "beta": 0.3}, 7),
    ("ThresholdedRelu", {"alpha": -0.5}, 10), ("Gelu", {"approximate": "tanh"}, 20),
    ("Shrink", {"lambd": 1.5, "bias": 0.25}, 9), ("Swish", {"alpha": 0.7}, 24),
    ("IsInf", {"detect_negative": 0}, 10), ("IsInf", {"detect_positive": 0}, 20),
    ("IsInf", {"detect_positive": 0, "detect_negative": 0}, 20)])
def test_activation_attributes(op, attrs, opset):
    x = WIDE.astype(np.float32)
    check(one(op, {"x": x}, opset, **attrs), {"x": x}, rtol=2e-6)


@pytest.mark.parametrize("dt", [np.int8, np.int32, np.int64, np.uint8])
def test_integer_unary_ops(dt):
    # Abs(-128) is -128 in int8, Neg wraps, Shrink truncates its float result back
    x = ints(dt)
    ops = ["Abs", "Sign", "Shrink"] + (["Neg", "Relu"] if np.iinfo(dt).min < 0 else [])
    nodes = [(op, ["x"], [f"y_{op}"], {"lambd": 3.0, "bias": 1.5} if op == "Shrink" else {})
             for op in ops]
    check(model(nodes, {"x": x}, 18), {"x": x})


def test_prelu_broadcasts_its_slope():
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    for slope in (np.array([0.1, -0.2, 0.3, 2.0], np.float32), np.float32([[0.5], [1.5], [-1.0]])):
        check(one("PRelu", {"x": x, "s": slope}, 16), {"x": x, "s": slope})
    xi = ints(np.int32).reshape(8, 8)
    si = np.arange(-4, 4, dtype=np.int32)
    check(one("PRelu", {"x": xi, "s": si}, 16), {"x": xi, "s": si})


def test_binarizer_in_the_ml_domain():
    x = WIDE[:-1].astype(np.float32)
    check(one("Binarizer", {"x": x}, threshold=0.5), {"x": x})
    xi = np.arange(-3, 4, dtype=np.int64)
    check(one("Binarizer", {"x": xi}, threshold=0.5), {"x": xi})


# --- arithmetic, comparisons and bits on every integer type ---------------------------------------

BINARY_INT = ["Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Greater", "Less",
              "GreaterOrEqual", "LessOrEqual", "BitwiseAnd", "BitwiseOr", "BitwiseXor"]


def _int_pairs(dt):
    e = ints(dt, 12)[:12]
    a, b = np.meshgrid(e, e)  # every pair of extremes (MIN / -1, x / 0) ...
    return (np.concatenate([a.ravel(), ints(dt, 80)]),  # ... and random pairs
            np.concatenate([b.ravel(), ints(dt, 80)[::-1]]))


def _int_model(dt):
    a, b = _int_pairs(dt)
    nodes = [(op, ["a", "b"], [f"y_{op}"], {}) for op in BINARY_INT]
    nodes += [("Mod", ["a", "b"], ["y_mod"], {}), ("Mod", ["a", "b"], ["y_fmod"], {"fmod": 1}),
              ("Max", ["a", "b", "a"], ["y_max3"], {}), ("BitwiseNot", ["a"], ["y_not"], {}),
              ("Where", ["y_Less", "a", "b"], ["y_where"], {}),
              ("Sign", ["a"], ["y_sign"], {}), ("Abs", ["a"], ["y_abs"], {})]
    return model(nodes, {"a": a, "b": b}, 18), {"a": a, "b": b}


@pytest.mark.parametrize("dt", INT_TYPES, ids=lambda d: np.dtype(d).name)
def test_integer_binary_ops_over_the_whole_range(dt):
    m, inputs = _int_model(dt)
    check(m, inputs)


@pytest.mark.parametrize("dt", [np.uint8, np.int64, np.uint64], ids=lambda d: np.dtype(d).name)
def test_integer_binary_ops_on_the_cpu_backend(dt):
    m, inputs = _int_model(dt)
    check(m, inputs, backend="cpu")


def test_narrow_results_wrap_before_the_next_op():
    # uint8: 200 + 100 = 44, which is not > 50; int8: 100 * 3 = 44, and 44 / -1 = -44
    a, b = np.array([200, 100, 255], np.uint8), np.array([100, 100, 1], np.uint8)
    nodes = [("Add", ["a", "b"], ["s"], {}), ("Greater", ["s", "c"], ["y"], {})]
    check(model(nodes, {"a": a, "b": b}, consts={"c": np.array([50], np.uint8)}), {"a": a, "b": b})
    x = np.array([100, -100, 127, -128], np.int8)
    nodes = [("Mul", ["x", "t"], ["p"], {}), ("Div", ["p", "m"], ["y"], {})]
    consts = {"t": np.array([3], np.int8), "m": np.array([-1], np.int8)}
    check(model(nodes, {"x": x}, consts=consts), {"x": x})


@pytest.mark.parametrize("dt, opset", [(d, o) for o in (11, 28) for d in INT_TYPES
                                       if o == 28 or np.iinfo(d).min == 0],
                         ids=lambda v: np.dtype(v).name if not isinstance(v, int) else f"opset{v}")
def test_bitshift(dt, opset):
    # opset 28 defines signed types (arithmetic right shifts) and every amount (out of
    # [0, width): only the sign fill remains); opset 11 has unsigned types only
    bits = np.iinfo(dt).bits
    lo, hi = (0, bits - 1) if opset == 11 else (-3, bits + 3)
    n = np.arange(lo, hi + 1)
    x, amt = np.meshgrid(ints(dt, 16), n)
    x, amt = x.ravel().astype(dt), amt.ravel().astype(dt)
    for direction in ("LEFT", "RIGHT"):
        check(one("BitShift", {"x": x, "n": amt}, opset, direction=direction), {"x": x, "n": amt})


def test_uint64_above_2_63_is_unsigned():
    a = np.array([2 ** 64 - 1, 2 ** 63, 2 ** 63 + 5, 10, 2 ** 64 - 2, 7, 0], np.uint64)
    b = np.array([3, 2 ** 63 + 1, 2 ** 63, 2 ** 63, 2 ** 64 - 1, 0, 2 ** 64 - 1], np.uint64)
    nodes = [(op, ["a", "b"], [f"y_{op}"], {}) for op in ("Div", "Mod", "Max", "Min", "Less",
                                                          "GreaterOrEqual")]
    nodes += [("Cast", ["a"], ["f"], {"to": TP.DOUBLE}), ("Cast", ["f"], ["u"], {"to": TP.UINT64}),
              ("Cast", ["a"], ["f32"], {"to": TP.FLOAT}), ("Sign", ["a"], ["s"], {}),
              ("Clip", ["a", "lo", "hi"], ["c"], {})]
    consts = {"lo": np.uint64(2 ** 63), "hi": np.uint64(2 ** 64 - 2)}
    for backend in ("numpy", "cpu"):
        check(model(nodes, {"a": a, "b": b}, consts=consts), {"a": a, "b": b}, backend=backend)


# --- float arithmetic -----------------------------------------------------------------------------

SPECIAL = np.array([0.0, -0.0, 1.5, -1.5, 2.0, -3.25, 7.0, 1e30, -1e-30, INF, -INF, NAN])


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_float_binary_ops_with_special_values(dt):
    a, b = (v.ravel().astype(dt) for v in np.meshgrid(SPECIAL, SPECIAL))
    ops = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Equal", "Less",
           "Greater"]
    nodes = [(op, ["a", "b"], [f"y_{op}"], {}) for op in ops]
    nodes += [("Mod", ["a", "b"], ["y_mod"], {}), ("Mod", ["a", "b"], ["y_fmod"], {"fmod": 1})]
    m = model(nodes, {"a": a, "b": b}, 28)
    with np.errstate(all="ignore"):
        mods = np.mod(a, b), np.fmod(a, b)
    for backend in ("numpy", "cpu"):
        got = check(m, {"a": a, "b": b}, backend=backend)
        # fmod = 0 gives a zero result b's sign, fmod = 1 a's (numpy's mod and fmod)
        for g, w in zip(got[-2:], mods):
            np.testing.assert_array_equal(np.signbit(g[w == 0]), np.signbit(w[w == 0]))


def test_variadic_ops_broadcast():
    x, y, z = (RNG.standard_normal(s).astype(np.float32) for s in ((2, 1, 4), (3, 1), (4,)))
    x[0, 0, 0] = NAN  # Max and Min propagate NaN, as numpy's
    for op in ("Max", "Min", "Sum", "Mean"):
        for ins in (["x"], ["x", "y"], ["x", "y", "z"]):
            feeds = {k: v for k, v in (("x", x), ("y", y), ("z", z)) if k in ins}
            # (the reference's Mean cannot broadcast into its first input)
            mean = sum(np.broadcast_arrays(*feeds.values())) / len(feeds)
            check(one(op, feeds, 13), feeds, want=[mean] if op == "Mean" else None)


@pytest.mark.parametrize("a_dt, b_dt, opset", [
    (np.float32, np.float32, 7), (np.float64, np.float64, 13), (np.float32, np.int64, 15),
    (np.float32, np.int32, 15), (np.int64, np.float32, 15), (np.int32, np.int32, 15),
    (np.int64, np.int64, 15), (np.float64, np.float32, 15)])
def test_pow_types(a_dt, b_dt, opset):
    # opset 12 on, the exponent's type may differ from the base's (the result's)
    a = np.array([[1, 2, -3, 4], [0, 5, -2, 9]], a_dt)
    b = np.array([4, 3, 2, 0.5 if np.issubdtype(b_dt, np.floating) else 1], b_dt)
    check(one("Pow", {"a": a, "b": b}, opset), {"a": a, "b": b})


def test_logic_and_where_broadcast():
    p = RNG.random((2, 3, 1)) < 0.5
    q = RNG.random((4,)) < 0.5
    nodes = [(op, ["p", "q"], [f"y_{op}"], {}) for op in ("And", "Or", "Xor", "Equal")]
    nodes += [("Not", ["p"], ["n"], {}), ("Where", ["q", "u", "v"], ["w"], {}),
              ("Where", ["p", "q", "n"], ["wb"], {})]
    u = np.arange(12, dtype=np.uint8).reshape(3, 4)
    v = np.array([255], np.uint8)
    check(model(nodes, {"p": p, "q": q, "u": u, "v": v}), {"p": p, "q": q, "u": u, "v": v})


# --- Clip -----------------------------------------------------------------------------------------

def test_clip_bounds_are_attributes_before_opset_11_and_inputs_after():
    x = WIDE.astype(np.float32)
    for attrs in ({"min": -2.0, "max": 3.0}, {"min": 0.5}, {"max": -1.0}, {}):
        check(one("Clip", {"x": x}, 10, **attrs), {"x": x})
    lo, hi = np.array(-2.0, np.float32), np.array(3.0, np.float32)
    check(one("Clip", {"x": x}, 13, consts={"lo": lo, "hi": hi}), {"x": x})
    check(one("Clip", {"x": x}, 11, consts={"lo": hi, "hi": lo}), {"x": x})  # min > max: max
    m = model([("Clip", ["x", "", "hi"], ["y"], {})], {"x": x}, 13, consts={"hi": hi})
    check(m, {"x": x})
    xi = ints(np.int8)
    check(one("Clip", {"x": xi}, 13, consts={"lo": np.int8(-5), "hi": np.int8(100)}), {"x": xi})


def test_clip_bounds_as_scalar_graph_inputs():
    x = WIDE.astype(np.float32)
    feeds = {"x": x, "lo": np.array(-2.0, np.float32), "hi": np.array(3.0, np.float32)}
    check(one("Clip", feeds, 13), feeds)


# --- Cast -----------------------------------------------------------------------------------------

SUPPORTED = [np.bool_, *INT_TYPES, np.float16, BF16, np.float32, np.float64]


def _cast_source(src, dst):
    """Values of `src` whose cast to `dst` ONNX defines: every integer (they wrap), floats
    in dst's range when it is an integer type (truncated toward zero)."""
    src, dst = np.dtype(src), np.dtype(dst)
    if src == np.bool_:
        return np.array([True, False, True])
    if src.kind in "iu":
        return ints(src, 40)
    if dst.kind in "iu":
        info = np.iinfo(dst)
        lo, end = float(info.min), 2.0 ** (info.bits - (info.min < 0))  # [lo, end): exact
        top = 6e4 if src == np.float16 else 1e30
        v = np.concatenate([[0.0, -0.0, 0.5, -0.5, 1.9, -1.9, -2.7, 100.25, max(lo, -top),
                             min(end, top) * 0.999], RNG.uniform(max(lo, -300), 300, 20)])
        v = v.astype(src)
        return v[(v.astype(np.float64) >= lo) & (v.astype(np.float64) < end)]
    v = np.concatenate([SPECIAL, RNG.standard_normal(10) * 1e3,
                        [65519.0, 65520.0, 1e-6, -3e-8, 1e-40, 3.4e38]])
    with np.errstate(over="ignore"):
        return v.astype(src)


@pytest.mark.parametrize("src", SUPPORTED, ids=lambda d: np.dtype(d).name)
def test_cast_of_computed_tensors_to_every_type(src):
    for dst in SUPPORTED:
        x = _cast_source(src, dst)
        check(one("Cast", {"x": x}, 21, to=elem(dst)), {"x": x}, rtol=0)
        if dst in (np.float16, np.int8, np.bool_):  # CastLike takes the type of its input 1
            feeds = {"x": x, "like": np.zeros(1, dst)}
            check(one("CastLike", feeds, 21), feeds, rtol=0)


def _halfway_values():
    """Every float16 (and bfloat16) value's neighbours: the midpoints to the next one
    (ties go to even), one float32 step either side of them, both signs, subnormals,
    the overflow threshold, infinities and NaN."""
    out = []
    for dt, top in ((np.float16, 0x7C00), (BF16, 0x7F80)):
        h = np.arange(0, top, dtype=np.uint16).view(dt).astype(np.float64)
        if dt == BF16:
            h = h[::37]
        mid = ((h[:-1] + h[1:]) / 2).astype(np.float32)
        out += [h.astype(np.float32), mid, np.nextafter(mid, np.float32(0)),
                np.nextafter(mid, np.float32(INF))]
    v = np.concatenate(out + [RNG.standard_normal(2000).astype(np.float32) *
                              np.float32(2.0) ** RNG.integers(-40, 40, 2000).astype(np.float32),
                              np.float32([65504, 65519.99, 65520, 7e4, 3.4e38, INF, NAN, 1e-45])])
    return np.concatenate([v, -v])


@pytest.mark.parametrize("src", [np.float32, np.float64, np.int64])
def test_cast_to_float16_and_bfloat16_rounds_to_nearest_even(src):
    x = _halfway_values()
    x = x.astype(src) if src != np.int64 else np.round(x[np.abs(x) < 2.0 ** 62]).astype(np.int64)
    if src == np.float64:  # exact float64 midpoints and their float64 neighbours too
        x = np.concatenate([x, np.nextafter(x, INF), np.nextafter(x, -INF)])
    # the outputs, and the rounded values as the next op sees them (cast back to float)
    nodes = [("Cast", ["x"], ["h"], {"to": TP.FLOAT16}), ("Cast", ["h"], ["hf"], {"to": TP.FLOAT}),
             ("Cast", ["x"], ["b"], {"to": TP.BFLOAT16}), ("Cast", ["b"], ["bf"], {"to": TP.FLOAT})]
    m = model(nodes, {"x": x}, 21)
    with np.errstate(all="ignore"):
        xf = x.astype(np.float64) if src == np.int64 else x
        h, b = xf.astype(np.float16), xf.astype(BF16)
    want = [h, h.astype(np.float32), b, b.astype(np.float32)]
    for backend in ("numpy", "cpu"):
        for g, w in zip(run(m, {"x": x}, backend), want):
            assert g.dtype == w.dtype
            bits = np.uint16 if w.itemsize == 2 else np.uint32
            same = (g.view(bits) == w.view(bits)) | (np.isnan(g) & np.isnan(w))
            assert same.all(), (backend, x[~same][:5], g[~same][:5], w[~same][:5])


def test_cast_of_a_constant_is_evaluated_at_import():
    x = numpy_helper.from_array(np.array([1.5, -2.7, 65520.0, 300.0], np.float32))
    m = model([("Constant", [], ["c"], {"value": x}), ("Cast", ["c"], ["y"], {"to": TP.INT8}),
               ("Cast", ["c"], ["h"], {"to": TP.FLOAT16})], {}, 21)
    fm = ox.load(m, check=False)
    assert not [op for op in fm.ir.ops if op.opname == "cast"]  # evaluated at import
    check(m, {})


# --- the primitives: atan, idiv, rem --------------------------------------------------------------

def _c_div(a, b):
    """C's integer a / b and a % b by Python's integers (0 for b = 0, MIN / -1 wraps)."""
    q = [0 if y == 0 else (abs(x) // abs(y)) * (1 if (x < 0) == (y < 0) else -1)
         for x, y in zip(a.tolist(), b.tolist())]
    r = [0 if y == 0 else x - qq * y for x, y, qq in zip(a.tolist(), b.tolist(), q)]
    bits = a.dtype.itemsize * 8
    wrap = lambda v: (v + 2 ** (bits - 1)) % 2 ** bits - 2 ** (bits - 1)  # noqa: E731
    return np.array([wrap(v) for v in q], a.dtype), np.array([wrap(v) for v in r], a.dtype)


@pytest.mark.parametrize("dt", [DType.i32, DType.i64], ids=str)
def test_idiv_and_rem_are_c_division_everywhere(dt):
    a, b = _int_pairs(dt.np)
    f = ig.trace(lambda x, y: [ig.primitive("idiv", x, y), ig.primitive("rem", x, y)],
                 ig.TensorSpec(dt, a.shape), ig.TensorSpec(dt, b.shape))
    want = _c_div(a, b)
    for backend in ("numpy", "cpu"):
        got = ig.compile(f, backend=backend)(a, b)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w, err_msg=backend)


@pytest.mark.parametrize("dt", [DType.f32, DType.f64], ids=str)
def test_atan_and_float_rem(dt):
    x = np.concatenate([WIDE, -WIDE]).astype(dt.np)
    y = np.concatenate([WIDE[::-1], WIDE]).astype(dt.np)
    f = ig.trace(lambda a, b: [ig.primitive("atan", a), ig.primitive("rem", a, b)],
                 ig.TensorSpec(dt, x.shape), ig.TensorSpec(dt, y.shape))
    with np.errstate(all="ignore"):
        want = [np.arctan(x), np.fmod(x, y)]
    for backend in ("numpy", "cpu"):
        for g, w in zip(ig.compile(f, backend=backend)(x, y), want):
            np.testing.assert_allclose(g, w, rtol=4e-7 if dt is DType.f32 else 1e-15,
                                       equal_nan=True)


def test_atan_and_rem_gradients():
    # d atan x = 1 / (1 + x^2); d rem(a, b) = da - trunc(a / b) db
    x = np.array([-3.0, -0.5, 0.0, 0.7, 4.0])
    b = np.array([1.3, -2.1, 0.9, 0.3, -1.7])
    f = ig.trace(lambda u, v: ig.sum(ig.primitive("atan", u) * ig.primitive("rem", u * 3.1, v)),
                 ig.TensorSpec(DType.f64, (5,)), ig.TensorSpec(DType.f64, (5,)))
    ig.check_grads(f, [x, b], order=2, modes=("fwd", "rev"))
    g = ig.grad(ig.trace(lambda u, v: ig.sum(ig.primitive("rem", u, v)),
                         ig.TensorSpec(DType.f64, (5,)), ig.TensorSpec(DType.f64, (5,))),
                argnums=(0, 1))
    da, db = g(3.1 * x, b)
    np.testing.assert_allclose(da, np.ones(5))
    np.testing.assert_allclose(db, -np.trunc(3.1 * x / b))
