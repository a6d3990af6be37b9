"""Facts about fused kernels that the memory planner and the code generators must agree on.

- `gemm_accumulate_form`: a matmul kernel output of the form `beta * C + alpha * (A @ B)`
  (C a kernel input, alpha and beta constants), which BLAS computes in place over C:
  SGD's `W - lr * (X^T G)` is one `sgemm` with alpha = -lr, beta = 1.
- `reduction_layout`: whether a reduction keeps its last axis (a "column" reduction,
  accumulated in a vector of partial sums) or reduces it (a "row" reduction, accumulated
  in registers).
- `kernel_scratch_bytes`: temporary memory a kernel needs beyond its results: a matmul
  kernel whose product is neither a result nor the size of one, and a column reduction
  with an epilogue too large for the stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir.core import Operation, Value

STACK_ACCUMULATOR_LIMIT = 64 * 1024  # bytes of column-reduction partial sums kept on the stack


@dataclass(frozen=True)
class GemmForm:
    matmul: Operation  # the matmul op inside the region
    alpha: float
    beta: float
    c_arg: int | None  # operand index of C, None when beta == 0


def region_anchor(op: Operation, names) -> Operation | None:
    """The (single) op of one of `names` inside a fused op's region, or the op itself."""
    if not op.regions:
        return op if op.opname in names else None
    found = [o for o in op.regions[0].ops if o.opname in names]
    return found[0] if len(found) == 1 else None


def _splat(v: Value):
    op = v.op
    if op is None or op.opname != "const" or op.attrs["value"].ndim != 0:
        return None
    x = op.attrs["value"].item()
    return None if isinstance(x, bool) else float(x)


def _linear(v: Value, m: Value, limit: int = 32):
    """v as {m or region arg: coefficient}, or None if it is not such a linear form."""
    if limit <= 0:
        return None
    if v is m or v.op is None:
        return {v: 1.0}
    op = v.op
    name = op.opname
    if name == "neg":
        inner = _linear(op.operands[0], m, limit - 1)
        return None if inner is None else {k: -c for k, c in inner.items()}
    if name in ("add", "sub"):
        a = _linear(op.operands[0], m, limit - 1)
        b = _linear(op.operands[1], m, limit - 1)
        if a is None or b is None:
            return None
        sign = 1.0 if name == "add" else -1.0
        out = dict(a)
        for k, c in b.items():
            out[k] = out.get(k, 0.0) + sign * c
        return out
    if name == "mul":
        for x, y in (op.operands, op.operands[::-1]):
            s = _splat(y)
            if s is not None:
                inner = _linear(x, m, limit - 1)
                return None if inner is None else {k: c * s for k, c in inner.items()}
    return None


def gemm_accumulate_form(op: Operation, result_index: int) -> GemmForm | None:
    if not op.regions or op.attrs.get("kind") != "matmul":
        return None
    mm = region_anchor(op, ("matmul",))
    if mm is None:
        return None
    region = op.regions[0]
    lin = _linear(region.outputs[result_index], mm.result)
    if lin is None or mm.result not in lin:
        return None
    alpha = lin.pop(mm.result)
    lin = {k: c for k, c in lin.items() if c != 0.0}
    if len(lin) > 1:
        return None
    if not lin:
        return GemmForm(mm, alpha, 0.0, None)
    (c_val, beta), = lin.items()
    if c_val not in region.args or c_val.type != mm.result.type:
        return None
    return GemmForm(mm, alpha, beta, region.args.index(c_val))


def reduction_layout(red: Operation) -> str:
    """'row' when the reduced axes include the last axis of the operand, else 'column'."""
    rank = len(red.operands[0].shape)
    return "row" if rank - 1 in red.attrs["axes"] else "column"


def kernel_scratch_bytes(op: Operation) -> int:
    """Bytes of arena scratch `op` needs while it runs (0 for most ops)."""
    if not op.regions:
        return 0
    kind = op.attrs.get("kind")
    region = op.regions[0]
    if kind == "matmul":
        mm = region_anchor(op, ("matmul",))
        if mm is None:
            return 0
        if mm.result in region.outputs or any(v.type == mm.result.type for v in region.outputs):
            return 0
        return mm.result.type.nbytes
    if kind == "reduce":
        red = region_anchor(op, ("reduce_sum", "reduce_max"))
        if red is None or reduction_layout(red) != "column":
            return 0
        if region.outputs == [red.result]:
            return 0  # partial sums accumulate straight into the result
        nbytes = red.result.type.nbytes
        return nbytes if nbytes > STACK_ACCUMULATOR_LIMIT else 0
    return 0


# --- matmuls reading and writing views in place ------------------------------------------------

VIEW_OPS = ("transpose", "reshape", "slice", "broadcast", "stop_gradient")
PERMUTING_VIEWS = ("transpose", "reshape", "stop_gradient")


def view_chain(v: Value, is_stored) -> tuple[Value, list[Operation]]:
    """Walk back from `v` through view ops until a value `is_stored` says is in memory (or
    one no view produces); returns (that root, the view ops from v back to it)."""
    chain = []
    while not is_stored(v) and v.op is not None and v.op.opname in VIEW_OPS:
        chain.append(v.op)
        v = v.op.operands[0]
    return v, chain


def _matrix_vars(shape):
    from ..ir.indexing import Var
    batch = [Var(f"b{d}", n) for d, n in enumerate(shape[:-2])]
    i, j = Var("i", shape[-2]), Var("j", shape[-1])
    return batch, i, j


def operand_matrix_view(v: Value, root: Value, chain: list[Operation]):
    """(per-batch offsets, ld, trans) when matmul operand `v` = chain(root) is a strided
    matrix inside root's contiguous buffer (BLAS can read it in place), else None."""
    from ..ir.indexing import Ix, linearize, operand_index, strided_matrix
    batch, i, j = _matrix_vars(v.shape)
    idx = tuple(Ix.of(x) for x in batch + [i, j])
    for op in chain:
        idx = operand_index(op, idx)
    return strided_matrix(linearize(idx, root.shape), batch, i, j, v.shape[-2], v.shape[-1])


def writer_chain(r: Value, h: Value):
    """The ops from r to h, as (op, operand position) pairs, when h is made of r by
    permuting views and concats only (r lands in h without arithmetic); else None."""
    chain, x = [], h
    while x is not r:
        op = x.op
        if op is None:
            return None
        if op.opname in PERMUTING_VIEWS:
            chain.append((op, 0))
            x = op.operands[0]
            continue
        if op.opname == "concat":
            for pos, v in enumerate(op.operands):
                sub = writer_chain(r, v)  # depth is bounded by the (short) view chains
                if sub is not None:
                    return sub + [(op, pos)] + chain[::-1]
        return None
    return chain[::-1]


def result_matrix_view(r: Value, h: Value, chain):
    """(per-batch offsets, ldc, transposed) when h = chain(r) (permuting views and concats
    of a matmul result r, `chain` of (op, operand position) from r towards h) lets the GEMM
    write r straight into h's buffer; a transposed C is computed as C^T = B^T A^T."""
    from ..ir.indexing import Ix, linearize, result_index, strided_matrix
    batch, i, j = _matrix_vars(r.shape)
    idx = tuple(Ix.of(x) for x in batch + [i, j])
    for op, pos in chain:
        if op.opname not in PERMUTING_VIEWS and op.opname != "concat":
            return None
        idx = result_index(op, idx, pos)
    return strided_matrix(linearize(idx, h.shape), batch, i, j, r.shape[-2], r.shape[-1])
