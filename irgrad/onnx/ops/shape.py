"""Shape and layout: transposes, reshapes of rank (Flatten, Squeeze, Unsqueeze), joins and
cuts (Concat, Split, Slice), copies (Expand, Tile, Pad, CenterCropPad), generated tensors
(ConstantOfShape, Range, EyeLike, Trilu's mask), block moves (DepthToSpace, SpaceToDepth),
scans (CumSum, CumProd), Einsum and Det.

Everything is a composition of the IR's rearranging primitives: a strided Slice is a
window slice, a pad to a multiple of the step, a reshape to [m, step] and the first
column; a negative step reverses the axis first. Pad's edge, reflect and wrap modes are
gathers with a constant index array (numpy's own np.pad of arange(n) says which source
element each output element copies). Values an op needs at import (axes, pads, repeats,
a Slice's starts) come from `node.ints`, which names the input when it is computed.
"""

from __future__ import annotations

import math

import numpy as np

from ...frontend import library as L
from ...frontend.einsum import einsum as _einsum
from ...frontend.tensor import Tensor, broadcast_shapes, broadcast_to
from ...ir.types import DType, TensorType
from .. import dtypes
from . import onnx_op


# --- helpers shared with indexing.py --------------------------------------------------------

def norm_axis(node, axis: int, rank: int, what: str = "axis") -> int:
    """An ONNX axis (negative counts from the end) as 0..rank-1, or a clear error."""
    a = int(axis)
    if not -rank <= a < rank:
        raise node.error(f"{what} {a} is out of range for a rank-{rank} input")
    return a + rank if a < 0 else a


def norm_axes(node, axes, rank: int, what: str = "axes") -> list[int]:
    out = [norm_axis(node, a, rank, what) for a in axes]
    if len(set(out)) != len(out):
        raise node.error(f"{what} {list(axes)} repeat an axis")
    return out


def iota(shape, axis: int, dtype=DType.i64) -> Tensor:
    """0, 1, 2, ... along `axis` of a tensor of `shape`."""
    return L.primitive("iota", result_type=TensorType(dtype, tuple(shape)), axis=axis)


def cut(x: Tensor, axis: int, start: int, stop: int) -> Tensor:
    """x[start:stop] along one axis (an IR slice)."""
    lo, hi = [0] * x.ndim, list(x.shape)
    lo[axis], hi[axis] = start, stop
    if lo == [0] * x.ndim and hi == list(x.shape):
        return x
    return L.primitive("slice", x, start=tuple(lo), limit=tuple(hi))


def reverse(x: Tensor, axis: int) -> Tensor:
    return L.primitive("reverse", x, axes=(axis,))


def block(shape, value, like: Tensor) -> Tensor:
    """A tensor of `shape` filled with `value` (a number, or a 0-d tensor) in like's dtype."""
    if isinstance(value, Tensor):
        return broadcast_to(L.reshape(value.astype(like.dtype), (1,) * len(shape)), shape)
    return L.full(shape, value, like.dtype)


def concat(xs: list[Tensor], axis: int) -> Tensor:
    """Concatenation that skips empty pieces (the IR's concat needs one operand at least)."""
    kept = [x for x in xs if x.shape[axis] > 0]
    if not kept:
        return xs[0]
    return kept[0] if len(kept) == 1 else L.concatenate(kept, axis)


def shift(x: Tensor, axis: int, k: int, fill) -> Tensor:
    """x moved k places up `axis`, the first k entries `fill`: y[i] = x[i - k]."""
    n = x.shape[axis]
    k = min(k, n)
    head = list(x.shape)
    head[axis] = k
    return concat([block(head, fill, x), cut(x, axis, 0, n - k)], axis)


def zero_of(x: Tensor):
    return False if x.dtype is DType.bool else 0


def scalar_const(node, i: int, default=None):
    """A scalar input known at import (an axis, a depth, a k), as a Python number."""
    c = node.const(i, None) if node.has(i) else None
    if c is None:
        return default
    c = np.asarray(c).reshape(-1)
    if c.size != 1:
        raise node.error(f"input {i} must hold one value, got shape {list(np.shape(node.const(i)))}")
    return c[0].item()


# --- transpose and rank changes -------------------------------------------------------------

@onnx_op("Transpose")
def transpose(node):
    x = node.tensor(0)
    perm = node.attr("perm", None)
    if perm is None:
        perm = list(range(x.ndim))[::-1]
    if sorted(norm_axes(node, perm, x.ndim, "perm")) != list(range(x.ndim)):
        raise node.error(f"perm {perm} is not a permutation of {x.ndim} axes")
    return L.transpose(x, [p % x.ndim for p in perm]) if x.ndim else x


@onnx_op("Flatten")
def flatten(node):
    x = node.tensor(0)
    r = x.ndim
    axis = int(node.attr("axis", 1))
    if not -r <= axis <= r:
        raise node.error(f"axis {axis} is out of range for a rank-{r} input")
    axis = axis + r if axis < 0 else axis
    return L.reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))


def _axes_of(node, i: int):
    """Squeeze/Unsqueeze axes: an attribute before opset 13, an (optional) input since."""
    if node.opset < 13:
        return node.attr("axes", None)
    return node.ints(i) if node.has(i) else None


@onnx_op("Squeeze")
def squeeze(node):
    x = node.tensor(0)
    axes = _axes_of(node, 1)
    if axes is None:
        axes = [a for a, d in enumerate(x.shape) if d == 1]
    axes = norm_axes(node, axes, x.ndim)
    bad = [a for a in axes if x.shape[a] != 1]
    if bad:
        raise node.error(f"cannot squeeze axes {bad} of shape {list(x.shape)} (not of size 1)")
    return L.reshape(x, tuple(d for a, d in enumerate(x.shape) if a not in axes))


@onnx_op("Unsqueeze")
def unsqueeze(node):
    x = node.tensor(0)
    axes = _axes_of(node, 1)
    if axes is None:
        raise node.error("axes are required")
    r = x.ndim + len(axes)
    axes = set(norm_axes(node, axes, r))
    dims = iter(x.shape)
    return L.reshape(x, tuple(1 if a in axes else next(dims) for a in range(r)))


# --- concat, split, slice -------------------------------------------------------------------

@onnx_op("Concat")
def concat_op(node):
    xs = node.tensors()
    axis = norm_axis(node, node.attr("axis"), xs[0].ndim)
    return concat(xs, axis)


def _split_sizes(node, n: int) -> list[int]:
    """The part sizes: `split` (attribute before 13, input since), else num_outputs (18)
    or the number of outputs; equal parts, the last one smaller where they do not divide."""
    if node.opset >= 13:
        split = node.ints(1) if node.has(1) else None
    else:
        split = node.attr("split", None)
    if split is not None:
        if sum(split) != n or min(split, default=0) < 0:
            raise node.error(f"split {list(split)} does not add up to the axis size {n}")
        return list(split)
    parts = node.attr("num_outputs", node.n_outputs)
    if parts < 1:
        raise node.error(f"num_outputs {parts} must be positive")
    if node.opset < 18 and n % parts:
        raise node.error(f"an axis of size {n} does not split into {parts} equal parts")
    each = -(-n // parts)  # ceil: only the last part is smaller (opset 18)
    sizes = [min(each, max(n - k * each, 0)) for k in range(parts)]
    return sizes


@onnx_op("Split")
def split(node):
    x = node.tensor(0)
    axis = norm_axis(node, node.attr("axis", 0), x.ndim)
    sizes = _split_sizes(node, x.shape[axis])
    if len(sizes) != node.n_outputs:
        raise node.error(f"{len(sizes)} parts for {node.n_outputs} outputs")
    out, at = [], 0
    for s in sizes:
        out.append(cut(x, axis, at, at + s))
        at += s
    return out


def strided(x: Tensor, axis: int, start: int, stop: int, step: int) -> Tensor:
    """x[start:stop:step] along one axis, with Python's (and ONNX's) clamping."""
    n = x.shape[axis]
    r = range(*slice(start, stop, step).indices(n))
    m = len(r)
    if m == 0:
        return cut(x, axis, 0, 0)
    if step < 0:  # in the reversed axis, index i is n-1-i and the step is -step
        x, first, step = reverse(x, axis), n - 1 - r[0], -step
    else:
        first = r[0]
    x = cut(x, axis, first, first + (m - 1) * step + 1)
    if step == 1:
        return x
    # pad to m*step, view as [m, step], keep column 0: element j is x[first + j*step]
    high = [0] * x.ndim
    high[axis] = m * step - x.shape[axis]
    x = L.pad(x, [(0, h) for h in high]) if high[axis] else x
    x = L.reshape(x, x.shape[:axis] + (m, step) + x.shape[axis + 1:])
    x = cut(x, axis + 1, 0, 1)
    return L.reshape(x, x.shape[:axis] + (m,) + x.shape[axis + 2:])


@onnx_op("Slice")
def slice_op(node):
    x = node.tensor(0)
    if node.opset < 10:
        starts, ends = node.attr("starts"), node.attr("ends")
        axes, steps = node.attr("axes", None), None
    else:
        starts, ends = node.ints(1), node.ints(2)
        axes = node.ints(3) if node.has(3) else None
        steps = node.ints(4) if node.has(4) else None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise node.error(f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    axes = norm_axes(node, axes, x.ndim)
    for a, s, e, k in zip(axes, starts, ends, steps):
        if k == 0:
            raise node.error("a step of 0")
        x = strided(x, a, s, e, k)
    return x


# --- expand, tile, pad ----------------------------------------------------------------------

@onnx_op("Expand")
def expand(node):
    x = node.tensor(0)
    shape = broadcast_shapes(x.shape, tuple(node.ints(1)))
    return broadcast_to(x, shape)


@onnx_op("Tile")
def tile(node):
    x = node.tensor(0)
    reps = node.ints(1)
    if len(reps) != x.ndim or min(reps, default=1) < 0:
        raise node.error(f"repeats {reps} need one non-negative count per axis of {list(x.shape)}")
    if all(r == 1 for r in reps):
        return x
    # x as [1, d0, 1, d1, ...] broadcast to [r0, d0, r1, d1, ...]: copy k of axis a is
    # the block at r_a index k, then merged: (r0*d0, r1*d1, ...)
    inter = tuple(v for d in x.shape for v in (1, d))
    big = tuple(v for r, d in zip(reps, x.shape) for v in (r, d))
    y = broadcast_to(L.reshape(x, inter), big)
    return L.reshape(y, tuple(r * d for r, d in zip(reps, x.shape)))


def _pad_args(node, rank: int):
    """(pads per axis as (low, high), mode, constant value) across the opset versions."""
    mode = node.attr("mode", "constant")
    if node.opset < 11:  # (Pad-1's `paddings` is older than the importer's opset 7)
        pads = node.attr("pads")
        value, axes = node.attr("value", 0.0), None
    else:
        pads = node.ints(1)
        value = 0
        if node.has(2):
            v = node.val(2)
            value = v.tensor() if v.c is None else v.c.reshape(-1)[0].item() if v.c.size else 0
        axes = node.ints(3) if node.opset >= 18 and node.has(3) else None
    axes = list(range(rank)) if axes is None else norm_axes(node, axes, rank)
    if len(pads) != 2 * len(axes):
        raise node.error(f"pads {pads} need two entries per axis for axes {axes}")
    width = [(0, 0)] * rank
    for k, a in enumerate(axes):
        width[a] = (int(pads[k]), int(pads[k + len(axes)]))
    return width, mode, value


def pad_tensor(node, x: Tensor, width, mode: str, value) -> Tensor:
    # negative pads crop first (as onnxruntime does), then the positive ones pad
    for a, (lo, hi) in enumerate(width):
        if lo < 0 or hi < 0:
            x = cut(x, a, max(-lo, 0), x.shape[a] - max(-hi, 0))
    width = [(max(lo, 0), max(hi, 0)) for lo, hi in width]
    if all(lo == hi == 0 for lo, hi in width):
        return x
    if mode == "constant":
        if not isinstance(value, Tensor) and value == 0:
            return L.pad(x, width)
        for a, (lo, hi) in enumerate(width):  # constant blocks joined on: exact for any value
            if lo or hi:
                side = list(x.shape)
                parts = []
                for n in (lo, hi):
                    side[a] = n
                    parts.append(block(tuple(side), value, x))
                x = concat([parts[0], x, parts[1]], a)
        return x
    if mode not in ("edge", "reflect", "wrap"):
        raise node.fail(f"mode '{mode}' is not supported (constant, edge, reflect, wrap are)")
    for a, (lo, hi) in enumerate(width):
        if lo or hi:
            n = x.shape[a]
            if n == 0:
                raise node.error(f"{mode} padding of an empty axis {a}")
            # which input element each output element copies, as numpy's np.pad says
            src = np.pad(np.arange(n, dtype=np.int64), (lo, hi), mode=mode)
            x = L.take(x, src, axis=a)
    return x


@onnx_op("Pad")
def pad(node):
    x = node.tensor(0)
    width, mode, value = _pad_args(node, x.ndim)
    return pad_tensor(node, x, width, mode, value)


@onnx_op("CenterCropPad")
def center_crop_pad(node):
    x = node.tensor(0)
    shape = node.ints(1)
    axes = node.attr("axes", None)
    axes = list(range(x.ndim)) if axes is None else norm_axes(node, axes, x.ndim)
    if len(shape) != len(axes):
        raise node.error(f"shape {shape} needs one size per axis of {axes}")
    width = [(0, 0)] * x.ndim
    for a, s in zip(axes, shape):
        d = x.shape[a]
        if s < d:  # crop: the window starts at floor((d - s) / 2)
            lo = (d - s) // 2
            x = cut(x, a, lo, lo + s)
        elif s > d:  # pad: the odd pixel goes to the end
            lo = (s - d) // 2
            width[a] = (lo, s - d - lo)
    return L.pad(x, width) if any(w != (0, 0) for w in width) else x


# --- generated tensors ----------------------------------------------------------------------

@onnx_op("ConstantOfShape")
def constant_of_shape(node):
    shape = node.ints(0)
    if min(shape, default=0) < 0:
        raise node.error(f"shape {shape} has a negative size")
    if node.has_attr("value"):
        v = node.attr_tensor("value")
        if v.c.size != 1:
            raise node.error(f"value must hold one element, got shape {list(v.c.shape)}")
        return node.out(np.full(shape, v.c.reshape(-1)[0], dtype=v.c.dtype), v.elem)
    return np.zeros(shape, dtype=np.float32)


@onnx_op("Range")
def range_op(node):
    # number of elements: max(ceil((limit - start) / delta), 0); element i: start + i*delta
    vals = [np.asarray(node.const(i)).reshape(()) for i in range(3)]
    start, limit, delta = vals
    if delta == 0:
        raise node.error("delta is 0")
    n = max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)
    dt = start.dtype
    out = (start + np.arange(n, dtype=np.float64 if dt.kind == "f" else np.int64) * delta)
    return node.out(out.astype(dt), node.elem(0))


@onnx_op("EyeLike")
def eye_like(node):
    shape = node.shape(0)
    if len(shape) != 2:
        raise node.error(f"needs a 2-D input, got shape {list(shape)}")
    elem = node.attr("dtype", node.elem(0))
    dt = dtypes.compute_dtype(elem, f"{node.desc}: ")
    return node.out(np.eye(shape[0], shape[1], int(node.attr("k", 0)), dtype=dt.np), elem)


@onnx_op("Trilu")
def trilu(node):
    x = node.tensor(0)
    if x.ndim < 2:
        raise node.error(f"needs at least a 2-D input, got shape {list(x.shape)}")
    k = int(scalar_const(node, 1, 0))
    shape = x.shape[-2:]
    # the diagonal j - i = k: upper keeps j - i >= k, lower j - i <= k
    diff = iota(shape, 1) - iota(shape, 0)
    keep = diff >= k if node.attr("upper", 1) else diff <= k
    return L.where(broadcast_to(keep, x.shape), x, zero_of(x))


# --- block moves ----------------------------------------------------------------------------

@onnx_op("DepthToSpace")
def depth_to_space(node):
    x = node.tensor(0)
    b = int(node.attr("blocksize"))
    if x.ndim != 4 or x.shape[1] % (b * b):
        raise node.error(f"needs [N, C, H, W] with C divisible by blocksize^2={b * b}, got {list(x.shape)}")
    n, c, h, w = x.shape
    c2 = c // (b * b)
    if node.attr("mode", "DCR") == "CRD":
        y = L.transpose(L.reshape(x, (n, c2, b, b, h, w)), (0, 1, 4, 2, 5, 3))
    else:
        y = L.transpose(L.reshape(x, (n, b, b, c2, h, w)), (0, 3, 4, 1, 5, 2))
    return L.reshape(y, (n, c2, h * b, w * b))


@onnx_op("SpaceToDepth")
def space_to_depth(node):
    x = node.tensor(0)
    b = int(node.attr("blocksize"))
    if x.ndim != 4 or x.shape[2] % b or x.shape[3] % b:
        raise node.error(f"needs [N, C, H, W] with H and W divisible by blocksize={b}, got {list(x.shape)}")
    n, c, h, w = x.shape
    y = L.reshape(x, (n, c, h // b, b, w // b, b))
    perm = (0, 1, 3, 5, 2, 4) if node.attr("mode", "DCR") == "CRD" else (0, 3, 5, 1, 2, 4)
    return L.reshape(L.transpose(y, perm), (n, c * b * b, h // b, w // b))


# --- scans ----------------------------------------------------------------------------------

def _scan(node, combine, unit):
    """CumSum/CumProd: an inclusive scan `combine` along the axis input, reversed and/or
    exclusive (shifted by one, `unit` first) as the attributes say."""
    x = node.tensor(0)
    axis = norm_axis(node, scalar_const(node, 1), x.ndim)
    rev, excl = node.attr("reverse", 0), node.attr("exclusive", 0)
    if rev:
        x = reverse(x, axis)
    if excl:
        x = shift(x, axis, 1, unit)
    y = combine(x, axis)
    return reverse(y, axis) if rev else y


@onnx_op("CumSum")
def cumsum(node):
    return _scan(node, lambda x, a: L.cumsum(x, a), 0)


def cumprod(x: Tensor, axis: int) -> Tensor:
    # Hillis and Steele: after the step of shift s, y[i] = prod of x[i-2s+1 .. i]
    n, s = x.shape[axis], 1
    while s < n:
        x = x * shift(x, axis, s, 1)
        s *= 2
    return x


@onnx_op("CumProd")
def cumprod_op(node):
    return _scan(node, cumprod, 1)


# --- einsum ---------------------------------------------------------------------------------

def _diagonal(x: Tensor, a: int, b: int) -> Tensor:
    """x with axes a < b replaced by their diagonal at a: y[.., i, ..] = x[.., i, .., i, ..]."""
    shape = (x.shape[a], x.shape[b])
    eye = iota(shape, 0) == iota(shape, 1)
    dims = [1] * x.ndim
    dims[a], dims[b] = shape
    mask = broadcast_to(L.reshape(eye, dims), x.shape)
    return L.sum(L.where(mask, x, zero_of(x)), axis=b)


@onnx_op("Einsum")
def einsum(node):
    xs = node.tensors()
    eq = node.attr("equation").replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(xs):
        raise node.error(f"equation '{eq}' names {len(terms)} operands, got {len(xs)}")
    if not arrow:  # implicit output: the letters seen once, sorted; '...' first
        letters = [c for c in lhs if c.isalpha()]
        once = sorted(c for c in set(letters) if letters.count(c) == 1)
        out = ("..." if "..." in lhs else "") + "".join(once)
    # a letter repeated within one term takes that operand's diagonal first
    fixed = []
    for t, x in zip(terms, xs):
        pre, ell, post = t.partition("...")
        if not ell:
            pre, post = t, ""
        axes = list(range(len(pre))) + list(range(x.ndim - len(post), x.ndim))
        chars = list(pre + post)
        while len(set(chars)) != len(chars):
            c = next(c for c in chars if chars.count(c) > 1)
            i = chars.index(c)
            j = chars.index(c, i + 1)
            x = _diagonal(x, axes[i], axes[j])
            axes = [p if p < axes[j] else p - 1 for k, p in enumerate(axes) if k != j]
            del chars[j]
            if j < len(pre):
                pre = pre[:j] + pre[j + 1:]
            else:
                post = post[:j - len(pre)] + post[j - len(pre) + 1:]
        fixed.append((pre + ell + post, x))
    equation = ",".join(t for t, _ in fixed) + "->" + out
    return _einsum(equation, *[x for _, x in fixed])


# --- det ------------------------------------------------------------------------------------

MAX_DET = 32  # Det is unrolled: one elimination step per column


@onnx_op("Det")
def det(node):
    a = node.tensor(0)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise node.error(f"needs [..., M, M] matrices, got shape {list(a.shape)}")
    if not a.dtype.is_float:
        raise node.fail(f"Det of {a.dtype} is not supported (floating point only)")
    m = a.shape[-1]
    if m > MAX_DET:
        raise node.fail(f"Det of {m}x{m} matrices is not supported (irgrad unrolls the LU "
                        f"factorization; up to {MAX_DET}x{MAX_DET})")
    if m == 0:
        return L.full(a.shape[:-2], 1.0, a.dtype)
    if m == 2:  # ad - bc
        return a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0]
    return _det_lu(a)


def _det_lu(s: Tensor) -> Tensor:
    """Gaussian elimination with partial pivoting, unrolled: det = sign * prod of pivots.
    Step k on the trailing [n, n] block S: p = argmax |S[:, 0]|, swap rows 0 and p (the
    sign flips when p != 0), then S[1:, 1:] -= S[1:, :1] / S[0, 0] * S[0, 1:]."""
    batch = s.shape[:-2]
    result = None
    while True:
        n = s.shape[-1]
        col = s[..., :, 0]
        if n == 1:
            piv = col[..., 0]
            return piv if result is None else result * piv
        p = L.reshape(L.argmax(L.abs(col), axis=-1), batch + (1,))
        rows = iota(batch + (n,), len(batch), DType.i32)
        hit = rows == broadcast_to(p.astype(DType.i32), rows.shape)  # one-hot of p
        hit2 = broadcast_to(L.reshape(hit, batch + (n, 1)), s.shape)
        top = s[..., 0:1, :]
        pivot_row = L.sum(L.where(hit2, s, 0.0), axis=-2, keepdims=True)
        first = broadcast_to(L.reshape(rows == 0, batch + (n, 1)), s.shape)
        s = L.where(first, broadcast_to(pivot_row, s.shape),
                    L.where(hit2, broadcast_to(top, s.shape), s))
        piv = s[..., 0, 0]
        sign = L.where(L.reshape(p, batch) == 0, 1.0, -1.0).astype(s.dtype)
        factor = piv * sign
        result = factor if result is None else result * factor
        safe = L.where(piv == 0.0, 1.0, piv)  # a zero pivot: the column is zero, det 0
        below = s[..., 1:, 0:1] / L.reshape(safe, batch + (1, 1))
        s = s[..., 1:, 1:] - below * s[..., 0:1, 1:]
