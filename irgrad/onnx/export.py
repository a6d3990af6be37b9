"""`ig.onnx.export`: an irgrad Function written as an ONNX model.

The IR function is walked op by op; `EMITTERS` (one table, keyed by IR op name, as the
backends' renderer tables) turns each op into ONNX nodes. IR parameters are graph inputs,
or initializers where `params` gives their values (a model with its weights is then
self-contained, and `ig.onnx.load` makes them parameters again); `const` ops become
Constant nodes, so they stay constants when the model is imported.

Broadcasts stay implicit where ONNX's numpy broadcasting gives the same tensor: a
`broadcast`, a splat `const` or an `iota` is kept in a small form (a scalar, a bias of
shape [10], a column [n, 1]) that elementwise ops consume directly, and it is expanded
(Expand) only for an op that needs the full shape. An elementwise op whose operands are
all small stays small too. Nothing changes in value: the small form broadcast is the
full tensor. A `window` is built only when used (a max-pool, reduce_max of a -inf-filled
window, is one MaxPool of the window's input).

Derivative primitives export too (conv_input_grad as ConvTranspose, conv_weight_grad as
a Conv with batch and channels swapped, window_transpose as a ConvTranspose with a
one-hot kernel), and random_bits (Threefry on uint32 words), so training steps do.

The IR is exported as traced; `pipeline=` runs passes first, up to (not including)
`fuse`: a fused kernel has no ONNX form.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..errors import ArgumentError, IrgradError
from ..ir.types import DType
from . import dtypes
from .export_graph import Graph as _Graph, elem as _elem, unsupported as _unsupported

DEFAULT_OPSET = 21  # onnx 1.16's; onnxruntime runs it from 1.18
MIN_OPSET = 13  # Reshape/Slice/Pad/ReduceSum take their shapes and axes as inputs from 13

_INT64_MIN = -(1 << 63)  # a Slice end meaning "past the start" for a negative step
_INT64_MAX = (1 << 63) - 1  # and "to the end" for a positive one


# --- elementwise ops: computed on their operands' small forms ----------------------------------

def _elementwise(build):
    """An emitter for an elementwise op from `build(g, op, names) -> name`: applied to the
    operands' small forms; the result is as small as their broadcast shape."""
    def emit(g, op):
        forms = [g.small_form(v) for v in op.operands]
        shape = np.broadcast_shapes(*(s for _, s in forms)) if forms else ()
        return [(build(g, op, [n for n, _ in forms]), tuple(shape))]
    return emit


def _simple(op_type):
    return _elementwise(lambda g, op, xs: g.node(op_type, xs))


def _whole(op_type, **attrs):
    """An op of the full operands, ONNX attributes from IR ones (onnx name=IR name)."""
    return lambda g, op: [g.node(op_type, [g.value(v) for v in op.operands],
                                 **{k: op.attrs[v] for k, v in attrs.items()})]


def _scalar_like(g, op, value):
    return g.const(np.asarray(value, dtype=op.operands[0].dtype.np))


def _log1p(g, op, xs):
    # log1p x = log(u) x / (u - 1) with u = 1 + x (Goldberg): the rounding of u cancels,
    # accurate for tiny x where log(1 + x) loses every digit; x where u == 1 or x == +inf
    x = xs[0]
    u = g.node("Add", [x, _scalar_like(g, op, 1)])
    um1 = g.node("Sub", [u, _scalar_like(g, op, 1)])
    r = g.node("Mul", [g.node("Log", [u]), g.node("Div", [x, um1])])
    exact = g.node("Or", [g.node("Equal", [um1, _scalar_like(g, op, 0)]),
                          g.node("IsInf", [x], detect_negative=0)])
    return g.node("Where", [exact, x, r])


def _expm1(g, op, xs):
    # expm1 x = (u - 1) x / log u with u = exp x (Kahan): x where u == 1, -1 where
    # u - 1 == -1, u where u == inf
    x = xs[0]
    u = g.node("Exp", [x])
    um1 = g.node("Sub", [u, _scalar_like(g, op, 1)])
    r = g.node("Div", [g.node("Mul", [um1, x]), g.node("Log", [u])])
    r = g.node("Where", [g.node("IsInf", [u], detect_negative=0), u, r])
    r = g.node("Where", [g.node("Equal", [um1, _scalar_like(g, op, -1)]), um1, r])
    return g.node("Where", [g.node("Equal", [u, _scalar_like(g, op, 1)]), x, r])


def _int_division(remainder: bool):
    # C's a / b and a % b (truncated); irgrad's a / 0 = a % 0 = 0 and MIN / -1 = MIN
    # (wrapped), where ONNX's Div and Mod are undefined: those divisors become 1 first
    def build(g, op, xs):
        a, b = xs
        if op.operands[0].dtype.is_float:  # fmod
            return g.node("Mod", xs, fmod=1)
        zero = g.node("Equal", [b, _scalar_like(g, op, 0)])
        minus_one = g.node("Equal", [b, _scalar_like(g, op, -1)])
        special = g.node("Or", [zero, minus_one])
        d = g.node("Where", [special, _scalar_like(g, op, 1), b])
        if remainder:
            return g.node("Where", [special, _scalar_like(g, op, 0), g.node("Mod", [a, d], fmod=1)])
        q = g.node("Where", [minus_one, g.node("Neg", [a]), g.node("Div", [a, d])])
        return g.node("Where", [zero, _scalar_like(g, op, 0), q])
    return build


def _shift(direction):
    # ONNX's BitShift is for unsigned types: shift the bits as uint, amount mod the width
    def build(g, op, xs):
        dt = op.operands[0].dtype
        u = dtypes.UINT32 if dt is DType.i32 else dtypes.UINT64
        amount = g.node("BitwiseAnd", [xs[1], _scalar_like(g, op, dt.itemsize * 8 - 1)])
        r = g.node("BitShift", [g.node("Cast", [xs[0]], to=u), g.node("Cast", [amount], to=u)],
                   direction=direction)
        return g.node("Cast", [r], to=_elem(dt))
    return build


# --- data: const, iota, broadcast, reshape, transpose, slice, pad, concat ------------------------

def _const(g, op):
    v = op.attrs["value"]
    if v.ndim == 0:  # a splat: a scalar, expanded where the full shape is needed
        return [(g.const(v), ())]
    return [lambda: g.const(v)]


def _iota(g, op):
    # arange(n) as a column [n, 1, ..., 1] that broadcasts along the axes after `axis`
    t, ax = op.result.type, op.attrs["axis"]
    shape = (t.shape[ax],) + (1,) * (t.rank - ax - 1)
    return [(g.const(np.arange(t.shape[ax], dtype=t.dtype.np).reshape(shape)), shape)]


def _broadcast(g, op):
    # operand axis i goes to result axis dims[i]: the operand (its small form) reshaped to
    # have its axes there and 1 elsewhere, leading 1s left off (numpy adds them)
    x, dims, shape = op.operands[0], op.attrs["dims"], op.result.shape
    name, xs = g.small_form(x)
    padded = (1,) * (x.type.rank - len(xs)) + tuple(xs)
    small = [1] * len(shape)
    for i, d in enumerate(dims):
        small[d] = padded[i]
    first = next((i for i, s in enumerate(small) if s != 1), len(small))
    small = tuple(small[first:])
    if small != tuple(xs):
        name = g.node("Reshape", [name, g.ints(small)])
    return [(name, small)]


def _keeps_splat(g, op):
    """A reshape or transpose of a tensor whose small form has one element is that same
    small form (None if it has more)."""
    x = op.operands[0]
    name, xs = g.small_form(x)
    if math.prod(xs) == 1 and len(xs) <= op.result.type.rank and tuple(xs) != tuple(x.shape):
        return [(name, tuple(xs))]
    return None


def _reshape(g, op):
    shape = op.result.shape
    # a 0 in the shape means "copy the input's dimension" unless allowzero is set
    extra = {"allowzero": 1} if 0 in shape else {}
    return _keeps_splat(g, op) or [g.node("Reshape", [g.value(op.operands[0]), g.ints(shape)], **extra)]


def _transpose(g, op):
    return _keeps_splat(g, op) or [g.node("Transpose", [g.value(op.operands[0])],
                                          perm=list(op.attrs["perm"]))]


def _slice_node(g, x, starts, ends, axes, steps=None):
    ins = [x, g.ints(starts), g.ints(ends), g.ints(axes)]
    if steps is not None:
        ins.append(g.ints(steps))
    return g.node("Slice", ins)


def _slice(g, op):
    x, start, limit = op.operands[0], op.attrs["start"], op.attrs["limit"]
    axes = [a for a, (s, l, d) in enumerate(zip(start, limit, x.shape)) if (s, l) != (0, d)]
    if not axes:
        return [g.value(x)]
    return [_slice_node(g, g.value(x), [start[a] for a in axes], [limit[a] for a in axes], axes)]


def _pad_or_crop(g, x: str, low, high, fill=None, dtype=None) -> str:
    """x padded by the non-negative amounts (with `fill`, else zeros), the negative ones
    sliced off first (a negative Slice end counts from the end)."""
    if min(list(low) + list(high), default=0) < 0:
        axes = [a for a, (lo, hi) in enumerate(zip(low, high)) if lo < 0 or hi < 0]
        x = _slice_node(g, x, [max(-low[a], 0) for a in axes],
                        [high[a] if high[a] < 0 else _INT64_MAX for a in axes], axes)
        low, high = [max(v, 0) for v in low], [max(v, 0) for v in high]
    if not any(low) and not any(high):
        return x
    ins = [x, g.ints(list(low) + list(high))]
    if fill is not None and fill != 0:
        ins.append(g.const(np.asarray(fill).astype(dtype.np)))
    return g.node("Pad", ins, mode="constant")


def _pad(g, op):
    return [_pad_or_crop(g, g.value(op.operands[0]), op.attrs["low"], op.attrs["high"])]


def _reverse(g, op):
    x, axes = op.operands[0], sorted(op.attrs["axes"])
    if not axes:
        return [g.value(x)]
    # a step of -1 from the last element: start -1, end "before index 0"
    return [_slice_node(g, g.value(x), [-1] * len(axes), [_INT64_MIN] * len(axes), axes,
                        [-1] * len(axes))]


# --- reductions, matmul, indexing --------------------------------------------------------------

def _reduce(op_type):
    def emit(g, op):
        x, axes = op.operands[0], list(op.attrs["axes"])
        if not axes:  # (ONNX would reduce everything)
            return [g.value(x)]
        if op_type == "ReduceMax" and (pool := _max_pool(g, op)) is not None:
            return [pool]
        if op_type == "ReduceSum" or g.opset >= 18:
            return [g.node(op_type, [g.value(x), g.ints(axes)], keepdims=0)]
        return [g.node(op_type, [g.value(x)], axes=axes, keepdims=0)]
    return emit


def _max_pool(g, op):
    """reduce_max over the kernel axes of a window filled with -inf, on [N, C, *S] with
    1 to 3 spatial axes and non-negative padding: one MaxPool (which pads with -inf)."""
    w = op.operands[0].op
    if w is None or w.opname != "window":
        return None
    x, a = w.operands[0], w.attrs
    n = len(a["kernel"])
    pads = list(a["pad_low"]) + list(a["pad_high"])
    # (no window wholly in the padding, whose max irgrad takes as -inf: pads < kernel)
    if (a["fill"] != -math.inf or x.type.rank != n + 2 or not 1 <= n <= 3 or not x.dtype.is_float
            or list(op.attrs["axes"]) != list(range(2, 2 + n)) or any(v != 1 for v in a["dilation"])
            or min(pads) < 0 or any(p >= k for p, k in zip(pads, list(a["kernel"]) * 2))):
        return None
    return g.node("MaxPool", [g.value(x)], kernel_shape=list(a["kernel"]), strides=list(a["stride"]),
                  pads=pads)


def _clamped_indices(g, a, idx, axis) -> str:
    """Indices as irgrad reads them (negative from the end, others clamped to the axis):
    clipped to [-n, n-1], which ONNX's Gather reads the same way."""
    n, name, p = a.shape[axis], g.value(idx), idx.op
    v = p.attrs["value"] if p is not None and p.opname == "const" else None
    if n == 0 or (v is not None and ((v >= -n) & (v < n)).all()):  # (known to be in range)
        return name
    bounds = [g.const(np.asarray(b, idx.dtype.np)) for b in (-n, n - 1)]
    return g.node("Clip", [name] + bounds)


def _gather(g, op):
    a, idx = op.operands
    ax = op.attrs["axis"]
    return [g.node("Gather", [g.value(a), _clamped_indices(g, a, idx, ax)], axis=ax)]


def _scatter_add(g, op):
    # updates as a[:axis] + [m] + a[axis+1:] (m = indices.size), the indices expanded to
    # that shape: ScatterElements adds every update at its index (repeats accumulate)
    a, idx, upd = op.operands
    ax = op.attrs["axis"]
    m = math.prod(idx.shape)
    ushape = a.shape[:ax] + (m,) + a.shape[ax + 1:]
    ishape = (1,) * ax + (m,) + (1,) * (a.type.rank - ax - 1)
    ix = g.node("Reshape", [_clamped_indices(g, a, idx, ax), g.ints(ishape)])
    ix = g.node("Expand", [ix, g.ints(ushape)])
    u = g.node("Reshape", [g.value(upd), g.ints(ushape)])
    return [g.node("ScatterElements", [g.value(a), ix, u], axis=ax, reduction="add")]


# --- convolution and windows --------------------------------------------------------------------

def _conv(g, op):
    # negative padding crops x (a Slice); ONNX's pads are the non-negative rest
    x, w = op.operands
    a = op.attrs
    lo, hi = list(a["pad_low"]), list(a["pad_high"])
    xn = g.value(x)
    if min(lo + hi) < 0:
        xn = _pad_or_crop(g, xn, [0, 0] + [min(v, 0) for v in lo], [0, 0] + [min(v, 0) for v in hi])
        lo, hi = [max(v, 0) for v in lo], [max(v, 0) for v in hi]
    return [g.node("Conv", [xn, g.value(w)], kernel_shape=list(w.shape[2:]), strides=list(a["stride"]),
                   dilations=list(a["dilation"]), pads=lo + hi, group=a["groups"])]


def _window(g, op):
    """im2col: element (k, j) = xp[j stride + k dilation] of x padded with `fill`. One
    strided Slice per kernel offset k, concatenated along the first window axis and
    reshaped to [..., *K, *J]; built lazily (a max-pool reads x instead)."""
    x, a = op.operands[0], op.attrs
    k = list(a["kernel"])
    n, lead = len(k), x.type.rank - len(a["kernel"])
    s, d = list(a["stride"]), list(a["dilation"])
    j = op.result.shape[lead + n:]
    loc = g.loc

    def build():
        saved, g.loc = g.loc, loc
        xp = _pad_or_crop(g, g.value(x), [0] * lead + list(a["pad_low"]),
                          [0] * lead + list(a["pad_high"]), a["fill"], x.dtype)
        axes = list(range(lead, lead + n))
        pieces = []
        for kk in itertools.product(*(range(v) for v in k)):
            starts = [kv * dv for kv, dv in zip(kk, d)]
            ends = [st + (jv - 1) * sv + 1 for st, jv, sv in zip(starts, j, s)]
            pieces.append(_slice_node(g, xp, starts, ends, axes, s))
        cat = pieces[0] if len(pieces) == 1 else g.node("Concat", pieces, axis=lead)
        out = g.node("Reshape", [cat, g.ints(op.result.shape)])
        g.loc = saved
        return out

    return [build]


def _transposed_conv(g, op, cols: str, w: str, n: int, groups: int, size) -> str:
    """ConvTranspose of `cols` [B, Cin, *J] (no padding), the adjoint of an unpadded conv:
    its output [B, Cout, *L] with L = (J-1) s + (K-1) d + 1 is the padded input's
    cotangent, so x's is the window [lo, lo + size) of it (zeros beyond L; negative
    padding: zeros before)."""
    a = op.attrs
    k = op.operands[1].shape[2:] if op.opname == "conv_input_grad" else a["kernel"]
    j = op.operands[0].shape[-n:]
    full = [(jj - 1) * ss + (kk - 1) * dd + 1 for jj, ss, kk, dd in zip(j, a["stride"], k, a["dilation"])]
    y = g.node("ConvTranspose", [cols, w], kernel_shape=list(k), strides=list(a["stride"]),
               dilations=list(a["dilation"]), group=groups)
    lead = [0, 0]
    return _pad_or_crop(g, y, lead + [-v for v in a["pad_low"]],
                        lead + [lo + sz - f for lo, sz, f in zip(a["pad_low"], size, full)])


def _conv_input_grad(g, op):
    # dx = ConvTranspose(g, w) (same weight layout [O, C/groups, *K], same groups)
    gr, w = op.operands
    return [_transposed_conv(g, op, g.value(gr), g.value(w), gr.type.rank - 2, op.attrs["groups"],
                             op.attrs["size"])]


def _window_transpose(g, op):
    # col2im: every window element added back where `window` took it from: a
    # ConvTranspose of the columns [B, prod K, *J] with a one-hot weight [prod K, 1, *K]
    c, a = op.operands[0], op.attrs
    k = list(a["kernel"])
    n = len(k)
    lead = c.shape[:c.type.rank - 2 * n]
    j = c.shape[c.type.rank - n:]
    if not c.dtype.is_float or n > 3:
        raise _unsupported(op, "ONNX's ConvTranspose is for 1 to 3 spatial axes of floats")
    kp = math.prod(k)
    cols = g.node("Reshape", [g.value(c), g.ints([math.prod(lead), kp] + list(j))])
    eye = np.eye(kp, dtype=c.dtype.np).reshape([kp, 1] + k)
    y = _transposed_conv(g, op, cols, g.const(eye), n, 1, a["size"])
    return [g.node("Reshape", [y, g.ints(op.result.shape)])]


def _conv_weight_grad(g, op):
    # dw[o, c, k] = sum_{n, j} g[n, o, j] xp[n, grp(o) C/G + c, j s + k d]: a grouped conv
    # with the batch as channels, stride and dilation swapped: x as [C/G, G N, *S]
    # (input channel (grp, n)), g as [O, N, *J] (weights), groups G; out [C/G, O, *K'],
    # K' >= K (the high padding may fit more): sliced to K, transposed to [O, C/G, *K]
    x, gr = op.operands
    a = op.attrs
    n_sp, G = x.type.rank - 2, a["groups"]
    N, C = x.shape[:2]
    cg, sp = C // G, list(range(3, 3 + n_sp))
    xn = g.node("Reshape", [g.value(x), g.ints([N, G, cg] + list(x.shape[2:]))])
    xn = g.node("Reshape", [g.node("Transpose", [xn], perm=[2, 1, 0] + sp),
                            g.ints([cg, G * N] + list(x.shape[2:]))])
    xn = _pad_or_crop(g, xn, [0, 0] + [min(v, 0) for v in a["pad_low"]],
                      [0, 0] + [min(v, 0) for v in a["pad_high"]])
    wn = g.node("Transpose", [g.value(gr)], perm=[1, 0] + list(range(2, 2 + n_sp)))
    y = g.node("Conv", [xn, wn], strides=list(a["dilation"]), dilations=list(a["stride"]), group=G,
               pads=[max(v, 0) for v in a["pad_low"]] + [max(v, 0) for v in a["pad_high"]])
    kk = list(a["kernel"])
    y = _slice_node(g, y, [0] * n_sp, kk, list(range(2, 2 + n_sp)))  # (K' may equal K: cheap)
    return [g.node("Transpose", [y], perm=[1, 0] + list(range(2, 2 + n_sp)))]


# Threefry-2x32 (ir/ops/random.py) on uint32 words, whose Add wraps as the IR's i32 does
def _random_bits(g, op):
    from ..ir.ops.random import PARITY, ROTATIONS
    u32 = dtypes.UINT32
    shape = op.result.shape
    n = math.prod(shape)

    def c(v):
        return g.const(np.asarray(v & 0xFFFFFFFF, dtype=np.uint32))

    key = g.node("Cast", [g.value(op.operands[0])], to=u32)
    k0 = g.node("Gather", [key, g.const(np.asarray(0, np.int64))], axis=0)
    k1 = g.node("Gather", [key, g.const(np.asarray(1, np.int64))], axis=0)
    ks = (k0, k1, g.node("BitwiseXor", [g.node("BitwiseXor", [k0, k1]), c(PARITY)]))
    start, limit, step = (g.const(np.asarray(v, np.int64)) for v in (0, n, 1))
    counter = g.node("Cast", [g.node("Range", [start, limit, step])], to=u32)
    x0, x1 = ks[0], g.node("Add", [counter, ks[1]])  # counter (0, i)
    for group in range(5):
        for r in ROTATIONS[4 * (group % 2):4 * (group % 2) + 4]:
            x0 = g.node("Add", [x0, x1])
            rot = g.node("BitwiseOr", [g.node("BitShift", [x1, c(r)], direction="LEFT"),
                                       g.node("BitShift", [x1, c(32 - r)], direction="RIGHT")])
            x1 = g.node("BitwiseXor", [rot, x0])
        x0 = g.node("Add", [x0, ks[(group + 1) % 3]])
        x1 = g.node("Add", [g.node("Add", [x1, ks[(group + 2) % 3]]), c(group + 1)])
    out = g.node("Cast", [x0], to=dtypes.INT32)  # (the bits: uint32 -> int32 wraps)
    return [g.node("Reshape", [out, g.ints(shape)])]


# One entry per IR op: emitter(g, op) -> one result per op result: an ONNX name (the full
# tensor), a (name, shape) small form, or a function building it on first use.
EMITTERS = {
    # unary math
    "neg": _simple("Neg"), "exp": _simple("Exp"), "log": _simple("Log"), "sin": _simple("Sin"),
    "cos": _simple("Cos"), "tanh": _simple("Tanh"), "sqrt": _simple("Sqrt"), "abs": _simple("Abs"),
    "sign": _simple("Sign"), "erf": _simple("Erf"), "atan": _simple("Atan"), "floor": _simple("Floor"),
    "ceil": _simple("Ceil"), "round": _simple("Round"),  # Round halves to even, as numpy's rint
    "log1p": _elementwise(_log1p), "expm1": _elementwise(_expm1),
    # binary arithmetic and comparisons
    "add": _simple("Add"), "sub": _simple("Sub"), "mul": _simple("Mul"), "div": _simple("Div"),
    "pow": _simple("Pow"), "max": _simple("Max"), "min": _simple("Min"),
    "idiv": _elementwise(_int_division(False)), "rem": _elementwise(_int_division(True)),
    "eq": _simple("Equal"),
    "ne": _elementwise(lambda g, op, xs: g.node("Not", [g.node("Equal", xs)])), "lt": _simple("Less"),
    "le": _simple("LessOrEqual"), "gt": _simple("Greater"), "ge": _simple("GreaterOrEqual"),
    "select": _simple("Where"),
    "cast": _elementwise(lambda g, op, xs: g.node("Cast", xs, to=_elem(op.attrs["dtype"]))),
    "bitwise_and": _simple("BitwiseAnd"), "bitwise_or": _simple("BitwiseOr"),
    "bitwise_xor": _simple("BitwiseXor"),
    "shift_left": _elementwise(_shift("LEFT")), "shift_right_logical": _elementwise(_shift("RIGHT")),
    "stop_gradient": _simple("Identity"),
    # data
    "const": _const, "iota": _iota, "broadcast": _broadcast, "reshape": _reshape,
    "transpose": _transpose, "slice": _slice, "pad": _pad, "concat": _whole("Concat", axis="axis"),
    "reverse": _reverse,
    # reductions, products, indexing
    "reduce_sum": _reduce("ReduceSum"), "reduce_max": _reduce("ReduceMax"),
    "reduce_min": _reduce("ReduceMin"), "matmul": _whole("MatMul"), "gather": _gather,
    "scatter_add": _scatter_add,
    # convolution and windows
    "conv": _conv, "window": _window, "conv_input_grad": _conv_input_grad,
    "conv_weight_grad": _conv_weight_grad, "window_transpose": _window_transpose,
    "random_bits": _random_bits,
}
# ONNX opsets before these lack what an op's export needs (BitwiseAnd, ScatterElements' add)
SINCE = {"bitwise_and": 18, "bitwise_or": 18, "bitwise_xor": 18, "shift_left": 18,
         "shift_right_logical": 18, "random_bits": 18, "scatter_add": 16}


# --- the model -----------------------------------------------------------------------------------

def _unwrap(fn, params):
    """(ir.Function, its frontend Function or None, params): accepts a traced Function,
    an IR Function, or an imported OnnxModel (whose parameters are the default)."""
    from ..frontend.function import Function
    from ..ir.core import Function as IrFunction
    from . import OnnxModel
    if isinstance(fn, OnnxModel):
        return fn.fn.ir, fn.fn, fn.params if params is None else params
    if isinstance(fn, Function):
        return fn.ir, fn, params
    if isinstance(fn, IrFunction):
        return fn, None, params
    raise ArgumentError(f"ig.onnx.export needs an irgrad Function (ig.trace, @ig.function) or an "
                        f"IR function, got {type(fn).__name__}")


def _initializers(ir, front, params) -> dict:
    """IR parameter -> array, from `params`: a dict keyed by IR parameter names
    ({'params.fc0.W': ...}), or the pytree of the function's first argument (as
    model.init() returns it)."""
    if params is None:
        return {}
    from ..pytree import flatten
    by_name = {p.name: p for p in ir.params if p.name}
    if isinstance(params, dict) and params and all(isinstance(k, str) and k in by_name for k in params):
        pairs = [(by_name[k], v) for k, v in params.items()]
    else:
        if front is None or not front.in_tree.children:
            raise ArgumentError("export: params of an IR function must be a dict keyed by its "
                                f"parameter names ({', '.join(by_name) or 'none named'})")
        leaves, tree = flatten(params)
        want = front.in_tree.children[0]
        if tree != want:
            raise ArgumentError(f"export: params has the structure {tree}; expected a dict of "
                                f"parameter names or the structure of {front.name}'s first "
                                f"argument, {want}")
        pairs = list(zip(ir.params, leaves))
    out = {}
    for p, v in pairs:
        a = np.asarray(v)
        if a.shape != p.shape or a.dtype != p.dtype.np:
            raise ArgumentError(f"export: parameter %{p.name} is {p.type}, its value is "
                                f"{a.dtype}{list(a.shape)}")
        out[p] = a
    return out


def _run_passes(ir, pipeline):
    from ..passes.manager import Fixpoint, parse_pipeline, run_pipeline
    passes = parse_pipeline(pipeline) if isinstance(pipeline, str) else list(pipeline)
    flat = [q for p in passes for q in (p.passes if isinstance(p, Fixpoint) else (p,))]
    if any(p.name in ("fuse", "plan-memory") for p in flat):
        raise IrgradError(f"export: the pipeline {pipeline!r} fuses kernels, which have no ONNX "
                          f"form; export the IR before 'fuse' (e.g. pipeline='O1')")
    return run_pipeline(ir, passes)


def export(fn, path=None, opset: int | None = None, params=None, *, pipeline=None,
           check: bool = True):
    """An ONNX ModelProto computing `fn` (written to `path` when given).

    `params` (a dict keyed by IR parameter names, or the pytree of the first argument)
    become initializers; the other parameters are graph inputs, in order. `pipeline`
    runs IR passes first (not `fuse`). `check` runs onnx.checker on the result."""
    from .importer import require_onnx
    onnx = require_onnx()
    from onnx import helper, numpy_helper
    ir, front, params = _unwrap(fn, params)
    newest = onnx.defs.onnx_opset_version()
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not MIN_OPSET <= opset <= newest:
        raise ArgumentError(f"export: opset {opset} is not supported (opsets {MIN_OPSET} to {newest})")
    if pipeline:
        ir = _run_passes(ir, pipeline)
    inits = _initializers(ir, front, params)

    g = _Graph(opset)
    inputs, initializers = [], []
    for i, p in enumerate(ir.params):
        name = g.reserve(p.name or f"arg{i}")
        g.names[p] = name
        if p in inits:
            initializers.append(numpy_helper.from_array(inits[p], name))
        else:
            inputs.append(helper.make_tensor_value_info(name, _elem(p.dtype), list(p.shape)))
    out_names = _output_names(front, len(ir.outputs))
    out_names = [g.reserve(n) for n in out_names]

    for op in ir.ops:
        emit = EMITTERS.get(op.opname)
        if op.opname == "fused":
            raise _unsupported(op, "a fused kernel has no ONNX form; export before the 'fuse' "
                                   "pass (pipeline='O1', or none)")
        if emit is None:
            raise _unsupported(op, f"no ONNX form is implemented for it (irgrad exports: "
                                   f"{', '.join(sorted(EMITTERS))})")
        if opset < SINCE.get(op.opname, 0):
            raise _unsupported(op, f"it needs ONNX opset {SINCE[op.opname]} (exporting opset {opset})")
        g.loc = op.loc
        results = emit(g, op)
        for r, res in zip(op.results, results):
            g.bind(r, res)
    g.loc = None

    outputs = _bind_outputs(g, ir, out_names)
    graph = helper.make_graph(g.nodes, ir.name, inputs, outputs, initializer=initializers)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="irgrad",
                              ir_version=helper.find_min_ir_version_for(opsets))
    if check:
        onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, path)
    return model


def _output_names(front, n: int) -> list[str]:
    if front is not None:
        from ..pytree import leaf_paths
        names = leaf_paths(front.out_tree, "output")
        if len(names) == n:
            return names
    return ["output"] if n == 1 else [f"output.{i}" for i in range(n)]


def _bind_outputs(g, ir, out_names):
    """Graph outputs named `out_names`: the node making a value renamed (at the value's
    first return), an Identity for a parameter or a value returned twice."""
    from onnx import helper
    srcs = [g.value(v) for v in ir.outputs]  # (small and lazy values built first)
    producers = {o: (nd, i) for nd in g.nodes for i, o in enumerate(nd.output)}
    renamed: dict[str, str] = {}
    infos = []
    for v, src, name in zip(ir.outputs, srcs, out_names):
        if src in producers and src not in renamed:
            nd, i = producers[src]
            nd.output[i] = name
            for other in g.nodes:
                for k, inp in enumerate(other.input):
                    if inp == src:
                        other.input[k] = name
            renamed[src] = name
        else:
            g.nodes.append(helper.make_node("Identity", [renamed.get(src, src)], [name],
                                            name=f"Identity_{len(g.nodes)}"))
        infos.append(helper.make_tensor_value_info(name, _elem(v.dtype), list(v.shape)))
    return infos


__all__ = ["export", "EMITTERS", "DEFAULT_OPSET"]
