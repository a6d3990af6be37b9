"""Rewriting: the one op walker the passes share, and what rewrite rules look at.

A rewrite rule is a function `rule(rw, op)` returning None (keep the op) or the values that
replace its results (a Value for a one-result op, else a list). `rewrite_block` walks a
block's ops in order, renames every operand through the replacements made so far, hands
each op to the rule, puts the ops the rule built (with `rw.b`) in front of the op it
replaced, and finally renames the block's outputs; it returns how many ops it replaced
(xDSL's pattern walker, without the worklist: our blocks are straight-line SSA, so one
forward sweep sees every operand already rewritten). constant-fold, simplify and cse are
rules over this walker; dce and the tracer share `remove_dead_ops`.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from .builder import Builder
from .core import Block, Operation, Value, compute_uses


# --- what rules look at ----------------------------------------------------------------------

def defining(v: Value, opname: str) -> Operation | None:
    """The op that defines `v` if it is an `opname`, else None."""
    op = v.op
    return op if op is not None and op.opname == opname else None


def const_value(op: Operation | None) -> np.ndarray | None:
    """The full value of a `const` op (splats broadcast), else None."""
    if op is None or op.opname != "const":
        return None
    return np.broadcast_to(op.attrs["value"], op.result.type.shape)


def splat_value(v: Value) -> float | int | bool | None:
    """The number a value is filled with, if it is a splat constant."""
    op = v.op
    if op is None or op.opname != "const" or op.attrs["value"].ndim != 0:
        return None
    return op.attrs["value"].item()


def is_number(v: Value, number) -> bool:
    """`v` is a splat constant equal to `number` (booleans are not numbers here; -0.0 == 0)."""
    s = splat_value(v)
    return s is not None and not isinstance(s, bool) and s == number


# --- the walker -----------------------------------------------------------------------------------

class Rewriter:
    """What a rule may use: `b` builds replacement ops (stamped with the location of the op
    being rewritten, inserted before it) and `single_use(v)` (uses as of the start of the
    sweep, which is what a rule needs to know that it may take a value apart)."""

    def __init__(self, block: Block):
        self.block = block
        self.b = Builder(Block())
        self._uses = None

    def single_use(self, v: Value) -> bool:
        if self._uses is None:
            self._uses = compute_uses(self.block)
        return len(self._uses.get(v, ())) == 1


Rule = Callable[[Rewriter, Operation], "Value | list | None"]


def rewrite_block(block: Block, rule: Rule) -> int:
    """One forward sweep of `rule` over the ops of `block` (not nested regions); returns
    how many ops were replaced. Replaced ops are dropped; ops that became dead are not
    (`remove_dead_ops` does that)."""
    rw = Rewriter(block)
    built = rw.b.block.ops
    replace: dict[Value, Value] = {}
    new_ops: list[Operation] = []
    count = 0
    for op in block.ops:
        if replace:
            op.operands = [replace.get(v, v) for v in op.operands]
        rw.b.loc = op.loc
        out = rule(rw, op)
        if built:
            for new in built:
                new.parent = block
            new_ops.extend(built)
            built.clear()
        if out is None:
            new_ops.append(op)
            continue
        outs = [out] if isinstance(out, Value) else list(out)
        if len(outs) != len(op.results):
            raise AssertionError(f"a rewrite of '{op.opname}' gave {len(outs)} values for "
                                 f"{len(op.results)} results")
        if all(n is r for n, r in zip(outs, op.results)):
            new_ops.append(op)  # the rule gave the op back: nothing changed
            continue
        replace.update(zip(op.results, outs))
        count += 1
    block.ops[:] = new_ops
    replace_all_uses(block, replace)
    return count


def blocks(block: Block) -> Iterator[Block]:
    """`block` and every block nested in its ops' regions (iteratively, outermost first)."""
    stack = [block]
    while stack:
        blk = stack.pop()
        yield blk
        for op in reversed(blk.ops):
            stack.extend(reversed(op.regions))


def remove_dead_ops(block: Block) -> int:
    """Drop ops none of whose results are used (every op is pure). Returns how many.

    One backward sweep suffices: an op's users all come after it.
    """
    live: set[Value] = set(block.outputs)
    kept = []
    removed = 0
    for op in reversed(block.ops):
        if any(r in live for r in op.results):
            kept.append(op)
            live.update(op.operands)
        else:
            removed += 1
    if removed:
        kept.reverse()
        block.ops[:] = kept
    return removed


def replace_all_uses(block: Block, mapping: dict[Value, Value]) -> None:
    """Rewrite operands and outputs of `block` (not nested regions) through `mapping`."""
    if not mapping:
        return
    for op in block.ops:
        op.operands = [mapping.get(v, v) for v in op.operands]
    block.outputs = [mapping.get(v, v) for v in block.outputs]

