"""Convolution primitives: `conv`, its sliding-window view `window`, and `reverse`.

`conv` is N-d (1-D, 2-D, 3-D spatial), PyTorch's layout: x [N, C, *S], w [O, C/groups, *K],
result [N, O, *J], with per-axis `stride`, `dilation` and padding `pad_low`/`pad_high`
(negative padding crops: the transposes below need it; the DSL refuses it from users).
Its derivatives are convolutions again (JAX's conv_general_dilated transpose rules, with
the input dilation spelled as an interior pad), so gradients of any order stay convs:

    dx = conv(dilate(g, stride), flip(w) with in/out channels swapped per group,
              dilation, pad_low = (K-1) d - lo, pad_high = Hp - 1 - (J-1) s - hi)
    dw = conv(x as [C/G, G*N, *S], g as [O, N, *J], stride = dilation, dilation = stride,
              same padding, groups) as [O, C/G, *K]

`window` is im2col: x [..., *S] -> [..., *K, *J], element (k, j) = x[j s + k d - lo]
(`fill` outside). Pooling is a reduction over its K axes, and the `expand` pass turns a
`conv` into window + reshape + batched matmul (im2col + GEMM) or, for small channel
counts, window x weights reduced in one loop (direct): see passes/expand.py.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ...errors import ShapeError
from ..indexing import clip
from ..registry import AttrSpec, OpDef, register
from ..scalar import Const, InRange, Select
from ..types import DType


def _spatial(op, attrs, name, n, default=None):
    v = attrs.get(name)
    v = tuple(v) if v is not None else (default,) * n
    if len(v) != n:
        raise ShapeError(f"'{op}' attribute '{name}' needs {n} entries (one per spatial axis), "
                         f"got {list(v)}")
    return v


def out_size(size, k, s, d, lo, hi):
    """Output length of one spatial axis (0 or less: the kernel does not fit)."""
    return (size + lo + hi - (k - 1) * d - 1) // s + 1


# --- helpers the derivative rules (and the DSL) build with ---------------------------------------

def pad_or_crop(b, v, low, high):
    """Pad by the non-negative amounts, slice off the negative ones."""
    if any(x < 0 for x in list(low) + list(high)):
        start = [max(-x, 0) for x in low]
        limit = [d - max(-x, 0) for d, x in zip(v.shape, high)]
        v = b.slice(v, start, limit)
        low, high = [max(x, 0) for x in low], [max(x, 0) for x in high]
    if any(low) or any(high):
        v = b.pad(v, low, high)
    return v


def dilate(b, v, axis: int, s: int):
    """Insert s-1 zeros between neighbours along `axis` (an interior pad): [.., J, ..] ->
    [.., (J-1) s + 1, ..], built from reshape, pad and slice."""
    if s == 1 or v.shape[axis] <= 1:
        return v
    shp = list(v.shape)
    j = shp[axis]
    v = b.reshape(v, shp[:axis + 1] + [1] + shp[axis + 1:])
    high = [0] * (len(shp) + 1)
    high[axis + 1] = s - 1
    v = b.pad(v, [0] * (len(shp) + 1), high)
    v = b.reshape(v, shp[:axis] + [j * s] + shp[axis + 1:])
    limit = list(shp)
    limit[axis] = (j - 1) * s + 1
    return b.slice(v, [0] * len(shp), limit)


def conv_attrs(stride, dilation, pad_low, pad_high, groups):
    return {"stride": tuple(stride), "dilation": tuple(dilation), "pad_low": tuple(pad_low),
            "pad_high": tuple(pad_high), "groups": int(groups)}


def _group_swap(b, w, groups):
    """[O, C/G, *K] -> [C, O/G, *K]: the weight of the transposed map, per group."""
    o, cg, k = w.shape[0], w.shape[1], list(w.shape[2:])
    og = o // groups
    v = b.reshape(w, [groups, og, cg] + k)
    v = b.transpose(v, [0, 2, 1] + list(range(3, 3 + len(k))))
    return b.reshape(v, [groups * cg, og] + k)


# --- reverse ---------------------------------------------------------------------------------------

def _reverse_infer(types, attrs, declared):
    x = types[0]
    axes = attrs["axes"]
    if len(set(axes)) != len(axes) or any(not 0 <= a < x.rank for a in axes):
        raise ShapeError(f"'reverse' axes {list(axes)} are not distinct axes of {x}")
    return [x]


def _reverse_reads(op, idx):
    shape = op.operands[0].shape
    return [(0, tuple(i * -1 + (shape[a] - 1) if a in op.attrs["axes"] else i
                      for a, i in enumerate(idx)))]


register(OpDef(
    name="reverse", infer=_reverse_infer,
    reference=lambda xs, op: [np.ascontiguousarray(np.flip(xs[0], op.attrs["axes"]))],
    # reversing is its own transpose and linear
    vjp=lambda b, op, cts, w: [b.emit("reverse", cts[0], axes=op.attrs["axes"])],
    jvp=lambda b, op, ts: [b.emit("reverse", ts[0], axes=op.attrs["axes"])],
    attrs={"axes": AttrSpec("ints")}, num_operands=1, cost=0,
    reads=_reverse_reads, build=lambda ev, op, idx, kids: kids[0],
    rules=(lambda rw, op: op.operands[0] if not op.attrs["axes"] else None,),
    doc="The elements of `axes` in reverse order (a kernel flip)."))


# --- window (im2col) -----------------------------------------------------------------------------

def _window_geometry(x, attrs):
    k = tuple(attrs["kernel"])
    n = len(k)
    if not 1 <= n <= x.rank:
        raise ShapeError(f"'window' needs 1 to {x.rank} kernel sizes for {x}, got {list(k)}")
    s = _spatial("window", attrs, "stride", n, 1)
    d = _spatial("window", attrs, "dilation", n, 1)
    lo = _spatial("window", attrs, "pad_low", n, 0)
    hi = _spatial("window", attrs, "pad_high", n, 0)
    if min(k + s + d) < 1:
        raise ShapeError(f"'window' needs kernel, stride and dilation >= 1, got kernel={list(k)} "
                         f"stride={list(s)} dilation={list(d)}")
    sizes = x.shape[x.rank - n:]
    j = tuple(out_size(*a) for a in zip(sizes, k, s, d, lo, hi))
    if min(j) < 1:
        raise ShapeError(f"'window': kernel {list(k)} (dilation {list(d)}) is larger than the padded "
                         f"input {[a + l + h for a, l, h in zip(sizes, lo, hi)]} of {x}")
    return k, s, d, lo, hi, j


def _window_infer(types, attrs, declared):
    x = types[0]
    k, s, d, lo, hi, j = _window_geometry(x, attrs)
    return [x.with_shape(x.shape[:x.rank - len(k)] + k + j)]


def _padded(x, lo, hi, fill):
    """x with its trailing len(lo) axes padded (negative: cropped)."""
    lead = x.ndim - len(lo)
    x = np.pad(x, [(0, 0)] * lead + [(max(a, 0), max(b, 0)) for a, b in zip(lo, hi)],
               constant_values=fill)
    crop = tuple(slice(None) for _ in range(lead)) + tuple(
        slice(max(-a, 0), n - max(-b, 0)) for a, b, n in zip(lo, hi, x.shape[lead:]))
    return x[crop]


def _window_ref(xs, op):
    x = xs[0]
    k, s, d, lo, hi, j = _window_geometry(op.operands[0].type, op.attrs)
    xp = _padded(x, lo, hi, op.attrs["fill"])
    lead = x.ndim - len(k)
    out = np.empty(x.shape[:lead] + k + j, dtype=x.dtype)
    for kk in itertools.product(*(range(a) for a in k)):
        sl = tuple(slice(a * dd, a * dd + (jj - 1) * ss + 1, ss) for a, dd, jj, ss in zip(kk, d, j, s))
        out[(Ellipsis,) + kk + (slice(None),) * len(k)] = xp[(Ellipsis,) + sl]
    return [out]


def _window_positions(op, idx):
    k, s, d, lo, hi, j = _window_geometry(op.operands[0].type, op.attrs)
    n = len(k)
    lead = len(idx) - 2 * n
    kk, jj = idx[lead:lead + n], idx[lead + n:]
    return lead, [jv * si + kv * di - li for kv, jv, si, di, li in zip(kk, jj, s, d, lo)]


def _window_reads(op, idx):
    lead, pos = _window_positions(op, idx)
    sizes = op.operands[0].shape[lead:]
    return [(0, tuple(idx[:lead]) + tuple(clip(p, 0, n - 1) for p, n in zip(pos, sizes)))]


def _window_build(ev, op, idx, kids):
    lead, pos = _window_positions(op, idx)
    dt, cond = op.results[0].dtype, None
    for p, n in zip(pos, op.operands[0].shape[lead:]):
        plo, phi = p.bounds()
        if plo >= 0 and phi < n:
            continue  # never outside: no mask
        c = InRange(DType.bool, p, 0, n)
        cond = c if cond is None else Select(DType.bool, cond, c, Const(DType.bool, False))
    if cond is None:
        return kids[0]
    return Select(dt, cond, kids[0], Const(dt, op.attrs["fill"]))


def _window_vjp(b, op, cts, wanted):
    # x's cotangent: every window element goes back to the input element it copied, so
    # dx = sum over kernel offsets k of g[k] dilated by the stride and shifted to k d - lo
    g, x = cts[0], op.operands[0]
    k, s, d, lo, hi, j = _window_geometry(x.type, op.attrs)
    n, r = len(k), x.type.rank
    lead = r - n
    total = None
    for kk in itertools.product(*(range(a) for a in k)):
        start = [0] * lead + list(kk) + [0] * n
        limit = list(g.shape[:lead]) + [a + 1 for a in kk] + list(j)
        v = b.reshape(b.slice(g, start, limit), list(x.shape[:lead]) + list(j))
        for i in range(n):
            v = dilate(b, v, lead + i, s[i])
        low = [0] * lead + [a * dd - ll for a, dd, ll in zip(kk, d, lo)]
        high = [0] * lead + [x.shape[lead + i] - low[lead + i] - v.shape[lead + i] for i in range(n)]
        total = b.add_maybe(total, pad_or_crop(b, v, low, high))
    return [total]


WINDOW_ATTRS = {"kernel": AttrSpec("ints"), "stride": AttrSpec("ints"), "dilation": AttrSpec("ints"),
                "pad_low": AttrSpec("ints"), "pad_high": AttrSpec("ints"),
                "fill": AttrSpec("float", required=False, default=0.0)}

register(OpDef(
    name="window", infer=_window_infer, reference=_window_ref,
    vjp=_window_vjp,  # (a window with fill 0 is linear; pooling's fill -inf is never differentiated at the fill)
    jvp=lambda b, op, ts: [b.emit("window", ts[0], **op.attrs)],
    attrs=WINDOW_ATTRS, num_operands=1, cost=0, reads=_window_reads, build=_window_build,
    doc="Sliding windows (im2col): [..., *S] -> [..., *K, *J], element (k, j) = x[j stride + "
        "k dilation - pad_low], `fill` outside the input."))


# --- conv ----------------------------------------------------------------------------------------

def conv_geometry(x, w, attrs):
    """(spatial rank, groups, stride, dilation, lo, hi, output sizes), or a ShapeError."""
    if x.dtype != w.dtype or not x.dtype.is_float:
        raise ShapeError(f"'conv' needs two floating-point operands of one dtype, got {x} and {w}")
    n = x.rank - 2
    if not 1 <= n <= 3 or w.rank != x.rank:
        raise ShapeError(f"'conv' needs x [N, C, *S] and w [O, C/groups, *K] with 1 to 3 spatial "
                         f"axes, got {x} and {w}")
    g = attrs["groups"]
    c, o, cg = x.shape[1], w.shape[0], w.shape[1]
    if g < 1 or c % g or o % g:
        raise ShapeError(f"'conv' groups={g} must divide the input channels ({c}) and the output "
                         f"channels ({o})")
    if cg * g != c:
        raise ShapeError(f"'conv' weight {w} has {cg} input channels per group; x {x} with "
                         f"groups={g} needs {c // g}")
    s = _spatial("conv", attrs, "stride", n)
    d = _spatial("conv", attrs, "dilation", n)
    lo = _spatial("conv", attrs, "pad_low", n)
    hi = _spatial("conv", attrs, "pad_high", n)
    if min(s + d) < 1:
        raise ShapeError(f"'conv' needs stride and dilation >= 1, got stride={list(s)} dilation={list(d)}")
    k = w.shape[2:]
    j = tuple(out_size(*a) for a in zip(x.shape[2:], k, s, d, lo, hi))
    if min(j) < 1:
        eff = [(a - 1) * dd + 1 for a, dd in zip(k, d)]
        raise ShapeError(f"'conv' kernel {list(k)} (dilated: {eff}) is larger than the padded input "
                         f"{[a + l + h for a, l, h in zip(x.shape[2:], lo, hi)]} (x {x}, padding "
                         f"low={list(lo)} high={list(hi)}, stride={list(s)})")
    return n, g, s, d, lo, hi, j


def _conv_infer(types, attrs, declared):
    x, w = types
    n, g, s, d, lo, hi, j = conv_geometry(x, w, attrs)
    return [x.with_shape((x.shape[0], w.shape[0]) + j)]


def conv_reference(x, w, stride, dilation, lo, hi, groups):
    n = x.ndim - 2
    N, C = x.shape[:2]
    O, cg = w.shape[:2]
    k = w.shape[2:]
    j = tuple(out_size(*a) for a in zip(x.shape[2:], k, stride, dilation, lo, hi))
    xp = _padded(x, lo, hi, 0)
    xg = xp.reshape((N, groups, cg) + xp.shape[2:])
    wg = w.reshape((groups, O // groups, cg) + k)
    out = np.zeros((N, groups, O // groups) + j, dtype=np.float64 if x.dtype == np.float64 else np.float32)
    for kk in itertools.product(*(range(a) for a in k)):
        sl = tuple(slice(a * dd, a * dd + (jj - 1) * ss + 1, ss)
                   for a, dd, jj, ss in zip(kk, dilation, j, stride))
        patch = xg[(slice(None),) * 3 + sl]  # [N, G, cg, *J]
        out += np.einsum("ngc...,goc->ngo...", patch, wg[(Ellipsis,) + kk])
    return out.reshape((N, O) + j).astype(x.dtype)


def _conv_ref(xs, op):
    a = op.attrs
    return [conv_reference(xs[0], xs[1], a["stride"], a["dilation"], a["pad_low"], a["pad_high"],
                           a["groups"])]


def conv_input_grad(b, g, w, x_type, attrs):
    """x's cotangent of conv(x, w) for the result's cotangent g: a conv of g dilated by the
    stride with the flipped kernel, in/out channels swapped per group."""
    n, G, s, d, lo, hi, j = conv_geometry(x_type, w.type, attrs)
    k = w.shape[2:]
    hp = [a + l + h for a, l, h in zip(x_type.shape[2:], lo, hi)]
    gd = g
    for i in range(n):
        gd = dilate(b, gd, 2 + i, s[i])
    wf = _group_swap(b, b.emit("reverse", w, axes=tuple(range(2, 2 + n))), G)
    return b.emit("conv", gd, wf, **conv_attrs(
        (1,) * n, d, [(kk - 1) * dd - l for kk, dd, l in zip(k, d, lo)],
        [p - 1 - (jj - 1) * ss - h for p, jj, ss, h in zip(hp, j, s, hi)], G))


def _conv_vjp(b, op, cts, wanted):
    # dx as above; dw[o, c, k] = sum_{n, j} g[n, o, j] xp[n, g(o) C/G + c, j s + k d]
    g, (x, w) = cts[0], op.operands
    dx = conv_input_grad(b, g, w, x.type, op.attrs) if wanted[0] else None
    dw = b.emit("conv_weight_grad", x, g, kernel=tuple(w.shape[2:]), **op.attrs) if wanted[1] else None
    return [dx, dw]


def _conv_jvp(b, op, ts):
    # conv is bilinear: d conv(x, w) = conv(dx, w) + conv(x, dw)
    x, w = op.operands
    return [b.add_maybe(b.emit("conv", ts[0], w, **op.attrs) if ts[0] is not None else None,
                        b.emit("conv", x, ts[1], **op.attrs) if ts[1] is not None else None)]


# --- conv_weight_grad ----------------------------------------------------------------------------
# dw = conv_weight_grad(x, g) is conv's weight cotangent, bilinear in (x, g), and
# <conv_weight_grad(x, g), t> = <g, conv(x, t)>: its own derivatives are convs again
# (d/dg: conv(x, t); d/dx: conv_input_grad(g, t)). A primitive of its own so that it
# expands to one GEMM over the same im2col columns as the forward conv (shared by cse).

def _wgrad_attrs(attrs):
    return {k: v for k, v in attrs.items() if k != "kernel"}


def _wgrad_weight_type(x, g, attrs):
    k = tuple(attrs["kernel"])
    if g.rank != x.rank or len(k) != x.rank - 2 or x.dtype != g.dtype:
        raise ShapeError(f"'conv_weight_grad' needs x [N, C, *S] and g [N, O, *J] of one dtype and a "
                         f"kernel per spatial axis, got {x}, {g} and kernel={list(k)}")
    groups = attrs["groups"]
    if groups < 1 or x.shape[1] % groups:
        raise ShapeError(f"'conv_weight_grad' groups={groups} must divide the channels of {x}")
    return x.with_shape((g.shape[1], x.shape[1] // groups) + k)


def _wgrad_infer(types, attrs, declared):
    x, g = types
    w = _wgrad_weight_type(x, g, attrs)
    n, G, s, d, lo, hi, j = conv_geometry(x, w, _wgrad_attrs(attrs))
    if g.shape != (x.shape[0], w.shape[0]) + j:
        raise ShapeError(f"'conv_weight_grad' g {g} is not the shape of conv's result "
                         f"{list((x.shape[0], w.shape[0]) + j)} for x {x} and kernel {list(attrs['kernel'])}")
    return [w]


def _wgrad_ref(xs, op):
    x, g = xs
    a = op.attrs
    k, s, d, lo, hi, G = a["kernel"], a["stride"], a["dilation"], a["pad_low"], a["pad_high"], a["groups"]
    N, C = x.shape[:2]
    O, j = g.shape[1], g.shape[2:]
    cg, og = C // G, O // G
    xg = _padded(x, lo, hi, 0).reshape((N, G, cg) + tuple(a + l + h for a, l, h in zip(x.shape[2:], lo, hi)))
    gg = g.reshape((N, G, og) + j)
    out = np.zeros((G, og, cg) + tuple(k), dtype=np.float64 if x.dtype == np.float64 else np.float32)
    for kk in itertools.product(*(range(v) for v in k)):
        sl = tuple(slice(v * dd, v * dd + (jj - 1) * ss + 1, ss) for v, dd, jj, ss in zip(kk, d, j, s))
        patch = xg[(slice(None),) * 3 + sl].reshape(N, G, cg, -1)  # [N, G, cg, prod J]
        out[(Ellipsis,) + kk] = np.einsum("ngcj,ngoj->goc", patch, gg.reshape(N, G, og, -1))
    return [out.reshape((O, cg) + tuple(k)).astype(x.dtype)]


def _wgrad_vjp(b, op, cts, wanted):
    t, (x, g) = cts[0], op.operands
    attrs = _wgrad_attrs(op.attrs)
    return [conv_input_grad(b, g, t, x.type, attrs) if wanted[0] else None,
            b.emit("conv", x, t, **attrs) if wanted[1] else None]


def _wgrad_jvp(b, op, ts):
    x, g = op.operands
    return [b.add_maybe(b.emit("conv_weight_grad", ts[0], g, **op.attrs) if ts[0] is not None else None,
                        b.emit("conv_weight_grad", x, ts[1], **op.attrs) if ts[1] is not None else None)]


def conv_flops(op) -> int:
    """Multiply-adds x 2 of a conv op (for the algorithm choice and the benchmarks)."""
    x, w, y = op.operands[0], op.operands[1], op.result
    return 2 * math.prod(y.shape) * w.shape[1] * math.prod(w.shape[2:])


# --- conv's decomposition (the `expand` pass) -----------------------------------------------------

# Which algorithm `expand` picks when asked for "auto", from measurements on the CPU
# backend (benchmarks/conv_algorithms.py; docs/passes.md has the table): the direct loop
# wins while the reduction per output element (C/G * prod(K)) is short, im2col + GEMM after.
DIRECT_MAX_REDUCTION = 0


def conv_algorithm(op, algorithm: str = "auto") -> str:
    if algorithm != "auto":
        return algorithm
    w = op.operands[1]
    return "direct" if w.shape[1] * math.prod(w.shape[2:]) <= DIRECT_MAX_REDUCTION else "gemm"


def _unit_kernel(k, s, lo, hi) -> bool:
    return all(a == 1 for a in k) and all(a == 1 for a in s) and not any(lo) and not any(hi)


def conv_columns(b, x, k, s, d, lo, hi, G):
    """im2col with the batch folded into the columns: [G, C/G prod(K), N prod(J)], element
    ((c, k), (n, j)) = xp[n, g C/G + c, j s + k d]. The forward conv and its weight
    gradient build it identically, so cse keeps one. The kernel writing it runs over the
    transposed window (no index division); a 1x1 unstrided conv needs no window."""
    N, C = x.shape[:2]
    cg, n = C // G, len(k)
    sp = list(range(n))
    if _unit_kernel(k, s, lo, hi):
        j = list(x.shape[2:])
        v = b.transpose(b.reshape(x, [N, G, cg] + j), [1, 2, 0] + [3 + i for i in sp])
        kp = 1
    else:
        win = b.emit("window", x, kernel=tuple(k), stride=tuple(s), dilation=tuple(d),
                     pad_low=tuple(lo), pad_high=tuple(hi))
        j = list(win.shape[2 + n:])
        v = b.reshape(win, [N, G, cg] + list(k) + j)
        v = b.transpose(v, [1, 2] + [3 + i for i in sp] + [0] + [3 + n + i for i in sp])
        kp = math.prod(k)
    return b.reshape(v, [G, cg * kp, N * math.prod(j)])


def _conv_expand(b, op, algorithm: str = "auto"):
    """conv as ops the kernels know. gemm: im2col (`conv_columns`) + one matmul per group,
    [O/G, C/G K] @ [C/G K, N J], transposed back to [N, O, *J]; batched: one matmul per
    image and group, weights broadcast over the batch; direct: window x weights summed
    over C/G and K in one reduction kernel, nothing materialized."""
    x, w = op.operands
    n, G, s, d, lo, hi, j = conv_geometry(x.type, w.type, op.attrs)
    N, C = x.shape[:2]
    O, cg = w.shape[:2]
    k = list(w.shape[2:])
    og, kp, jp = O // G, math.prod(k), math.prod(j)
    algo = conv_algorithm(op, algorithm)

    def win():
        return b.emit("window", x, kernel=tuple(k), stride=s, dilation=d, pad_low=lo, pad_high=hi)

    if algo == "direct":
        cols = b.reshape(win(), [N, G, cg, kp, jp])
        cols = b.broadcast(cols, [N, G, og, cg, kp, jp], (0, 1, 3, 4, 5))
        wb = b.broadcast(b.reshape(w, [G, og, cg, kp]), [N, G, og, cg, kp, jp], (1, 2, 3, 4))
        y = b.reduce_sum(b.mul(cols, wb), (3, 4))
    elif algo == "batched":
        cols = b.reshape(x, [N, G, cg, jp]) if _unit_kernel(k, s, lo, hi) else \
            b.reshape(win(), [N, G, cg * kp, jp])
        wm = b.broadcast(b.reshape(w, [G, og, cg * kp]), [N, G, og, cg * kp], (1, 2, 3))
        y = b.matmul(wm, cols)
    elif algo == "gemm":
        cols = conv_columns(b, x, k, s, d, lo, hi, G)
        y = b.matmul(b.reshape(w, [G, og, cg * kp]), cols)  # [G, og, N jp]
        y = b.transpose(b.reshape(y, [G, og, N, jp]), [2, 0, 1, 3])
    else:
        raise ValueError(f"unknown conv algorithm '{algorithm}' (auto, gemm, batched or direct)")
    return b.reshape(y, [N, O] + list(j))


def _wgrad_expand(b, op, algorithm: str = "auto"):
    """dw = g as [G, O/G, N J] times the forward's im2col columns transposed: one GEMM
    per group over N J (the long dimension), [O/G, C/G K] out."""
    x, g = op.operands
    attrs = _wgrad_attrs(op.attrs)
    k = list(op.attrs["kernel"])
    G = attrs["groups"]
    N, O = g.shape[:2]
    og, jp = O // G, math.prod(g.shape[2:])
    cols = conv_columns(b, x, k, attrs["stride"], attrs["dilation"], attrs["pad_low"],
                        attrs["pad_high"], G)
    gm = b.reshape(b.transpose(b.reshape(g, [N, G, og, jp]), [1, 2, 0, 3]), [G, og, N * jp])
    dw = b.matmul(gm, b.swap_last_two(cols))  # [G, og, cg K]
    return b.reshape(dw, list(op.result.shape))


register(OpDef(
    name="conv", infer=_conv_infer, reference=_conv_ref, vjp=_conv_vjp, jvp=_conv_jvp,
    attrs={"stride": AttrSpec("ints"), "dilation": AttrSpec("ints"), "pad_low": AttrSpec("ints"),
           "pad_high": AttrSpec("ints"), "groups": AttrSpec("int")},
    num_operands=2, expand=_conv_expand,
    doc="Cross-correlation, PyTorch's conv: x [N, C, *S], w [O, C/groups, *K] -> [N, O, *J]; "
        "negative padding crops."))


register(OpDef(
    name="conv_weight_grad", infer=_wgrad_infer, reference=_wgrad_ref, vjp=_wgrad_vjp,
    jvp=_wgrad_jvp,
    attrs={"kernel": AttrSpec("ints"), "stride": AttrSpec("ints"), "dilation": AttrSpec("ints"),
           "pad_low": AttrSpec("ints"), "pad_high": AttrSpec("ints"), "groups": AttrSpec("int")},
    num_operands=2, expand=_wgrad_expand,
    doc="conv's weight cotangent: x [N, C, *S], g [N, O, *J] -> [O, C/groups, *kernel], "
        "dw[o, c, k] = sum over n, j of g[n, o, j] xp[n, group(o) C/groups + c, j stride + k dilation]."))
