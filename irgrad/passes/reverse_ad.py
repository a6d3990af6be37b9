"""`reverse-ad`: reverse-mode differentiation by graph extension.

The pass copies the function and extends it with the adjoint computation: adjoints are
seeded at the results (with 1, or with new cotangent parameters), then every op, visited
in reverse order, hands its results' adjoints to its registry VJP rule, which emits
ordinary IR ops computing the operands' contributions; contributions from several uses
are summed. The VJP rules read forward values directly, so nothing is recomputed and
the backward part grows linearly with the forward part. The result is an ordinary
function, so it can be differentiated again.

Only *active* ops are differentiated: those that depend on a differentiated parameter
and feed a result. Integer and boolean values carry no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import IrgradError
from ..ir.builder import Builder
from ..ir.core import Function, Value, clone_ops_into
from ..ir.registry import get_op
from ..ir.rewrite import remove_dead_ops
from .manager import Pass, register_pass


def active_values(f: Function, wrt: list[Value], outputs: list[Value]) -> set[Value]:
    """Values that depend on some `wrt` value and feed some of `outputs` (float only)."""
    varied = set(wrt)
    for op in f.ops:
        if any(v in varied for v in op.operands) and get_op(op.opname).differentiable:
            varied.update(r for r in op.results if r.dtype.is_float)
    useful = {v for v in outputs if v in varied}
    for op in reversed(f.ops):
        if any(r in useful for r in op.results):
            useful.update(v for v in op.operands if v in varied)
    return useful


def check_differentiable_params(f: Function, wrt: list[int], what: str) -> None:
    for i in wrt:
        if not 0 <= i < len(f.params):
            raise IrgradError(f"{what}: @{f.name} has no parameter {i} "
                              f"(it has {len(f.params)})")
        p = f.params[i]
        if not p.dtype.is_float:
            raise IrgradError(f"{what}: cannot differentiate @{f.name} with respect to %{p.name} "
                              f"({p.type}): integer and boolean values carry no gradient")


def derivative_rule(op, kind: str, pass_name: str):
    """The op's "vjp" or "jvp" rule, or None when its derivative is zero everywhere."""
    opdef = get_op(op.opname)
    if not opdef.differentiable:
        return None
    if opdef.has_region:
        raise IrgradError(f"{pass_name}: '{op.opname}' ops cannot be differentiated; run "
                          f"{pass_name} before fuse")
    rule = opdef.vjp if kind == "vjp" else opdef.jvp
    if rule is None:
        raise IrgradError(f"{pass_name}: '{op.opname}' has no {kind.upper()} rule")
    return rule


def backpropagate(b: Builder, f: Function, seeds: dict[Value, Value], wrt: list[Value]) -> list[Value]:
    """Emit the adjoint computation of `f`'s ops into `b` (after the forward ops, which `f`
    already holds) and return the adjoint of each `wrt` value (zeros where none flows)."""
    active = active_values(f, wrt, list(seeds))
    adjoint: dict[Value, Value] = {v: s for v, s in seeds.items() if v in active}
    for op in reversed(f.ops):
        cts = [adjoint.get(r) for r in op.results]
        if all(c is None for c in cts):
            continue
        wanted = [v in active for v in op.operands]
        if not any(wanted):
            continue
        vjp = derivative_rule(op, "vjp", "reverse-ad")
        if vjp is None:
            continue
        b.loc = op.loc
        contributions = vjp(b, op, cts, wanted)
        for v, c, want in zip(op.operands, contributions, wanted):
            if c is None or not want:
                continue
            if c.type != v.type:
                raise AssertionError(f"VJP of '{op.opname}' gave {c.type} for an operand of {v.type}")
            prev = adjoint.get(v)
            adjoint[v] = c if prev is None else b.add(prev, c)  # sum over every use
    b.loc = None
    return [adjoint[v] if v in adjoint else b.zeros_like(v) for v in wrt]


def reverse_ad(f: Function, wrt=(), return_value: bool = False,
               cotangent_params: bool = False, name: str | None = None,
               has_aux: bool = False) -> Function:
    """The gradient function of `f` with respect to parameters `wrt` (indices; all float
    parameters when empty).

    - default: `f` must return one float scalar; the new function returns the gradients
      (preceded by the value when `return_value`);
    - `cotangent_params=True`: a vector-Jacobian product; one cotangent parameter per
      result of `f` is appended, and the function returns the parameters' cotangents
      (preceded by `f`'s results when `return_value`);
    - `has_aux=True`: `f` returns the scalar first and auxiliary results after it, which
      are not differentiated (with `return_value` all of them precede the gradients).
    """
    wrt = list(wrt) or [i for i, p in enumerate(f.params) if p.dtype.is_float]
    check_differentiable_params(f, wrt, "reverse-ad")
    if not cotangent_params:
        if (len(f.outputs) != 1 and not has_aux) or not f.outputs or f.outputs[0].shape != () \
                or not f.outputs[0].dtype.is_float:
            got = ", ".join(str(t) for t in f.result_types)
            raise IrgradError(f"reverse-ad: the gradient needs @{f.name} to return one float "
                              f"scalar, but it returns ({got}); use vjp for other results")
    param_types = [p.type for p in f.params]
    names = [p.name for p in f.params]
    if cotangent_params:
        taken = set(names)
        for i, t in enumerate(f.result_types):
            nm = _unique(f"ct{i}" if len(f.result_types) > 1 else "ct", taken)
            param_types.append(t)
            names.append(nm)
    g = Function(name or f"grad_{f.name}", param_types, names)
    mapping = dict(zip(f.params, g.params))
    clone_ops_into(f.ops, g.body, mapping)
    fwd = Function(f.name, [], [])  # a view of the copied forward ops for the walk
    fwd.body.ops = list(g.body.ops)
    outputs = [mapping.get(v, v) for v in f.outputs]
    b = Builder(g.body)
    if cotangent_params:
        seeds: dict[Value, Value] = {}
        for out, ct in zip(outputs, g.params[len(f.params):]):
            if not out.dtype.is_float:
                continue
            seeds[out] = ct if out not in seeds else b.add(seeds[out], ct)
    else:
        seeds = {outputs[0]: b.ones_like(outputs[0])}
    grads = backpropagate(b, fwd, seeds, [g.params[i] for i in wrt])
    g.set_outputs((outputs if return_value else []) + grads)
    remove_dead_ops(g.body)
    return g


def _unique(name: str, taken: set) -> str:
    base, k = name, 1
    while name in taken:
        name = f"{base}_{k}"
        k += 1
    taken.add(name)
    return name


@register_pass
@dataclass(frozen=True)
class ReverseADPass(Pass):
    """Replace the function by its gradient (`wrt`: parameter indices, default all float
    parameters; `return-value`: also return the original results; `cotangent-params`: a
    VJP with one cotangent parameter per result instead of a scalar seed of 1)."""

    name: ClassVar[str] = "reverse-ad"
    wrt: tuple[int, ...] = ()
    return_value: bool = False
    cotangent_params: bool = False

    def run(self, f: Function) -> Function:
        return reverse_ad(f, self.wrt, self.return_value, self.cotangent_params, name=f.name)
