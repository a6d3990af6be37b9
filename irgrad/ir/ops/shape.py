"""Primitives that create or rearrange data: const, iota, broadcast, reshape, transpose,
slice, pad, concat. Their derivatives are linear rearrangements of the (co)tangent."""

from __future__ import annotations

import numpy as np

from ...errors import ShapeError
from ..indexing import Ix, clip, delinearize, linearize
from ..registry import AttrSpec, OpDef, fmt_types, register
from ..rewrite import defining, splat_value
from ..scalar import Const, IndexValue, InRange, Load, Select
from ..types import DType


# --- const -------------------------------------------------------------------------------------

def _const_infer(types, attrs, declared):
    t = declared[0]
    v = attrs["value"]
    if v.dtype != t.dtype.np:
        raise ShapeError(f"'const' value of dtype {v.dtype} does not match the type {t}")
    if v.ndim != 0 and v.shape != t.shape:
        raise ShapeError(f"'const' value of shape {list(v.shape)} does not match the type {t} "
                         f"(give one number to fill the tensor, or the whole array)")
    return [t]


def _const_ref(xs, op):
    t = op.results[0].type
    return [np.broadcast_to(op.attrs["value"], t.shape)]


def _const_build(ev, op, idx, kids):
    value, t = op.attrs["value"], op.results[0].type
    if value.ndim == 0:  # a splat: the number itself
        return Const(t.dtype, value.item())
    return Load(t.dtype, ev.constant(value, t.dtype), linearize(idx, t.shape))


register(OpDef(
    name="const", infer=_const_infer, reference=_const_ref,
    attrs={"value": AttrSpec("value")}, num_operands=0, declared_type=True,
    differentiable=False, cost=0, reads=lambda op, idx: [], build=_const_build,
    doc="A constant: one number splatted over the type's shape, or a dense nested list."))


# --- iota --------------------------------------------------------------------------------------

def _iota_infer(types, attrs, declared):
    t = declared[0]
    if t.dtype is DType.bool:
        raise ShapeError(f"'iota' needs a numeric type, got {t}")
    if not 0 <= attrs["axis"] < t.rank:
        raise ShapeError(f"'iota' axis {attrs['axis']} is out of range for {t}")
    return [t]


def _iota_ref(xs, op):
    t = op.results[0].type
    ax = op.attrs["axis"]
    shape = [1] * t.rank
    shape[ax] = t.shape[ax]
    return [np.broadcast_to(np.arange(t.shape[ax], dtype=t.dtype.np).reshape(shape), t.shape)]


register(OpDef(
    name="iota", infer=_iota_infer, reference=_iota_ref, attrs={"axis": AttrSpec("int")},
    num_operands=0, declared_type=True, differentiable=False, cost=0,
    reads=lambda op, idx: [],
    build=lambda ev, op, idx, kids: IndexValue(op.results[0].dtype, idx[op.attrs["axis"]]),
    doc="0, 1, 2, ... along `axis`, repeated over the other axes."))


# --- broadcast ---------------------------------------------------------------------------------

def _broadcast_infer(types, attrs, declared):
    x, t = types[0], declared[0]
    dims = attrs["dims"]
    if t.dtype != x.dtype:
        raise ShapeError(f"'broadcast' cannot change dtype: {x} to {t}")
    if len(dims) != x.rank:
        raise ShapeError(f"'broadcast' needs one entry in dims per operand axis: {x} with dims={list(dims)}")
    if any(b <= a for a, b in zip(dims, dims[1:])) or any(not 0 <= d < t.rank for d in dims):
        raise ShapeError(f"'broadcast' dims={list(dims)} must increase and lie in 0..{t.rank - 1}")
    for i, d in enumerate(dims):
        if x.shape[i] not in (1, t.shape[d]):
            raise ShapeError(f"'broadcast' cannot stretch axis {i} of {x} (size {x.shape[i]}) "
                             f"to axis {d} of {t} (size {t.shape[d]})")
    return [t]


def _broadcast_ref(xs, op):
    t = op.results[0].type
    shape = [1] * t.rank
    for i, d in enumerate(op.attrs["dims"]):
        shape[d] = xs[0].shape[i]
    return [np.broadcast_to(xs[0].reshape(shape), t.shape)]


def broadcast_transpose(b, g, operand_shape, dims):
    """The adjoint of broadcast: sum g over the axes the broadcast created or stretched."""
    kept = set(dims)
    summed = [a for a in range(len(g.shape)) if a not in kept]
    summed += [d for i, d in enumerate(dims) if operand_shape[i] == 1 and g.shape[d] != 1]
    out = b.reduce_sum(g, sorted(summed)) if summed else g
    if tuple(out.shape) != tuple(operand_shape):
        out = b.reshape(out, operand_shape)
    return out


def _broadcast_rules(rw, op):
    # identity broadcast -> x;  broadcast(c) -> a larger splat;  nested broadcasts -> one
    x = op.operands[0]
    dims, shape = op.attrs["dims"], op.result.shape
    if x.shape == shape and dims == tuple(range(len(shape))):
        return x
    s = splat_value(x)
    if s is not None:
        return rw.b.full(op.result.type, s)
    inner = defining(x, "broadcast")
    if inner is not None:
        return rw.b.broadcast(inner.operands[0], shape, tuple(dims[d] for d in inner.attrs["dims"]))
    return None


register(OpDef(
    name="broadcast", infer=_broadcast_infer, reference=_broadcast_ref,
    # the adjoint of copying is summing the copies
    vjp=lambda b, op, cts, w: [broadcast_transpose(b, cts[0], op.operands[0].shape, op.attrs["dims"])
                               if cts[0] is not None else None],
    jvp=lambda b, op, ts: [b.broadcast(ts[0], op.result.shape, op.attrs["dims"])],
    attrs={"dims": AttrSpec("ints")}, num_operands=1, declared_type=True, cost=0,
    rules=(_broadcast_rules,), rereads=True,  # (each element copied: store it if expensive)
    # operand element i reads result axis dims[i] (size-1 axes: element 0)
    operand_index=lambda op, idx: tuple(idx[d] if op.operands[0].shape[i] != 1 else Ix.of(0)
                                        for i, d in enumerate(op.attrs["dims"])),
    doc="Operand axis i goes to result axis dims[i]; size-1 axes stretch (lax.broadcast_in_dim)."))


# --- reshape -----------------------------------------------------------------------------------

def _reshape_infer(types, attrs, declared):
    x, t = types[0], declared[0]
    if t.dtype != x.dtype or t.size != x.size:
        raise ShapeError(f"'reshape' cannot turn {x} into {t}")
    return [t]


def _reshape_rules(rw, op):
    # reshape to the same shape -> x;  reshape(reshape(x)) -> one reshape (or x)
    x, shape = op.operands[0], op.result.shape
    if x.shape == shape:
        return x
    inner = defining(x, "reshape")
    if inner is not None:
        src = inner.operands[0]
        return src if src.shape == shape else rw.b.reshape(src, shape)
    return None


register(OpDef(
    name="reshape", infer=_reshape_infer,
    reference=lambda xs, op: [xs[0].reshape(op.results[0].type.shape)],
    vjp=lambda b, op, cts, w: [b.reshape(cts[0], op.operands[0].shape)],
    jvp=lambda b, op, ts: [b.reshape(ts[0], op.result.shape)],
    num_operands=1, declared_type=True, alias=True, cost=0, rules=(_reshape_rules,),
    # element i in row-major order stays element i
    operand_index=lambda op, idx: tuple(delinearize(linearize(idx, op.results[0].shape),
                                                    op.operands[0].shape)),
    result_index=lambda op, idx, operand=0: tuple(delinearize(linearize(idx, op.operands[0].shape),
                                                              op.results[0].shape)),
    doc="Row-major reshape to the result type."))


# --- transpose ---------------------------------------------------------------------------------

def _transpose_infer(types, attrs, declared):
    x, perm = types[0], attrs["perm"]
    if sorted(perm) != list(range(x.rank)):
        raise ShapeError(f"'transpose' perm={list(perm)} is not a permutation of the axes of {x}")
    return [x.with_shape(x.shape[p] for p in perm)]


def _inverse_perm(perm):
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv


def _transpose_rules(rw, op):
    # identity transpose -> x;  transpose(transpose(x)) -> one transpose (or x);
    # moving size-1 axes only -> reshape
    x, perm = op.operands[0], op.attrs["perm"]
    inner = defining(x, "transpose")
    if inner is not None:
        # result axis i = middle axis perm[i] = operand axis inner_perm[perm[i]]
        perm = tuple(inner.attrs["perm"][p] for p in perm)
        x = inner.operands[0]
        return x if perm == tuple(range(len(perm))) else rw.b.transpose(x, perm)
    if perm == tuple(range(len(perm))):
        return x
    # a transpose that only moves size-1 axes keeps the row-major order of the elements:
    # a reshape (a view), not a copy (conv's expansion makes these at batch 1)
    moved = [p for p in perm if x.type.shape[p] != 1]
    if moved == sorted(moved):
        return rw.b.reshape(x, op.result.type.shape)
    return None


register(OpDef(
    name="transpose", infer=_transpose_infer,
    reference=lambda xs, op: [np.transpose(xs[0], op.attrs["perm"])],
    vjp=lambda b, op, cts, w: [b.transpose(cts[0], _inverse_perm(op.attrs["perm"]))],
    jvp=lambda b, op, ts: [b.transpose(ts[0], op.attrs["perm"])],
    attrs={"perm": AttrSpec("ints")}, num_operands=1, cost=0, rules=(_transpose_rules,),
    operand_index=lambda op, idx: tuple(idx[i] for i in _inverse_perm(op.attrs["perm"])),
    result_index=lambda op, idx, operand=0: tuple(idx[p] for p in op.attrs["perm"]),
    doc="Result axis i is operand axis perm[i]."))


def _whole(rw, op):
    x = op.operands[0]
    return x if op.result.shape == x.shape else None


# --- slice -------------------------------------------------------------------------------------

def _slice_infer(types, attrs, declared):
    x, start, limit = types[0], attrs["start"], attrs["limit"]
    if len(start) != x.rank or len(limit) != x.rank:
        raise ShapeError(f"'slice' needs start and limit with one entry per axis of {x}")
    for s, l, d in zip(start, limit, x.shape):
        if not 0 <= s <= l <= d:
            raise ShapeError(f"'slice' start={list(start)} limit={list(limit)} do not fit {x}")
    return [x.with_shape(l - s for s, l in zip(start, limit))]


register(OpDef(
    name="slice", infer=_slice_infer,
    reference=lambda xs, op: [xs[0][tuple(slice(s, l) for s, l in zip(op.attrs["start"], op.attrs["limit"]))]],
    # the adjoint of taking a window is padding the window's cotangent with zeros
    vjp=lambda b, op, cts, w: [b.pad(cts[0], op.attrs["start"],
                                     [d - l for d, l in zip(op.operands[0].shape, op.attrs["limit"])])],
    jvp=lambda b, op, ts: [b.slice(ts[0], op.attrs["start"], op.attrs["limit"])],
    attrs={"start": AttrSpec("ints"), "limit": AttrSpec("ints")}, num_operands=1, cost=0,
    rules=(_whole,),  # a slice of everything -> x
    operand_index=lambda op, idx: tuple(i + s for i, s in zip(idx, op.attrs["start"])),
    doc="The window start <= index < limit of every axis."))


# --- pad ---------------------------------------------------------------------------------------

def _pad_infer(types, attrs, declared):
    x, low, high = types[0], attrs["low"], attrs["high"]
    if len(low) != x.rank or len(high) != x.rank or min(low + high, default=0) < 0:
        raise ShapeError(f"'pad' needs non-negative low and high with one entry per axis of {x}")
    return [x.with_shape(d + lo + hi for d, lo, hi in zip(x.shape, low, high))]


def _pad_reads(op, idx):
    # inside the operand's window: its element; outside: clamped (and masked by build)
    low, shape = op.attrs["low"], op.operands[0].shape
    return [(0, tuple(clip(i - lo, 0, d - 1) for i, lo, d in zip(idx, low, shape)))]


def _pad_build(ev, op, idx, kids):
    dt, cond = op.results[0].dtype, None
    for i, lo, d in zip(idx, op.attrs["low"], op.operands[0].shape):
        c = InRange(DType.bool, i, lo, lo + d)
        cond = c if cond is None else Select(DType.bool, cond, c, Const(DType.bool, False))
    return Select(dt, cond, kids[0], Const(dt, 0)) if cond is not None else kids[0]


register(OpDef(
    name="pad", infer=_pad_infer, reads=_pad_reads, build=_pad_build,
    reference=lambda xs, op: [np.pad(xs[0], list(zip(op.attrs["low"], op.attrs["high"])))],
    # the adjoint of zero-padding is cutting the window back out
    vjp=lambda b, op, cts, w: [b.slice(cts[0], op.attrs["low"],
                                       [lo + d for lo, d in zip(op.attrs["low"], op.operands[0].shape)])],
    jvp=lambda b, op, ts: [b.pad(ts[0], op.attrs["low"], op.attrs["high"])],
    attrs={"low": AttrSpec("ints"), "high": AttrSpec("ints")}, num_operands=1,
    rules=(_whole,),  # a pad by nothing -> x
    doc="Zeros added before (low) and after (high) each axis."))


# --- concat ------------------------------------------------------------------------------------

def _concat_infer(types, attrs, declared):
    if not types:
        raise ShapeError("'concat' needs at least one operand")
    ax, first = attrs["axis"], types[0]
    if not 0 <= ax < first.rank:
        raise ShapeError(f"'concat' axis {ax} is out of range for {first}")
    for t in types[1:]:
        if t.dtype != first.dtype or t.rank != first.rank or any(
                a != c for i, (a, c) in enumerate(zip(t.shape, first.shape)) if i != ax):
            raise ShapeError(f"'concat' along axis {ax} needs matching shapes, got {fmt_types(types)}")
    shape = list(first.shape)
    shape[ax] = sum(t.shape[ax] for t in types)
    return [first.with_shape(shape)]


def _concat_vjp(b, op, cts, wanted):
    g, ax, out, off = cts[0], op.attrs["axis"], [], 0
    for x, want in zip(op.operands, wanted):
        n = x.shape[ax]
        if want and g is not None:
            start = [0] * len(g.shape)
            limit = list(g.shape)
            start[ax], limit[ax] = off, off + n
            out.append(b.slice(g, start, limit))
        else:
            out.append(None)
        off += n
    return out


def _concat_jvp(b, op, ts):
    if all(t is None for t in ts):
        return [None]
    return [b.concat([t if t is not None else b.zeros_like(x) for t, x in zip(ts, op.operands)],
                     op.attrs["axis"])]


def _concat_reads(op, idx):
    ax, off, out = op.attrs["axis"], 0, []
    for i, o in enumerate(op.operands):
        n = o.shape[ax]
        j = list(idx)
        j[ax] = clip(idx[ax] - off, 0, n - 1)
        out.append((i, tuple(j)))
        off += n
    return out


def _concat_build(ev, op, idx, kids):
    dt, ax, off, bounds = op.results[0].dtype, op.attrs["axis"], 0, []
    for o in op.operands:
        bounds.append(off)
        off += o.shape[ax]
    out = kids[-1]
    for k in range(len(kids) - 2, -1, -1):
        out = Select(dt, InRange(DType.bool, idx[ax], 0, bounds[k + 1]), kids[k], out)
    return out


def _concat_result_index(op, idx, operand=0):
    ax = op.attrs["axis"]
    off = sum(v.shape[ax] for v in op.operands[:operand])
    return tuple(i + off if d == ax else i for d, i in enumerate(idx))


def _concat_rules(rw, op):
    # the concat of one value -> it;  concat(concat(a, b), c) -> concat(a, b, c) (one axis)
    xs, ax = op.operands, op.attrs["axis"]
    if len(xs) == 1:
        return xs[0]
    flat, changed = [], False
    for x in xs:
        inner = defining(x, "concat")
        if inner is not None and inner.attrs["axis"] == ax:
            flat.extend(inner.operands)
            changed = True
        else:
            flat.append(x)
    return rw.b.concat(flat, ax) if changed else None


register(OpDef(
    name="concat", infer=_concat_infer, reads=_concat_reads, build=_concat_build,
    result_index=_concat_result_index,
    reference=lambda xs, op: [np.concatenate(xs, axis=op.attrs["axis"])],
    vjp=_concat_vjp, jvp=_concat_jvp, attrs={"axis": AttrSpec("int")}, num_operands=None,
    rules=(_concat_rules,),
    doc="Operands joined along `axis`."))

