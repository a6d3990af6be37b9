"""The verifier: the rules every function must keep, checked after parsing and after every
pass.

- every operand is defined before its use, in the same block or (for top-level blocks)
  as a parameter; regions see only their own arguments and values;
- every value is defined once; every op belongs to exactly one block;
- the op exists, its attributes fit its schema, and its result types are what the
  registry infers from its operands and attributes;
- the returned values' types match the function's signature.

A `VerifyError` names the op and its line, and shows the lines around it: from the text
the function was parsed from when there is one, else from the printed function.
"""

from __future__ import annotations

from ..errors import ShapeError, TextSpan, VerifyError, caret_excerpt
from .core import Block, Function, Module, Operation
from .registry import check_attrs, get_op, infer_types


class _Fail(Exception):
    def __init__(self, message, op=None, block=None):
        self.message, self.op, self.block = message, op, block  # block: at its return


def verify_function(f: Function, text: str | None = None, filename: str = "<ir>") -> None:
    try:
        _check_function(f)
    except _Fail as e:
        raise _to_error(f, e, text, filename) from None


def verify_module(m: Module, text: str | None = None, filename: str = "<ir>") -> None:
    for f in m:
        verify_function(f, text, filename)


def verify(obj, text: str | None = None) -> None:
    """Verify a Module or a Function; raises VerifyError."""
    if isinstance(obj, Module):
        verify_module(obj, text)
    else:
        verify_function(obj, text)


def _check_function(f: Function) -> None:
    seen_ops: set[int] = set()
    defined: set = set()
    for p in f.params:
        if p in defined:
            raise _Fail(f"parameter %{p.name} appears twice")
        defined.add(p)
    _check_block(f.body, set(f.params), seen_ops, defined)
    if len(f.outputs) != len(f.result_types):
        raise _Fail(f"@{f.name} returns {len(f.outputs)} value(s) but its signature has "
                    f"{len(f.result_types)}", block=f.body)
    for i, (v, t) in enumerate(zip(f.outputs, f.result_types)):
        if v.type != t:
            raise _Fail(f"@{f.name} returns {v.type} as result {i}, but its signature says {t}",
                        block=f.body)


def _check_block(block: Block, visible: set, seen_ops: set, defined: set) -> None:
    work = [(block, visible)]
    while work:
        blk, vis = work.pop()
        for op in blk.ops:
            if id(op) in seen_ops:
                raise _Fail("the same op appears twice", op)
            seen_ops.add(id(op))
            for i, v in enumerate(op.operands):
                if v not in vis:
                    raise _Fail(f"operand {i} ({v.type}) is not defined before this use"
                                + (" in this region" if blk is not block else ""), op)
            _check_op(op)
            if op.mem is not None:
                _check_placement(op, block.args if blk is block else (), blk is block)
            for r in op.results:
                if r in defined or r.owner is not op:
                    raise _Fail("a result is defined twice", op)
                defined.add(r)
                vis.add(r)
            for region in op.regions:
                inner = set(region.args)
                for a in region.args:
                    defined.add(a)
                work.append((region, inner))
        for v in blk.outputs:
            if v not in vis:
                raise _Fail(f"a returned value ({v.type}) is not defined in its block",
                            blk.parent if isinstance(blk.parent, Operation) else None,
                            block=blk)


def _check_placement(op: Operation, params, top_level: bool) -> None:
    """A memory plan annotation: one placement per result, arena offsets aligned to 64
    bytes, parameters of the function with room for the result."""
    if not top_level:
        raise _Fail("ops inside a region have no memory placement", op)
    places = [p for p in op.mem if not isinstance(p, tuple)]
    if len(places) != len(op.results):
        raise _Fail(f"mem[...] lists {len(places)} placement(s) for {len(op.results)} result(s)", op)
    for r, p in zip(op.results, places):
        if isinstance(p, int):
            if p < 0 or p % 64:
                raise _Fail(f"arena offset {p} is not a non-negative multiple of 64", op)
        elif p not in params:
            raise _Fail("a result can only be placed in the arena or in a parameter's buffer", op)
        elif p.type.nbytes != r.type.nbytes:
            raise _Fail(f"%{p.name} ({p.type}) cannot hold a result of {r.type}", op)
    for p in op.mem:
        if isinstance(p, tuple) and (p[1] < 0 or p[1] % 64):
            raise _Fail(f"scratch offset {p[1]} is not a non-negative multiple of 64", op)


def _check_op(op: Operation) -> None:
    try:
        opdef = get_op(op.opname)
    except KeyError:
        raise _Fail(f"unknown op '{op.opname}'", op) from None
    try:
        attrs = check_attrs(opdef, op.attrs)
        if set(attrs) != set(op.attrs):
            raise ShapeError(f"'{op.opname}' attributes are not normalized")
        types = [v.type for v in op.operands]
        if opdef.has_region:
            inferred = opdef.infer(types, attrs, op.result_types, op.regions)
        else:
            inferred = infer_types(op.opname, types, attrs,
                                   op.result_types if opdef.declared_type else None)
    except ShapeError as e:
        raise _Fail(e.message, op) from None
    if list(inferred) != op.result_types:
        got = ", ".join(str(t) for t in op.result_types)
        want = ", ".join(str(t) for t in inferred)
        raise _Fail(f"result type {got} does not match the type inferred from its operands "
                    f"({want})", op)


def _to_error(f: Function, e: _Fail, text: str | None, filename: str) -> VerifyError:
    op = e.op
    if op is None and e.block is f.body:
        return _return_error(f, e, text, filename)
    if op is None:
        return VerifyError(e.message, None, None, None, filename)
    if text is not None and op.span is not None:
        line, src, fname = op.span.line, text, filename
        span = op.span
    else:
        from .printer import Printer
        p = Printer()
        p.function(f)
        line = p.op_lines.get(op)
        src, fname = p.text(), f"<@{f.name} as printed>"
        span = TextSpan(line or 1, 1, 1)
        if line is not None:
            col = p.lines[line - 1].find(f"= {op.opname}") + 3
            span = TextSpan(line, max(col, 1), len(op.opname))
    excerpt = caret_excerpt(src, span, context=2) if line is not None else None
    return VerifyError(e.message, op.opname, line, excerpt, fname,
                       span.col if line is not None else None)


def _return_error(f: Function, e: _Fail, text: str | None, filename: str) -> VerifyError:
    """An error about what the function returns, shown at its `return` line."""
    if text is not None and f.body.span is not None:
        span, src, fname = f.body.span, text, filename
    else:
        from .printer import print_function
        src, fname = print_function(f), f"<@{f.name} as printed>"
        lines = src.splitlines()
        line = max(i for i, ln in enumerate(lines, 1) if ln.startswith("  return"))
        span = TextSpan(line, lines[line - 1].find("return") + 1, len("return"))
    return VerifyError(e.message, "return", span.line, caret_excerpt(src, span, context=2),
                       fname, span.col)
