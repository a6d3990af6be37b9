"""Small rewriting utilities shared by the tracer and the passes."""

from __future__ import annotations

from .core import Block, Value


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


def resolve(mapping: dict[Value, Value], v: Value) -> Value:
    """Follow a chain of replacements to its end."""
    while v in mapping:
        v = mapping[v]
    return v
