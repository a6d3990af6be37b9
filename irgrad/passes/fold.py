"""`constant-fold`: ops whose operands are all constants are evaluated at compile time.

Evaluation goes through the op's reference semantics (the interpreter's), so folding never
changes a result. A result that is one number repeated becomes a splat constant of any
size; other results are folded only up to `max-elements` elements, so a fold never bloats
the IR with large dense constants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..ir.builder import Builder
from ..ir.core import Block, Function, Operation
from ..ir.registry import get_op
from ..ir.rewrite import replace_all_uses
from .manager import Pass, register_pass


def const_value(op: Operation | None) -> np.ndarray | None:
    """The full value of a `const` op (splats broadcast), else None."""
    if op is None or op.opname != "const":
        return None
    return np.broadcast_to(op.attrs["value"], op.result.type.shape)


def splat_value(v) -> float | int | bool | None:
    """The number a value is filled with, if it is a splat constant."""
    op = v.op
    if op is None or op.opname != "const" or op.attrs["value"].ndim != 0:
        return None
    return op.attrs["value"].item()


def as_compact_constant(arr: np.ndarray) -> np.ndarray:
    """A 0-d array when every element is equal (bitwise, so -0.0 and NaN are kept apart)."""
    arr = np.ascontiguousarray(arr)
    if arr.ndim == 0:
        return arr.copy()
    if arr.size == 0:
        return arr.copy()
    flat = arr.reshape(-1).view(np.uint8).reshape(arr.size, arr.itemsize)
    if (flat == flat[0]).all():
        return np.array(arr.reshape(-1)[0])
    return arr.copy()


def fold_block(block: Block, max_elements: int) -> int:
    folded = 0
    replace = {}
    new_ops = []
    tmp = Block()
    b = Builder(tmp)
    for op in block.ops:
        op.operands = [replace.get(v, v) for v in op.operands]
        opdef = get_op(op.opname)
        if (not op.operands or op.regions or len(op.results) != 1
                or any(v.op is None or v.op.opname != "const" for v in op.operands)):
            new_ops.append(op)
            continue
        inputs = [const_value(v.op) for v in op.operands]
        with np.errstate(all="ignore"):
            try:
                value = np.asarray(opdef.reference(inputs, op)[0], dtype=op.result.dtype.np)
            except Exception:  # noqa: BLE001 - e.g. a gather index out of range: leave it to run time
                new_ops.append(op)
                continue
        compact = as_compact_constant(value)
        if compact.ndim != 0 and compact.size > max_elements:
            new_ops.append(op)
            continue
        b.loc = op.loc
        c = b.const(compact, op.result.type)
        tmp.ops.clear()
        c.owner.parent = block
        new_ops.append(c.owner)
        replace[op.result] = c
        folded += 1
    block.ops[:] = new_ops
    replace_all_uses(block, replace)
    return folded


@register_pass
@dataclass(frozen=True)
class ConstantFoldPass(Pass):
    """Evaluate ops whose operands are all constants (dense results up to `max-elements`)."""

    name: ClassVar[str] = "constant-fold"
    max_elements: int = field(default=4096, metadata={"min": 0})

    def run(self, f: Function) -> Function:
        fold_block(f.body, self.max_elements)
        return f
