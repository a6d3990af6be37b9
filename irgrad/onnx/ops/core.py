"""Graph plumbing: constants, identity, casts, shapes, reshapes."""

from __future__ import annotations

import numpy as np

from ...frontend import library as L
from ...frontend.tensor import Tensor
from ...ir.types import DType
from .. import dtypes
from ..graph import Val
from . import onnx_op


@onnx_op("Constant")
def constant(node):
    for key in ("value", "sparse_value"):
        if node.has_attr(key):
            if key == "sparse_value":
                raise node.fail("sparse constants are not supported")
            return node.attr_tensor("value")
    for key, dt in (("value_float", np.float32), ("value_floats", np.float32),
                    ("value_int", np.int64), ("value_ints", np.int64)):
        if node.has_attr(key):
            return np.asarray(node.attr(key), dtype=dt)
    raise node.fail("only tensor, float(s) and int(s) constants are supported (not strings)")


@onnx_op("Identity")
def identity(node):
    return node.val(0)


@onnx_op("Cast")
def cast(node):
    # `saturate` (opset 19) and `round_mode` (opset 24) only concern the float8 types,
    # which irgrad does not import: for every type here a cast rounds or wraps as below.
    return cast_val(node, node.val(0), node.attr("to"))


@onnx_op("CastLike")
def cast_like(node):
    return cast_val(node, node.val(0), node.elem(1))


def cast_val(node, v: Val, to: int) -> Val:
    dtypes.compute_dtype(to, f"{node.desc}: ")
    if v.c is not None:  # numpy's cast is ONNX's (saturating and wrapping as numpy does)
        src = dtypes.narrow(v.c, v.elem)
        with np.errstate(all="ignore"):
            out = src.astype(dtypes.storage_np(to))
        return Val(c=dtypes.widen(out, to), elem=to)
    return node.out(cast_tensor(v.tensor(), v.elem, to), to)


def cast_tensor(x: Tensor, src: int, to: int) -> Tensor:
    """x, a value of ONNX type `src` (in its compute dtype), as ONNX type `to` (in its):
    floats to integers truncate toward zero and wrap to the target's bits (out of range
    is undefined in ONNX), integers wrap, anything to bool is `!= 0` (NaN is true), and a
    float16/bfloat16 target is rounded to its precision (round_half_float)."""
    dt = dtypes.compute_dtype(to)
    if src == to:
        return x
    if to == dtypes.BOOL or src == dtypes.BOOL:
        return x.astype(dt)
    if dtypes.is_float(to):
        half = to in (dtypes.FLOAT16, dtypes.BFLOAT16)
        if not x.dtype.is_float:
            x = _int_to_float(x, src, DType.f64 if half else dt)
        return round_half_float(x, to) if half else x.astype(dt)
    if x.dtype.is_float and to == dtypes.UINT64:
        # from 2^63 on, the bits of x - 2^64 (exact: such an x is a multiple of 2^11)
        return L.where(x >= 2.0 ** 63, x - 2.0 ** 64, x).astype(dt)
    return wrap_int(x.astype(dt), to) if to in dtypes.INT_BITS else x.astype(dt)


def _int_to_float(x: Tensor, src: int, dt: DType) -> Tensor:
    """An integer of ONNX type `src` as float dtype dt, rounded once."""
    if src != dtypes.UINT64:
        return x.astype(dt)
    # A uint64 from 2^63 on (negative as an i64) is 2 h, h = (x >>> 1) | (x & 1): the
    # dropped bit stays as a sticky bit, so converting h rounds as converting x / 2 would.
    h = L.primitive("bitwise_or", L.primitive("shift_right_logical", x, 1),
                    L.primitive("bitwise_and", x, 1))
    return L.where(x < 0, h.astype(dt) * 2.0, x.astype(dt))


# (significant bits dropped from float64's 53, exponent of the smallest normal, of the
# smallest subnormal, magnitude from which it rounds to inf: the largest finite value
# plus half its last step, (2 - 2^-p) 2^e_max with p significant bits)
_HALF = {dtypes.FLOAT16: (42, -14, -24, (2 - 2.0 ** -11) * 2.0 ** 15),
         dtypes.BFLOAT16: (45, -126, -133, (2 - 2.0 ** -8) * 2.0 ** 127)}


def round_half_float(x: Tensor, to: int) -> Tensor:
    """x rounded to float16's or bfloat16's precision and range, to nearest even, as a
    float32 (which holds every such value). The rounding happens in float64, where a float32,
    float64 or integer source is exact (or rounded once, beyond 2^53): a single rounding.

    - normal range: Veltkamp's split rounds x to 53 - s significant bits (11 for float16,
      8 for bfloat16): c = x (2^s + 1), hi = c - (c - x). c is spelled x 2^s + x, so
      that contracting it into a fused multiply-add changes nothing (x 2^s is exact);
    - below the smallest normal the step is fixed, 2^e_min: round(x 2^-e_min) 2^e_min
      (round: halves to even; the scalings are exact, and -0 stays -0);
    - from the largest finite value plus half its last step on (65520 for float16), +-inf
      (also for an infinite x, where hi would be inf - inf; NaN compares false and stays)."""
    s, e_norm, e_min, overflow = _HALF[to]
    x = x.astype(DType.f64)
    c = x * 2.0 ** s + x
    hi = c - (c - x)
    lo = L.round(x * 2.0 ** -e_min) * 2.0 ** e_min
    ax = L.abs(x)
    y = L.where(ax < 2.0 ** e_norm, lo, hi)
    return L.where(ax >= overflow, x * float("inf"), y).astype(DType.f32)


def wrap_int(y: Tensor, to: int) -> Tensor:
    """An integer tensor wrapped to `to`'s bits (two's complement), as a C cast does."""
    bits, signed = dtypes.INT_BITS[to]
    if bits >= 64:
        return y
    if bits == 32:
        mask = (1 << 32) - 1
        return L.primitive("bitwise_and", y, mask)
    mask = (1 << bits) - 1
    u = L.primitive("bitwise_and", y, mask)
    if signed:  # sign-extend: (u ^ sign) - sign
        sign = 1 << (bits - 1)
        u = L.primitive("sub", L.primitive("bitwise_xor", u, sign), sign)
    return u


@onnx_op("Shape")
def shape(node):
    s = np.asarray(node.shape(0), dtype=np.int64)
    r = len(s)
    start, end = node.attr("start", 0), node.attr("end", r)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    return node.out(s[start:end], dtypes.INT64)  # (not the type of an input computed in i64)


@onnx_op("Size")
def size(node):
    return node.out(np.asarray(int(np.prod(node.shape(0))), dtype=np.int64), dtypes.INT64)


@onnx_op("Reshape")
def reshape(node):
    x = node.val(0)
    if node.opset < 5:
        target = node.attr("shape")
    else:
        target = node.ints(1)
    allowzero = node.attr("allowzero", 0)
    out = []
    for k, d in enumerate(target):
        if d == 0 and not allowzero:
            if k >= len(x.shape):
                raise node.error(f"shape {target} copies axis {k} of a rank-{len(x.shape)} input")
            out.append(x.shape[k])
        else:
            out.append(d)
    if out.count(-1) > 1:
        raise node.error(f"shape {target} has more than one -1")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        total = int(np.prod(x.shape))
        if known == 0 or total % known:
            raise node.error(f"cannot reshape {list(x.shape)} to {target}")
        out[out.index(-1)] = total // known
    if int(np.prod(out)) != int(np.prod(x.shape)):
        raise node.error(f"cannot reshape {list(x.shape)} to {target} ({out})")
    if x.c is not None:
        return Val(c=x.c.reshape(out), elem=x.elem)
    return L.reshape(x.tensor(), *out) if out else L.reshape(x.tensor(), ())
