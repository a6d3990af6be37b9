"""`expand`: ops no kernel computes directly become ops that kernels do compute.

An op whose registry entry has an `expand` hook (today `conv`) is rewritten by it, so
the decomposition lives with the op and this pass keeps no list of names. The `conv`
option picks conv's algorithm: "auto" (the measured table in ir/ops/conv.py), "gemm"
(im2col + one matmul per group, the batch folded into its columns), "batched" (im2col +
one matmul per image and group) or "direct" (one reduction kernel over window x weights).
O1 and O2 start with this pass; codegen runs it on whatever is left unexpanded, so
every pipeline (O0 included) reaches the backends with kernel-ready ops only, and
`irgrad dump -p expand` shows what a conv became. The `input-grad` option picks how
conv_input_grad is computed: "auto" (the smaller GEMM operand), "col2im" (W^T G, then
window_transpose) or "flip" (a conv of g dilated by the stride, with the flipped kernel).
An `expand` hook receives an `ExpandContext`: these options, and which conv inputs also
feed a weight gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import PipelineError
from ..ir.core import Function
from ..ir.registry import get_op
from ..ir.rewrite import blocks, remove_dead_ops, rewrite_block
from .manager import Pass, PassResult, register_pass

ALGORITHMS = ("auto", "gemm", "batched", "direct")
INPUT_GRAD = ("auto", "col2im", "flip")


def needs_expand(f: Function) -> bool:
    return any(get_op(op.opname).expand is not None for blk in blocks(f.body) for op in blk.ops)


@dataclass(frozen=True)
class ExpandContext:
    """What an `expand` hook is told: the pass's options, and which conv inputs also feed a
    weight gradient (a training step's convs), whose im2col columns the conv can share."""

    conv: str
    input_grad: str
    weight_grad_inputs: frozenset

    def shares_columns(self, op) -> bool:
        return (op.operands[0], _conv_key(op.attrs)) in self.weight_grad_inputs


def _conv_key(attrs) -> tuple:
    return tuple(sorted((k, v) for k, v in attrs.items() if k != "kernel"))


def _weight_grad_inputs(f: Function) -> frozenset:
    return frozenset((op.operands[0], _conv_key(op.attrs)) for blk in blocks(f.body) for op in blk.ops
                     if op.opname == "conv_weight_grad")


@register_pass
@dataclass(frozen=True)
class ExpandPass(Pass):
    """Rewrite ops with an `expand` hook (conv) into window, reshape, matmul and reductions."""

    name: ClassVar[str] = "expand"
    conv: str = "auto"
    input_grad: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        for key, allowed in (("conv", ALGORITHMS), ("input-grad", INPUT_GRAD)):
            v = getattr(self, key.replace("-", "_"))
            if v not in allowed:
                raise PipelineError(f"option '{key}' of pass 'expand' is one of {', '.join(allowed)}, "
                                    f"got {v!r}")

    def apply(self, f: Function) -> PassResult:
        changed = 0
        ctx = ExpandContext(self.conv, self.input_grad, _weight_grad_inputs(f))

        def rule(rw, op):
            hook = get_op(op.opname).expand
            return hook(rw.b, op, ctx) if hook is not None else None

        for blk in list(blocks(f.body)):
            for _ in range(8):  # an expansion may emit ops that expand in turn
                n = rewrite_block(blk, rule)
                if not n:
                    break
                remove_dead_ops(blk)
                changed += n
        return PassResult(f, changed > 0)
