"""Reductions, matrix products and indexing: reduce_sum, reduce_max, matmul, gather,
scatter_add."""

from __future__ import annotations

import math

import numpy as np

from ...errors import ShapeError
from ..indexing import Ix
from ..scalar import Clamp
from ..registry import AttrSpec, OpDef, fmt_types, register
from ..types import DType


def _reduce_infer(name):
    def infer(types, attrs, declared):
        x, axes = types[0], attrs["axes"]
        if x.dtype is DType.bool:
            raise ShapeError(f"'{name}' needs a numeric operand, got {x}")
        if any(not 0 <= a < x.rank for a in axes) or any(b <= a for a, b in zip(axes, axes[1:])):
            raise ShapeError(f"'{name}' axes={list(axes)} must increase and lie in the axes of {x}")
        return [x.with_shape(d for i, d in enumerate(x.shape) if i not in axes)]
    return infer


def _reduce_rules(rw, op):
    # a reduction over no axes -> x;  over size-1 axes only -> a reshape
    x, axes = op.operands[0], op.attrs["axes"]
    if not axes:
        return x
    if all(x.shape[a] == 1 for a in axes):
        return rw.b.reshape(x, op.result.shape)
    return None


def kept_axes(rank: int, axes) -> list[int]:
    return [i for i in range(rank) if i not in axes]


def _sum_vjp(b, op, cts, wanted):
    # d/dx_i sum(x) = 1: every input element receives the cotangent of its sum
    x = op.operands[0]
    return [b.broadcast(cts[0], x.shape, kept_axes(len(x.shape), op.attrs["axes"]))]


def _c_order(x) -> np.ndarray:
    """x as a C-contiguous array (0-d arrays stay 0-d, unlike np.ascontiguousarray)."""
    x = np.asarray(x)
    return x if x.flags.c_contiguous else np.array(x, order="C")


# The reference must give the same bits for the same values whatever their memory layout:
# numpy sums (pairwise along the innermost contiguous axis) and BLAS products take other
# paths on a transposed or broadcast view than on a C-contiguous array, and passes change
# layouts freely (constant-fold materializes a transposed constant; fusion and simplify
# change which views reach an op). So sums and products read C-contiguous operands.
register(OpDef(
    name="reduce_sum", infer=_reduce_infer("reduce_sum"),
    reference=lambda xs, op: [np.sum(_c_order(xs[0]), axis=op.attrs["axes"], dtype=xs[0].dtype)],
    vjp=_sum_vjp,
    jvp=lambda b, op, ts: [b.reduce_sum(ts[0], op.attrs["axes"])],
    attrs={"axes": AttrSpec("ints")}, num_operands=1, kernel="reduce", reduction="add",
    identity=lambda dt: 0, rules=(_reduce_rules,),
    doc="Sum over `axes` (increasing); the reduced axes are dropped."))


def _max_weights(b, op):
    """1/count where x attains the max (or min) of its row, 0 elsewhere (ties share the
    derivative)."""
    x, y, axes = op.operands[0], op.result, op.attrs["axes"]
    keep = kept_axes(len(x.shape), axes)
    hit = b.cast(b.eq(x, b.broadcast(y, x.shape, keep)), x.dtype)
    count = b.reduce_sum(hit, axes)
    return b.div(hit, b.broadcast(count, x.shape, keep)), keep


def _max_vjp(b, op, cts, wanted):
    # d max(x) / dx_i = 1/k at the k positions where x_i equals the max, 0 elsewhere
    w, keep = _max_weights(b, op)
    return [b.mul(b.broadcast(cts[0], op.operands[0].shape, keep), w)]


def _max_jvp(b, op, ts):
    w, _ = _max_weights(b, op)
    return [b.reduce_sum(b.mul(ts[0], w), op.attrs["axes"])]


def lowest(dt: DType):
    """The identity of max: -inf, or the integer minimum."""
    return -math.inf if dt.is_float else int(np.iinfo(dt.np).min)


def highest(dt: DType):
    """The identity of min: +inf, or the integer maximum."""
    return math.inf if dt.is_float else int(np.iinfo(dt.np).max)


def _extremum_ref(fn, identity):
    # the max of no elements is the identity of max (-inf, or the integer minimum), as in
    # JAX's jnp.max(..., initial=-inf) (numpy refuses empty reductions without `initial`)
    def ref(xs, op):
        x = xs[0]
        return [fn(x, axis=op.attrs["axes"], initial=identity(DType.from_numpy(x.dtype)))]
    return ref


register(OpDef(
    name="reduce_max", infer=_reduce_infer("reduce_max"),
    reference=_extremum_ref(np.max, lowest),
    vjp=_max_vjp, jvp=_max_jvp, attrs={"axes": AttrSpec("ints")}, num_operands=1,
    kernel="reduce", reduction="max", identity=lowest, rules=(_reduce_rules,),
    doc="Max over `axes` (increasing); the reduced axes are dropped."))

# d min(x) / dx_i = 1/k at the k positions where x_i equals the min (as for max)
register(OpDef(
    name="reduce_min", infer=_reduce_infer("reduce_min"),
    reference=_extremum_ref(np.min, highest),
    vjp=_max_vjp, jvp=_max_jvp, attrs={"axes": AttrSpec("ints")}, num_operands=1,
    kernel="reduce", reduction="min", identity=highest, rules=(_reduce_rules,),
    doc="Min over `axes` (increasing); the reduced axes are dropped."))


# --- matmul ------------------------------------------------------------------------------------

def _matmul_infer(types, attrs, declared):
    a, c = types
    if a.dtype != c.dtype or a.dtype is DType.bool:
        raise ShapeError(f"'matmul' needs two numeric operands of one dtype, got {a} and {c}")
    if a.rank < 2 or a.rank != c.rank:
        raise ShapeError(f"'matmul' needs 2-D operands or batched ones of equal rank, got {a} and {c}")
    if a.shape[:-2] != c.shape[:-2] or a.shape[-1] != c.shape[-2]:
        raise ShapeError(f"'matmul' shapes do not fit: {a} @ {c} "
                         f"(need [..., m, k] @ [..., k, n] with equal batch dims)")
    return [a.with_shape(a.shape[:-1] + c.shape[-1:])]


def _matmul_vjp(b, op, cts, wanted):
    # C = A B:  dA = dC B^T,  dB = A^T dC
    g, (x, y) = cts[0], op.operands
    return [b.matmul(g, b.swap_last_two(y)) if wanted[0] else None,
            b.matmul(b.swap_last_two(x), g) if wanted[1] else None]


def _matmul_jvp(b, op, ts):
    # d(A B) = dA B + A dB
    x, y = op.operands
    return [b.add_maybe(b.matmul(ts[0], y) if ts[0] is not None else None,
                        b.matmul(x, ts[1]) if ts[1] is not None else None)]


register(OpDef(
    name="matmul", infer=_matmul_infer,
    reference=lambda xs, op: [np.matmul(_c_order(xs[0]), _c_order(xs[1]))],
    vjp=_matmul_vjp, jvp=_matmul_jvp, num_operands=2, kernel="matmul",
    doc="[..., m, k] @ [..., k, n] -> [..., m, n], batch dims equal."))


# --- gather / scatter_add ------------------------------------------------------------------------

def _gather_shape(a, idx, axis):
    return a.shape[:axis] + idx.shape + a.shape[axis + 1:]


def _gather_infer(types, attrs, declared):
    a, idx = types
    ax = attrs["axis"]
    if not idx.dtype.is_int:
        raise ShapeError(f"'gather' indices must be integers, got {idx}")
    if not 0 <= ax < a.rank:
        raise ShapeError(f"'gather' axis {ax} is out of range for {a}")
    out = a.with_shape(_gather_shape(a, idx, ax))
    if a.shape[ax] == 0 and out.size:
        raise ShapeError(f"'gather' reads {out} from an empty axis of {a}")
    return [out]


def clamp_indices(idx, n):
    """Indices as every backend reads them: a negative index counts from the end (as in
    numpy), and one outside the axis is clamped to its nearest end (as in JAX): gathers
    and scatters never leave their tensor and never fail at run time."""
    idx = np.asarray(idx, dtype=np.int64)
    return np.clip(np.where(idx < 0, idx + n, idx), 0, max(n - 1, 0))


def _gather_ref(xs, op):
    a, idx = xs
    ax = op.attrs["axis"]
    return [np.take(a, clamp_indices(idx, a.shape[ax]), axis=ax)]


def _gather_reads(op, idx):
    ax, k = op.attrs["axis"], len(op.operands[1].shape)
    return [(1, tuple(idx[ax:ax + k]))]  # the index; the table is read in build


def _gather_build(ev, op, idx, kids):
    ax, table = op.attrs["axis"], op.operands[0]
    k = len(op.operands[1].shape)
    j = Ix.of(Clamp(kids[0], table.shape[ax]))  # clamped as every backend reads it
    return ev.at(table, tuple(idx[:ax]) + (j,) + tuple(idx[ax + k:]))


register(OpDef(
    name="gather", infer=_gather_infer, reference=_gather_ref,
    reads=_gather_reads, build=_gather_build,
    # the adjoint of reading rows is adding the cotangents back into those rows
    vjp=lambda b, op, cts, w: [b.scatter_add(b.zeros_like(op.operands[0]), op.operands[1],
                                             cts[0], op.attrs["axis"]) if w[0] else None, None],
    jvp=lambda b, op, ts: [b.gather(ts[0], op.operands[1], op.attrs["axis"])
                           if ts[0] is not None else None],
    attrs={"axis": AttrSpec("int")}, num_operands=2,
    doc="np.take(a, indices, axis): result shape a[:axis] + indices + a[axis+1:]; negative "
        "indices count from the end, indices outside the axis are clamped to it."))


def _scatter_infer(types, attrs, declared):
    a, idx, upd = types
    ax = attrs["axis"]
    if not idx.dtype.is_int:
        raise ShapeError(f"'scatter_add' indices must be integers, got {idx}")
    if not 0 <= ax < a.rank:
        raise ShapeError(f"'scatter_add' axis {ax} is out of range for {a}")
    if upd.dtype != a.dtype or upd.shape != _gather_shape(a, idx, ax):
        raise ShapeError(f"'scatter_add' updates must have type "
                         f"{a.with_shape(_gather_shape(a, idx, ax))}, got {fmt_types(types)}")
    if a.shape[ax] == 0 and upd.size:
        raise ShapeError(f"'scatter_add' adds {upd} into an empty axis of {a}")
    return [a]


def _scatter_ref(xs, op):
    a, idx, upd = xs
    ax = op.attrs["axis"]
    out = np.array(a, copy=True)
    flat = upd.reshape(a.shape[:ax] + (idx.size,) + a.shape[ax + 1:])
    np.add.at(out, (slice(None),) * ax + (clamp_indices(idx, a.shape[ax]).reshape(-1),), flat)
    return [out]


register(OpDef(
    name="scatter_add", infer=_scatter_infer, reference=_scatter_ref,
    # out = a + S(upd): d out / d a = I, and the adjoint of S (scatter) is gather
    vjp=lambda b, op, cts, w: [cts[0] if w[0] else None, None,
                               b.gather(cts[0], op.operands[1], op.attrs["axis"]) if w[2] else None],
    jvp=lambda b, op, ts: [None if ts[0] is None and ts[2] is None else b.scatter_add(
        ts[0] if ts[0] is not None else b.zeros_like(op.operands[0]), op.operands[1],
        ts[2] if ts[2] is not None else b.zeros_like(op.operands[2]), op.attrs["axis"])],
    attrs={"axis": AttrSpec("int")}, num_operands=3, kernel="scatter",
    doc="a with `updates` added at `indices` along `axis` (repeated indices accumulate)."))
