"""Traced tensors: Python operators and methods that append IR ops while user code runs.

A `Tensor` wraps one IR value of the function being traced. Every op records the user's
source line (the first stack frame outside the irgrad package), and shape errors are
re-raised as `ShapeError("file:line: ...")` naming both shapes. numpy broadcasting is made
explicit: operands of different shapes get `broadcast` ops.
"""

from __future__ import annotations

import math
import os
import sys
import threading

import numpy as np

from ..errors import ShapeError, SourceLoc, TraceError
from ..ir.builder import Builder
from ..ir.core import Function, Value
from ..ir.types import DType, TensorType
from .specs import as_dtype

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_state = threading.local()


class TraceContext:
    """The function being traced and the builder appending to it."""

    def __init__(self, func: Function):
        self.func = func
        self.builder = Builder(func.body)
        # Where emitted ops say they come from when not from the user's Python frame: the
        # ONNX importer sets it to the node being imported (loc("model.onnx":node number)).
        self.loc: SourceLoc | None = None

    def __enter__(self):
        stack = getattr(_state, "stack", None)
        if stack is None:
            stack = _state.stack = []
        stack.append(self)
        return self

    def __exit__(self, *exc):
        _state.stack.pop()


def current_context() -> TraceContext | None:
    stack = getattr(_state, "stack", None)
    return stack[-1] if stack else None


def require_context(what: str) -> TraceContext:
    ctx = current_context()
    if ctx is None:
        raise ShapeError(f"{what} can only be used inside a traced function "
                         f"(decorate it with @ig.function or call ig.trace)", user_location())
    return ctx


_display_cache: dict[str, str] = {}


def display_path(filename: str) -> str:
    p = _display_cache.get(filename)
    if p is None:
        try:
            rel = os.path.relpath(filename)
            p = filename if rel.startswith("..") else rel
        except ValueError:
            p = filename
        _display_cache[filename] = p
    return p


def user_location() -> SourceLoc | None:
    """file:line of the innermost frame outside the irgrad package."""
    f = sys._getframe(1)
    while f is not None and (f.f_code.co_filename.startswith(_PKG_DIR)
                             or f.f_code.co_filename.startswith("<frozen")):
        f = f.f_back
    if f is None:
        return None
    return SourceLoc(display_path(f.f_code.co_filename), f.f_lineno)


def _function_of(v: Value):
    owner = v.owner
    block = owner.parent if hasattr(owner, "opname") else owner
    return block.parent if block is not None else None


def emit(opname: str, *operands: Value, result_type: TensorType | None = None, **attrs) -> "Tensor":
    ctx = require_context(f"'{opname}'")
    loc = ctx.loc or user_location()
    for v in operands:
        fv = _function_of(v)
        if fv is not ctx.func:
            name = f"@{fv.name}" if fv is not None and hasattr(fv, "name") else "another function"
            raise TraceError(f"{loc}: a traced value ({v.type}) of {name} is used while tracing "
                             f"@{ctx.func.name}; pass it to this function as an argument")
    try:
        op = ctx.builder.emit_op(opname, operands, attrs,
                                 [result_type] if result_type is not None else None, loc=loc)
    except ShapeError as e:
        raise e.at(loc) from None
    return Tensor(op.result)


def fail(message: str) -> ShapeError:
    return ShapeError(message, user_location())


def misuse(message: str) -> TraceError:
    """A traced tensor used where a value is needed (`if x > 0:`, `np.sin(x)`, ...)."""
    loc = user_location()
    return TraceError(f"{loc}: {message}" if loc else message)


# --- conversions -------------------------------------------------------------------------------

def const_tensor(value, dtype: DType, shape=None) -> "Tensor":
    if dtype.is_int and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        info = np.iinfo(dtype.np)
        if not info.min <= int(value) <= info.max:
            raise fail(f"the integer {int(value)} does not fit in {dtype} (the dtype it takes here); "
                       f"use an i64 tensor or a smaller number")
    arr = np.asarray(value)
    shape = arr.shape if shape is None else tuple(shape)
    if arr.ndim and arr.shape != shape:
        arr = np.broadcast_to(arr, shape)
    return emit("const", value=np.array(arr, dtype=dtype.np, order="C"),
                result_type=TensorType(dtype, shape))


def as_tensor(x, like: "Tensor | None" = None, shape=()) -> "Tensor":
    """Tensor as is; numpy arrays and Python numbers become `const` ops.

    Python numbers take the dtype of `like` (weakly typed, as in JAX) and fill `shape`
    (one splat constant, no broadcast op); numpy constants are converted to `like`'s dtype
    when both are floats or both integers.
    """
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (bool, int, float)) or (isinstance(x, np.generic) and x.ndim == 0 and like is not None):
        dtype = _scalar_dtype(x, like)
        return const_tensor(x, dtype, shape)
    if isinstance(x, (np.ndarray, np.generic, list, tuple)):
        arr = np.asarray(x)
        try:
            dtype = DType.from_numpy(arr.dtype)
        except ShapeError:
            raise fail(f"cannot use a numpy array of dtype {arr.dtype} in a traced function") from None
        if like is not None and dtype is not like.dtype and (
                (dtype.is_float and like.dtype.is_float) or (dtype.is_int and like.dtype.is_int)):
            dtype = like.dtype
        elif dtype is DType.f64 and like is None and arr.dtype == np.float64 and isinstance(x, (list, tuple)):
            dtype = DType.f32
        return const_tensor(arr, dtype)
    raise fail(f"cannot use {type(x).__name__} {x!r} as a tensor")


def _scalar_dtype(x, like):
    if isinstance(x, np.generic) and not isinstance(x, (np.floating, np.integer, np.bool_)):
        raise fail(f"cannot use {x!r} as a number")
    is_bool = isinstance(x, (bool, np.bool_))
    is_float = isinstance(x, (float, np.floating))
    if like is None:
        return DType.bool if is_bool else DType.f32 if is_float else DType.i32
    if is_float and not like.dtype.is_float:
        return DType.f32
    if is_bool and like.dtype is not DType.bool:
        return like.dtype
    return like.dtype


def broadcast_shapes(*shapes) -> tuple[int, ...]:
    rank = max(len(s) for s in shapes)
    out = []
    for axis in range(rank):
        sizes = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0}
        sizes.discard(1)
        if len(sizes) > 1:
            raise fail("shapes " + " and ".join(str(list(s)) for s in shapes) + " do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def broadcast_to(x: "Tensor", shape) -> "Tensor":
    shape = tuple(shape)
    if x.shape == shape:
        return x
    if len(x.shape) > len(shape):
        raise fail(f"cannot broadcast shape {list(x.shape)} to {list(shape)}")
    offset = len(shape) - len(x.shape)
    for i, d in enumerate(x.shape):
        if d not in (1, shape[offset + i]):
            raise fail(f"cannot broadcast shape {list(x.shape)} to {list(shape)}")
    # Size-1 axes that stretch are dropped first so the IR states exactly what is copied.
    keep = [i for i, d in enumerate(x.shape) if d == shape[offset + i]]
    if len(keep) != len(x.shape):
        x = reshape(x, [x.shape[i] for i in keep])
    return emit("broadcast", x.value, dims=tuple(offset + i for i in keep),
                result_type=TensorType(x.dtype, shape))


def _promote_pair(a, b):
    """Two operands of one dtype (Python numbers adopt the tensor's dtype)."""
    if not isinstance(a, Tensor):
        if not isinstance(b, Tensor):
            raise fail("an operation needs at least one traced tensor")
        if isinstance(a, float) and not b.dtype.is_float:
            b = b.astype(DType.f32)
        return as_tensor(a, b, b.shape), b
    if not isinstance(b, Tensor):
        if isinstance(b, float) and not a.dtype.is_float:
            a = a.astype(DType.f32)
        return a, as_tensor(b, a, a.shape)
    if a.dtype is not b.dtype:
        d = promote_types(a.dtype, b.dtype)
        return a.astype(d), b.astype(d)
    return a, b


_WIDTH = {DType.bool: 0, DType.i32: 1, DType.i64: 2, DType.f32: 3, DType.f64: 4}


def promote_types(a: DType, b: DType) -> DType:
    """The dtype two tensor operands meet in, as in JAX: bool < integers < floats, the
    wider of two integers or two floats; an integer with a float gives that float (an
    i32 times an f32 is an f32)."""
    if a.is_float != b.is_float:
        return a if a.is_float else b
    return a if _WIDTH[a] >= _WIDTH[b] else b


def binary(opname: str, a, b) -> "Tensor":
    a, b = _promote_pair(a, b)
    shape = broadcast_shapes(a.shape, b.shape)
    return emit(opname, broadcast_to(a, shape).value, broadcast_to(b, shape).value)


def unary(opname: str, x) -> "Tensor":
    x = as_tensor(x)
    if opname not in ("neg", "abs", "sign") and not x.dtype.is_float:
        x = x.astype(DType.f32)
    return emit(opname, x.value)


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise fail(f"axis {a} is out of range for a tensor of rank {ndim}")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise fail(f"repeated axis in {axis}")
    return tuple(sorted(out))


def _keepdims(r: "Tensor", x: "Tensor", axes) -> "Tensor":
    return reshape(r, [1 if i in axes else d for i, d in enumerate(x.shape)])


def reduce(opname: str, x, axis=None, keepdims=False) -> "Tensor":
    x = as_tensor(x)
    axes = normalize_axes(axis, x.ndim)
    if x.dtype is DType.bool:
        x = x.astype(DType.i32)
    r = emit(opname, x.value, axes=axes) if axes else x
    return _keepdims(r, x, axes) if keepdims else r


def mean(x, axis=None, keepdims=False) -> "Tensor":
    x = as_tensor(x)
    if not x.dtype.is_float:
        x = x.astype(DType.f32)
    axes = normalize_axes(axis, x.ndim)
    n = math.prod(x.shape[a] for a in axes)
    s = reduce("reduce_sum", x, axes, keepdims)
    return s / float(n) if n != 1 else s


def reshape(x, *shape) -> "Tensor":
    x = as_tensor(x)
    if len(shape) == 1 and isinstance(shape[0], (list, tuple)):
        shape = tuple(shape[0])
    shape = [int(d) for d in shape]
    if shape.count(-1) > 1:
        raise fail(f"reshape to {shape}: at most one size can be -1")
    if -1 in shape:
        rest = math.prod(d for d in shape if d != -1)
        if rest == 0 or x.size % rest:
            raise fail(f"cannot reshape {list(x.shape)} into {shape}")
        shape[shape.index(-1)] = x.size // rest
    if math.prod(shape) != x.size or any(d < 0 for d in shape):
        raise fail(f"cannot reshape {list(x.shape)} ({x.size} elements) into {shape}")
    if tuple(shape) == x.shape:
        return x
    src = x.value
    if src.op is not None and src.op.opname == "reshape":
        # reshape of a reshape reads the original (keepdims followed by broadcast, say)
        src = src.op.operands[0]
        if src.shape == tuple(shape):
            return Tensor(src)
    return emit("reshape", src, result_type=TensorType(x.dtype, tuple(shape)))


def transpose(x, *axes) -> "Tensor":
    x = as_tensor(x)
    if len(axes) == 1 and isinstance(axes[0], (list, tuple)):
        axes = tuple(axes[0])
    if not axes:
        axes = tuple(reversed(range(x.ndim)))
    if any(not -x.ndim <= a < x.ndim for a in axes) or \
            sorted(a % x.ndim for a in axes) != list(range(x.ndim)):
        raise fail(f"transpose axes {list(axes)} are not a permutation of {x.ndim} axes")
    perm = tuple(a % x.ndim for a in axes)
    if perm == tuple(range(x.ndim)):
        return x
    return emit("transpose", x.value, perm=perm)


def matmul(a, b) -> "Tensor":
    """numpy's matmul: 1-D operands are promoted, batch dims broadcast."""
    a, b = _promote_pair(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise fail(f"matmul needs at least 1-D operands, got {list(a.shape)} @ {list(b.shape)}")
    va, vb = a.ndim == 1, b.ndim == 1
    given = f"{list(a.shape)} @ {list(b.shape)}"  # the user's shapes, before 1-D promotion
    if a.shape[-1] != b.shape[-2 if not vb else 0]:
        raise fail(f"matmul shapes do not fit: {given} "
                   f"(inner sizes {a.shape[-1]} and {b.shape[-2 if not vb else 0]})")
    if va:
        a = reshape(a, (1, a.shape[0]))
    if vb:
        b = reshape(b, (b.shape[0], 1))
    m, n = a.shape[-2], b.shape[-1]
    if b.ndim == 2 and a.ndim > 2:
        # (..., m, k) @ (k, n): one large product over the flattened leading axes
        batch = a.shape[:-2]
        out = emit("matmul", reshape(a, (-1, a.shape[-1])).value, b.value)
        out = reshape(out, batch + (m, n))
    else:
        try:
            batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ShapeError:
            raise fail(f"matmul batch dimensions do not broadcast: {given}") from None
        a = broadcast_to(a, batch + a.shape[-2:])
        b = broadcast_to(b, batch + b.shape[-2:])
        out = emit("matmul", a.value, b.value)
    if va:
        out = reshape(out, out.shape[:-2] + (n,))
    if vb:  # (after the va reshape, 1-D @ 1-D is left with one axis of size 1: a scalar)
        out = reshape(out, out.shape[:-1])
    return out


def getitem(x: "Tensor", index) -> "Tensor":
    """Basic indexing: static ints, slices with step 1, `...` and None; or an int tensor."""
    if isinstance(index, Tensor) or isinstance(index, np.ndarray):
        from .library import take
        return take(x, index, axis=0)
    idx = index if isinstance(index, tuple) else (index,)
    n_ell = sum(1 for i in idx if i is Ellipsis)
    if n_ell > 1:
        raise fail("an index can hold only one '...'")
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    if n_real > x.ndim:
        raise fail(f"too many indices ({n_real}) for a tensor of shape {list(x.shape)}")
    if n_ell:
        k = idx.index(Ellipsis)
        idx = idx[:k] + (slice(None),) * (x.ndim - n_real) + idx[k + 1:]
    else:
        idx = idx + (slice(None),) * (x.ndim - n_real)
    start, limit, out_shape, axis = [], [], [], 0
    for i in idx:
        if i is None:
            out_shape.append(1)
            continue
        d = x.shape[axis]
        if isinstance(i, (bool, np.bool_)):
            raise fail("boolean indices are not supported; use ig.where")
        if isinstance(i, (int, np.integer)):
            j = int(i) + d if i < 0 else int(i)
            if not 0 <= j < d:
                raise fail(f"index {i} is out of range for axis {axis} of size {d} "
                           f"(shape {list(x.shape)})")
            start.append(j)
            limit.append(j + 1)
        elif isinstance(i, slice):
            s, e, step = i.indices(d)
            if step != 1:
                raise fail(f"slices with a step ({i}) are not supported")
            e = max(e, s)
            start.append(s)
            limit.append(e)
            out_shape.append(e - s)
        else:
            raise fail(f"unsupported index {i!r} (use ints, slices, ..., None or an int tensor)")
        axis += 1
    y = x
    if tuple(start) != (0,) * x.ndim or tuple(limit) != x.shape:
        y = emit("slice", x.value, start=tuple(start), limit=tuple(limit))
    return reshape(y, out_shape)


class Tensor:
    """A value of the function being traced, with numpy-like operators."""

    __slots__ = ("value",)
    __array_ufunc__ = None  # numpy arrays defer to our reflected operators

    def __init__(self, value: Value):
        self.value = value

    # -- static facts ---------------------------------------------------------------------------
    @property
    def type(self) -> TensorType:
        return self.value.type

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.type.shape

    @property
    def dtype(self) -> DType:
        return self.value.type.dtype

    @property
    def ndim(self) -> int:
        return len(self.value.type.shape)

    @property
    def size(self) -> int:
        return self.value.type.size

    def __len__(self) -> int:
        if not self.shape:
            raise misuse("len() of a scalar tensor")
        return self.shape[0]

    def __iter__(self):
        raise misuse(f"cannot iterate over a traced tensor ({self.type}); index it with static "
                     f"ints instead")

    def __bool__(self):
        raise misuse(f"a traced tensor ({self.type}) has no truth value at trace time "
                     f"(use ig.where for data-dependent choices)")

    def __array__(self, *a, **k):
        raise misuse(f"a traced tensor ({self.type}) has no value yet; it cannot become a numpy "
                     f"array (use irgrad's functions: ig.sin, ig.sum, ...)")

    def __float__(self):
        raise misuse(f"a traced tensor ({self.type}) has no value yet; float() needs one")

    __int__ = __index__ = __complex__ = __float__

    def __repr__(self) -> str:
        return f"Tensor({self.type})"

    __hash__ = object.__hash__

    # -- arithmetic -------------------------------------------------------------------------------
    def __add__(self, o): return binary("add", self, o)
    def __radd__(self, o): return binary("add", o, self)
    def __sub__(self, o): return binary("sub", self, o)
    def __rsub__(self, o): return binary("sub", o, self)
    def __mul__(self, o): return binary("mul", self, o)
    def __rmul__(self, o): return binary("mul", o, self)
    def __truediv__(self, o): return _div(self, o)
    def __rtruediv__(self, o): return _div(o, self)
    def __matmul__(self, o): return matmul(self, o)
    def __rmatmul__(self, o): return matmul(o, self)
    def __neg__(self): return emit("neg", self.value)
    def __pos__(self): return self
    def __abs__(self): return unary("abs", self)

    def __pow__(self, o):
        # Small integer powers become products: exact, cheaper, and differentiable at 0.
        if isinstance(o, (int, float)) and float(o).is_integer() and 1 <= o <= 4:
            r = self
            for _ in range(int(o) - 1):
                r = r * self
            return r
        if isinstance(o, (int, float)) and o == 0.5:
            return unary("sqrt", self)
        return binary("pow", _floatify(self), o)

    def __rpow__(self, o): return binary("pow", o, _floatify(self))

    # -- comparisons (elementwise, give bool tensors) -----------------------------------------------
    def __eq__(self, o): return binary("eq", self, o)  # type: ignore[override]
    def __ne__(self, o): return binary("ne", self, o)  # type: ignore[override]
    def __lt__(self, o): return binary("lt", self, o)
    def __le__(self, o): return binary("le", self, o)
    def __gt__(self, o): return binary("gt", self, o)
    def __ge__(self, o): return binary("ge", self, o)

    # -- logical operators on bool tensors (ig.logical_and, ...) ---------------------------------
    def __and__(self, o): return _logical("logical_and", self, o)
    def __rand__(self, o): return _logical("logical_and", o, self)
    def __or__(self, o): return _logical("logical_or", self, o)
    def __ror__(self, o): return _logical("logical_or", o, self)
    def __xor__(self, o): return _logical("logical_xor", self, o)
    def __rxor__(self, o): return _logical("logical_xor", o, self)
    def __invert__(self): return _logical("logical_not", self)

    # -- methods ------------------------------------------------------------------------------------
    def sum(self, axis=None, keepdims=False): return reduce("reduce_sum", self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return reduce("reduce_max", self, axis, keepdims)
    def min(self, axis=None, keepdims=False): return reduce("reduce_min", self, axis, keepdims)

    def argmax(self, axis=None, keepdims=False):
        from . import library
        return library.argmax(self, axis, keepdims)

    def argmin(self, axis=None, keepdims=False):
        from . import library
        return library.argmin(self, axis, keepdims)
    def reshape(self, *shape): return reshape(self, *shape)
    def transpose(self, *axes): return transpose(self, *axes)

    @property
    def T(self) -> "Tensor":
        return transpose(self)

    def astype(self, dtype) -> "Tensor":
        d = as_dtype(dtype)
        return self if d is self.dtype else emit("cast", self.value, dtype=d)

    def __getitem__(self, index): return getitem(self, index)


def _logical(name, *xs):
    from . import library  # (library builds on this module)
    return getattr(library, name)(*xs)


def _floatify(x):
    if isinstance(x, Tensor) and not x.dtype.is_float:
        return x.astype(DType.f32)
    return x


def _div(a, b):
    # True division always gives floats, as in numpy.
    return binary("div", _floatify(a), _floatify(b))
