"""Matmuls that read their operands and write their results as views in place: the facts
that `fuse` (which decides what is stored) and the lowering (which addresses it) share.
The facts about kernels in general (GEMM accumulate forms, scratch, reduction layouts)
live with the `fused` op in ir/ops/kernel.py."""

from __future__ import annotations

from ..ir.core import Operation, Value
from ..ir.indexing import Ix, Var, linearize, operand_index, result_index, strided_matrix
from ..ir.registry import get_op


def permutes(op: Operation) -> bool:
    """A bijective view (transpose, reshape, stop_gradient): results can be written
    through it."""
    return not op.regions and get_op(op.opname).permutes


def is_concat(op: Operation) -> bool:
    """An op that places each operand in a part of its result (concat): it has a
    `result_index` map for every operand but is no view."""
    d = get_op(op.opname)
    return not op.regions and d.result_index is not None and d.operand_index is None


def view_chain(v: Value, is_stored) -> tuple[Value, list[Operation]]:
    """Walk back from `v` through view ops until a value `is_stored` says is in memory (or
    one no view produces); returns (that root, the view ops from v back to it)."""
    chain = []
    while not is_stored(v) and v.op is not None and not v.op.regions and get_op(v.op.opname).view:
        chain.append(v.op)
        v = v.op.operands[0]
    return v, chain


def _matrix_vars(shape):
    batch = [Var(f"b{d}", n) for d, n in enumerate(shape[:-2])]
    i, j = Var("i", shape[-2]), Var("j", shape[-1])
    return batch, i, j


def operand_matrix_view(v: Value, root: Value, chain: list[Operation]):
    """(per-batch offsets, ld, trans) when matmul operand `v` = chain(root) is a strided
    matrix inside root's contiguous buffer (BLAS can read it in place), else None."""
    if 0 in v.shape or 0 in root.shape:
        return None  # nothing to read (and no index to divide by a size 0)
    batch, i, j = _matrix_vars(v.shape)
    idx = tuple(Ix.of(x) for x in batch + [i, j])
    for n, op in enumerate(chain):
        if n == len(chain) - 1 and op.opname == "reshape":
            # a reshape of the stored value: same elements in the same row-major order, so
            # the offset is the reshape's own linear index (no division into root's axes)
            return strided_matrix(linearize(idx, op.result.shape), batch, i, j, v.shape[-2], v.shape[-1])
        idx = operand_index(op, idx)
    return strided_matrix(linearize(idx, root.shape), batch, i, j, v.shape[-2], v.shape[-1])


def writer_chain(r: Value, h: Value):
    """The ops from r to h, as (op, operand position) pairs, when h is made of r by
    permuting views and concats only (r lands in h without arithmetic); else None.
    (A depth-first search from h, first concat operands first; iterative.)"""
    stack, seen = [(h, ())], set()
    while stack:
        x, path = stack.pop()
        if x is r:
            return list(reversed(path))
        if x in seen or x.op is None:
            continue
        seen.add(x)
        op = x.op
        if permutes(op):
            stack.append((op.operands[0], path + ((op, 0),)))
        elif is_concat(op):
            for pos in reversed(range(len(op.operands))):
                stack.append((op.operands[pos], path + ((op, pos),)))
    return None


def result_matrix_view(r: Value, h: Value, chain):
    """(per-batch offsets, ldc, transposed) when h = chain(r) (permuting views and concats
    of a matmul result r, `chain` of (op, operand position) from r towards h) lets the GEMM
    write r straight into h's buffer; a transposed C is computed as C^T = B^T A^T."""
    if 0 in r.shape or 0 in h.shape:
        return None  # nothing to write
    batch, i, j = _matrix_vars(r.shape)
    idx = tuple(Ix.of(x) for x in batch + [i, j])
    for op, pos in chain:
        if not (permutes(op) or is_concat(op)):
            return None
        idx = result_index(op, idx, pos)
    return strided_matrix(linearize(idx, h.shape), batch, i, j, r.shape[-2], r.shape[-1])
