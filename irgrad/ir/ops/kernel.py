"""`fused`: an op that owns a region, the form fused kernels take in the IR, and the facts
about fused kernels that the verifier, the memory planner and the code generators share.

The region's arguments stand for the op's operands (same types, same order) and the values
it yields are the op's results. Its meaning is simply running the region, so the
interpreter runs fused IR exactly like unfused IR. The `kind` attribute says what kind of
kernel it is, and the verifier holds the region to it (native code generation relies on
it):

- `loop`: elementwise ops and data movement; every result has as many elements as the
  first (results of another shape are the same elements in row-major order);
- `reduce`: one reduction plus elementwise work before it (a prologue, results the size
  of the reduction's operand) and after it (an epilogue, results the size of its result);
- `matmul`: one matmul with an epilogue (results the size of the product), or several
  matmuls that each write their piece of one result (fuse's concat writers).

No region holds a `fused` op or a `scatter_add` (kernels of their own).

Shared facts:
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

from ...errors import ShapeError
from ..core import Operation, Value
from ..interpreter import run_block
from ..registry import AttrSpec, OpDef, fmt_types, get_op, register
from ..rewrite import splat_value

KINDS = ("loop", "reduce", "matmul")
STACK_ACCUMULATOR_LIMIT = 64 * 1024  # bytes of column-reduction partial sums kept on the stack


def _fused_infer(types, attrs, declared, regions=None):
    if regions is None or len(regions) != 1:
        raise ShapeError("'fused' needs exactly one region")
    body = regions[0]
    arg_types = [a.type for a in body.args]
    if arg_types != list(types):
        raise ShapeError(f"'fused' region arguments ({fmt_types(arg_types)}) must match its "
                         f"operands ({fmt_types(types)})")
    out_types = [v.type for v in body.outputs]
    if declared is not None and list(declared) != out_types:
        raise ShapeError(f"'fused' results ({fmt_types(declared)}) must match the values its "
                         f"region yields ({fmt_types(out_types)})")
    if not out_types:
        raise ShapeError("'fused' region must yield at least one value")
    _check_kind(attrs.get("kind"), body)
    return out_types


def _check_kind(kind, body) -> None:
    """The region holds what its `kind` says (see the module docstring)."""
    if kind not in KINDS:
        raise ShapeError(f"'fused' attribute 'kind' must be one of {', '.join(map(repr, KINDS))}, "
                         f"got {kind!r}")
    kernels = [get_op(o.opname).kernel for o in body.ops]
    for o, k in zip(body.ops, kernels):
        if k in ("scatter", "region", "expand") or o.regions:
            raise ShapeError(f"a 'fused' region cannot hold '{o.opname}' (it is a kernel of its own)")
    mms = kernels.count("matmul")
    reds = [o for o, k in zip(body.ops, kernels) if k == "reduce"]
    sizes = [v.type.size for v in body.outputs]
    if kind == "matmul":
        if not mms or reds:
            raise ShapeError(f"a 'fused' kernel of kind \"matmul\" holds {mms} matmul(s) and "
                             f"{len(reds)} reduction(s); it needs matmuls and no reduction")
        if mms == 1:
            product = next(o for o, k in zip(body.ops, kernels) if k == "matmul").result.type.size
            if any(s != product for s in sizes):
                raise ShapeError(f"a matmul kernel yields {fmt_types(v.type for v in body.outputs)}; "
                                 f"each result needs the product's {product} elements")
        elif len(sizes) != 1:
            raise ShapeError("a kernel of several matmuls (concat writers) yields one value")
        return
    if mms:
        raise ShapeError(f"a 'fused' kernel of kind \"{kind}\" cannot hold a matmul (kind \"matmul\")")
    if kind == "reduce":
        if len(reds) != 1:
            raise ShapeError(f"a 'fused' kernel of kind \"reduce\" holds {len(reds)} reductions; "
                             f"it needs exactly one")
        red = reds[0]
        allowed = {red.operands[0].type.size, red.result.type.size}
        if any(s not in allowed for s in sizes):
            raise ShapeError(f"a reduce kernel yields {fmt_types(v.type for v in body.outputs)}; each "
                             f"result needs the size of the reduction's operand or of its result")
        return
    if reds:
        raise ShapeError("a 'fused' kernel of kind \"loop\" cannot hold a reduction (kind \"reduce\")")
    if any(s != sizes[0] for s in sizes):
        raise ShapeError(f"a loop kernel yields {fmt_types(v.type for v in body.outputs)}; every "
                         f"result needs the same number of elements")


def _fused_ref(xs, op):
    return run_block(op.regions[0], xs)


register(OpDef(
    name="fused", infer=_fused_infer, reference=_fused_ref,
    attrs={"kind": AttrSpec("str")}, num_operands=None, has_region=True, kernel="region",
    doc="A fused kernel: runs its region on its operands."))


# --- facts about kernels -----------------------------------------------------------------------

@dataclass(frozen=True)
class GemmForm:
    matmul: Operation  # the matmul op inside the region
    alpha: float
    beta: float
    c_arg: int | None  # operand index of C, None when beta == 0


def region_anchor(op: Operation, kernel: str) -> Operation | None:
    """The (single) op of kernel class `kernel` ("matmul", "reduce") inside a fused op's
    region, or the op itself."""
    if not op.regions:
        return op if get_op(op.opname).kernel == kernel else None
    found = [o for o in op.regions[0].ops if get_op(o.opname).kernel == kernel]
    return found[0] if len(found) == 1 else None


def _linear(v: Value, m: Value, limit: int = 32):
    """v as {m or region arg: coefficient}, or None if it is not such a linear form.
    (Recursive, but at most `limit` levels deep.)"""
    if limit <= 0:
        return None
    if v is m or v.op is None:
        return {v: 1.0}
    op = v.op
    d = get_op(op.opname)
    if d.linear is not None:  # sum of coefficient * operand (neg, add, sub)
        out: dict = {}
        for x, coeff in zip(op.operands, d.linear):
            inner = _linear(x, m, limit - 1)
            if inner is None:
                return None
            for k, c in inner.items():
                out[k] = out.get(k, 0.0) + coeff * c
        return out
    if d.scales and len(op.operands) == 2:  # mul by a constant
        for x, y in (op.operands, op.operands[::-1]):
            s = splat_value(y)
            if s is not None and not isinstance(s, bool):
                inner = _linear(x, m, limit - 1)
                return None if inner is None else {k: c * s for k, c in inner.items()}
    return None


def gemm_accumulate_form(op: Operation, result_index: int) -> GemmForm | None:
    if not op.regions or op.attrs.get("kind") != "matmul":
        return None
    mm = region_anchor(op, "matmul")
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
        mm = region_anchor(op, "matmul")
        if mm is None:
            return 0
        if mm.result in region.outputs or any(v.type == mm.result.type for v in region.outputs):
            return 0
        return mm.result.type.nbytes
    if kind == "reduce":
        red = region_anchor(op, "reduce")
        if red is None or reduction_layout(red) != "column":
            return 0
        if region.outputs == [red.result]:
            return 0  # partial sums accumulate straight into the result
        nbytes = red.result.type.nbytes
        return nbytes if nbytes > STACK_ACCUMULATOR_LIMIT else 0
    return 0
