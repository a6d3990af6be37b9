"""Convolution primitives: `conv` and its two cotangents `conv_input_grad` and
`conv_weight_grad`.

`conv` is N-d (1 to 3 spatial axes), PyTorch's layout: x [N, C, *S], w [O, C/groups, *K],
result [N, O, *J], with per-axis `stride`, `dilation` and padding `pad_low`/`pad_high`
(negative padding crops: transposed convs need it; the DSL refuses it from users). The
three are one bilinear map seen from its three sides,

    <conv(x, w), g> = <x, conv_input_grad(g, w)> = <w, conv_weight_grad(x, g)>,

so each one's derivatives are the other two (any order of gradient stays convolutions).
None has a kernel of its own: the `expand` pass rewrites them into `window` (im2col),
`window_transpose` (col2im), transposes, reshapes and matmuls, choosing the formulation
per shape (`conv_algorithm`, and the table in docs/passes.md).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ...errors import ShapeError
from ..registry import AttrSpec, OpDef, register
from .window import _padded, _spatial, col2im_reference, dilate, out_size, pad_or_crop  # noqa: F401


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


# --- conv ----------------------------------------------------------------------------------------

def conv_geometry(x, w, attrs, name: str = "conv"):
    """(spatial rank, groups, stride, dilation, lo, hi, output sizes), or a ShapeError."""
    if x.dtype != w.dtype or not x.dtype.is_float:
        raise ShapeError(f"'{name}' needs two floating-point operands of one dtype, got {x} and {w}")
    n = x.rank - 2
    if not 1 <= n <= 3 or w.rank != x.rank:
        raise ShapeError(f"'{name}' needs x [N, C, *S] and w [O, C/groups, *K] with 1 to 3 spatial "
                         f"axes, got {x} and {w}")
    g = attrs["groups"]
    c, o, cg = x.shape[1], w.shape[0], w.shape[1]
    if g < 1 or c % g or o % g:
        raise ShapeError(f"'{name}' groups={g} must divide the input channels ({c}) and the output "
                         f"channels ({o})")
    if cg * g != c:
        raise ShapeError(f"'{name}' weight {w} has {cg} input channels per group; x {x} with "
                         f"groups={g} needs {c // g}")
    s = _spatial(name, attrs, "stride", n)
    d = _spatial(name, attrs, "dilation", n)
    lo = _spatial(name, attrs, "pad_low", n)
    hi = _spatial(name, attrs, "pad_high", n)
    if min(s + d) < 1:
        raise ShapeError(f"'{name}' needs stride and dilation >= 1, got stride={list(s)} dilation={list(d)}")
    k = w.shape[2:]
    if min(k) < 1:
        raise ShapeError(f"'{name}' needs kernel sizes >= 1, got weight {w}")
    j = tuple(out_size(*a) for a in zip(x.shape[2:], k, s, d, lo, hi))
    if min(j) < 1:
        eff = [(a - 1) * dd + 1 for a, dd in zip(k, d)]
        raise ShapeError(f"'{name}' kernel {list(k)} (dilated: {eff}) is larger than the padded input "
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


def flipped_conv_input_grad(b, g, w, x_type, attrs):
    """x's cotangent of conv(x, w) as a conv: g dilated by the stride, convolved with the
    flipped kernel whose in/out channels are swapped per group (JAX's transpose rule)."""
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


def conv_input_grad(b, g, w, x_type, attrs):
    return b.emit("conv_input_grad", g, w, size=tuple(x_type.shape[2:]), **attrs)


def _conv_vjp(b, op, cts, wanted):
    # dx[n, c, i] = sum_{o, k: i = j s + k d - lo} g[n, o, j] w[o, c, k];
    # dw[o, c, k] = sum_{n, j} g[n, o, j] xp[n, g(o) C/G + c, j s + k d]
    g, (x, w) = cts[0], op.operands
    dx = conv_input_grad(b, g, w, x.type, op.attrs) if wanted[0] else None
    dw = b.emit("conv_weight_grad", x, g, kernel=tuple(w.shape[2:]), **op.attrs) if wanted[1] else None
    return [dx, dw]


def bilinear_jvp(b, op, ts):
    # all three are bilinear: d f(a, b) = f(da, b) + f(a, db), same attributes
    a, c = op.operands
    return [b.add_maybe(b.emit(op.opname, ts[0], c, **op.attrs) if ts[0] is not None else None,
                        b.emit(op.opname, a, ts[1], **op.attrs) if ts[1] is not None else None)]


def _without(attrs, key):
    return {k: v for k, v in attrs.items() if k != key}


# --- conv_weight_grad ----------------------------------------------------------------------------
# dw = conv_weight_grad(x, g) is conv's weight cotangent, bilinear in (x, g), and
# <conv_weight_grad(x, g), t> = <g, conv(x, t)>: its own derivatives are convs again
# (d/dg: conv(x, t); d/dx: conv_input_grad(g, t)). A primitive of its own so that it
# expands to one GEMM over the same im2col columns as the forward conv (shared by cse).

def _wgrad_attrs(attrs):
    return _without(attrs, "kernel")


def _wgrad_weight_type(x, g, attrs):
    k = tuple(attrs["kernel"])
    if g.rank != x.rank or len(k) != x.rank - 2 or x.dtype != g.dtype:
        raise ShapeError(f"'conv_weight_grad' needs x [N, C, *S] and g [N, O, *J] of one dtype and a "
                         f"kernel per spatial axis, got {x}, {g} and kernel={list(k)}")
    groups = attrs["groups"]
    if groups < 1 or x.shape[1] % groups:
        raise ShapeError(f"'conv_weight_grad' groups={groups} must divide the channels of {x}")
    if min(k, default=1) < 1:
        raise ShapeError(f"'conv_weight_grad' needs kernel sizes >= 1, got kernel={list(k)}")
    return x.with_shape((g.shape[1], x.shape[1] // groups) + k)


def check_conv_cotangent(name, x, w, g, attrs) -> None:
    """g must have the shape of conv(x, w)'s result (for the two cotangent primitives)."""
    n, G, s, d, lo, hi, j = conv_geometry(x, w, attrs, name)
    if g.shape != (x.shape[0], w.shape[0]) + j:
        raise ShapeError(f"'{name}' g {g} is not the shape of conv's result "
                         f"{list((x.shape[0], w.shape[0]) + j)} for an input {x} and weight {w}")


def _wgrad_infer(types, attrs, declared):
    x, g = types
    w = _wgrad_weight_type(x, g, attrs)
    check_conv_cotangent("conv_weight_grad", x, w, g, _wgrad_attrs(attrs))
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


# --- conv_input_grad ---------------------------------------------------------------------------

def _cig_attrs(attrs):
    return _without(attrs, "size")


def _cig_x_type(g, w, attrs):
    if g.rank != w.rank or g.dtype != w.dtype or len(attrs["size"]) != g.rank - 2:
        raise ShapeError(f"'conv_input_grad' needs g [N, O, *J] and w [O, C/groups, *K] of one dtype "
                         f"and a size per spatial axis, got {g}, {w} and size={list(attrs['size'])}")
    return g.with_shape((g.shape[0], w.shape[1] * attrs["groups"]) + tuple(attrs["size"]))


def _cig_infer(types, attrs, declared):
    g, w = types
    x = _cig_x_type(g, w, attrs)
    check_conv_cotangent("conv_input_grad", x, w, g, _cig_attrs(attrs))
    return [x]


def _cig_ref(xs, op):
    g, w = xs
    a = op.attrs
    G, k = a["groups"], w.shape[2:]
    N, O, j = g.shape[0], g.shape[1], g.shape[2:]
    og, cg = O // G, w.shape[1]
    cols = np.einsum("goc,ngoj->ngcj", w.reshape(G, og, -1), g.reshape(N, G, og, -1))
    cols = cols.reshape((N, G * cg) + tuple(k) + tuple(j)).astype(g.dtype)
    return [col2im_reference(cols, k, a["stride"], a["dilation"], a["pad_low"], a["size"])]


def _cig_vjp(b, op, cts, wanted):
    t, (g, w) = cts[0], op.operands
    attrs = _cig_attrs(op.attrs)
    return [b.emit("conv", t, w, **attrs) if wanted[0] else None,
            b.emit("conv_weight_grad", t, g, kernel=tuple(w.shape[2:]), **attrs) if wanted[1] else None]


def conv_flops(op) -> int:
    """Multiply-adds x 2 of a conv op (for the algorithm choice and the benchmarks)."""
    x, w, y = op.operands[0], op.operands[1], op.result
    return 2 * math.prod(y.shape) * w.shape[1] * math.prod(w.shape[2:])


# --- conv's decomposition (the `expand` pass) -----------------------------------------------------

# Which algorithm `expand` picks when asked for "auto", from measurements on the CPU
# backend (benchmarks/conv_algorithms.py; docs/passes.md has the table). In a training step
# the batch-folded GEMM wins outright (its im2col columns are shared with the weight
# gradient, which is one well-shaped GEMM over them: W5 4.7 against 7.1 ms, W6 62 against
# 120 ms per step with per-image GEMMs). A conv alone (inference) is faster as one GEMM
# per image while the reduction C/G K is short (no transpose of the result), folded
# beyond; the direct loop never won.
BATCHED_MAX_REDUCTION = 160


def conv_algorithm(op, options="auto") -> str:
    algorithm = getattr(options, "conv", options)  # (an ExpandContext, or the option)
    if algorithm != "auto":
        return algorithm
    if getattr(options, "shares_columns", lambda op: False)(op):
        return "gemm"
    w = op.operands[1]
    return "batched" if w.shape[1] * math.prod(w.shape[2:]) <= BATCHED_MAX_REDUCTION else "gemm"


def _unit_kernel(k, s, lo, hi) -> bool:
    return all(a == 1 for a in k) and all(a == 1 for a in s) and not any(lo) and not any(hi)


def padded_window(b, x, k, s, d, lo, hi):
    """window of x with its zero padding done first by a `pad` (which fusion stores): the
    window then reads the padded input at affine, in-bounds indices (no clamps, no masks:
    its loop vectorizes), and what produced x is computed once per element, not per
    window."""
    n = len(k)
    if min(list(lo) + list(hi)) >= 0 and max(list(lo) + list(hi)) > 0:
        lead = [0] * (len(x.shape) - n)
        x = b.pad(x, lead + list(lo), lead + list(hi))
        lo = hi = (0,) * n
    return b.emit("window", x, kernel=tuple(k), stride=tuple(s), dilation=tuple(d),
                  pad_low=tuple(lo), pad_high=tuple(hi))


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
        win = padded_window(b, x, k, s, d, lo, hi)
        j = list(win.shape[2 + n:])
        v = b.reshape(win, [N, G, cg] + list(k) + j)
        v = b.transpose(v, [1, 2] + [3 + i for i in sp] + [0] + [3 + n + i for i in sp])
        kp = math.prod(k)
    return b.reshape(v, [G, cg * kp, N * math.prod(j)])


def _conv_expand(b, op, algorithm="auto"):
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
        # every axis kept apart (no merged axis to divide back per element): window
        # [N, G, cg, *K, *J] times w [G, og, cg, *K], summed over cg and K
        n = len(k)
        full = [N, G, og, cg] + k + list(j)
        cols = b.reshape(win(), [N, G, cg] + k + list(j))
        cols = b.broadcast(cols, full, [0, 1] + list(range(3, 3 + 1 + 2 * n)))
        wb = b.broadcast(b.reshape(w, [G, og, cg] + k), full, list(range(1, 4 + n)))
        y = b.reduce_sum(b.mul(cols, wb), tuple(range(3, 4 + n)))  # [N, G, og, *J]
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
        raise ValueError(f"unknown conv algorithm '{algo}' (auto, gemm, batched or direct)")
    return b.reshape(y, [N, O] + list(j))


def _wgrad_expand(b, op, options=None):
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
    dw = b.matmul(_grad_matrix(b, g, G), b.swap_last_two(cols))  # [G, og, cg K]
    return b.reshape(dw, list(op.result.shape))


def _grad_matrix(b, g, G):
    """g [N, O, *J] as [G, O/G, N prod(J)]: built alike wherever needed, so cse keeps one."""
    N, O = g.shape[:2]
    jp = math.prod(g.shape[2:])
    return b.reshape(b.transpose(b.reshape(g, [N, G, O // G, jp]), [1, 2, 0, 3]), [G, O // G, N * jp])


def input_grad_algorithm(op, algorithm: str = "auto") -> str:
    """col2im (W^T G, then window_transpose) or flip (a conv of g dilated by the stride):
    the smaller of their GEMM operands, C/G K N J against O/G K N S."""
    algorithm = getattr(algorithm, "input_grad", algorithm)
    if algorithm in ("col2im", "flip"):
        return algorithm
    g, w = op.operands
    G = op.attrs["groups"]
    cg, og = w.shape[1], w.shape[0] // G
    jp, sp = math.prod(g.shape[2:]), math.prod(op.attrs["size"])
    return "col2im" if cg * jp <= og * sp else "flip"


def _cig_expand(b, op, options=None):
    g, w = op.operands
    attrs = _cig_attrs(op.attrs)
    if input_grad_algorithm(op, options if options is not None else "auto") == "flip":
        return flipped_conv_input_grad(b, g, w, op.result.type, attrs)  # expanded in turn
    G = attrs["groups"]
    N, C = op.result.shape[:2]
    cg, k, j = w.shape[1], list(w.shape[2:]), list(g.shape[2:])
    n = len(k)
    wt = b.swap_last_two(b.reshape(w, [G, w.shape[0] // G, cg * math.prod(k)]))
    cols = b.matmul(wt, _grad_matrix(b, g, G))  # [G, cg K, N J]
    v = b.reshape(cols, [G, cg] + k + [N] + j)
    v = b.transpose(v, [2 + n, 0, 1] + [2 + i for i in range(n)] + [3 + n + i for i in range(n)])
    v = b.reshape(v, [N, C] + k + j)
    return b.emit("window_transpose", v, kernel=tuple(k), stride=attrs["stride"],
                  dilation=attrs["dilation"], pad_low=attrs["pad_low"], pad_high=attrs["pad_high"],
                  size=tuple(op.attrs["size"]))


register(OpDef(
    name="conv", infer=_conv_infer, reference=_conv_ref, vjp=_conv_vjp, jvp=bilinear_jvp,
    attrs={"stride": AttrSpec("ints"), "dilation": AttrSpec("ints"), "pad_low": AttrSpec("ints"),
           "pad_high": AttrSpec("ints"), "groups": AttrSpec("int")},
    num_operands=2, expand=_conv_expand,
    doc="Cross-correlation, PyTorch's conv: x [N, C, *S], w [O, C/groups, *K] -> [N, O, *J]; "
        "negative padding crops."))


register(OpDef(
    name="conv_weight_grad", infer=_wgrad_infer, reference=_wgrad_ref, vjp=_wgrad_vjp,
    jvp=bilinear_jvp,
    attrs={"kernel": AttrSpec("ints"), "stride": AttrSpec("ints"), "dilation": AttrSpec("ints"),
           "pad_low": AttrSpec("ints"), "pad_high": AttrSpec("ints"), "groups": AttrSpec("int")},
    num_operands=2, expand=_wgrad_expand,
    doc="conv's weight cotangent: x [N, C, *S], g [N, O, *J] -> [O, C/groups, *kernel], "
        "dw[o, c, k] = sum over n, j of g[n, o, j] xp[n, group(o) C/groups + c, j stride + k dilation]."))


register(OpDef(
    name="conv_input_grad", infer=_cig_infer, reference=_cig_ref, vjp=_cig_vjp, jvp=bilinear_jvp,
    attrs={"size": AttrSpec("ints"), "stride": AttrSpec("ints"), "dilation": AttrSpec("ints"),
           "pad_low": AttrSpec("ints"), "pad_high": AttrSpec("ints"), "groups": AttrSpec("int")},
    num_operands=2, expand=_cig_expand,
    doc="conv's input cotangent: g [N, O, *J], w [O, C/groups, *K] -> [N, C, *size], "
        "dx[n, c, i] = sum over o, k with i = j stride + k dilation - pad_low of g[n, o, j] w[o, c, k]."))
