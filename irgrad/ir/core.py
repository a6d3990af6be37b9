"""Values, operations, blocks, functions and modules: the SSA data structures.

A `Function` owns one `Block` (its parameters are the block's arguments, its results the
block's outputs). An `Operation` may own regions (blocks of their own, e.g. a fused
kernel's body); a region's arguments stand for the op's operands and its outputs are the
op's results. Every walk over these structures is iterative, so 20,000-op chains are fine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from ..errors import SourceLoc, TextSpan
from .types import TensorType


class Value:
    """An SSA value: the result of an op or an argument of a block."""

    __slots__ = ("type", "owner", "index", "name")

    def __init__(self, type: TensorType, owner=None, index: int = 0, name: str | None = None):
        self.type = type
        self.owner = owner  # Operation that defines it, or Block whose argument it is
        self.index = index
        self.name = name  # a name hint; parameters keep theirs when printed

    @property
    def op(self) -> "Operation | None":
        return self.owner if isinstance(self.owner, Operation) else None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self):
        return self.type.dtype

    def __repr__(self) -> str:
        where = self.owner.opname if isinstance(self.owner, Operation) else "arg"
        return f"<Value {self.name or ''}:{self.type} from {where}>"


@dataclass(frozen=True)
class Arena:
    """A result placed at a byte offset of the arena (`mem[64]`)."""

    offset: int


@dataclass(frozen=True)
class InParam:
    """A result written into (or viewing) a parameter's buffer (`mem[%w]`)."""

    param: "Value"


@dataclass(frozen=True)
class Placement:
    """An op's memory plan (plan-memory, or hand-written IR; ir/plan.py proves it): one
    place per result, and the arena offsets of its kernel's scratch buffers."""

    results: tuple  # of Arena | InParam
    scratch: tuple = ()  # of int

    @staticmethod
    def of(*places, scratch=()) -> "Placement":
        """From arena offsets (ints) and parameters (Values): `Placement.of(0, w)`."""
        return Placement(tuple(p if isinstance(p, (Arena, InParam)) else
                               InParam(p) if isinstance(p, Value) else Arena(p) for p in places),
                         tuple(scratch))

    def remap(self, mapping: dict) -> "Placement":
        """The same placement with parameters renamed through `mapping` (cloning)."""
        return Placement(tuple(InParam(mapping.get(p.param, p.param)) if isinstance(p, InParam) else p
                               for p in self.results), self.scratch)


class Operation:
    """One op: `results = opname(operands) {attrs}`, optionally owning regions."""

    __slots__ = ("opname", "operands", "attrs", "results", "regions", "loc", "span", "parent", "mem")

    def __init__(self, opname: str, operands, result_types, attrs=None, regions=None,
                 loc: SourceLoc | None = None, span: TextSpan | None = None):
        self.opname = opname
        self.operands: list[Value] = list(operands)
        self.attrs: dict = dict(attrs or {})
        self.results: list[Value] = [Value(t, self, i) for i, t in enumerate(result_types)]
        self.regions: list[Block] = list(regions or [])
        for r in self.regions:
            r.parent = self
        self.loc = loc
        self.span = span  # where the op was in parsed IR text (for verifier messages)
        self.parent: Block | None = None
        self.mem: Placement | None = None  # the memory plan, once there is one

    @property
    def result(self) -> Value:
        if len(self.results) != 1:
            raise ValueError(f"'{self.opname}' has {len(self.results)} results, not one")
        return self.results[0]

    @property
    def result_types(self) -> list[TensorType]:
        return [r.type for r in self.results]

    def __repr__(self) -> str:
        return f"<Operation {self.opname} {[str(t) for t in self.result_types]}>"


class Block:
    """A straight-line list of ops with arguments and output values."""

    __slots__ = ("args", "ops", "outputs", "parent", "span")

    def __init__(self, arg_types=(), arg_names=None):
        names = list(arg_names) if arg_names is not None else [None] * len(arg_types)
        self.args: list[Value] = [Value(t, self, i, n) for i, (t, n) in enumerate(zip(arg_types, names))]
        self.ops: list[Operation] = []
        self.outputs: list[Value] = []
        self.parent: Operation | Function | None = None
        self.span: TextSpan | None = None  # where its return/yield was in parsed IR text

    def append(self, op: Operation) -> Operation:
        op.parent = self
        self.ops.append(op)
        return op

    def walk(self) -> Iterator[Operation]:
        """Every op in this block and in nested regions, parents before children."""
        stack = [iter(self.ops)]
        while stack:
            op = next(stack[-1], None)
            if op is None:
                stack.pop()
                continue
            yield op
            for r in reversed(op.regions):
                stack.append(iter(r.ops))


class Function:
    """A named function: parameters, a body block, and result types."""

    def __init__(self, name: str, param_types, param_names=None, result_types=None):
        self.name = name
        self.body = Block(param_types, param_names)
        self.body.parent = self
        self.result_types: list[TensorType] = list(result_types or [])
        self.attrs: dict = {}  # function-level annotations (e.g. the memory plan summary)
        self.span: TextSpan | None = None  # where `func` was in parsed IR text

    @property
    def params(self) -> list[Value]:
        return self.body.args

    @property
    def ops(self) -> list[Operation]:
        return self.body.ops

    @property
    def outputs(self) -> list[Value]:
        return self.body.outputs

    def set_outputs(self, values) -> None:
        self.body.outputs = list(values)
        self.result_types = [v.type for v in self.body.outputs]

    def walk(self) -> Iterator[Operation]:
        return self.body.walk()

    def num_ops(self) -> int:
        return sum(1 for _ in self.walk())

    def __str__(self) -> str:
        from .printer import print_function
        return print_function(self)

    def __repr__(self) -> str:
        return f"<Function @{self.name} ({len(self.params)} params, {len(self.ops)} ops)>"


class Module:
    """An ordered collection of functions, the unit of parsing and printing."""

    def __init__(self, functions=()):
        self.functions: dict[str, Function] = {}
        for f in functions:
            self.add(f)

    def add(self, f: Function) -> Function:
        self.functions[f.name] = f
        return f

    def __iter__(self):
        return iter(self.functions.values())

    def __getitem__(self, name: str) -> Function:
        return self.functions[name]

    def __str__(self) -> str:
        from .printer import print_module
        return print_module(self)

    def __repr__(self) -> str:
        return f"<Module {list(self.functions)}>"


def compute_uses(block: Block) -> dict[Value, list[tuple[Operation, int]]]:
    """Value -> [(user op, operand index)] over the block and its nested regions.

    Outputs of a block are recorded with op None (index = output position).
    """
    uses: dict[Value, list] = {}
    for op in block.walk():
        for i, v in enumerate(op.operands):
            uses.setdefault(v, []).append((op, i))
    stack = [block]
    while stack:
        b = stack.pop()
        for i, v in enumerate(b.outputs):
            uses.setdefault(v, []).append((None, i))
        for op in b.ops:
            stack.extend(op.regions)
    return uses


def clone_ops_into(ops, target: Block, mapping: dict) -> None:
    """Append copies of `ops` to `target`, renaming operands through `mapping` (updated).

    Regions are copied deeply. Values absent from `mapping` are used as they are.
    """
    for op in ops:
        regions = [clone_block(r, mapping) for r in op.regions]
        new = Operation(op.opname, [mapping.get(v, v) for v in op.operands],
                        op.result_types, op.attrs, regions, op.loc, op.span)
        if op.mem is not None:
            new.mem = op.mem.remap(mapping)
        for old_r, new_r in zip(op.results, new.results):
            new_r.name = old_r.name
            mapping[old_r] = new_r
        target.append(new)


def clone_block(block: Block, mapping: dict | None = None) -> Block:
    mapping = {} if mapping is None else mapping
    nb = Block([a.type for a in block.args], [a.name for a in block.args])
    for a, na in zip(block.args, nb.args):
        mapping[a] = na
    clone_ops_into(block.ops, nb, mapping)
    nb.outputs = [mapping.get(v, v) for v in block.outputs]
    return nb


def clone_function(f: Function, name: str | None = None) -> Function:
    """A deep copy of `f` (values are new objects; attributes are shared, they are immutable)."""
    nf = Function(name or f.name, [p.type for p in f.params], [p.name for p in f.params])
    mapping = dict(zip(f.params, nf.params))
    clone_ops_into(f.ops, nf.body, mapping)
    nf.set_outputs([mapping.get(v, v) for v in f.outputs])
    nf.result_types = list(f.result_types)
    nf.attrs = dict(f.attrs)
    return nf
