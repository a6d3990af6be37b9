"""The IR text printer (the parser in `parser.py` reads exactly this back).

Format (MLIR-like, one op a line):

    func @loss(%w: f32[64,10], %x: f32[32,64]) -> f32[] {
      %0 = matmul %x, %w : f32[32,10]                            loc("model.py":8)
      ...
      return %9
    }

Parameters keep their names; op results are numbered in order through the whole function,
regions included, so printing is deterministic and `parse(print(f))` prints identically.
A region (a fused kernel's body) follows its op's line, indented one level deeper:

      %5 = fused %0, %b {kind="loop"} : f32[32,10] {
        (%6: f32[32,10], %7: f32[10]):
        %8 = broadcast %7 {dims=[1]} : f32[32,10]
        %9 = add %6, %8 : f32[32,10]
        yield %9
      }
"""

from __future__ import annotations

import json
import re

import numpy as np

from .core import Arena, Function, Module, Operation, Value
from .types import DType

LOC_COLUMN = 60
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def format_float(x: float, dtype: DType = DType.f64) -> str:
    """Shortest text that reads back bit-exactly in `dtype` (inf, -inf, nan included)."""
    x = float(x)
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    s = str(np.float32(x)) if dtype is DType.f32 else repr(x)
    if not any(c in s for c in ".eEn"):
        s += ".0"
    return s


def format_scalar(v, dtype: DType) -> str:
    if dtype is DType.bool:
        return "true" if bool(v) else "false"
    if dtype.is_int:
        return str(int(v))
    return format_float(v, dtype)


def format_dense(arr: np.ndarray) -> str:
    dtype = DType.from_numpy(arr.dtype)
    if arr.ndim == 0:
        return format_scalar(arr.item(), dtype)
    if arr.size == 0:
        # Nested brackets cannot spell the shape of an empty array ([[]] reads back as
        # [1,0]); an empty tensor is trivially a splat, so print one number.
        return format_scalar(0, dtype)
    flat = [format_scalar(v, dtype) for v in arr.reshape(-1).tolist()]
    # Build nested brackets from the innermost axis outwards (no recursion on data).
    items = flat
    for d in reversed(arr.shape):
        items = ["[" + ", ".join(items[i:i + d]) + "]" for i in range(0, len(items), d)]
    return items[0]


def _format_leaf(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format_float(v)
    if isinstance(v, DType):
        return v.value
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, np.ndarray):
        return format_dense(v)
    raise TypeError(f"cannot print attribute value {v!r}")


def format_attr(v) -> str:
    """An attribute value as text; lists (function attributes as the parser reads them)
    of any depth, printed without recursion."""
    if not isinstance(v, (tuple, list)):
        return _format_leaf(v)
    out: list[str] = []
    stack = [(v, 0)]  # (list, next index)
    out.append("[")
    while stack:
        seq, i = stack[-1]
        if i == len(seq):
            out.append("]")
            stack.pop()
            continue
        stack[-1] = (seq, i + 1)
        if i:
            out.append(", ")
        x = seq[i]
        if isinstance(x, (tuple, list)):
            out.append("[")
            stack.append((x, 0))
        else:
            out.append(_format_leaf(x))
    return "".join(out)


def format_placement(mem, namer) -> str:
    """The memory plan of an op: ` mem[OFFSET or %param, ...]` and ` scratch[OFFSET]`."""
    places = ", ".join(str(p.offset) if isinstance(p, Arena) else namer(p.param) for p in mem.results)
    text = f" mem[{places}]"
    if mem.scratch:
        text += " scratch[" + ", ".join(str(s) for s in mem.scratch) + "]"
    return text


def format_loc(loc) -> str:
    return f"loc({json.dumps(loc.file)}:{loc.line})"


class _Namer:
    def __init__(self):
        self.names: dict[Value, str] = {}
        self.counter = 0
        self.taken: set[str] = set()

    def param(self, v: Value, i: int) -> str:
        base = v.name if v.name and _NAME_RE.match(v.name) else f"arg{i}"
        name, k = base, 1
        while name in self.taken:
            name = f"{base}_{k}"
            k += 1
        self.taken.add(name)
        self.names[v] = name
        return name

    def fresh(self, v: Value) -> str:
        while str(self.counter) in self.taken:
            self.counter += 1
        name = str(self.counter)
        self.counter += 1
        self.names[v] = name
        return name

    def __call__(self, v: Value) -> str:
        try:
            return "%" + self.names[v]
        except KeyError:
            return f"%<undefined {v.type}>"


class Printer:
    """Prints functions; records the text line of every op (for verifier messages)."""

    def __init__(self):
        self.lines: list[str] = []
        self.op_lines: dict[Operation, int] = {}

    def function(self, f: Function) -> None:
        namer = _Namer()
        params = ", ".join(f"%{namer.param(p, i)}: {p.type}" for i, p in enumerate(f.params))
        res = f.result_types
        rtext = str(res[0]) if len(res) == 1 else "(" + ", ".join(str(t) for t in res) + ")"
        attrs = ""
        if f.attrs:
            attrs = " attributes {" + ", ".join(f"{k}={format_attr(v)}" for k, v in f.attrs.items()) + "}"
        self.lines.append(f"func @{f.name}({params}) -> {rtext}{attrs} {{")
        # Explicit stack of (block, next op index, indent) frames: no recursion on depth.
        stack = [(f.body, 0, 1)]
        while stack:
            block, i, depth = stack.pop()
            pad = "  " * depth
            if i < len(block.ops):
                op = block.ops[i]
                stack.append((block, i + 1, depth))
                self._op(op, namer, pad)
                if op.regions:
                    region = op.regions[0]
                    args = ", ".join(f"{namer(a) if a in namer.names else '%' + namer.fresh(a)}: {a.type}"
                                     for a in region.args)
                    self.lines.append(f"{pad}  ({args}):")
                    stack.append((region, 0, depth + 1))
                continue
            outs = ", ".join(namer(v) for v in block.outputs)
            if depth == 1:
                self.lines.append(f"{pad}return {outs}")
            else:
                self.lines.append(f"{pad}yield {outs}")
                self.lines.append("  " * (depth - 1) + "}")
        self.lines.append("}")

    def _op(self, op: Operation, namer: _Namer, pad: str) -> None:
        results = ", ".join("%" + namer.fresh(r) for r in op.results)
        text = f"{pad}{results} = {op.opname}" if op.results else f"{pad}{op.opname}"
        if op.operands:
            text += " " + ", ".join(namer(v) for v in op.operands)
        if op.attrs:
            text += " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in op.attrs.items()) + "}"
        text += " : " + ", ".join(str(t) for t in op.result_types)
        if op.mem is not None:
            text += format_placement(op.mem, namer)
        if op.loc is not None:
            text = text.ljust(LOC_COLUMN) + "  " + format_loc(op.loc)
        if op.regions:
            text += " {"
        self.op_lines[op] = len(self.lines) + 1
        self.lines.append(text)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def print_function(f: Function) -> str:
    p = Printer()
    p.function(f)
    return p.text()


def print_module(m: Module) -> str:
    return "\n".join(print_function(f) for f in m)
