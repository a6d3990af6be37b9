"""Graph plumbing: constants, identity, casts, shapes, reshapes."""

from __future__ import annotations

import numpy as np

from ... import frontend as _fe  # noqa: F401  (the DSL the handlers call)
from ...frontend import library as L
from ...frontend.tensor import Tensor
from .. import dtypes
from ..graph import Val, tensor_proto_value
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
    to = node.attr("to")
    v = node.val(0)
    dt = dtypes.compute_dtype(to, f"{node.desc}: ")
    if v.c is not None:  # numpy's cast is ONNX's (saturating and wrapping as numpy does)
        src = dtypes.narrow(v.c, v.elem)
        with np.errstate(all="ignore"):
            out = src.astype(dtypes.storage_np(to))
        return Val(c=dtypes.widen(out, to), elem=to)
    x = v.tensor()
    y = wrap_int(x.astype(dt), to) if to in dtypes.INT_BITS else x.astype(dt)
    if to in (dtypes.FLOAT16, dtypes.BFLOAT16):
        raise node.fail(f"Cast of a computed tensor to {dtypes.name(to)} is not supported")
    return node.out(y, to)


def wrap_int(y: Tensor, to: int) -> Tensor:
    """An integer tensor wrapped to `to`'s bits (two's complement), as a C cast does."""
    bits, signed = dtypes.INT_BITS[to]
    if bits >= 64 or (bits == 32 and y.dtype.itemsize == 8 and not signed and False):
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


@onnx_op("CastLike")
def cast_like(node):
    to = node.elem(1)
    v = node.val(0)
    dt = dtypes.compute_dtype(to, f"{node.desc}: ")
    if v.c is not None:
        src = dtypes.narrow(v.c, v.elem)
        with np.errstate(all="ignore"):
            out = src.astype(dtypes.storage_np(to))
        return Val(c=dtypes.widen(out, to), elem=to)
    x = v.tensor()
    return node.out(wrap_int(x.astype(dt), to) if to in dtypes.INT_BITS else x.astype(dt), to)


@onnx_op("Shape")
def shape(node):
    s = np.asarray(node.shape(0), dtype=np.int64)
    r = len(s)
    start, end = node.attr("start", 0), node.attr("end", r)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    return s[start:end]


@onnx_op("Size")
def size(node):
    return np.asarray(int(np.prod(node.shape(0))), dtype=np.int64)


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
