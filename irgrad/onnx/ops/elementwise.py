"""Elementwise ops: unary math and activations, arithmetic, comparisons, logic and bits.

Binary and variadic ops broadcast as numpy does (the DSL's binary ops do). Integer
semantics are C's, as ONNX's: Div truncates toward zero (the IR's `idiv`), Mod's fmod=1
is C's remainder (`rem`), fmod=0 takes the divisor's sign; a division by zero gives 0
(undefined in ONNX; native code never traps). Narrow integers are computed in a wider
dtype (onnx/dtypes.py), so a result that can leave the type's range (Add, Mul, Neg,
BitShift, BitwiseNot, ...) is wrapped back to its bits at once: the next op sees what
ONNX's would. uint64 lives in i64 by its bits: comparisons, Max/Min, Div and Mod read
them unsigned.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ...frontend import library as L
from ...frontend.tensor import Tensor, binary, broadcast_shapes, broadcast_to
from ...ir.types import DType
from .. import dtypes
from . import onnx_op
from .core import wrap_int

UNSIGNED = {dtypes.UINT8, dtypes.UINT16, dtypes.UINT32, dtypes.UINT64}
LN2 = math.log(2.0)
INF = float("inf")


def _fattr(node, name: str, default: float) -> float:
    # ONNX float attributes are float32: defaults too (0.2 is 0.200000003)
    return float(np.float32(node.attr(name, default)))


def _wrap(t: Tensor, elem: int) -> Tensor:
    """t wrapped to elem's bits where elem is narrower than the dtype computing it."""
    return wrap_int(t, elem) if elem in dtypes.INT_BITS else t


def _float_input(node, i: int = 0) -> Tensor:
    x = node.tensor(i)
    if not x.dtype.is_float:
        raise node.fail(f"needs a floating-point input, got {dtypes.name(node.elem(i))}")
    return x


def unary_op(*names, since: int = 1, floats: bool = True):
    """Register fn(x, node) -> result for ops of one input."""
    def deco(fn):
        def handler(node):
            return fn(_float_input(node) if floats else node.tensor(0), node)
        onnx_op(*names, since=since)(handler)
        return fn
    return deco


# --- unary math -----------------------------------------------------------------------------------

for _name, _fn in (("Exp", L.exp), ("Log", L.log), ("Sqrt", L.sqrt), ("Sin", L.sin),
                   ("Cos", L.cos), ("Tanh", L.tanh), ("Erf", L.erf), ("Floor", L.floor),
                   ("Ceil", L.ceil), ("Round", L.round), ("Sigmoid", L.sigmoid),
                   ("Softplus", L.softplus)):  # Round: halves to even, as ONNX's
    unary_op(_name)(lambda x, node, fn=_fn: fn(x))


@unary_op("Neg", floats=False)
def neg(x, node):
    return _wrap(-x, node.elem(0))  # -(-128) is -128 in int8


@unary_op("Abs", floats=False)
def abs_(x, node):
    if node.elem(0) in UNSIGNED:
        return x
    return _wrap(L.abs(x), node.elem(0))


@unary_op("Sign", floats=False)
def sign(x, node):
    if node.elem(0) in UNSIGNED:  # a uint64 above 2^63 is negative as an i64
        return (x != 0).astype(x.dtype)
    return L.sign(x)


@unary_op("Relu", floats=False)
def relu(x, node):
    return L.relu(x)


@unary_op("Reciprocal")
def reciprocal(x, node):
    return 1.0 / x


@unary_op("Tan")
def tan(x, node):
    return L.sin(x) / L.cos(x)


def atan(x: Tensor) -> Tensor:
    return L.primitive("atan", x)


@unary_op("Atan")
def atan_(x, node):
    return atan(x)


@unary_op("Asin")
def asin(x, node):
    # asin x = atan(x / sqrt(1 - x^2)), with 1 - x^2 = (1 - x)(1 + x) (exact near |x| = 1);
    # at x = +-1 the quotient is +-inf and atan gives +-pi/2; |x| > 1 gives NaN
    return atan(x / L.sqrt((1.0 - x) * (1.0 + x)))


@unary_op("Acos")
def acos(x, node):
    # acos x = 2 atan(sqrt((1 - x) / (1 + x))): accurate near x = 1, and pi at x = -1
    return 2.0 * atan(L.sqrt((1.0 - x) / (1.0 + x)))


# Beyond 2^28, 1/x^2 is below either float's precision in asinh/acosh (log(2x) + 1/(4x^2)),
# and x^2 would overflow float32 from 2^64 on: there they are log(x) + log 2.
_BIG = 2.0 ** 28


@unary_op("Sinh")
def sinh(x, node):
    # sinh |x| = (E + E / (E + 1)) / 2 with E = expm1|x| (no cancellation near 0); from
    # |x| = 20 on e^-|x| is negligible and e^|x| / 2 = (e^(|x|/2) / 2) e^(|x|/2) does not
    # overflow before sinh does
    a = L.abs(x)
    e = L.expm1(L.minimum(a, 20.0))
    h = L.exp(a * 0.5)
    r = L.where(a > 20.0, (h * 0.5) * h, (e + e / (e + 1.0)) * 0.5)
    return L.where(x < 0.0, -r, r)


@unary_op("Cosh")
def cosh(x, node):
    # cosh x = (e^|x| + e^-|x|) / 2, from |x| = 20 on (e^(|x|/2) / 2) e^(|x|/2)
    a = L.abs(x)
    e = L.exp(L.minimum(a, 20.0))
    h = L.exp(a * 0.5)
    return L.where(a > 20.0, (h * 0.5) * h, (e + 1.0 / e) * 0.5)


@unary_op("Asinh")
def asinh(x, node):
    # asinh |x| = log(|x| + sqrt(x^2 + 1)) = log1p(|x| + x^2 / (1 + sqrt(1 + x^2)))
    a = L.abs(x)
    s = L.minimum(a, _BIG)
    r = L.where(a > _BIG, L.log(a) + LN2, L.log1p(s + s * s / (1.0 + L.sqrt(1.0 + s * s))))
    return L.where(x < 0.0, -r, r)


@unary_op("Acosh")
def acosh(x, node):
    # acosh x = log(x + sqrt(x^2 - 1)) = log1p(t + sqrt(t (t + 2))), t = x - 1 (exact near 1)
    t = L.minimum(x, _BIG) - 1.0
    return L.where(x > _BIG, L.log(x) + LN2, L.log1p(t + L.sqrt(t * (t + 2.0))))


@unary_op("Atanh")
def atanh(x, node):
    # atanh |x| = log((1 + |x|) / (1 - |x|)) / 2 = log1p(2|x| / (1 - |x|)) / 2 (odd: on |x|,
    # log1p's argument is positive and 1 - |x| exact near 1)
    a = L.abs(x)
    r = L.log1p(2.0 * a / (1.0 - a)) * 0.5
    return L.where(x < 0.0, -r, r)


@unary_op("IsNaN")
def isnan(x, node):
    return x != x


@onnx_op("IsInf")
def isinf(node):
    x = _float_input(node)
    found = [x == s for s, on in ((INF, node.attr("detect_positive", 1)),
                                  (-INF, node.attr("detect_negative", 1))) if on]
    return functools.reduce(L.logical_or, found) if found else L.full(x.shape, False, DType.bool)


# --- activations ----------------------------------------------------------------------------------

def _unit_clamp(t: Tensor) -> Tensor:
    return L.maximum(L.minimum(t, 1.0), 0.0)


@unary_op("HardSigmoid")
def hardsigmoid(x, node):
    # max(0, min(1, alpha x + beta))
    return _unit_clamp(x * _fattr(node, "alpha", 0.2) + _fattr(node, "beta", 0.5))


@unary_op("HardSwish")
def hardswish(x, node):
    # x hardsigmoid(x) with alpha = 1/6, beta = 1/2; x / 6 is exact where the kinks are
    return x * _unit_clamp(x / 6.0 + 0.5)


@unary_op("Softsign")
def softsign(x, node):
    return x / (L.abs(x) + 1.0)


@unary_op("Elu")
def elu(x, node):
    # x for x > 0, alpha (e^x - 1) otherwise
    return L.elu(x, _fattr(node, "alpha", 1.0))


@unary_op("Selu")
def selu(x, node):
    # gamma x for x > 0, gamma alpha (e^x - 1) otherwise
    alpha = _fattr(node, "alpha", 1.67326319217681884765625)
    gamma = _fattr(node, "gamma", 1.05070102214813232421875)
    return L.elu(x, alpha) * gamma


@unary_op("Celu", since=12)
def celu(x, node):
    # max(0, x) + min(0, alpha (e^(x/alpha) - 1))
    alpha = _fattr(node, "alpha", 1.0)
    return L.where(x > 0.0, x, L.expm1(L.minimum(x, 0.0) * (1.0 / alpha)) * alpha)


@unary_op("LeakyRelu")
def leakyrelu(x, node):
    return L.leaky_relu(x, _fattr(node, "alpha", 0.01))


@unary_op("ThresholdedRelu")
def thresholdedrelu(x, node):
    return L.where(x > _fattr(node, "alpha", 1.0), x, 0.0)


@unary_op("Gelu", since=20)
def gelu(x, node):
    approx = node.attr("approximate", "none")
    if approx not in ("none", "tanh"):
        raise node.error(f"approximate must be 'none' or 'tanh', got '{approx}'")
    return L.gelu(x, approximate=approx == "tanh")


@unary_op("Mish", since=18)
def mish(x, node):
    # x tanh(softplus x)
    return x * L.tanh(L.softplus(x))


@unary_op("Swish", since=24)
def swish(x, node):
    # x sigmoid(alpha x)
    return x * L.sigmoid(x * _fattr(node, "alpha", 1.0))


@onnx_op("Shrink", since=9)
def shrink(node):
    # x + bias for x < -lambd, x - bias for x > lambd, else 0; integers are computed in
    # float64 and cast back (truncating), as the float attributes make them
    x = node.tensor(0)
    lambd, bias = _fattr(node, "lambd", 0.5), _fattr(node, "bias", 0.0)
    xf = x if x.dtype.is_float else x.astype(DType.f64)
    y = L.where(xf < -lambd, xf + bias, L.where(xf > lambd, xf - bias, 0.0))
    return y if x.dtype.is_float else _wrap(y.astype(x.dtype), node.elem(0))


@onnx_op("PRelu")
def prelu(node):
    # slope x for x < 0, x otherwise; the slope broadcasts to x's shape
    x, slope = node.tensor(0), node.tensor(1)
    if node.elem(0) in UNSIGNED:
        return x
    return _wrap(L.where(x < 0, slope * x, x), node.elem(0))


@onnx_op("Binarizer", domain="ai.onnx.ml")
def binarizer(node):
    # 1 where x > threshold, else 0, in x's type
    x = node.tensor(0)
    t = node.attr("threshold", 0.0)
    return (x > (t if x.dtype.is_float else math.floor(t))).astype(x.dtype)


# --- arithmetic -----------------------------------------------------------------------------------

def _operands(node, n: int = 2) -> list[Tensor]:
    return [node.tensor(i) for i in range(n)]


def _broadcast(*ts: Tensor) -> list[Tensor]:
    """The tensors at their common shape (for primitives applied directly)."""
    shape = broadcast_shapes(*(t.shape for t in ts))
    return [broadcast_to(t, shape) for t in ts]


@onnx_op("Add")
def add(node):
    a, b = _operands(node)
    return _wrap(a + b, node.elem(0))


@onnx_op("Sub")
def sub(node):
    a, b = _operands(node)
    return _wrap(a - b, node.elem(0))


@onnx_op("Mul")
def mul(node):
    a, b = _operands(node)
    return _wrap(a * b, node.elem(0))


def _bias(t: Tensor) -> Tensor:
    """A uint64's bits (an i64) with the sign bit flipped: signed order is then unsigned."""
    return L.primitive("bitwise_xor", t, -2 ** 63)


def _ordered(a: Tensor, b: Tensor, elem: int):
    return (_bias(a), _bias(b)) if elem == dtypes.UINT64 else (a, b)


def _uge(a: Tensor, b: Tensor) -> Tensor:
    """a >= b, both uint64 bits in i64."""
    return _bias(a) >= _bias(b)


def _udiv64(a: Tensor, b: Tensor) -> Tensor:
    """a / b of two uint64s held in i64 (Hacker's Delight's divlu). A divisor from 2^63 on
    (negative as an i64) has quotient 0 or 1; else (a >>> 1) / b is exact as a signed
    division, and q = 2 ((a >>> 1) / b) is the quotient or one less: r = a - q b tells."""
    big = b < 0
    half = L.primitive("shift_right_logical", a, 1)
    q = L.primitive("shift_left", binary("idiv", half, b), 1)
    r = a - q * b
    q = q + _uge(r, b).astype(DType.i64)
    q = L.where(big, _uge(a, b).astype(DType.i64), q)
    return L.where(b == 0, 0, q)


def int_div(a: Tensor, b: Tensor, elem: int) -> Tensor:
    """C's a / b on integers of ONNX type elem (a / 0 = 0)."""
    if elem == dtypes.UINT64:
        return _udiv64(*_broadcast(a, b))
    return _wrap(binary("idiv", a, b), elem)  # int8: -128 / -1 = 128 wraps to -128


@onnx_op("Div")
def div(node):
    a, b = _operands(node)
    if a.dtype.is_float:
        return a / b
    return int_div(a, b, node.elem(0))


@onnx_op("Mod", since=10)
def mod(node):
    a, b = _operands(node)
    elem = node.elem(0)
    if elem == dtypes.UINT64:
        q = int_div(a, b, elem)
        return L.where(b == 0, 0, a - q * b)
    r = binary("rem", a, b)  # C's: the sign of a
    if node.attr("fmod", 0) or elem in UNSIGNED:
        return r
    # fmod = 0: the sign of b (numpy's mod): r + b where r is nonzero and its sign is not
    # b's; a zero remainder of floats takes b's sign (+-0)
    fix = (r != 0) & ((r < 0) != (b < 0))
    r = L.where(fix, r + b, r)
    if a.dtype.is_float:
        zero = L.full(r.shape, 0.0, r.dtype)
        r = L.where(r == 0.0, L.where(b < 0.0, -zero, zero), r)
    return r


@onnx_op("Pow")
def pow_(node):
    # The result has the base's type (opset 12 on, the exponent's may differ). Integer
    # bases (int32, int64) are raised in float64 and truncated back: exact below 2^53.
    a, b = _operands(node)
    if a.dtype.is_float:
        return binary("pow", a, b.astype(a.dtype))
    return binary("pow", a.astype(DType.f64), b.astype(DType.f64)).astype(a.dtype)


def _variadic(node, combine):
    ts = node.tensors()
    if not ts:
        raise node.error("needs at least one input")
    return functools.reduce(combine, ts)


def maximum(a: Tensor, b: Tensor, elem: int) -> Tensor:
    if elem != dtypes.UINT64:
        return L.maximum(a, b)
    ua, ub = _ordered(a, b, elem)
    return L.where(ua > ub, a, b)


def minimum(a: Tensor, b: Tensor, elem: int) -> Tensor:
    if elem != dtypes.UINT64:
        return L.minimum(a, b)
    ua, ub = _ordered(a, b, elem)
    return L.where(ua < ub, a, b)


@onnx_op("Max")
def max_(node):
    return _variadic(node, lambda a, b: maximum(a, b, node.elem(0)))


@onnx_op("Min")
def min_(node):
    return _variadic(node, lambda a, b: minimum(a, b, node.elem(0)))


@onnx_op("Sum")
def sum_(node):
    return _variadic(node, lambda a, b: a + b)


@onnx_op("Mean")
def mean(node):
    return _variadic(node, lambda a, b: a + b) * (1.0 / len(node.tensors()))


@onnx_op("Clip")
def clip_6(node):
    # opsets 1-10: the bounds are attributes, defaulting to float32's lowest and max
    # (so an infinity is clipped to them, as the spec and the runtimes do)
    top = float(np.finfo(np.float32).max)
    x = _float_input(node)
    return L.minimum(L.maximum(x, node.attr("min", -top)), node.attr("max", top))


@onnx_op("Clip", since=11)
def clip_11(node):
    # opset 11 on: optional scalar inputs min and max; min(max(x, lo), hi), so lo > hi
    # gives hi everywhere (numpy's clip)
    x, elem = node.tensor(0), node.elem(0)
    if node.has(1):
        x = maximum(x, node.tensor(1).astype(x.dtype), elem)
    if node.has(2):
        x = minimum(x, node.tensor(2).astype(x.dtype), elem)
    return x


# --- comparisons and logic ------------------------------------------------------------------------

def _compare(op):
    def handler(node):
        a, b = _ordered(*_operands(node), node.elem(0))
        return op(a, b)
    return handler


onnx_op("Equal")(_compare(lambda a, b: a == b))
onnx_op("Greater")(_compare(lambda a, b: a > b))
onnx_op("Less")(_compare(lambda a, b: a < b))
onnx_op("GreaterOrEqual", since=12)(_compare(lambda a, b: a >= b))
onnx_op("LessOrEqual", since=12)(_compare(lambda a, b: a <= b))


@onnx_op("And")
def and_(node):
    return L.logical_and(*_operands(node))


@onnx_op("Or")
def or_(node):
    return L.logical_or(*_operands(node))


@onnx_op("Xor")
def xor(node):
    return L.logical_xor(*_operands(node))


@onnx_op("Not")
def not_(node):
    return L.logical_not(node.tensor(0))


@onnx_op("Where", since=9)
def where(node):
    c, a, b = _operands(node, 3)
    return L.where(c, a, b)


# --- bits -----------------------------------------------------------------------------------------

def _bitwise(opname):
    def handler(node):
        a, b = _operands(node)
        return binary(opname, a, b)  # two values in a type's range stay in it
    return handler


onnx_op("BitwiseAnd", since=18)(_bitwise("bitwise_and"))
onnx_op("BitwiseOr", since=18)(_bitwise("bitwise_or"))
onnx_op("BitwiseXor", since=18)(_bitwise("bitwise_xor"))


@onnx_op("BitwiseNot", since=18)
def bitwise_not(node):
    x = node.tensor(0)
    return _wrap(L.primitive("bitwise_xor", x, -1), node.elem(0))  # ~x = x ^ -1


@onnx_op("BitShift", since=11)
def bitshift(node):
    # Opset 28's rules, which serve opset 11 too (unsigned types only, shifts by the
    # width or more undefined): a signed right shift is arithmetic; a shift by a negative
    # amount or by the type's width or more leaves only the sign fill (-1 for a negative
    # x shifted right, 0 otherwise).
    direction = node.attr("direction")
    if direction not in ("LEFT", "RIGHT"):
        raise node.error(f"direction must be LEFT or RIGHT, got '{direction}'")
    x, n = _broadcast(*_operands(node))
    elem = node.elem(0)
    bits, signed = dtypes.INT_BITS.get(elem, (x.dtype.itemsize * 8, elem not in UNSIGNED))
    ok = (n >= 0) & (n < bits)
    if direction == "LEFT":
        return L.where(ok, _wrap(L.primitive("shift_left", x, n), elem), 0)
    if not signed:
        return L.where(ok, L.primitive("shift_right_logical", x, n), 0)
    # arithmetic: x >> n = ((x ^ s) >>> n) ^ s with s = -1 for x < 0, else 0 (x is
    # sign-extended in its compute dtype); s is also the fill
    s = -(x < 0).astype(x.dtype)
    flip = lambda v: L.primitive("bitwise_xor", v, s)  # noqa: E731
    return L.where(ok, flip(L.primitive("shift_right_logical", flip(x), n)), s)
