"""The DSL's library functions, built from primitives while tracing.

Numerically stable forms throughout: `log_softmax`, `logsumexp`, `softmax` and
`cross_entropy` subtract the row maximum (through `stop_gradient`, so the backward pass
does not differentiate the max, whose contribution is exactly zero); `sigmoid` takes exp
of -|x| only; `gelu` is the tanh form; `layer_norm` normalizes the last axis.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir.registry import all_ops
from ..ir.types import DType, TensorType
from .specs import as_dtype
from .tensor import (Tensor, as_tensor, const_tensor, binary, broadcast_shapes, broadcast_to, emit, fail,
                     matmul as _matmul, mean as _mean, normalize_axes, promote_types, reduce, reshape as _reshape,
                     transpose as _transpose, unary)


def primitive(opname: str, *operands, result_type=None, **attrs) -> Tensor:
    """Apply any op of the registry to tensors: `ig.primitive("softplus", x)` calls an op
    registered outside irgrad (see docs/architecture.md, "Add an op"). A Python number
    takes the dtype and shape of the first tensor operand; a numpy array becomes a
    constant. `result_type` (an ir TensorType or a TensorSpec) is for ops whose result
    type is written out."""
    if opname not in all_ops():
        raise fail(f"no op named '{opname}' is registered (register an OpDef first: "
                   f"docs/architecture.md, 'Add an op')")
    first = next((x for x in operands if isinstance(x, Tensor)), None)
    values = [as_tensor(x, first, first.shape if first is not None else ()).value
              for x in operands]
    if result_type is not None and not isinstance(result_type, TensorType):
        result_type = TensorType(as_dtype(result_type.dtype), tuple(result_type.shape))
    return emit(opname, *values, result_type=result_type, **attrs)


def exp(x): return unary("exp", x)
def log(x): return unary("log", x)
def sin(x): return unary("sin", x)
def cos(x): return unary("cos", x)
def tanh(x): return unary("tanh", x)
def sqrt(x): return unary("sqrt", x)
def abs(x): return unary("abs", x)  # noqa: A001 - mirrors numpy's name
def sign(x): return unary("sign", x)
def square(x): return as_tensor(x) * x
def log1p(x): return unary("log1p", x)
def expm1(x): return unary("expm1", x)
def erf(x): return unary("erf", x)
def floor(x): return unary("floor", x)
def ceil(x): return unary("ceil", x)
def round(x): return unary("round", x)  # noqa: A001 - halves to even, as numpy's


def maximum(a, b): return binary("max", a, b)
def minimum(a, b): return binary("min", a, b)


def relu(x):
    x = as_tensor(x)
    return maximum(x, 0.0 if x.dtype.is_float else 0)


def sigmoid(x):
    # sigmoid x = 1 / (1 + exp(-x)) for x >= 0 and exp(x) / (1 + exp(x)) for x < 0: exp of
    # -|x| only (no overflow), and accurate to a few ulps everywhere (the tanh form loses
    # digits to 1 + tanh(x/2) for x << 0). z = -|x| is spelled with a select so that each
    # branch has its own derivative (abs' would be 0 at 0).
    x = as_tensor(x)
    pos = x >= 0.0 if x.dtype.is_float else x >= 0
    e = exp(where(pos, -x, x))
    return where(pos, 1.0 / (e + 1.0), e / (e + 1.0))


def gelu(x, approximate=True):
    """GELU. approximate=True (or "tanh"): x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)));
    approximate=False (or "none", PyTorch's default): x/2 (1 + erf(x / sqrt 2))."""
    x = as_tensor(x)
    if approximate in (False, "none"):
        return x * 0.5 * (erf(x * (1.0 / math.sqrt(2.0))) + 1.0)
    if approximate not in (True, "tanh"):
        raise fail(f"gelu's approximate is True/'tanh' or False/'none', got {approximate!r}")
    inner = (x + x * x * x * 0.044715) * math.sqrt(2.0 / math.pi)
    return x * 0.5 * (tanh(inner) + 1.0)


def softplus(x, beta=1.0):
    # softplus x = log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow for large |x|;
    # with beta: softplus(beta x) / beta, as PyTorch's
    x = as_tensor(x)
    if beta != 1.0:
        return softplus(x * float(beta)) * (1.0 / float(beta))
    return relu(x) + log1p(exp(-abs(x)))


def silu(x):
    # silu x = x sigmoid(x)
    x = as_tensor(x)
    return x * sigmoid(x)


def leaky_relu(x, negative_slope=0.01):
    x = as_tensor(x)
    return where(x > 0.0, x, x * float(negative_slope))


def elu(x, alpha=1.0):
    # elu x = x for x > 0, alpha (e^x - 1) otherwise; expm1 sees only the non-positive
    # branch, so a large x cannot overflow into the unselected side's derivative
    x = as_tensor(x)
    pos = x > 0.0
    return where(pos, x, expm1(where(pos, 0.0, x)) * float(alpha))


def clip(x, min=None, max=None):  # noqa: A002 - numpy's names
    """numpy's clip: max(min(x, max), min) with either bound None."""
    x = as_tensor(x)
    if min is None and max is None:
        raise fail("clip needs min, max or both")
    if min is not None:
        x = maximum(x, min)
    if max is not None:
        x = minimum(x, max)
    return x


def _bool(x, what):
    x = as_tensor(x)
    if x.dtype is not DType.bool:
        raise fail(f"{what} needs bool tensors, got {x.type} (compare first, or use .astype(bool))")
    return x


def logical_and(a, b):
    a, b = _bool(a, "logical_and"), _bool(b, "logical_and")
    return where(a, b, False)


def logical_or(a, b):
    a, b = _bool(a, "logical_or"), _bool(b, "logical_or")
    return where(a, True, b)


def logical_not(a):
    return _bool(a, "logical_not") == False  # noqa: E712 - a traced comparison


def logical_xor(a, b):
    return _bool(a, "logical_xor") != _bool(b, "logical_xor")


def stop_gradient(x):
    """The value of x, with no derivative flowing through it."""
    x = as_tensor(x)
    return emit("stop_gradient", x.value)


def where(cond, a, b):
    cond = as_tensor(cond)
    if cond.dtype is not DType.bool:
        raise fail(f"ig.where needs a bool condition, got {cond.type}")
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        a = as_tensor(a)
    shape = broadcast_shapes(cond.shape, *(t.shape for t in (a, b) if isinstance(t, Tensor)))
    if isinstance(a, Tensor):
        b = as_tensor(b, a, shape)
    else:
        a = as_tensor(a, b, shape)
    if a.dtype is not b.dtype:
        d = promote_types(a.dtype, b.dtype)
        a, b = a.astype(d), b.astype(d)
    shape = broadcast_shapes(cond.shape, a.shape, b.shape)
    return emit("select", broadcast_to(cond, shape).value, broadcast_to(a, shape).value,
                broadcast_to(b, shape).value)


def sum(x, axis=None, keepdims=False):  # noqa: A001
    return reduce("reduce_sum", x, axis, keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return reduce("reduce_max", x, axis, keepdims)


def min(x, axis=None, keepdims=False):  # noqa: A001
    return reduce("reduce_min", x, axis, keepdims)


def mean(x, axis=None, keepdims=False):
    return _mean(x, axis, keepdims)


def _arg_extremum(x, axis, keepdims, opname):
    # the first index where x equals its extremum (or is NaN, as numpy's): the min over
    # such indices of iota, the others replaced by n; int32 results, as JAX's
    x = as_tensor(x)
    if axis is None:
        r = _arg_extremum(_reshape(x, (x.size,)), 0, False, opname)
        return _reshape(r, (1,) * x.ndim) if keepdims else r
    (ax,) = normalize_axes(axis, x.ndim)
    n = x.shape[ax]
    if n == 0:
        raise fail(f"arg{'max' if opname == 'reduce_max' else 'min'} of an empty axis {ax} "
                   f"(shape {list(x.shape)}) has no answer")
    m = stop_gradient(_keep(reduce(opname, x, (ax,)), x, (ax,)))
    hit = broadcast_to(m, x.shape) == x
    if x.dtype.is_float:
        hit = logical_or(hit, x != x)
    idx = emit("iota", axis=ax, result_type=TensorType(DType.i32, x.shape))
    r = reduce("reduce_min", where(hit, idx, n), (ax,))
    return _keep(r, x, (ax,)) if keepdims else r


def argmax(x, axis=None, keepdims=False):
    return _arg_extremum(x, axis, keepdims, "reduce_max")


def argmin(x, axis=None, keepdims=False):
    return _arg_extremum(x, axis, keepdims, "reduce_min")


def cumsum(x, axis=-1):
    """Inclusive prefix sums along `axis` (numpy's cumsum; bools count as int32). Hillis
    and Steele's scan: log2(n) shifted adds, each a fusable elementwise step."""
    x = as_tensor(x)
    if x.dtype is DType.bool:
        x = x.astype(DType.i32)
    (ax,) = normalize_axes(axis, x.ndim)
    n, shift = x.shape[ax], 1
    while shift < n:
        keep = list(x.shape)
        keep[ax] = n - shift
        low = [0] * x.ndim
        low[ax] = shift
        shifted = emit("slice", x.value, start=(0,) * x.ndim, limit=tuple(keep))
        x = x + emit("pad", shifted.value, low=tuple(low), high=(0,) * x.ndim)
        shift *= 2
    return x


def var(x, axis=None, keepdims=False):
    x = as_tensor(x)
    axes = normalize_axes(axis, x.ndim)
    centered = x - _keep(mean(x, axes), x, axes)
    return mean(centered * centered, axes, keepdims)


def reshape(x, *shape): return _reshape(x, *shape)
def transpose(x, *axes): return _transpose(x, *axes)
def matmul(a, b): return _matmul(a, b)


def _keep(r, x, axes):
    """`r` (x reduced over `axes`) with the reduced axes put back as size 1, to broadcast."""
    return _reshape(r, [1 if i in axes else d for i, d in enumerate(x.shape)])


def _max_stopped(x, axes):
    return _keep(stop_gradient(reduce("reduce_max", x, axes)), x, axes)


def logsumexp(x, axis=-1, keepdims=False):
    # log sum exp x = m + log sum exp(x - m), m = max x (stable for large x)
    x = as_tensor(x)
    axes = normalize_axes(axis, x.ndim)
    m = stop_gradient(reduce("reduce_max", x, axes))
    s = log(sum(exp(x - _keep(m, x, axes)), axes)) + m
    return _keep(s, x, axes) if keepdims else s


def log_softmax(x, axis=-1):
    # log softmax x = (x - m) - log sum exp(x - m)
    x = as_tensor(x)
    axes = normalize_axes(axis, x.ndim)
    shifted = x - _max_stopped(x, axes)
    return shifted - _keep(log(sum(exp(shifted), axes)), x, axes)


def softmax(x, axis=-1):
    x = as_tensor(x)
    axes = normalize_axes(axis, x.ndim)
    e = exp(x - _max_stopped(x, axes))
    return e / _keep(sum(e, axes), x, axes)


def take(a, indices, axis=0):
    """np.take: rows of `a` along `axis` picked by integer `indices` (embeddings)."""
    a = as_tensor(a)
    if isinstance(indices, (int, np.integer)):
        indices = np.asarray(indices, dtype=np.int32)
    idx = as_tensor(indices)
    if not idx.dtype.is_int:
        raise fail(f"ig.take needs integer indices, got {idx.type}")
    (ax,) = normalize_axes(axis, a.ndim)
    return emit("gather", a.value, idx.value, axis=ax)


def one_hot(labels, num_classes: int, dtype=DType.f32):
    labels = as_tensor(labels)
    shape = labels.shape + (num_classes,)
    classes = emit("iota", axis=len(shape) - 1, result_type=TensorType(labels.dtype, shape))
    hit = classes == broadcast_to(_reshape(labels, labels.shape + (1,)), shape)
    return hit.astype(dtype)


def layer_norm(x, gamma=None, beta=None, eps=1e-5):
    # (x - mean) / sqrt(var + eps) * gamma + beta over the last axis
    x = as_tensor(x)
    axes = (x.ndim - 1,)
    centered = x - _keep(mean(x, axes), x, axes)
    variance = mean(centered * centered, axes)
    y = centered / _keep(sqrt(variance + eps), x, axes)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


def cross_entropy(logits, labels):
    """Mean over N of -log softmax(logits)[n, labels[n]]; logits [N, C], labels int [N]."""
    logits, labels = as_tensor(logits), as_tensor(labels)
    if logits.ndim != 2 or labels.shape != logits.shape[:1] or not labels.dtype.is_int:
        raise fail(f"cross_entropy needs logits [N, C] and integer labels [N], got "
                   f"{logits.type} and {labels.type}")
    lsm = log_softmax(logits, axis=-1)
    picked = where(one_hot(labels, logits.shape[1], DType.bool), lsm, 0.0)
    return -sum(picked) / float(logits.shape[0])


def mse_loss(pred, target):
    """Mean over all elements of (pred - target)^2."""
    d = as_tensor(pred) - target
    return mean(d * d)


def concatenate(xs, axis=0):
    xs = [as_tensor(x) for x in xs]
    if not xs:
        raise fail("concatenate needs at least one tensor")
    (ax,) = normalize_axes(axis, xs[0].ndim)
    return emit("concat", *[x.value for x in xs], axis=ax)


def stack(xs, axis=0):
    xs = [as_tensor(x) for x in xs]
    if not xs:
        raise fail("stack needs at least one tensor")
    nd = xs[0].ndim + 1
    (ax,) = normalize_axes(axis, nd)
    return concatenate([_reshape(x, x.shape[:ax] + (1,) + x.shape[ax:]) for x in xs], ax)


def pad(x, pad_width):
    x = as_tensor(x)
    widths = [(int(lo), int(hi)) for lo, hi in pad_width]
    if len(widths) != x.ndim or any(lo < 0 or hi < 0 for lo, hi in widths):
        raise fail(f"pad needs one (low, high) pair of non-negative sizes per axis of {x.type}")
    return emit("pad", x.value, low=tuple(lo for lo, _ in widths), high=tuple(hi for _, hi in widths))


def zeros(shape, dtype=DType.f32):
    return const_tensor(0, as_dtype(dtype), tuple(shape))


def ones(shape, dtype=DType.f32):
    return const_tensor(1, as_dtype(dtype), tuple(shape))


def full(shape, value, dtype=DType.f32):
    return const_tensor(value, as_dtype(dtype), tuple(shape))


def arange(n: int, dtype=DType.i32):
    return emit("iota", axis=0, result_type=TensorType(as_dtype(dtype), (int(n),)))


def astype(x, dtype):
    return as_tensor(x).astype(dtype)
