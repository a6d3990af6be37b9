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

from ..ir.core import Function
from ..ir.registry import get_op
from ..ir.rewrite import const_value, rewrite_block
from .manager import Pass, PassResult, register_pass


def as_compact_constant(arr: np.ndarray) -> np.ndarray:
    """A 0-d array when every element is equal (bitwise, so -0.0 and NaN are kept apart)."""
    arr = np.ascontiguousarray(arr)
    if arr.ndim == 0 or arr.size == 0:
        return arr.copy()
    flat = arr.reshape(-1).view(np.uint8).reshape(arr.size, arr.itemsize)
    if (flat == flat[0]).all():
        return np.array(arr.reshape(-1)[0])
    return arr.copy()


def fold_rule(max_elements: int):
    def rule(rw, op):
        if (not op.operands or op.regions or len(op.results) != 1
                or any(v.op is None or v.op.opname != "const" for v in op.operands)):
            return None
        inputs = [const_value(v.op) for v in op.operands]
        with np.errstate(all="ignore"):
            try:
                value = np.asarray(get_op(op.opname).reference(inputs, op)[0],
                                   dtype=op.result.dtype.np)
            except Exception:  # noqa: BLE001 - e.g. a gather index out of range: leave it to run time
                return None
        compact = as_compact_constant(value)
        if compact.ndim != 0 and compact.size > max_elements:
            return None
        return rw.b.const(compact, op.result.type)
    return rule


@register_pass
@dataclass(frozen=True)
class ConstantFoldPass(Pass):
    """Evaluate ops whose operands are all constants (dense results up to `max-elements`)."""

    name: ClassVar[str] = "constant-fold"
    max_elements: int = field(default=4096, metadata={"min": 0})

    def apply(self, f: Function) -> PassResult:
        return PassResult(f, rewrite_block(f.body, fold_rule(self.max_elements)) > 0)
