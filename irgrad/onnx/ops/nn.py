"""Neural-network layers: convolutions, pooling, dense layers, softmax (normalizations:
norm.py).

Convolutions are the IR's `conv` (N-d, per-axis padding, groups) and ConvTranspose its
adjoint `conv_input_grad`; pooling is `window` (im2col) reduced over the kernel axes,
with `fill` -inf for max pooling and 0 for sums. ONNX's geometry (auto_pad, ceil_mode,
dilations) is resolved at import into explicit low/high paddings: ceil_mode's partial
last window is extra high padding, which never counts in an average. Everything that
depends only on shapes (average pooling's divisors, MaxPool's index table) is a numpy
constant.
"""

from __future__ import annotations

import math

import numpy as np

from ...frontend import library as L
from ...frontend.tensor import Tensor
from ...ir.ops.conv import conv_attrs
from ...ir.types import DType
from .. import dtypes
from . import onnx_op


# --- geometry --------------------------------------------------------------------------------

def _ints_attr(node, name, n, default):
    v = node.attr(name, None)
    if v is None or len(v) == 0:
        return [default] * n
    if len(v) != n:
        raise node.error(f"attribute '{name}' has {len(v)} entries for {n} spatial axes")
    return [int(a) for a in v]


def _pads_attr(node, n):
    p = node.attr("pads", None)
    if p is None or len(p) == 0:
        return [0] * n, [0] * n
    if len(p) != 2 * n:
        raise node.error(f"attribute 'pads' has {len(p)} entries for {n} spatial axes (needs {2 * n})")
    if min(p) < 0:
        raise node.fail(f"negative pads {list(p)} are not supported")
    return [int(a) for a in p[:n]], [int(a) for a in p[n:]]


def _auto_pad(node) -> str:
    a = node.attr("auto_pad", "NOTSET") or "NOTSET"
    if a not in ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"):
        raise node.error(f"auto_pad '{a}' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    return a


def _same_pads(auto, size, k, s, d):
    """SAME_*: out = ceil(size / s), total = max(0, (out - 1) s + (k - 1) d + 1 - size),
    the odd one at the end (UPPER) or the start (LOWER)."""
    lo, hi = [], []
    for a, kk, ss, dd in zip(size, k, s, d):
        out = -(-a // ss)
        total = max(0, (out - 1) * ss + (kk - 1) * dd + 1 - a)
        small = total // 2
        lo.append(small if auto == "SAME_UPPER" else total - small)
        hi.append(total - lo[-1])
    return lo, hi


def _geometry(node, x, k, ceil_ok=False):
    """(strides, dilations, pad_low, pad_high, window pad_high, output sizes) of a conv or
    pool node on x [N, C, *S]. The window's pad_high adds ceil_mode's partial window."""
    n = x.ndim - 2
    size = list(x.shape[2:])
    if len(k) != n:
        raise node.error(f"kernel_shape {list(k)} does not fit an input of shape {list(x.shape)}")
    s = _ints_attr(node, "strides", n, 1)
    d = _ints_attr(node, "dilations", n, 1)
    if min(s + d + list(k)) < 1:
        raise node.error(f"kernel_shape {list(k)}, strides {s} and dilations {d} must be >= 1")
    auto = _auto_pad(node)
    ceil = bool(node.attr("ceil_mode", 0)) if ceil_ok else False
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        lo, hi = _same_pads(auto, size, k, s, d)
    elif auto == "VALID":
        lo, hi = [0] * n, [0] * n
    else:
        lo, hi = _pads_attr(node, n)
    out, whi = [], []
    for a, kk, ss, dd, l, h in zip(size, k, s, d, lo, hi):
        span = a + l + h - ((kk - 1) * dd + 1)
        if span < 0:
            raise node.error(f"the kernel {list(k)} (dilations {d}) is larger than the padded input "
                             f"(shape {list(x.shape)}, pads {lo + hi})")
        if ceil and auto == "NOTSET":
            o = -(-span // ss) + 1
            if (o - 1) * ss >= a + l:  # the last window would start in the high padding
                o -= 1
        elif auto in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-a // ss)
        else:
            o = span // ss + 1
        out.append(o)
        whi.append(h + max(0, (o - 1) * ss + (kk - 1) * dd + 1 - (a + l + h)))
    return s, d, lo, hi, whi, out


def _per_channel(t: Tensor, like: Tensor) -> Tensor:
    """A [C] vector shaped to broadcast over like [N, C, ...], in like's dtype."""
    return L.reshape(t.astype(like.dtype), (1, t.size) + (1,) * (like.ndim - 2))


# --- convolutions ----------------------------------------------------------------------------

def _conv_inputs(node, what):
    x, w = node.tensor(0), node.tensor(1)
    if x.ndim < 3 or x.ndim > 5 or w.ndim != x.ndim:
        raise node.fail(f"{what} of input {list(x.shape)} with weight {list(w.shape)}: irgrad "
                        f"convolves 1 to 3 spatial axes")
    if not x.dtype.is_float:
        raise node.fail(f"{what} of {x.dtype} tensors is not supported")
    return x, w.astype(x.dtype)


@onnx_op("Conv")
def conv(node):
    x, w = _conv_inputs(node, "Conv")
    k = node.attr("kernel_shape", None) or list(w.shape[2:])
    if list(k) != list(w.shape[2:]):
        raise node.error(f"kernel_shape {list(k)} differs from the weight's {list(w.shape[2:])}")
    g = node.attr("group", 1)
    if g < 1 or x.shape[1] % g or w.shape[0] % g or w.shape[1] * g != x.shape[1]:
        raise node.error(f"group={g} does not fit input {list(x.shape)} and weight {list(w.shape)}")
    s, d, lo, hi, _, _ = _geometry(node, x, list(k))
    y = L.primitive("conv", x, w, **conv_attrs(s, d, lo, hi, g))
    if node.has(2):
        y = y + _per_channel(node.tensor(2), y)
    return y


def _zero_point(node, i, like, per_axis_shape=None):
    """An optional zero point (scalar, or one per row/channel reshaped to broadcast)."""
    if not node.has(i):
        return None
    z = node.tensor(i).astype(like.dtype)
    if z.size > 1 and per_axis_shape is not None:
        z = L.reshape(z, per_axis_shape(z.size))
    return z


@onnx_op("ConvInteger")
def conv_integer(node):
    """(x - x_zero_point) conv (w - w_zero_point) exactly: 8-bit products summed in float64
    (integers below 2^53), cast to int32."""
    x, w = node.tensor(0), node.tensor(1)
    if x.ndim < 3 or x.ndim > 5 or w.ndim != x.ndim:
        raise node.fail(f"ConvInteger of input {list(x.shape)} with weight {list(w.shape)}: irgrad "
                        f"convolves 1 to 3 spatial axes")
    xz = _zero_point(node, 2, x)
    wz = _zero_point(node, 3, w, lambda m: (m,) + (1,) * (w.ndim - 1))
    xf = (x - xz if xz is not None else x).astype(DType.f64)
    wf = (w - wz if wz is not None else w).astype(DType.f64)
    g = node.attr("group", 1)
    s, d, lo, hi, _, _ = _geometry(node, xf, list(w.shape[2:]))
    y = L.primitive("conv", xf, wf, **conv_attrs(s, d, lo, hi, g))
    return node.out(y.astype(DType.i32), dtypes.INT32)


@onnx_op("MatMulInteger")
def matmul_integer(node):
    """(A - a_zero_point) @ (B - b_zero_point) in int32; a per-row zero point is [M]."""
    a, b = node.tensor(0), node.tensor(1)
    az = _zero_point(node, 2, a, lambda m: (m, 1))
    bz = _zero_point(node, 3, b)
    a = (a - az if az is not None else a).astype(DType.i32)
    b = (b - bz if bz is not None else b).astype(DType.i32)
    return node.out(L.matmul(a, b), dtypes.INT32)


@onnx_op("ConvTranspose")
def conv_transpose(node):
    """The adjoint of the conv with weight W [C, M/group, *K] from the output back to x:
    y[o] = F[o + pad_begin], F the full transposed correlation (zero beyond its length
    (J - 1) s + (K - 1) d + 1), over o < the output size; output_padding only lengthens the
    output."""
    x, w = _conv_inputs(node, "ConvTranspose")
    n = x.ndim - 2
    g = node.attr("group", 1)
    if g < 1 or x.shape[1] % g or w.shape[0] != x.shape[1]:
        raise node.error(f"group={g} does not fit input {list(x.shape)} and weight {list(w.shape)}")
    k = list(w.shape[2:])
    s = _ints_attr(node, "strides", n, 1)
    d = _ints_attr(node, "dilations", n, 1)
    opad = _ints_attr(node, "output_padding", n, 0)
    shape = node.attr("output_shape", None) or None
    if shape is not None and len(shape) == n + 2:
        shape = shape[2:]
    if shape is not None and len(shape) != n:
        raise node.error(f"output_shape {list(shape)} does not fit {n} spatial axes")
    auto = _auto_pad(node)
    j = list(x.shape[2:])
    full = [(a - 1) * ss + op_ + (kk - 1) * dd + 1 for a, ss, op_, kk, dd in zip(j, s, opad, k, d)]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        # total = full - out (out = J s unless given); the odd one at the end for SAME_UPPER
        out = list(shape) if shape is not None else [a * ss for a, ss in zip(j, s)]
        total = [f - o for f, o in zip(full, out)]
        lo = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
    elif shape is not None:
        # output_shape overrides the pads: the spec's split of total = full - out (the odd
        # one at the start); an output longer than full is zeros at the end (onnx's
        # reference, onnxruntime)
        out = list(shape)
        lo = [max(0, t - t // 2) for t in (f - o for f, o in zip(full, out))]
    else:
        lo, hi = _pads_attr(node, n) if auto == "NOTSET" else ([0] * n, [0] * n)
        out = [f - a - b for f, a, b in zip(full, lo, hi)]
    if min(out) < 1:
        raise node.error(f"the output would have spatial shape {out}")
    # the forward conv [N, M, *out] -> [N, C, *J]: pad_low = lo, pad_high set so it has J outputs
    hi_f = [(a - 1) * ss + (kk - 1) * dd + 1 - o - l for a, ss, kk, dd, o, l in zip(j, s, k, d, out, lo)]
    y = L.primitive("conv_input_grad", x, w, size=tuple(out), **conv_attrs(s, d, lo, hi_f, g))
    if node.has(2):
        y = y + _per_channel(node.tensor(2), y)
    return y


@onnx_op("Col2Im")
def col2im(node):
    """[N, C prod(block), L] -> [N, C, *image]: window_transpose (col2im) of the blocks."""
    x = node.tensor(0)
    image, block = node.ints(1), node.ints(2)
    n = len(image)
    if len(block) != n or x.ndim != 3:
        raise node.error(f"image_shape {image} and block_shape {block} must have one entry per "
                         f"axis, and the input [N, C K, L] (got {list(x.shape)})")
    s = _ints_attr(node, "strides", n, 1)
    d = _ints_attr(node, "dilations", n, 1)
    lo, hi = _pads_attr(node, n)
    kp = math.prod(block)
    if x.shape[1] % kp:
        raise node.error(f"input channels {x.shape[1]} are not a multiple of the block {block}")
    j = [(a + l + h - (kk - 1) * dd - 1) // ss + 1 for a, l, h, kk, dd, ss in zip(image, lo, hi, block, d, s)]
    if min(j) < 1 or math.prod(j) != x.shape[2]:
        raise node.error(f"input {list(x.shape)} does not hold the {j} blocks of image {image}")
    cols = L.reshape(x, [x.shape[0], x.shape[1] // kp] + list(block) + j)
    return L.primitive("window_transpose", cols, kernel=tuple(block), stride=tuple(s), dilation=tuple(d),
                       pad_low=tuple(lo), pad_high=tuple(hi), size=tuple(image))


# --- pooling ---------------------------------------------------------------------------------

def _pool_input(node, floats_only=True):
    x = node.tensor(0)
    if x.ndim < 3:
        raise node.error(f"pooling needs an input [N, C, *S], got shape {list(x.shape)}")
    if floats_only and not x.dtype.is_float:
        raise node.fail(f"{node.op_type} of {x.dtype} tensors is not supported")
    return x


def _windows(x, k, s, d, lo, whi, fill):
    return L.primitive("window", x, kernel=tuple(k), stride=tuple(s), dilation=tuple(d),
                       pad_low=tuple(lo), pad_high=tuple(whi), fill=float(fill))


def _kernel_axes(n):
    return tuple(range(2, 2 + n))


def _window_counts(size, k, s, d, lo, out, low, high):
    """How many elements of each window lie in [low, high) per axis (an outer product)."""
    counts = np.ones((), dtype=np.float64)
    for a, kk, ss, dd, l, o, lb, hb in zip(size, k, s, d, lo, out, low, high):
        pos = np.arange(o)[:, None] * ss + np.arange(kk)[None, :] * dd - l
        c = ((pos >= lb) & (pos < hb)).sum(axis=1).astype(np.float64)
        counts = np.multiply.outer(counts, c)
    return counts


def _fill_min(dt: DType) -> float:
    return -math.inf if dt.is_float else float(np.iinfo(dt.np).min)


@onnx_op("MaxPool")
def max_pool(node):
    x = _pool_input(node, floats_only=False)
    if x.dtype is DType.bool:
        raise node.fail("MaxPool of bool tensors is not supported")
    k = node.attr("kernel_shape")
    n = len(k)
    s, d, lo, hi, whi, out = _geometry(node, x, k, ceil_ok=True)
    win = _windows(x, k, s, d, lo, whi, _fill_min(x.dtype))
    y = L.max(win, axis=_kernel_axes(n))
    if node.n_outputs < 2 or not node.proto.output[1]:
        return y
    return [y, node.out(_argmax_indices(node, x, win, k, s, d, lo, out), dtypes.INT64)]


def _argmax_indices(node, x, win, k, s, d, lo, out):
    """MaxPool's Indices: the flat index into x of each window's first maximum, (n C + c)
    prod(S) + the spatial offset, row-major (storage_order 0) or column-major (1)."""
    n = len(k)
    size = x.shape[2:]
    order = node.attr("storage_order", 0)
    kp = math.prod(k)
    flat = L.reshape(win, list(x.shape[:2]) + [kp] + list(out))
    first = L.reshape(L.argmax(flat, axis=2), list(x.shape[:2]) + [1] + list(out))
    # the spatial offset of every (kernel, output) element, as a [kp, *out] table
    grids = np.meshgrid(*[np.arange(kk) for kk in k], *[np.arange(o) for o in out], indexing="ij")
    pos = [grids[n + i] * s[i] + grids[i] * d[i] - lo[i] for i in range(n)]
    strides = [math.prod(size[i + 1:]) for i in range(n)] if order == 0 else \
        [math.prod(size[:i]) for i in range(n)]
    table = sum(np.clip(p, 0, a - 1) * st for p, a, st in zip(pos, size, strides))
    table = table.reshape([kp] + list(out)).astype(np.int64)
    hit = first == np.arange(kp, dtype=np.int32).reshape([kp] + [1] * n)
    offset = L.sum(L.where(hit, table, np.int64(0)), axis=2)
    base = (np.arange(x.shape[0] * x.shape[1], dtype=np.int64) * math.prod(size)).reshape(
        list(x.shape[:2]) + [1] * n)
    return offset + base


@onnx_op("AveragePool")
def average_pool(node):
    x = _pool_input(node)
    k = node.attr("kernel_shape")
    n = len(k)
    s, d, lo, hi, whi, out = _geometry(node, x, k, ceil_ok=True)
    total = L.sum(_windows(x, k, s, d, lo, whi, 0.0), axis=_kernel_axes(n))
    size = x.shape[2:]
    if node.attr("count_include_pad", 0):  # the pads count, ceil_mode's overhang does not
        counts = _window_counts(size, k, s, d, lo, out, [-a for a in lo], [a + h for a, h in zip(size, hi)])
    else:
        counts = _window_counts(size, k, s, d, lo, out, [0] * n, size)
    if np.all(counts == counts.flat[0]):
        return total * (1.0 / float(counts.flat[0]))
    return total * (1.0 / counts).astype(x.dtype.np)


def _lp(x, p):
    return x * x if p == 2 else L.abs(x) ** float(p)


def _root(x, p):
    return L.sqrt(x) if p == 2 else x ** (1.0 / float(p))


@onnx_op("LpPool")
def lp_pool(node):
    """(sum over the window of |x|^p)^(1/p), the spec's Lp norm (onnxruntime's too; onnx's
    reference rescales a ceil_mode window overhanging the padding, as PyTorch does)."""
    x = _pool_input(node)
    k = node.attr("kernel_shape")
    p = node.attr("p", 2)
    s, d, lo, hi, whi, out = _geometry(node, x, k, ceil_ok=True)
    win = _windows(_lp(x, p), k, s, d, lo, whi, 0.0)
    return _root(L.sum(win, axis=_kernel_axes(len(k))), p)


def _spatial_axes(x):
    return tuple(range(2, x.ndim))


@onnx_op("GlobalAveragePool")
def global_average_pool(node):
    x = _pool_input(node)
    return L.mean(x, axis=_spatial_axes(x), keepdims=True)


@onnx_op("GlobalMaxPool")
def global_max_pool(node):
    x = _pool_input(node, floats_only=False)
    return L.max(x, axis=_spatial_axes(x), keepdims=True)


@onnx_op("GlobalLpPool")
def global_lp_pool(node):
    x = _pool_input(node)
    p = node.attr("p", 2)
    return _root(L.sum(_lp(x, p), axis=_spatial_axes(x), keepdims=True), p)


@onnx_op("MaxUnpool")
def max_unpool(node):
    """MaxPool's partial inverse: X scattered to the flat indices I of a zero tensor of the
    pooled input's shape ((J - 1) s - pads + K), which output_shape then pads at the end."""
    x = node.tensor(0)
    idx = node.tensor(1)
    n = x.ndim - 2
    k = node.attr("kernel_shape")
    s = _ints_attr(node, "strides", n, 1)
    lo, hi = _pads_attr(node, n)
    if idx.shape != x.shape:
        raise node.error(f"indices {list(idx.shape)} must have the shape of X {list(x.shape)}")
    inferred = list(x.shape[:2]) + [(a - 1) * ss - l - h + kk
                                    for a, ss, l, h, kk in zip(x.shape[2:], s, lo, hi, k)]
    shape = node.ints(2) if node.has(2) else inferred
    if len(shape) != x.ndim or any(a < b for a, b in zip(shape, inferred)):
        raise node.fail(f"output_shape {shape} smaller than the unpooled shape {inferred} is not supported")
    total = math.prod(inferred)
    zeros = L.zeros((total,), x.dtype)
    y = L.primitive("scatter_add", zeros, L.reshape(idx, (x.size,)), L.reshape(x, (x.size,)), axis=0)
    y = L.reshape(y, inferred)
    if list(shape) != inferred:
        y = L.pad(y, [(0, a - b) for a, b in zip(shape, inferred)])
    return y


# --- helpers shared with the normalizations (norm.py) ------------------------------------

def _float_input(node, i=0):
    x = node.tensor(i)
    if not x.dtype.is_float:
        raise node.fail(f"{node.op_type} of {x.dtype} tensors is not supported")
    return x


def _named(node, i) -> bool:
    return node.n_outputs > i and bool(node.proto.output[i])


def _axis(node, x, default):
    a = node.attr("axis", default)
    if not -x.ndim <= a < x.ndim:
        raise node.error(f"axis {a} is out of range for rank {x.ndim}")
    return a % x.ndim


# --- dense layers ----------------------------------------------------------------------------

@onnx_op("Gemm")
def gemm(node):
    """alpha A' B' + beta C, A' = A^T if transA, C broadcast to [M, N] (optional from 11)."""
    a, b = node.tensor(0), node.tensor(1)
    if a.ndim != 2 or b.ndim != 2:
        raise node.error(f"Gemm needs 2-D A and B, got {list(a.shape)} and {list(b.shape)}")
    if a.dtype is DType.bool:
        raise node.fail("Gemm of bool tensors is not supported")
    if node.attr("transA", 0):
        a = L.transpose(a)
    if node.attr("transB", 0):
        b = L.transpose(b)
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    y = L.matmul(a, b.astype(a.dtype))
    y = _scaled(node, y, alpha)
    if node.has(2) and beta != 0:
        y = y + _scaled(node, node.tensor(2).astype(y.dtype), beta)
    return y


def _scaled(node, t, factor):
    if factor == 1:
        return t
    if not t.dtype.is_float:
        if float(factor) != int(factor):
            raise node.fail(f"an integer Gemm with alpha/beta {factor} is not supported")
        return t * int(factor)
    return t * float(factor)


@onnx_op("MatMul")
def matmul(node):
    a, b = node.tensor(0), node.tensor(1)
    if a.dtype is DType.bool:
        raise node.fail("MatMul of bool tensors is not supported")
    return L.matmul(a, b.astype(a.dtype))


@onnx_op("Dropout")
def dropout(node):
    """Identity at inference (and in training with ratio 0), with a mask of ones: bools
    from opset 10, x's type before."""
    v = node.val(0)
    x = v.tensor()
    training, ratio = False, node.attr("ratio", 0.5)  # (opsets 7 to 11 are inference only)
    if node.opset >= 12:
        ratio = float(_scalar(node, 1, 0.5))
        training = bool(_scalar(node, 2, False))
    if training and ratio != 0:
        raise node.fail(f"Dropout in training mode (ratio {ratio}) draws random numbers; irgrad "
                        f"imports inference (or ratio 0) only")
    if not _named(node, 1):
        return v
    if node.opset >= 10:
        return [v, node.out(L.full(x.shape, True, DType.bool), dtypes.BOOL)]
    return [v, node.out(L.full(x.shape, 1, x.dtype), v.elem)]


def _scalar(node, i, default):
    if not node.has(i):
        return default
    c = np.asarray(node.const(i)).reshape(-1)
    if c.size != 1:
        raise node.error(f"input {i} must be a scalar, got shape {list(np.shape(node.const(i)))}")
    return c[0]


# --- softmax ---------------------------------------------------------------------------------

def _softmax_axes(node, x):
    """Opset 13 on: the single axis (default -1). Before: x flattened to 2-D at `axis`
    (default 1), so every axis from `axis` on."""
    if node.opset >= 13:
        return (_axis(node, x, -1),)
    return tuple(range(_axis(node, x, 1), x.ndim)) if x.ndim else ()


@onnx_op("Softmax")
def softmax(node):
    x = _float_input(node)
    return L.softmax(x, axis=_softmax_axes(node, x))


@onnx_op("LogSoftmax")
def log_softmax(node):
    x = _float_input(node)
    return L.log_softmax(x, axis=_softmax_axes(node, x))


@onnx_op("Hardmax")
def hardmax(node):
    """1 at the first maximum along the axes, 0 elsewhere."""
    x = node.tensor(0)
    axes = _softmax_axes(node, x)
    inner = math.prod(x.shape[a] for a in axes)
    perm = [i for i in range(x.ndim) if i not in axes] + list(axes)
    xt = L.reshape(L.transpose(x, perm), (-1, inner))
    first = L.reshape(L.argmax(xt, axis=1), (-1, 1))
    hot = (first == np.arange(inner, dtype=np.int32).reshape(1, inner)).astype(x.dtype)
    y = L.reshape(hot, [x.shape[i] for i in perm])
    return L.transpose(y, [perm.index(i) for i in range(x.ndim)])
