"""Indexing: Gather, GatherElements, GatherND, the scatters (ScatterElements, ScatterND,
Scatter, TensorScatter), OneHot, ReverseSequence, and the ops whose output shape depends
on data values (Compress, NonZero, Unique: imported when those values are constants).

The IR has one gather (np.take along an axis) and one scatter (scatter_add along an
axis); every other indexing op is linearized onto them: an element index (i0, .., ik)
of a tensor of shape D is the row sum_d i_d * stride_d of the flattened tensor, with the
coordinates the op does not pick taken from iota. ONNX's negative indices count from the
end and are wrapped with a select first (i < 0 -> i + n). Scatter reductions the IR has
no primitive for (mul, max, min) compare every target row with every update row (a
one-hot [T, N, ...] mask) and reduce over the updates: exact, and bounded in size.
"""

from __future__ import annotations

import math

import numpy as np

from ...frontend import library as L
from ...frontend.tensor import Tensor, as_tensor, broadcast_to
from ...ir.types import DType
from . import onnx_op
from .shape import cut, iota, norm_axis

# the one-hot mask of a mul/max/min scatter is at most this many elements
MAX_DENSE = 1 << 26


def index_input(node, i: int):
    """An index input: a numpy array when it is a constant (the row arithmetic below then
    happens at import and the IR gets one constant index array), else the traced tensor."""
    if node.is_const(i):
        return np.asarray(node.const(i)).astype(np.int64)
    return node.tensor(i)


def wrap(idx, n: int):
    """ONNX indices as row numbers: i64, a negative index counts from the end."""
    if isinstance(idx, np.ndarray):
        return np.where(idx < 0, idx + n, idx)
    idx = idx.astype(DType.i64) if idx.dtype is not DType.i64 else idx
    return L.where(idx < 0, idx + n, idx)


def coords(like, shape, d: int):
    """Index d of every position of `shape` (iota; numpy's for a constant `like`)."""
    if isinstance(like, np.ndarray):
        return np.indices(shape, dtype=np.int64, sparse=True)[d]
    return iota(shape, d)


def flat(v):
    return v.reshape(-1) if isinstance(v, np.ndarray) else L.reshape(v, (v.size,))


def as_index_tensor(v) -> Tensor:
    return as_tensor(v) if isinstance(v, np.ndarray) else v


def strides(shape) -> list[int]:
    out, s = [], 1
    for d in reversed(shape):
        out.append(s)
        s *= d
    return out[::-1]


def element_rows(idx, axis: int, shape):
    """For each position p of idx (same rank as `shape`), the row of the flattened tensor
    of `shape` at p with p[axis] replaced by idx[p] (GatherElements' addressing)."""
    st = strides(shape)
    lin = wrap(idx, shape[axis]) * st[axis] if st[axis] != 1 else wrap(idx, shape[axis])
    for d in range(len(shape)):
        if d != axis and idx.shape[d] > 1:
            lin = lin + coords(idx, idx.shape, d) * st[d]
    return lin


def gather_elements(x: Tensor, idx, axis: int) -> Tensor:
    """out[p] = x[p with p[axis] = idx[p]], out of idx's shape."""
    if idx.size == 0:
        return L.reshape(L.take(L.reshape(x, (x.size,)), np.zeros(0, np.int64)), idx.shape)
    return L.take(L.reshape(x, (x.size,)), element_rows(idx, axis, x.shape), axis=0)


def _index_tuple_rows(node, idx, dims):
    """Rows of a [prod(dims), ...] view for the index tuples in idx's last axis."""
    k = idx.shape[-1]
    if k > len(dims) or k < 1:
        raise node.error(f"indices of shape {list(idx.shape)} address {k} axes of {list(dims)}")
    st = strides(dims[:k])
    lin = None
    for j in range(k):
        term = wrap(idx[..., j], dims[j]) * st[j]
        lin = term if lin is None else lin + term
    return lin


# --- gathers --------------------------------------------------------------------------------

@onnx_op("Gather")
def gather(node):
    x, idx = node.tensor(0), index_input(node, 1)
    axis = norm_axis(node, node.attr("axis", 0), x.ndim)
    return L.take(x, wrap(idx, x.shape[axis]), axis=axis)


@onnx_op("GatherElements")
def gather_elements_op(node):
    x, idx = node.tensor(0), index_input(node, 1)
    axis = norm_axis(node, node.attr("axis", 0), x.ndim)
    if idx.ndim != x.ndim:
        raise node.error(f"indices {list(idx.shape)} and data {list(x.shape)} differ in rank")
    return gather_elements(x, idx, axis)


@onnx_op("GatherND")
def gather_nd(node):
    x, idx = node.tensor(0), index_input(node, 1)
    b = int(node.attr("batch_dims", 0))
    if b < 0 or b >= min(x.ndim, idx.ndim) or x.shape[:b] != idx.shape[:b]:
        raise node.error(f"batch_dims {b} do not fit data {list(x.shape)} and indices {list(idx.shape)}")
    k = idx.shape[-1]
    # rows of the view [prod(D[:b+k]), D[b+k:]...]: the batch's row block plus the tuple's row
    lin = _index_tuple_rows(node, idx, x.shape[b:])
    per_batch = math.prod(x.shape[b:b + k])
    st = strides(x.shape[:b])
    for d in range(b):
        if x.shape[d] > 1:
            lin = lin + coords(lin, lin.shape, d) * (st[d] * per_batch)
    table = L.reshape(x, (math.prod(x.shape[:b + k]),) + x.shape[b + k:])
    return L.take(table, lin, axis=0)


# --- scatters -------------------------------------------------------------------------------

def _wide(x: Tensor) -> Tensor:
    """x in a dtype its sums stay exact in (the mean of repeated writes)."""
    return x.astype({DType.f32: DType.f64, DType.i32: DType.i64, DType.bool: DType.i64}.get(x.dtype, x.dtype))


def scatter_rows(data: Tensor, rows: Tensor, upd: Tensor, reduction: str) -> Tensor:
    """data [T, ...] with upd [N, ...] combined into rows [N] (ONNX 'none' or 'add').

    'none' writes each row; ONNX leaves repeated rows undefined, and here they take the
    mean of their writes (so repeated writes of one value are exact)."""
    if reduction == "add":
        if data.dtype is DType.bool:  # logical or
            s = L.primitive("scatter_add", data.astype(DType.i32), rows, upd.astype(DType.i32), axis=0)
            return s > 0
        return L.primitive("scatter_add", data, rows, upd, axis=0)
    t = data.shape[0]
    n = rows.shape[0]
    if isinstance(rows, np.ndarray) and np.bincount(rows.clip(0, t - 1), minlength=t).max() <= 1:
        # constant rows written once each: clear them, then add the updates in
        written = np.zeros((t,) + (1,) * (data.ndim - 1), bool)
        written[rows.clip(0, t - 1)] = True
        as_num = DType.i32 if data.dtype is DType.bool else data.dtype
        base = L.where(broadcast_to(as_tensor(written), data.shape), 0, data.astype(as_num))
        out = L.primitive("scatter_add", base, rows, upd.astype(as_num), axis=0)
        return out > 0 if data.dtype is DType.bool else out
    cnt = L.primitive("scatter_add", L.zeros((t,), DType.i64), rows, L.ones((n,), DType.i64), axis=0)
    cnt = broadcast_to(L.reshape(cnt, (t,) + (1,) * (data.ndim - 1)), data.shape)
    wide = _wide(upd)
    tot = L.primitive("scatter_add", L.zeros(data.shape, wide.dtype), rows, wide, axis=0)
    if data.dtype is DType.bool:
        val = tot * 2 >= cnt  # the majority of the writes
    else:
        mean = tot.astype(DType.f64) / cnt.astype(DType.f64)
        val = L.where(cnt > 1, mean.astype(data.dtype), tot.astype(data.dtype))
    return L.where(cnt > 0, val, data)


def _prod(x: Tensor, axis: int) -> Tensor:
    """The product over one axis, as a tree of halvings (the IR has no reduce_prod)."""
    while x.shape[axis] > 1:
        n = x.shape[axis]
        if n % 2:
            one = list(x.shape)
            one[axis] = 1
            x = L.concatenate([x, L.ones(one, x.dtype)], axis)
        x = L.reshape(x, x.shape[:axis] + ((n + 1) // 2, 2) + x.shape[axis + 1:])
        x = L.reshape(cut(x, axis + 1, 0, 1) * cut(x, axis + 1, 1, 2),
                      x.shape[:axis] + ((n + 1) // 2,) + x.shape[axis + 2:])
    return L.reshape(x, x.shape[:axis] + x.shape[axis + 1:])


def _limits(dtype: DType):
    if dtype.is_float:
        return -np.inf, np.inf
    info = np.iinfo(dtype.np)
    return int(info.min), int(info.max)


def dense_scatter(node, data: Tensor, rows: Tensor, upd: Tensor, reduction: str) -> Tensor:
    """data [T, R...] combined with upd [N, R...] at rows [N, R...] (per element; a row
    outside 0..T-1 writes nothing) by mul, max or min:
        out[t, r] = data[t, r] (op) reduce_op{n : rows[n, r] = t} upd[n, r]"""
    t, n = data.shape[0], upd.shape[0]
    big = (t, n) + data.shape[1:]
    if math.prod(big) > MAX_DENSE:
        raise node.fail(f"reduction '{reduction}' of {list(upd.shape)} updates into "
                        f"{list(data.shape)} is too large for irgrad's lowering (a one-hot mask "
                        f"of {math.prod(big)} elements; at most {MAX_DENSE})")
    is_bool = data.dtype is DType.bool
    if is_bool:
        data, upd = data.astype(DType.i32), upd.astype(DType.i32)
    rows = as_index_tensor(rows)
    hit = L.reshape(rows, (1,) + rows.shape) == iota(big, 0)
    vals = broadcast_to(L.reshape(upd, (1,) + upd.shape), big)
    if reduction == "mul":
        out = data * _prod(L.where(hit, vals, 1), 1)
    elif reduction in ("max", "min"):
        lo, hi = _limits(data.dtype)
        if reduction == "max":
            out = L.maximum(data, L.max(L.where(hit, vals, lo), axis=1))
        else:
            out = L.minimum(data, L.min(L.where(hit, vals, hi), axis=1))
    else:
        raise node.fail(f"reduction '{reduction}' is not supported (none, add, mul, max, min are)")
    return out > 0 if is_bool else out


def _reduction(node) -> str:
    r = node.attr("reduction", "none") if node.opset >= 16 else "none"
    if r not in ("none", "add", "mul", "max", "min"):
        raise node.fail(f"reduction '{r}' is not supported (none, add, mul, max, min are)")
    return r


def scatter_elements(node, data: Tensor, idx: Tensor, upd: Tensor, axis: int, reduction: str) -> Tensor:
    if idx.ndim != data.ndim or upd.shape != idx.shape:
        raise node.error(f"data {list(data.shape)}, indices {list(idx.shape)} and updates "
                         f"{list(upd.shape)} must have one rank, indices and updates one shape")
    if idx.size == 0:
        return data
    if reduction in ("none", "add"):
        rows = flat(element_rows(idx, axis, data.shape))
        out = scatter_rows(flat(data), rows, flat(upd), reduction)
        return L.reshape(out, data.shape)
    # mul/max/min: the scatter axis first, indices padded to data's other sizes with the
    # row T, which no target row equals
    perm = [axis] + [d for d in range(data.ndim) if d != axis]
    inv = [perm.index(d) for d in range(data.ndim)]
    n = data.shape[axis]
    d_t, i_t, u_t = (L.transpose(v, perm) for v in (data, as_index_tensor(idx), upd))
    width = [(0, 0)] + [(0, dd - ii) for dd, ii in zip(d_t.shape[1:], i_t.shape[1:])]
    rows = L.pad(wrap(i_t, n) - n, width) + n
    u_t = L.pad(u_t, width)
    return L.transpose(dense_scatter(node, d_t, rows, u_t, reduction), inv)


@onnx_op("ScatterElements")
def scatter_elements_op(node):
    data, idx, upd = node.tensor(0), index_input(node, 1), node.tensor(2)
    axis = norm_axis(node, node.attr("axis", 0), data.ndim)
    return scatter_elements(node, data, idx, upd, axis, _reduction(node))


@onnx_op("Scatter")
def scatter_op(node):  # opset 9-10: ScatterElements without reductions
    data, idx, upd = node.tensor(0), index_input(node, 1), node.tensor(2)
    axis = norm_axis(node, node.attr("axis", 0), data.ndim)
    return scatter_elements(node, data, idx, upd, axis, "none")


@onnx_op("ScatterND")
def scatter_nd(node):
    data, idx, upd = node.tensor(0), index_input(node, 1), node.tensor(2)
    reduction = _reduction(node)
    k = idx.shape[-1]
    if upd.shape != idx.shape[:-1] + data.shape[k:]:
        raise node.error(f"updates {list(upd.shape)} must have shape indices[:-1] + data[k:] = "
                         f"{list(idx.shape[:-1] + data.shape[k:])}")
    n = math.prod(idx.shape[:-1])
    if n == 0:
        return data
    rows = flat(_index_tuple_rows(node, idx, data.shape))
    table = L.reshape(data, (math.prod(data.shape[:k]),) + data.shape[k:])
    upd = L.reshape(upd, (n,) + data.shape[k:])
    if reduction in ("none", "add"):
        out = scatter_rows(table, rows, upd, reduction)
    else:
        rows = broadcast_to(L.reshape(as_index_tensor(rows), (n,) + (1,) * (table.ndim - 1)), upd.shape)
        out = dense_scatter(node, table, rows, upd, reduction)
    return L.reshape(out, data.shape)


@onnx_op("TensorScatter")
def tensor_scatter(node):
    past, upd = node.tensor(0), node.tensor(1)
    axis = norm_axis(node, node.attr("axis", -2), past.ndim)
    mode = node.attr("mode", "linear")
    if mode not in ("linear", "circular"):
        raise node.fail(f"mode '{mode}' is not supported (linear, circular are)")
    cap, m = past.shape[axis], upd.shape[axis]
    if axis == 0 or upd.ndim != past.ndim or m > cap or any(
            a != b for d, (a, b) in enumerate(zip(past.shape, upd.shape)) if d != axis):
        raise node.error(f"update {list(upd.shape)} does not fit the cache {list(past.shape)} "
                         f"along axis {axis}")
    if not node.has(2):  # every sequence written from position 0
        return L.concatenate([upd, cut(past, axis, m, cap)], axis) if m < cap else upd
    # cache position t of batch b holds update position s = t - w[b] (mod cap when circular;
    # one correction suffices for write indices in 0..cap-1, the cache's positions)
    w = node.tensor(2).astype(DType.i64)
    w = broadcast_to(L.reshape(w, (past.shape[0],) + (1,) * (past.ndim - 1)), past.shape)
    s = iota(past.shape, axis) - w
    if mode == "circular":
        s = L.where(s < 0, s + cap, s)
    inside = (s >= 0) & (s < m)
    src = L.where(inside, s, 0)
    return L.where(inside, gather_elements(upd, src, axis), past)


@onnx_op("OneHot")
def one_hot(node):
    idx = node.tensor(0)
    depth_c = np.asarray(node.const(1)).reshape(-1)
    if depth_c.size != 1:
        raise node.error("depth must hold one value")
    depth = int(depth_c[0])
    values = node.tensor(2)
    if values.shape != (2,):
        raise node.error(f"values must be [off_value, on_value], got shape {list(values.shape)}")
    r = idx.ndim
    axis = int(node.attr("axis", -1))
    if not -r - 1 <= axis <= r:
        raise node.error(f"axis {axis} is out of range for rank-{r} indices")
    axis = axis + r + 1 if axis < 0 else axis
    if idx.dtype.is_float:  # float indices name whole classes (truncated, as onnxruntime does)
        idx = idx.astype(DType.i64)
    out_shape = idx.shape[:axis] + (depth,) + idx.shape[axis:]
    # indices in [-depth, depth) wrap; others match no class: an all-off row
    at = L.reshape(wrap(idx, depth), idx.shape[:axis] + (1,) + idx.shape[axis:])
    hit = broadcast_to(at, out_shape) == iota(out_shape, axis)
    off, on = L.reshape(values[0:1], ()), L.reshape(values[1:2], ())
    out = L.where(hit, broadcast_to(on, out_shape), broadcast_to(off, out_shape))
    return node.out(out, node.elem(2))  # the type of `values` (depth's may be another)


@onnx_op("ReverseSequence")
def reverse_sequence(node):
    x, lens = node.tensor(0), node.tensor(1)
    t_ax, b_ax = int(node.attr("time_axis", 0)), int(node.attr("batch_axis", 1))
    if x.ndim < 2 or {t_ax, b_ax} != {0, 1} or lens.shape != (x.shape[b_ax],):
        raise node.error(f"needs time and batch axes 0 and 1 of an input of rank >= 2 and one "
                         f"length per batch entry (input {list(x.shape)}, lengths {list(lens.shape)})")
    # position t of sequence b reads t' = len_b - 1 - t where t < len_b, else t itself
    shape = [1] * x.ndim
    shape[b_ax] = x.shape[b_ax]
    n = broadcast_to(L.reshape(lens.astype(DType.i64), tuple(shape)), x.shape)
    t = iota(x.shape, t_ax)
    return gather_elements(x, L.where(t < n, n - 1 - t, t), t_ax)


# --- ops whose output shape depends on data values ------------------------------------------

def data_const(node, i: int, what: str) -> np.ndarray:
    """Input i's value, which decides the output's shape: a computed one cannot be imported
    by a static-shape compiler (graph inputs are fixed at import by `constants=`)."""
    v = node.val(i)
    if v.c is None and v.origin is None:
        raise node.fail(f"the output shape depends on the values of the {what}, which is computed "
                        f"from graph inputs (irgrad's shapes are static: only a constant {what} "
                        f"can be imported)")
    return np.asarray(node.const(i))


@onnx_op("Compress")
def compress(node):
    x = node.tensor(0)
    cond = data_const(node, 1, "condition").reshape(-1).astype(bool)
    axis = node.attr("axis", None)
    if axis is None:
        x, axis = L.reshape(x, (x.size,)), 0
    else:
        axis = norm_axis(node, axis, x.ndim)
    if cond.size > x.shape[axis] and cond[x.shape[axis]:].any():
        raise node.error(f"condition selects entry {int(np.flatnonzero(cond)[-1])} of an axis of "
                         f"size {x.shape[axis]}")
    keep = np.flatnonzero(cond[:x.shape[axis]]).astype(np.int64)
    if keep.size == x.shape[axis]:
        return x
    if keep.size == 0:
        return cut(x, axis, 0, 0)
    return L.take(x, keep, axis=axis)


@onnx_op("NonZero")
def nonzero(node):
    x = data_const(node, 0, "input")
    if x.ndim == 0:
        return np.zeros((0, int(bool(x))), dtype=np.int64)
    return np.asarray(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


@onnx_op("Unique")
def unique(node):
    x = data_const(node, 0, "input")
    axis = node.attr("axis", None)
    if axis is not None:
        axis = norm_axis(node, axis, x.ndim)
    else:
        x, axis = x.reshape(-1), 0
    y, first, inverse, counts = np.unique(x, return_index=True, return_inverse=True,
                                          return_counts=True, axis=axis)
    inverse = inverse.reshape(-1)
    if not node.attr("sorted", 1):  # in the order of first occurrence
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        first, counts, inverse = first[order], counts[order], rank[inverse]
        y = np.take(x, first, axis=axis)
    i64 = lambda a: np.asarray(a, dtype=np.int64)  # noqa: E731
    return [node.out(y, node.elem(0)), i64(first), i64(inverse), i64(counts)][:node.n_outputs]
