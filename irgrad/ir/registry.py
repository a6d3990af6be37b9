"""The op registry: one `OpDef` per primitive, holding everything irgrad knows about it.

An entry carries the op's attribute schema, its shape/dtype inference, its numpy
reference semantics (what the op *means*; the interpreter and the constant folder call
it), and its derivative rules written as IR builder calls:

- `vjp(b, op, cotangents, wanted) -> [operand cotangent or None]` emits the reverse-mode
  rule (None is a symbolic zero);
- `jvp(b, op, tangents) -> [result tangent or None]` emits the forward-mode rule.

Because the rules emit ordinary ops, gradients are IR and can be differentiated again.

An entry also states every fact a pass or a backend needs (its traits) and how it is
lowered to the kernel form (its hooks), so no pass, lowering or renderer keeps a list of
op names:

- traits: `elementwise`, `alias` (the result is the operand's bytes: a view in memory
  plans, the same linear index in fusion), `kernel` (the kernel it makes or joins:
  "loop", "reduce", "matmul", "scatter", "region" for an op that runs its region, or
  "expand" for one the `expand` pass rewrites first), `cost` (the work of recomputing one element, for
  fusion), `reduction` (the combining instruction of a reduction) and `identity` (the
  value it starts from, per dtype), `rereads` (each operand element is read by many
  result elements, as in a sliding window: fusion stores an expensive operand), `linear` (the
  coefficients of a linear combination of the operands), `scales` (linear in each operand
  when the others are constants), `instruction` (lowers to the scalar instruction of the
  same name, which every renderer spells);
- index maps: `operand_index(op, idx)` (the operand element a view reads for result
  element idx) and `result_index(op, idx, operand)` (where a permutation or a
  concatenation writes an operand's element);
- lowering: `reads(op, idx) -> [(operand, idx)]` and `build(ev, op, idx, kids) -> Sx`
  compute one result element in the scalar language of ir/scalar.py;
- `rules`: simplifications (passes/simplify.py), each `rule(rw, op) -> Value or None`;
- `expand(b, op, options) -> Value`: an op that no kernel computes directly (conv) is
  rewritten by the `expand` pass into ops that kernels do compute, built with `b`
  (`options`: the pass, whose fields pick algorithms).

The entries themselves live in `ir/ops/`, grouped by kind, one `register(...)` each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import ShapeError
from .types import DType, TensorType

ATTR_KINDS = ("int", "ints", "float", "dtype", "value", "str", "bool")


@dataclass(frozen=True)
class AttrSpec:
    kind: str
    required: bool = True
    default: Any = None

    def __post_init__(self):
        assert self.kind in ATTR_KINDS, self.kind


@dataclass
class OpDef:
    name: str
    infer: Callable  # (operand types, attrs, declared result types or None) -> [TensorType]
    reference: Callable  # (numpy inputs, op) -> [numpy arrays]
    vjp: Callable | None = None
    jvp: Callable | None = None
    attrs: dict[str, AttrSpec] = field(default_factory=dict)
    num_operands: int | None = None  # None: variadic
    declared_type: bool = False  # result type is part of the op (const, iota, broadcast, reshape)
    elementwise: bool = False  # same-shaped operands and result, computed element by element
    differentiable: bool = True  # False: the derivative is zero everywhere it exists
    has_region: bool = False
    doc: str = ""
    # traits (see the module docstring)
    alias: bool = False
    kernel: str = "loop"
    cost: int = 1
    reduction: str | None = None
    identity: Callable | None = None  # a reduction's starting value: dtype -> number
    rereads: bool = False
    linear: tuple | None = None
    scales: bool = False
    instruction: bool = False
    # index maps and lowering hooks
    operand_index: Callable | None = None
    result_index: Callable | None = None
    reads: Callable | None = None
    build: Callable | None = None
    rules: tuple = ()
    expand: Callable | None = None

    def __post_init__(self):
        if self.expand is not None:
            self.kernel = "expand"
        assert self.kernel in KERNELS, self.kernel
        if self.reads is None:
            if self.elementwise:
                self.reads = elementwise_reads
            elif self.operand_index is not None:
                self.reads = view_reads
        if self.build is None:
            if self.instruction:
                self.build = instruction_build
            elif self.alias or self.operand_index is not None:
                self.build = first_kid

    @property
    def view(self) -> bool:
        """A view: each result element is one operand element at an index map (broadcast,
        transpose, reshape, slice, stop_gradient), readable in place by a strided matmul."""
        return self.operand_index is not None

    @property
    def permutes(self) -> bool:
        """A bijective view (transpose, reshape, stop_gradient): it can be written through."""
        return self.operand_index is not None and self.result_index is not None


KERNELS = ("loop", "reduce", "matmul", "scatter", "region", "expand")


def elementwise_reads(op, idx):
    return [(i, idx) for i in range(len(op.operands))]


def view_reads(op, idx):
    return [(0, get_op(op.opname).operand_index(op, idx))]


def first_kid(ev, op, idx, kids):
    return kids[0]


def instruction_build(ev, op, idx, kids):
    from .scalar import instruction
    return instruction(op.opname, op.results[0].dtype, kids, op.operands[0].dtype)


REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in REGISTRY:
        raise ValueError(f"op '{opdef.name}' registered twice")
    REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name: str) -> OpDef:
    _ensure_loaded()
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(name) from None


def all_ops() -> dict[str, OpDef]:
    _ensure_loaded()
    return REGISTRY


_loaded = False


def _ensure_loaded():
    global _loaded
    if not _loaded:
        _loaded = True
        from .ops import conv, elementwise, kernel, random, reduce, shape, window  # noqa: F401  (they register)


def check_attrs(opdef: OpDef, attrs: dict) -> dict:
    """Validate and normalize an attribute dict against the op's schema.

    Returns a new dict with defaults filled in; raises ShapeError on a bad attribute.
    """
    out = {}
    for key in attrs:
        if key not in opdef.attrs:
            known = ", ".join(opdef.attrs) or "none"
            raise ShapeError(f"'{opdef.name}' has no attribute '{key}' (known: {known})")
    for key, spec in opdef.attrs.items():
        if key not in attrs:
            if spec.required:
                raise ShapeError(f"'{opdef.name}' needs attribute '{key}'")
            if spec.default is not None:
                out[key] = spec.default
            continue
        out[key] = _normalize_attr(opdef.name, key, spec.kind, attrs[key])
    return out


def _normalize_attr(opname, key, kind, v):
    if kind == "value" and isinstance(v, np.ndarray):
        return v  # (the common case first: a constant's value)
    bad = _BadAttr(opname, key, kind, v)
    if kind == "int":
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise bad.error()
        return int(v)
    if kind == "ints":
        if not isinstance(v, (list, tuple)) or any(
                isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) for x in v):
            raise bad.error()
        return tuple(int(x) for x in v)
    if kind == "float":
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise bad.error()
        return float(v)
    if kind == "dtype":
        if isinstance(v, DType):
            return v
        if isinstance(v, str):
            try:
                return DType(v)
            except ValueError:
                raise bad.error() from None
        raise bad.error()
    if kind == "str":
        if not isinstance(v, str):
            raise bad.error()
        return v
    if kind == "bool":
        if not isinstance(v, (bool, np.bool_)):
            raise bad.error()
        return bool(v)
    if kind == "value":
        if isinstance(v, np.ndarray):
            return v
        try:
            return np.asarray(v)
        except (ValueError, TypeError):
            raise bad.error() from None
    raise AssertionError(kind)


class _BadAttr:
    """The error for a bad attribute value, built only when raised (printing a large
    constant costs more than checking it)."""

    def __init__(self, opname, key, kind, v):
        self.args = (opname, key, kind, v)

    def error(self) -> ShapeError:
        opname, key, kind, v = self.args
        return ShapeError(f"'{opname}' attribute '{key}' must be {_KIND_WORDS[kind]}, got {v!r}")


_KIND_WORDS = {
    "int": "an integer", "ints": "a list of integers", "float": "a number",
    "dtype": "a dtype name (f32 f64 i32 i64 bool)", "value": "a number or a nested list",
    "str": "a quoted string", "bool": "true or false",
}


def infer_types(opname: str, operand_types, attrs: dict, declared=None) -> list[TensorType]:
    """Run the op's inference; raises ShapeError with a readable message."""
    opdef = get_op(opname)
    n = opdef.num_operands
    if n is not None and len(operand_types) != n:
        raise ShapeError(f"'{opname}' takes {n} operand{'s' * (n != 1)}, got {len(operand_types)}")
    if opdef.declared_type and declared is None:
        raise ShapeError(f"'{opname}' needs its result type written out")
    return opdef.infer(list(operand_types), attrs, declared)


# --- shared inference helpers used by the op files -------------------------------------------

def fmt_types(types) -> str:
    return ", ".join(str(t) for t in types)


def require_same(opname: str, types) -> TensorType:
    first = types[0]
    for t in types[1:]:
        if t != first:
            raise ShapeError(f"'{opname}' needs operands of one type, got {fmt_types(types)}")
    return first


def require_dtype(opname: str, t: TensorType, pred, words: str) -> None:
    if not pred(t.dtype):
        raise ShapeError(f"'{opname}' needs {words} operands, got {t}")


def normalize_axes(opname: str, axes, rank: int) -> tuple[int, ...]:
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise ShapeError(f"'{opname}' axis {a} is out of range for rank {rank}")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise ShapeError(f"'{opname}' has repeated axes {list(axes)}")
    return tuple(out)
