"""`simplify`: algebraic identities that hold exactly in IEEE arithmetic.

The rules live with their ops (the `rules` of each entry in ir/ops/); this pass runs them
over the rewrite walker. Every rule keeps results bit-identical, with one documented
exception: rules that drop an addition of +0.0 or turn `0 - x` into `-x` may change the
sign of a zero result (x + 0.0 is +0.0 for x = -0.0). NaN and infinity behave exactly as
before: `x * 0` is not folded for floats (inf * 0 is NaN) and no rule reassociates
arithmetic.

Rules (x, y values; c a splat constant):
  x + 0, 0 + x, x - 0, x * 1, x / 1           -> x
  x * -1, x / -1, 0 - x                       -> -x
  x / c (c a power of two)                    -> x * (1/c)     (1/c is exact)
  x + (-y) -> x - y;  (-x) + y -> y - x;  x - (-y) -> x + y;  (-x) * (-y) -> x * y
  -(-x) -> x;  max(x, x), min(x, x) -> x;  x * 0 -> 0 for integers
  select(true, a, b) -> a;  select(false, a, b) -> b;  select(c, a, a) -> a
  -select(c, a, 0) -> select(c, -a, -0);  -select(c, 0, b) -> select(c, -0, -b)  (one use)
  cast to the same dtype -> x;  cast(cast(x: f32) to f64) to f32 -> x
  transpose(transpose(x)) -> one transpose (or x);  identity transpose -> x;
  a transpose moving only size-1 axes -> reshape
  reshape(reshape(x)) -> one reshape;  reshape to the same shape -> x
  broadcast(broadcast(x)) -> one broadcast;  identity broadcast -> x
  broadcast(c) -> a larger splat constant
  reduce over no axes -> x;  reduce over size-1 axes only -> reshape
  slice of everything, pad by nothing, concat of one value -> x
  pad(a) + pad(b) side by side on one axis -> pad(concat(a, b));  nested concats flatten
  stop_gradient(stop_gradient(x)) -> stop_gradient(x)
The pass sweeps its rules to a fixpoint (bounded), removing what became dead after each
sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..ir.core import Block, Function
from ..ir.registry import get_op
from ..ir.rewrite import remove_dead_ops, rewrite_block
from .manager import Pass, PassResult, register_pass


def simplify_rule(rw, op):
    """The first of the op's own rules that applies."""
    if len(op.results) != 1 or op.regions:
        return None
    for rule in get_op(op.opname).rules:
        out = rule(rw, op)
        if out is not None:
            return out
    return None


def simplify_block(block: Block, max_rounds: int = 8) -> int:
    """Sweep the rules until one sweep rewrites nothing; returns how many ops were
    rewritten or removed."""
    total = 0
    for _ in range(max_rounds):
        changed = rewrite_block(block, simplify_rule)
        total += changed + remove_dead_ops(block)
        if not changed:
            break
    return total


@register_pass
@dataclass(frozen=True)
class SimplifyPass(Pass):
    """Exact algebraic simplifications (see the module docstring for the rule list)."""

    name: ClassVar[str] = "simplify"

    def apply(self, f: Function) -> PassResult:
        return PassResult(f, simplify_block(f.body) > 0)
