"""`forward-ad`: forward-mode differentiation (Jacobian-vector products).

Each differentiated parameter gets a tangent parameter; walking the ops in order, each op
is copied and immediately followed by the ops its registry JVP rule emits, which compute
its results' tangents from its operands' tangents. The function returns its results and
then their tangents (zeros where no tangent flows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..ir.builder import Builder
from ..ir.core import Function, Value, clone_ops_into
from ..ir.rewrite import remove_dead_ops
from .manager import Pass, register_pass
from .reverse_ad import _unique, check_differentiable_params, derivative_rule


def forward_ad(f: Function, wrt=(), name: str | None = None) -> Function:
    wrt = list(wrt) or [i for i, p in enumerate(f.params) if p.dtype.is_float]
    check_differentiable_params(f, wrt, "forward-ad")
    taken = {p.name for p in f.params}
    names = [p.name for p in f.params] + [_unique(f"tan.{f.params[i].name}", taken) for i in wrt]
    types = [p.type for p in f.params] + [f.params[i].type for i in wrt]
    g = Function(name or f"jvp_{f.name}", types, names)
    mapping: dict[Value, Value] = dict(zip(f.params, g.params))
    tangent: dict[Value, Value] = {g.params[i]: t for i, t in zip(wrt, g.params[len(f.params):])}
    b = Builder(g.body)
    for op in f.ops:
        clone_ops_into([op], g.body, mapping)
        new_op = g.body.ops[-1]
        ts = [tangent.get(v) for v in new_op.operands]
        if all(t is None for t in ts):
            continue
        jvp = derivative_rule(op, "jvp", "forward-ad")
        if jvp is None:
            continue
        b.loc = op.loc
        for r, t in zip(new_op.results, jvp(b, new_op, ts)):
            if t is not None and r.dtype.is_float:
                if t.type != r.type:
                    raise AssertionError(f"JVP of '{op.opname}' gave {t.type} for {r.type}")
                tangent[r] = t
    b.loc = None
    outputs = [mapping.get(v, v) for v in f.outputs]
    tangents = [tangent[v] if v in tangent else b.zeros_like(v) for v in outputs]
    g.set_outputs(outputs + tangents)
    remove_dead_ops(g.body)
    return g


@register_pass
@dataclass(frozen=True)
class ForwardADPass(Pass):
    """Replace the function by its JVP: one tangent parameter per differentiated parameter
    (`wrt`: indices, default all float parameters); returns results, then tangents."""

    name: ClassVar[str] = "forward-ad"
    wrt: tuple[int, ...] = ()

    def run(self, f: Function) -> Function:
        return forward_ad(f, self.wrt, name=f.name)
