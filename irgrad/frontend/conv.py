"""Convolutions and pooling in the DSL, PyTorch's conventions (NCHW / OIHW, NCL / OIL).

Each function checks its arguments against the shapes first, so a bad stride, padding
or channel count is a ShapeError naming the user's line, both shapes and the offending
argument; then it emits one `conv` (or `window` + reduction for pooling) op. Transposed
convolution is the adjoint of conv: the input dilated by the stride (an interior pad),
convolved with the flipped kernel whose in/out channels are swapped per group.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir.builder import Builder
from ..ir.ops.conv import conv_attrs, dilate, out_size
from .tensor import Tensor, as_tensor, emit, fail, reduce, require_context, reshape, user_location


def _is_int(a) -> bool:
    return isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_))


def _tuple(v, n, what, fn):
    if _is_int(v):
        return (int(v),) * n
    if isinstance(v, (tuple, list)) and len(v) == n and all(_is_int(a) for a in v):
        return tuple(int(a) for a in v)
    raise fail(f"{fn}: {what} must be an int or {n} ints, got {v!r}")


def _check_rank(x, w, n, fn):
    names = {1: ("NCL", "OIL"), 2: ("NCHW", "OIHW"), 3: ("NCDHW", "OIDHW")}[n]
    if x.ndim != n + 2 or (w is not None and w.ndim != n + 2):
        shapes = f"x {list(x.shape)}" + (f" and weight {list(w.shape)}" if w is not None else "")
        raise fail(f"{fn} needs x in {names[0]} layout" + (f" and a weight in {names[1]}" if w is not None
                                                          else "") + f" ({n + 2}-D), got {shapes}")
    if not x.dtype.is_float or (w is not None and w.dtype is not x.dtype):
        raise fail(f"{fn} needs floating-point x and weight of one dtype, got {x.type}"
                   + (f" and {w.type}" if w is not None else ""))


def _padding(padding, k, s, d, n, fn, x, w):
    """(low, high) per axis for an int, ints, "valid" or "same" (stride 1, as PyTorch)."""
    if padding == "valid":
        return (0,) * n, (0,) * n
    if padding == "same":
        if any(a != 1 for a in s):
            raise fail(f"{fn}: padding='same' needs stride 1 (as in PyTorch), got stride={list(s)}")
        total = [dd * (kk - 1) for kk, dd in zip(k, d)]
        lo = tuple(t // 2 for t in total)
        return lo, tuple(t - a for t, a in zip(total, lo))
    if isinstance(padding, str):
        raise fail(f"{fn}: padding must be an int, {n} ints, 'same' or 'valid', got {padding!r}")
    p = _tuple(padding, n, "padding", fn)
    if min(p) < 0:
        raise fail(f"{fn}: padding must be >= 0, got padding={list(p)} (x {list(x.shape)}"
                   + (f", weight {list(w.shape)})" if w is not None else ")"))
    return p, p


def _geometry_error(fn, x, w, k, s, d, lo, hi):
    padded = [a + l + h for a, l, h in zip(x.shape[2:], lo, hi)]
    eff = [(a - 1) * dd + 1 for a, dd in zip(k, d)]
    for a, e in zip(padded, eff):
        if e > a:
            what = f"weight {list(w.shape)}" if w is not None else f"kernel_size {list(k)}"
            raise fail(f"{fn}: the kernel ({what}, dilated extent {eff}) is larger than the padded "
                       f"input {padded} (x {list(x.shape)}, padding {list(lo)}, stride {list(s)})")


def _positive(v, what, fn):
    if min(v) < 1:
        raise fail(f"{fn}: {what} must be >= 1, got {what}={list(v)}")


def _add_bias(y, b, fn):
    if b is None:
        return y
    b = as_tensor(b, y)
    if b.shape != (y.shape[1],):
        raise fail(f"{fn}: bias must have shape [{y.shape[1]}] (one per output channel), got {list(b.shape)}")
    return y + reshape(b, (1, y.shape[1]) + (1,) * (y.ndim - 2))


def _conv(n, fn, x, w, b, stride, padding, dilation, groups):
    x = as_tensor(x)
    w = as_tensor(w, x if isinstance(x, Tensor) else None)  # a numpy weight takes x's float dtype
    _check_rank(x, w, n, fn)
    s = _tuple(stride, n, "stride", fn)
    d = _tuple(dilation, n, "dilation", fn)
    _positive(s, "stride", fn)
    _positive(d, "dilation", fn)
    if not _is_int(groups) or groups < 1:
        raise fail(f"{fn}: groups must be an int >= 1, got {groups!r}")
    groups = int(groups)
    c, o = x.shape[1], w.shape[0]
    if c % groups or o % groups:
        raise fail(f"{fn}: groups={groups} must divide the input channels ({c}, x {list(x.shape)}) and "
                   f"the output channels ({o}, weight {list(w.shape)})")
    if w.shape[1] * groups != c:
        raise fail(f"{fn}: weight {list(w.shape)} expects {w.shape[1] * groups} input channels "
                   f"(groups={groups}), but x {list(x.shape)} has {c}")
    k = w.shape[2:]
    lo, hi = _padding(padding, k, s, d, n, fn, x, w)
    _geometry_error(fn, x, w, k, s, d, lo, hi)
    y = emit("conv", x.value, w.value, **conv_attrs(s, d, lo, hi, groups))
    return _add_bias(y, b, fn)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """PyTorch's conv2d: x [N, C, H, W], w [O, C/groups, kH, kW], b [O] or None;
    padding an int, a pair, "same" (stride 1) or "valid"."""
    return _conv(2, "conv2d", x, w, b, stride, padding, dilation, groups)


def conv1d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """PyTorch's conv1d: x [N, C, L], w [O, C/groups, k]."""
    return _conv(1, "conv1d", x, w, b, stride, padding, dilation, groups)


def _builder() -> Builder:
    ctx = require_context("a convolution")
    return Builder(ctx.builder.block, user_location())


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1) -> Tensor:
    """PyTorch's conv_transpose2d: x [N, C, H, W], w [C, O/groups, kH, kW] -> [N, O, H', W'],
    H' = (H - 1) stride - 2 padding + dilation (kH - 1) + output_padding + 1."""
    fn, n = "conv_transpose2d", 2
    x = as_tensor(x)
    w = as_tensor(w, x)
    _check_rank(x, w, n, fn)
    s = _tuple(stride, n, "stride", fn)
    d = _tuple(dilation, n, "dilation", fn)
    p = _tuple(padding, n, "padding", fn)
    op_ = _tuple(output_padding, n, "output_padding", fn)
    _positive(s, "stride", fn)
    _positive(d, "dilation", fn)
    if min(p) < 0 or min(op_) < 0:
        raise fail(f"{fn}: padding and output_padding must be >= 0, got padding={list(p)} "
                   f"output_padding={list(op_)} (x {list(x.shape)}, weight {list(w.shape)})")
    if any(a >= max(ss, dd) for a, ss, dd in zip(op_, s, d)):
        raise fail(f"{fn}: output_padding {list(op_)} must be smaller than stride {list(s)} or "
                   f"dilation {list(d)}")
    if not _is_int(groups) or groups < 1 or x.shape[1] % groups or w.shape[0] != x.shape[1]:
        raise fail(f"{fn}: weight {list(w.shape)} needs {x.shape[1]} input channels first (x "
                   f"{list(x.shape)}) and groups={groups!r} must divide them")
    k = w.shape[2:]
    lo = [dd * (kk - 1) - pp for kk, dd, pp in zip(k, d, p)]
    hi = [a + o for a, o in zip(lo, op_)]
    out = [(h - 1) * ss - 2 * pp + dd * (kk - 1) + o + 1 for h, ss, pp, dd, kk, o in zip(x.shape[2:], s, p, d, k, op_)]
    if min(out) < 1:
        raise fail(f"{fn}: the output would be {out} (x {list(x.shape)}, weight {list(w.shape)}, "
                   f"stride {list(s)}, padding {list(p)})")
    bld = _builder()
    xv = x.value
    for i in range(n):
        xv = dilate(bld, xv, 2 + i, s[i])
    groups = int(groups)
    cin, og = w.shape[0], w.shape[1]
    cg = cin // groups
    wv = bld.emit("reverse", w.value, axes=(2, 3))
    wv = bld.reshape(wv, [groups, cg, og] + list(k))
    wv = bld.reshape(bld.transpose(wv, [0, 2, 1, 3, 4]), [groups * og, cg] + list(k))
    y = emit("conv", xv, wv, **conv_attrs((1,) * n, d, lo, hi, groups))
    return _add_bias(y, b, fn)


def _pool_args(fn, x, kernel_size, stride, padding):
    x = as_tensor(x)
    _check_rank(x, None, 2, fn)
    k = _tuple(kernel_size, 2, "kernel_size", fn)
    s = k if stride is None else _tuple(stride, 2, "stride", fn)
    p = _tuple(padding, 2, "padding", fn)
    _positive(k, "kernel_size", fn)
    _positive(s, "stride", fn)
    if min(p) < 0 or any(2 * pp > kk for pp, kk in zip(p, k)):
        raise fail(f"{fn}: padding must be >= 0 and at most half the kernel (as PyTorch), got "
                   f"padding={list(p)} kernel_size={list(k)} (x {list(x.shape)})")
    _geometry_error(fn, x, None, k, s, (1, 1), p, p)
    return x, k, s, p


def _pooled(x, k, s, p, fill, opname):
    win = emit("window", x.value, kernel=k, stride=s, dilation=(1, 1), pad_low=p, pad_high=p, fill=fill)
    return reduce(opname, win, (2, 3))


def max_pool2d(x, kernel_size, stride=None, padding=0) -> Tensor:
    """PyTorch's max_pool2d (stride defaults to kernel_size; padding counts as -inf)."""
    x, k, s, p = _pool_args("max_pool2d", x, kernel_size, stride, padding)
    return _pooled(x, k, s, p, -math.inf, "reduce_max")


def avg_pool2d(x, kernel_size, stride=None, padding=0) -> Tensor:
    """PyTorch's avg_pool2d with count_include_pad=True (its default): padding counts as 0
    and every window divides by kH kW."""
    x, k, s, p = _pool_args("avg_pool2d", x, kernel_size, stride, padding)
    return _pooled(x, k, s, p, 0.0, "reduce_sum") * (1.0 / (k[0] * k[1]))


__all__ = ["conv1d", "conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "out_size"]
