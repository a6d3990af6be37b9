"""`fused`: an op that owns a region, the form fused kernels take in the IR.

The region's arguments stand for the op's operands (same types, same order) and the values
it yields are the op's results. Its meaning is simply running the region, so the
interpreter runs fused IR exactly like unfused IR. The `kind` attribute records what the
fusion pass made of it (`elementwise`, `reduction`, `matmul` with an epilogue, ...);
codegen lowers each kind to a loop nest or a library call.
"""

from __future__ import annotations

from ..errors import ShapeError
from .registry import AttrSpec, OpDef, fmt_types, register


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
    return out_types


def _fused_ref(xs, op):
    from .interpreter import run_block
    return run_block(op.regions[0], xs)


register(OpDef(
    name="fused", infer=_fused_infer, reference=_fused_ref,
    attrs={"kind": AttrSpec("str", required=False)}, num_operands=None, has_region=True,
    doc="A fused kernel: runs its region on its operands."))
