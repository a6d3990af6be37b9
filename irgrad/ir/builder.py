"""The builder: the one way code creates ops (tracer, AD rules, passes).

`Builder.emit` validates attributes, runs the registry's inference and appends the op.
Named helpers (`b.add(x, y)`, `b.broadcast(x, shape, dims)`, ...) keep AD rules short.
"""

from __future__ import annotations

import numpy as np

from ..errors import SourceLoc
from .core import Block, Operation, Value
from .registry import check_attrs, get_op, infer_types
from .types import DType, TensorType


class Builder:
    """Appends ops to a block; `loc` is stamped on every op it creates."""

    def __init__(self, block: Block, loc: SourceLoc | None = None):
        self.block = block
        self.loc = loc

    def __getattr__(self, name: str):
        # `b.exp(x)`, `b.add(x, y)`, `b.lt(x, y)`: every registered op without attributes
        # whose result type is inferred is a method (the registry is the one list of ops)
        try:
            opdef = get_op(name)
        except KeyError:
            raise AttributeError(f"'Builder' has no method or op '{name}'") from None
        if opdef.attrs or opdef.declared_type or opdef.has_region:
            raise AttributeError(f"'{name}' takes attributes or a type: use Builder.emit")

        def method(*operands: Value) -> Value:
            return self.emit(name, *operands)
        method.__name__ = name
        return method

    # -- the general entry point ------------------------------------------------------------
    def emit_op(self, opname: str, operands, attrs=None, result_types=None, regions=None,
                loc: SourceLoc | None = None) -> Operation:
        opdef = get_op(opname)
        attrs = check_attrs(opdef, attrs or {})
        operand_types = [v.type for v in operands]
        if opdef.has_region:
            types = [t for t in result_types] if result_types is not None else \
                [v.type for v in regions[0].outputs]
            opdef.infer(operand_types, attrs, types, regions)
        else:
            types = infer_types(opname, operand_types, attrs, result_types)
        op = Operation(opname, operands, types, attrs, regions, loc or self.loc)
        return self.block.append(op)

    def emit(self, opname: str, *operands: Value, result_type: TensorType | None = None,
             **attrs) -> Value:
        declared = [result_type] if result_type is not None else None
        return self.emit_op(opname, operands, attrs, declared).result

    # -- constants ------------------------------------------------------------------------------
    def const(self, value, type: TensorType) -> Value:
        """A constant of `type`: a scalar `value` is splatted, an array must match the shape."""
        arr = np.asarray(value, dtype=type.dtype.np)
        return self.emit("const", value=arr, result_type=type)

    def full(self, type: TensorType, value) -> Value:
        return self.const(value, type)

    def zeros_like(self, v: Value) -> Value:
        return self.full(v.type, 0)

    def ones_like(self, v: Value) -> Value:
        return self.full(v.type, 1)

    def scalar_like(self, v: Value, value) -> Value:
        """A splat constant with the type of `v` (for `x * 0.5` in AD rules)."""
        return self.full(v.type, value)

    def iota(self, type: TensorType, axis: int) -> Value:
        return self.emit("iota", axis=axis, result_type=type)

    # -- elementwise helpers with constants -----------------------------------------------------
    def scale(self, v: Value, c: float) -> Value:
        return self.mul(v, self.scalar_like(v, c))

    def select(self, cond: Value, a: Value, b: Value) -> Value:
        return self.emit("select", cond, a, b)

    def cast(self, v: Value, dtype: DType) -> Value:
        return self.emit("cast", v, dtype=dtype)

    # -- shape ops ----------------------------------------------------------------------------
    def broadcast(self, v: Value, shape, dims) -> Value:
        return self.emit("broadcast", v, dims=tuple(dims), result_type=v.type.with_shape(shape))

    def reshape(self, v: Value, shape) -> Value:
        return self.emit("reshape", v, result_type=v.type.with_shape(shape))

    def transpose(self, v: Value, perm) -> Value:
        return self.emit("transpose", v, perm=tuple(perm))

    def reduce_sum(self, v: Value, axes) -> Value:
        return self.emit("reduce_sum", v, axes=tuple(axes))

    def reduce_max(self, v: Value, axes) -> Value:
        return self.emit("reduce_max", v, axes=tuple(axes))

    def matmul(self, a: Value, b: Value) -> Value:
        return self.emit("matmul", a, b)

    def gather(self, a: Value, indices: Value, axis: int) -> Value:
        return self.emit("gather", a, indices, axis=axis)

    def scatter_add(self, a: Value, indices: Value, updates: Value, axis: int) -> Value:
        return self.emit("scatter_add", a, indices, updates, axis=axis)

    def slice(self, v: Value, start, limit) -> Value:
        return self.emit("slice", v, start=tuple(start), limit=tuple(limit))

    def pad(self, v: Value, low, high) -> Value:
        return self.emit("pad", v, low=tuple(low), high=tuple(high))

    def concat(self, values, axis: int) -> Value:
        return self.emit_op("concat", list(values), {"axis": axis}).result

    # -- conveniences built from the above ------------------------------------------------------
    def swap_last_two(self, v: Value) -> Value:
        r = len(v.shape)
        return self.transpose(v, tuple(range(r - 2)) + (r - 1, r - 2))

    def add_maybe(self, a: Value | None, b: Value | None) -> Value | None:
        """Sum of two possibly-symbolic-zero (None) values."""
        if a is None:
            return b
        if b is None:
            return a
        return self.add(a, b)
