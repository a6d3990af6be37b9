"""`cse` (common subexpression elimination) and `dce` (dead code elimination)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..ir.core import Block, Function
from ..ir.rewrite import blocks, remove_dead_ops, rewrite_block
from .manager import Pass, PassResult, register_pass


def _attr_key(v):
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, tuple):
        return tuple(_attr_key(x) for x in v)
    return v


class CommonOps:
    """The cse rule: an op identical to an earlier one (same name, operands, attributes
    and types) is replaced by it. Ops with regions are compared by identity (kept)."""

    def __init__(self):
        self.seen: dict = {}

    def __call__(self, rw, op):
        if op.regions:
            return None
        key = (op.opname, tuple(id(v) for v in op.operands),
               tuple(sorted((k, _attr_key(a)) for k, a in op.attrs.items())),
               tuple(op.result_types))
        prev = self.seen.setdefault(key, op)
        return None if prev is op else prev.results


def cse_block(block: Block) -> int:
    """cse in `block` and in every region nested in it (each block on its own: a region
    sees nothing of the block around it); returns how many ops were removed."""
    return sum(rewrite_block(blk, CommonOps()) for blk in list(blocks(block)))


@register_pass
@dataclass(frozen=True)
class CSEPass(Pass):
    """Common subexpression elimination: identical pure ops are computed once."""

    name: ClassVar[str] = "cse"

    def apply(self, f: Function) -> PassResult:
        return PassResult(f, cse_block(f.body) > 0)


def dce_block(block: Block) -> int:
    return sum(remove_dead_ops(blk) for blk in list(blocks(block)))


@register_pass
@dataclass(frozen=True)
class DCEPass(Pass):
    """Dead code elimination: ops whose results nobody uses are removed (all ops are pure)."""

    name: ClassVar[str] = "dce"

    def apply(self, f: Function) -> PassResult:
        return PassResult(f, dce_block(f.body) > 0)
