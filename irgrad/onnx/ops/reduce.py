"""Reductions, arg-extrema, TopK and the two classification losses.

Every Reduce* op is `post(reduce(pre(x)))` over a static axis list: ReduceL2 is
sqrt(sum(x^2)), ReduceLogSumExp m + log(sum(exp(x - m))), and so on. The axes are an
attribute up to opset 12 (ReduceSum) or 17 (the others) and an input after; an empty
axis list reduces everything unless `noop_with_empty_axes`, which keeps x (with the
elementwise parts still applied, as ONNX's reference does: ReduceSumSquare gives x^2).
A reduction over an empty set is known at import: the identity (0, 1, -inf/+inf, the
integer extremes, or NaN for a mean, as numpy's).
"""

from __future__ import annotations

import math

import numpy as np

from ...frontend import library as L
from ...frontend.tensor import Tensor
from ...ir.types import DType, TensorType
from .. import dtypes
from . import onnx_op


def iota(shape, axis: int, dtype=DType.i64) -> Tensor:
    """0, 1, ... along `axis` of a tensor of `shape`."""
    return L.primitive("iota", result_type=TensorType(dtype, tuple(shape)), axis=axis)


def is_nan(x: Tensor) -> Tensor:
    return x != x


def _limits(elem: int, dt: DType):
    """(lowest, highest) of an ONNX element type in its IR dtype: the identities of max
    and min (an int8 max over nothing is -128, not int32's minimum)."""
    if dt.is_float:
        return -math.inf, math.inf
    if dt is DType.bool:
        return False, True
    info = np.iinfo(dtypes.storage_np(elem))
    return int(info.min), int(info.max)


# --- Reduce* ---------------------------------------------------------------------------------

def reduce_axes(node, rank: int, input_since: int):
    """The axes to reduce (sorted, non-negative), or None for 'leave x as it is'."""
    if node.opset >= input_since:
        axes = node.ints(1) if node.has(1) else []
        noop = node.attr("noop_with_empty_axes", 0)
    else:
        axes, noop = node.attr("axes", None) or [], 0
    if not axes:
        return None if noop else tuple(range(rank))
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise node.error(f"axis {a} is out of range for a rank-{rank} input")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise node.error(f"axes {axes} repeat an axis")
    return tuple(sorted(out))


def _out_shape(shape, axes, keepdims):
    return tuple(1 if i in axes else d for i, d in enumerate(shape) if keepdims or i not in axes)


def _product(x: Tensor, axes, keepdims: bool) -> Tensor:
    """The product over `axes` by pairwise multiplication: the reduced axes are moved last
    and flattened to n, then halves are multiplied log2(n) times (an odd row gets a 1).
    Exact for integers, right for zeros and signs, unlike exp(sum(log x))."""
    kept = [i for i in range(x.ndim) if i not in axes]
    n = math.prod(x.shape[a] for a in axes)
    y = L.reshape(L.transpose(x, kept + list(axes)), [x.shape[i] for i in kept] + [n])
    while n > 1:
        if n % 2:
            y = L.concatenate([y, L.ones(y.shape[:-1] + (1,), y.dtype)], axis=-1)
            n += 1
        h = n // 2
        y = y[..., :h] * y[..., h:]
        n = h
    return L.reshape(y, _out_shape(x.shape, axes, keepdims))


def _logsumexp(x: Tensor, axes, keepdims: bool) -> Tensor:
    # m + log sum exp(x - m), m = max x; m is taken as 0 where it is infinite, so a row of
    # -inf gives log 0 = -inf (not -inf - -inf = NaN) and a +inf gives +inf
    m = L.stop_gradient(L.max(x, axes, keepdims=True))
    m = L.where((m == math.inf) | (m == -math.inf), 0.0, m)
    s = L.log(L.sum(L.exp(x - m), axes, keepdims=True)) + m
    return L.reshape(s, _out_shape(x.shape, axes, keepdims))


def _floatify(x: Tensor) -> Tensor:
    return x if x.dtype.is_float else x.astype(DType.f64)


def _reduce(kind: str, input_since: int):
    def handler(node):
        v = node.val(0)
        x = v.tensor()
        axes = reduce_axes(node, x.ndim, input_since)
        keepdims = bool(node.attr("keepdims", 1))
        dt = x.dtype
        if axes is not None and math.prod(x.shape[a] for a in axes) == 0:
            return np.full(_out_shape(x.shape, axes, keepdims), _empty_value(kind, v.elem, dt),
                           dtype=dt.np)
        if axes is None:
            axes, keepdims = (), True
        if kind in ("max", "min") and dt is DType.bool:
            # max of bools is any, min is all: count the Trues (or the Falses)
            hits = x if kind == "max" else ~x
            c = L.sum(hits.astype(DType.i32), axes, keepdims)
            return c > 0 if kind == "max" else c == 0
        if kind == "sum":
            return L.sum(x, axes, keepdims)
        if kind == "max":
            return L.max(x, axes, keepdims)
        if kind == "min":
            return L.min(x, axes, keepdims)
        if kind == "mean":
            # integer means truncate, as numpy's mean(dtype=int) does
            r = L.mean(_floatify(x), axes, keepdims)
            return r if dt.is_float else r.astype(dt)
        if kind == "prod":
            return _product(x, axes, keepdims)
        if kind == "l1":
            return L.sum(L.abs(x), axes, keepdims)
        if kind == "sumsq":
            return L.sum(x * x, axes, keepdims)
        if kind == "l2":
            r = L.sqrt(L.sum(_floatify(x) * _floatify(x), axes, keepdims))
            return r if dt.is_float else r.astype(dt)
        if kind == "logsum":
            r = L.log(L.sum(_floatify(x), axes, keepdims))
            return r if dt.is_float else r.astype(dt)
        if kind == "logsumexp":
            r = _logsumexp(_floatify(x), axes, keepdims)
            return r if dt.is_float else r.astype(dt)
        raise AssertionError(kind)
    return handler


def _empty_value(kind, elem, dt):
    lo, hi = _limits(elem, dt)
    return {"sum": 0, "l1": 0, "l2": 0, "sumsq": 0, "prod": 1, "max": lo, "min": hi,
            "logsum": -math.inf, "logsumexp": -math.inf, "mean": math.nan}[kind]


for _op, _kind, _since in (("ReduceSum", "sum", 13), ("ReduceMean", "mean", 18),
                           ("ReduceMax", "max", 18), ("ReduceMin", "min", 18),
                           ("ReduceProd", "prod", 18), ("ReduceL1", "l1", 18),
                           ("ReduceL2", "l2", 18), ("ReduceLogSum", "logsum", 18),
                           ("ReduceLogSumExp", "logsumexp", 18),
                           ("ReduceSumSquare", "sumsq", 18)):
    onnx_op(_op)(_reduce(_kind, _since))


# --- ArgMax / ArgMin ---------------------------------------------------------------------------

def arg_extremum(x: Tensor, axis: int, largest: bool, last: bool = False) -> Tensor:
    """The int64 index of the max (or min) along `axis`, kept as a size-1 axis: the first
    one, or the last with `last`. NaN counts as the extremum (numpy's argmax finds the
    first NaN)."""
    n = x.shape[axis]
    m = L.stop_gradient((L.max if largest else L.min)(x, axis, keepdims=True))
    hit = x == m
    if x.dtype.is_float:
        hit = hit | is_nan(x)
    idx = iota(x.shape, axis)
    if last:
        return L.max(L.where(hit, idx, -1), axis, keepdims=True)
    return L.min(L.where(hit, idx, n), axis, keepdims=True)


def _arg(largest: bool):
    def handler(node):
        x = node.tensor(0)
        if x.dtype is DType.bool:
            x = x.astype(DType.i32)
        axis = node.attr("axis", 0)
        if not -x.ndim <= axis < max(x.ndim, 1):
            raise node.error(f"axis {axis} is out of range for a rank-{x.ndim} input")
        axis %= max(x.ndim, 1)
        if x.shape[axis] == 0:
            raise node.error(f"arg{'max' if largest else 'min'} of an empty axis has no answer")
        r = arg_extremum(x, axis, largest, bool(node.attr("select_last_index", 0)))
        if not node.attr("keepdims", 1):
            r = L.reshape(r, x.shape[:axis] + x.shape[axis + 1:])
        return node.out(r, dtypes.INT64)
    return handler


onnx_op("ArgMax")(_arg(True))
onnx_op("ArgMin")(_arg(False))


# --- TopK ----------------------------------------------------------------------------------------

# Above this many pairwise comparisons per call, TopK picks its k elements one at a time
# instead of ranking every element against every other.
_RANK_LIMIT = 1 << 22


@onnx_op("TopK")
def top_k(node):
    x = node.tensor(0)
    if node.opset < 10:
        k = node.attr("k")
    else:
        ks = node.ints(1)
        if len(ks) != 1:
            raise node.error(f"k must hold one number, got {ks}")
        k = ks[0]
    axis = node.attr("axis", -1)
    if not -x.ndim <= axis < x.ndim:
        raise node.error(f"axis {axis} is out of range for a rank-{x.ndim} input")
    axis %= x.ndim
    largest = bool(node.attr("largest", 1)) if node.opset >= 11 else True
    n = x.shape[axis]
    if not 0 <= k <= n:
        raise node.error(f"k={k} is outside [0, {n}] (the size of axis {axis})")
    if x.dtype is DType.bool:
        raise node.fail("TopK of bool tensors is not supported")
    # every order below puts equal values lowest index first, as ONNX's reference does
    # (sorted=0 allows any order, so the sorted one serves it too)
    xt = L.transpose(x, [i for i in range(x.ndim) if i != axis] + [axis])
    if k == 0:
        shape = xt.shape[:-1] + (0,)
        vals, idx = np.zeros(shape, x.dtype.np), np.zeros(shape, np.int64)
    elif xt.size * n <= _RANK_LIMIT:
        vals, idx = _topk_by_rank(xt, k, largest)
    else:
        if k > 64:
            raise node.fail(f"TopK with k={k} over an axis of {n} elements is too large to "
                            f"unroll (irgrad has no sort op)")
        vals, idx = _topk_by_selection(xt, k, largest)
    back = list(range(x.ndim - 1))
    back.insert(axis, x.ndim - 1)
    if isinstance(vals, np.ndarray):
        return [np.transpose(vals, back), node.out(np.transpose(idx, back), dtypes.INT64)]
    return [L.transpose(vals, back), node.out(L.transpose(idx, back), dtypes.INT64)]


def _before(a: Tensor, b: Tensor, largest: bool) -> Tensor:
    """a sorts strictly before b by value: larger first (or smaller), NaN first for
    largest and last for smallest (numpy's lexsort puts NaN last, the reference flips)."""
    if not a.dtype.is_float:
        return a > b if largest else a < b
    an, bn = is_nan(a), is_nan(b)
    if largest:
        return (an & ~bn) | (a > b)
    return (bn & ~an) | (a < b)


def _topk_by_rank(xt: Tensor, k: int, largest: bool):
    # rank[i] = #{j : x_j before x_i, or x_j ties x_i with j < i}: a permutation of 0..n-1;
    # output p takes the element whose rank is p (a one-hot sum, exact)
    n = xt.shape[-1]
    lead = xt.shape[:-1]
    xi = L.reshape(xt, lead + (n, 1))
    xj = L.reshape(xt, lead + (1, n))
    shape = lead + (n, n)
    i, j = iota(shape, len(lead), DType.i32), iota(shape, len(lead) + 1, DType.i32)
    ahead = _before(xj, xi, largest) | (~_before(xi, xj, largest) & (j < i))
    rank = L.sum(ahead.astype(DType.i32), axis=-1)  # lead + (n,)
    pos = iota(lead + (n, k), len(lead) + 1, DType.i32)
    sel = L.reshape(rank, lead + (n, 1)) == pos  # [.., i, p]
    src = L.reshape(xt, lead + (n, 1))
    vals = L.sum(L.where(sel, src, L.zeros(sel.shape, xt.dtype)), axis=-2)
    idx = L.sum(L.where(sel, iota(sel.shape, len(lead), DType.i64), 0), axis=-2)
    return vals, idx


def _topk_by_selection(xt: Tensor, k: int, largest: bool):
    # k rounds of: the best value among those not taken, and its lowest index
    n = xt.shape[-1]
    pos = iota(xt.shape, xt.ndim - 1, DType.i64)
    taken = L.zeros(xt.shape, DType.bool)
    fill = -math.inf if xt.dtype.is_float else int(np.iinfo(xt.dtype.np).min)
    if not largest:
        fill = -fill if xt.dtype.is_float else int(np.iinfo(xt.dtype.np).max)
    vals, idx = [], []
    for _ in range(k):
        live = L.where(taken, fill, xt)
        m = (L.max if largest else L.min)(live, -1, keepdims=True)
        hit = xt == m
        if xt.dtype.is_float:  # (rows this long treat NaN as the largest value)
            hit = hit | is_nan(xt)
        hit = hit & ~taken
        j = L.min(L.where(hit, pos, n), -1, keepdims=True)
        one = pos == j
        vals.append(L.sum(L.where(one, xt, L.zeros(xt.shape, xt.dtype)), -1, keepdims=True))
        idx.append(j)
        taken = taken | one
    return L.concatenate(vals, axis=-1), L.concatenate(idx, axis=-1)


# --- NegativeLogLikelihoodLoss / SoftmaxCrossEntropyLoss ----------------------------------------

def nll(node, logp: Tensor, target: Tensor):
    """loss[n, d...] = -w[t] logp[n, t, d...] with t = target[n, d...], w = weights (or 1),
    and w = 0 where t is ignore_index; reduced by none, sum, or mean = sum / sum(w)."""
    if logp.ndim < 2 or target.shape != logp.shape[:1] + logp.shape[2:]:
        raise node.error(f"input {list(logp.shape)} needs a target of shape "
                         f"{list(logp.shape[:1] + logp.shape[2:])}, got {list(target.shape)}")
    reduction = node.attr("reduction", "mean")
    if reduction not in ("none", "sum", "mean"):
        raise node.error(f"reduction must be none, sum or mean, got '{reduction}'")
    t = L.reshape(target, target.shape[:1] + (1,) + target.shape[1:])
    # the picked log-probability as a one-hot sum: a target outside [0, C) picks nothing
    hit = iota(logp.shape, 1, target.dtype) == t
    picked = L.sum(L.where(hit, logp, L.zeros(logp.shape, logp.dtype)), axis=1)
    if node.has(2):
        w = L.take(node.tensor(2), target, axis=0)  # clamped, as the reference's mode="clip"
    else:
        w = L.ones(target.shape, logp.dtype)
    ii = node.attr("ignore_index", None)
    if ii is not None:
        w = L.where(target == ii, L.zeros(target.shape, logp.dtype), w)
    loss = -(w * picked)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return L.sum(loss)
    return L.sum(loss) / L.sum(w)


@onnx_op("NegativeLogLikelihoodLoss")
def negative_log_likelihood_loss(node):
    return nll(node, node.tensor(0), node.tensor(1))


@onnx_op("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy_loss(node):
    x = node.tensor(0)
    if x.ndim < 2:
        raise node.error(f"scores must have at least 2 axes (N, C, ...), got {list(x.shape)}")
    logp = L.log_softmax(x, axis=1)
    loss = nll(node, logp, node.tensor(1))
    return [loss, logp]
