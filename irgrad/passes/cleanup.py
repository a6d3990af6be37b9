"""`cse` (common subexpression elimination) and `dce` (dead code elimination)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..ir.core import Block, Function
from ..ir.rewrite import remove_dead_ops, replace_all_uses
from .manager import Pass, register_pass


def _attr_key(v):
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, tuple):
        return tuple(_attr_key(x) for x in v)
    return v


def cse_block(block: Block) -> int:
    """Replace each op by an earlier identical one (same name, operands, attributes and
    types); returns how many were removed. Ops with regions are compared by identity."""
    seen: dict = {}
    replace: dict = {}
    kept = []
    for op in block.ops:
        op.operands = [replace.get(v, v) for v in op.operands]
        if op.regions:
            kept.append(op)
            continue
        key = (op.opname, tuple(id(v) for v in op.operands),
               tuple(sorted((k, _attr_key(a)) for k, a in op.attrs.items())),
               tuple(op.result_types))
        prev = seen.get(key)
        if prev is None:
            seen[key] = op
            kept.append(op)
        else:
            replace.update(zip(op.results, prev.results))
    removed = len(block.ops) - len(kept)
    block.ops[:] = kept
    replace_all_uses(block, replace)
    for op in block.ops:
        for r in op.regions:
            cse_block(r)
    return removed


@register_pass
@dataclass(frozen=True)
class CSEPass(Pass):
    """Common subexpression elimination: identical pure ops are computed once."""

    name: ClassVar[str] = "cse"

    def run(self, f: Function) -> Function:
        cse_block(f.body)
        return f


def dce_block(block: Block) -> int:
    removed = remove_dead_ops(block)
    for op in block.ops:
        for r in op.regions:
            removed += dce_block(r)
    return removed


@register_pass
@dataclass(frozen=True)
class DCEPass(Pass):
    """Dead code elimination: ops whose results nobody uses are removed (all ops are pure)."""

    name: ClassVar[str] = "dce"

    def run(self, f: Function) -> Function:
        dce_block(f.body)
        return f
