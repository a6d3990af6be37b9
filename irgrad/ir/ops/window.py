"""Sliding windows: `window` (im2col), its adjoint `window_transpose` (col2im), `reverse`.

`window` maps x [..., *S] to [..., *K, *J], element (k, j) = x[j stride + k dilation -
pad_low] (`fill` outside x): pooling reduces its K axes, and conv's expansion makes its
GEMM columns from it. `window_transpose` [..., *K, *J] -> [..., *S] adds every element
back where window took it from: window's VJP, pooling's backward, and the col2im half of
a conv's input gradient. Negative padding crops. Both are loop kernels whose elements are
index arithmetic (ir/indexing.py): nothing is gathered through memory indirection.
"""

from __future__ import annotations

import itertools

import numpy as np

from ...errors import ShapeError
from ..indexing import clip, floordiv, mod
from ..registry import AttrSpec, OpDef, register
from ..scalar import Const, InRange, Select, instruction
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


def _check_fill(x, fill) -> None:
    """The fill must be a value of x's dtype: any float for floats (inf and nan too, but
    not a finite number beyond the dtype's range), an integer in range for integers, 0 or
    1 for bools."""
    fill = float(fill)
    if x.dtype.is_float:
        with np.errstate(over="ignore"):
            rounded = x.dtype.np.type(fill)
        if np.isfinite(fill) and not np.isfinite(rounded):  # rounds to inf in the dtype
            raise ShapeError(f"'window' fill={fill!r} does not fit {x.dtype} (largest {np.finfo(x.dtype.np).max:g})")
        return
    lo, hi = (0, 1) if x.dtype is DType.bool else (np.iinfo(x.dtype.np).min, np.iinfo(x.dtype.np).max)
    if not np.isfinite(fill) or fill != int(fill) or not lo <= fill <= hi:
        raise ShapeError(f"'window' fill={fill!r} is not a value of {x.dtype} (the window of {x})")


def _window_infer(types, attrs, declared):
    x = types[0]
    _check_fill(x, attrs["fill"])
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
    # every window element goes back to the input element it copied: the adjoint is
    # window_transpose (col2im), which adds them up
    x = op.operands[0]
    attrs = {k: v for k, v in op.attrs.items() if k != "fill"}
    return [b.emit("window_transpose", cts[0], size=tuple(x.shape[len(x.shape) - len(attrs["kernel"]):]),
                   **attrs)]


WINDOW_ATTRS = {"kernel": AttrSpec("ints"), "stride": AttrSpec("ints"), "dilation": AttrSpec("ints"),
                "pad_low": AttrSpec("ints"), "pad_high": AttrSpec("ints"),
                "fill": AttrSpec("float", required=False, default=0.0)}

register(OpDef(
    name="window", infer=_window_infer, reference=_window_ref,
    vjp=_window_vjp,  # (a window with fill 0 is linear; pooling's fill -inf is never differentiated at the fill)
    # linear in x apart from the fill, a constant: the tangent's windows are filled with 0
    jvp=lambda b, op, ts: [b.emit("window", ts[0], **(op.attrs | {"fill": 0.0}))],
    attrs=WINDOW_ATTRS, num_operands=1, cost=0, reads=_window_reads, build=_window_build, rereads=True,
    doc="Sliding windows (im2col): [..., *S] -> [..., *K, *J], element (k, j) = x[j stride + "
        "k dilation - pad_low], `fill` outside the input."))




# --- window_transpose (col2im) ------------------------------------------------------------------

def _wt_geometry(g, attrs):
    size = tuple(attrs["size"])
    n = len(size)
    if not 1 <= n <= g.rank // 2 or len(attrs["kernel"]) != n:
        raise ShapeError(f"'window_transpose' needs one size and kernel entry per spatial axis for {g}, "
                         f"got size={list(size)} kernel={list(attrs['kernel'])}")
    lead = g.rank - 2 * n
    x = g.with_shape(g.shape[:lead] + size)
    k, s, d, lo, hi, j = _window_geometry(x, attrs)
    if g.shape[lead:] != k + j:
        raise ShapeError(f"'window_transpose' of {g} does not fit the window {list(k + j)} of "
                         f"{x} (kernel {list(k)}, stride {list(s)})")
    return x, k, s, d, lo, hi, j


def _wt_infer(types, attrs, declared):
    return [_wt_geometry(types[0], attrs)[0]]


def col2im_reference(cols, k, s, d, lo, size):
    """numpy: [..., *K, *J] -> [..., *size], every element added back where window put it."""
    n = len(k)
    lead = cols.ndim - 2 * n
    j = cols.shape[lead + n:]
    out = np.zeros(cols.shape[:lead] + tuple(size), dtype=cols.dtype)
    for kk in itertools.product(*(range(a) for a in k)):
        dst, src = [], []
        for i in range(n):
            off = kk[i] * d[i] - lo[i]  # where window index 0 reads
            valid = [jj for jj in range(j[i]) if 0 <= jj * s[i] + off < size[i]]
            if not valid:
                break
            dst.append(slice(valid[0] * s[i] + off, valid[-1] * s[i] + off + 1, s[i]))
            src.append(slice(valid[0], valid[-1] + 1))
        else:
            out[(Ellipsis,) + tuple(dst)] += cols[(Ellipsis,) + kk + tuple(src)]
    return out


def _wt_ref(xs, op):
    a = op.attrs
    return [col2im_reference(xs[0], a["kernel"], a["stride"], a["dilation"], a["pad_low"], a["size"])]


def _wt_terms(op, idx):
    """Per kernel offset k: (the g index it reads, the condition that it exists or None)."""
    x, k, s, d, lo, hi, j = _wt_geometry(op.operands[0].type, op.attrs)
    n = len(k)
    lead = len(idx) - n
    terms = []
    for kk in itertools.product(*(range(a) for a in k)):
        conds, jj = [], []
        for i in range(n):
            t = idx[lead + i] + (lo[i] - kk[i] * d[i])  # = j s for the window index j
            q = floordiv(t, s[i])
            lo_t, hi_t = t.bounds()
            if hi_t < 0 or lo_t > (j[i] - 1) * s[i]:
                conds = None  # never inside the window: no term
                break
            if lo_t < 0 or hi_t > (j[i] - 1) * s[i]:
                conds.append(InRange(DType.bool, t, 0, (j[i] - 1) * s[i] + 1))
            if s[i] > 1:
                conds.append(InRange(DType.bool, mod(t, s[i]), 0, 1))
            jj.append(clip(q, 0, j[i] - 1))
        if conds is None:
            continue
        terms.append((tuple(idx[:lead]) + kk + tuple(jj), conds))
    return terms


def _wt_reads(op, idx):
    return [(0, ix) for ix, _ in _wt_terms(op, idx)]


def _wt_build(ev, op, idx, kids):
    dt = op.results[0].dtype
    total = None
    for (_, conds), kid in zip(_wt_terms(op, idx), kids):
        term = kid
        if conds:
            cond = conds[0]
            for c in conds[1:]:
                cond = Select(DType.bool, cond, c, Const(DType.bool, False))
            term = Select(dt, cond, kid, Const(dt, 0))
        total = term if total is None else instruction("add", dt, [total, term])
    return total if total is not None else Const(dt, 0)


_WT_ATTRS = {k: v for k, v in WINDOW_ATTRS.items() if k != "fill"} | {"size": AttrSpec("ints")}

register(OpDef(
    name="window_transpose", infer=_wt_infer, reference=_wt_ref,
    # window_transpose is window's adjoint, and the other way round
    vjp=lambda b, op, cts, w: [b.emit("window", cts[0], **{k: v for k, v in op.attrs.items() if k != "size"})],
    jvp=lambda b, op, ts: [b.emit("window_transpose", ts[0], **op.attrs)],
    attrs=_WT_ATTRS, num_operands=1, cost=8, reads=_wt_reads, build=_wt_build, rereads=True,
    doc="col2im: [..., *K, *J] -> [..., *size], each element added back where `window` "
        "(same attributes) took it from."))
