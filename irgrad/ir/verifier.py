"""The verifier: the rules every function must keep, checked after parsing and after every
pass.

- every operand is defined before its use, in the same block or (for top-level blocks)
  as a parameter; regions see only their own arguments and values;
- every value is defined once; every op belongs to exactly one block;
- the op exists, its attributes fit its schema, and its result types are what the
  registry infers from its operands and attributes;
- the returned values' types match the function's signature;
- `donate` pairs results with distinct parameters of the same type; a memory plan, if the function carries one, is sound (ir/plan.py:
  the same proof that `plan-memory` and the lowering rely on).

A `VerifyError` names the op and its line, and shows the lines around it: from the text
the function was parsed from when there is one, else from the printed function.
"""

from __future__ import annotations

from ..errors import ShapeError, TextSpan, VerifyError, caret_excerpt
from .core import Block, Function, Module, Operation
from .plan import has_plan, plan_problem
from .printer import Printer, print_function
from .registry import check_attrs, get_op, infer_types


class _Fail(Exception):
    def __init__(self, message, op=None, block=None, header=False):
        self.message, self.op, self.block = message, op, block  # block: at its return
        self.header = header  # about the function itself: shown at its `func` line


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
    _check_outputs(f)
    _check_function_attrs(f)
    if has_plan(f):
        problem = plan_problem(f)
        if problem is not None:
            raise _Fail(problem[0], problem[1], header=problem[1] is None)


def _check_function_attrs(f: Function) -> None:
    """`donate` and the plan's attributes mean something; other function attributes are
    annotations that nothing reads."""
    donate = f.attrs.get("donate")
    if donate is None:
        return
    n = len(f.params)
    if not isinstance(donate, (list, tuple)) or any(
            isinstance(d, bool) or not isinstance(d, int) for d in donate):
        raise _Fail(f"@{f.name}: 'donate' must be a list of integers (a parameter index or -1 per "
                    f"result), got {donate!r}", header=True)
    if len(donate) != len(f.result_types):
        raise _Fail(f"@{f.name}: 'donate' lists {len(donate)} entries for {len(f.result_types)} "
                    f"result(s)", header=True)
    seen = set()
    for i, d in enumerate(donate):
        if d == -1:
            continue
        if not 0 <= d < n:
            raise _Fail(f"@{f.name}: 'donate' entry {i} is {d}, not -1 or a parameter index "
                        f"(0..{n - 1})", header=True)
        if d in seen:
            raise _Fail(f"@{f.name}: 'donate' gives parameter {d} to two results", header=True)
        seen.add(d)
        if f.params[d].type != f.result_types[i]:
            raise _Fail(f"@{f.name}: 'donate' pairs result {i} ({f.result_types[i]}) with "
                        f"%{f.params[d].name} ({f.params[d].type}); their types differ", header=True)
    if isinstance(donate, list):
        f.attrs["donate"] = tuple(donate)  # as the printer and the planner expect


def _check_outputs(f: Function) -> None:
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
            if op.mem is not None and blk is not block:
                raise _Fail("ops inside a region have no memory placement", op)
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
    if e.header:
        return _header_error(f, e, text, filename)
    if op is None and e.block is f.body:
        return _return_error(f, e, text, filename)
    if op is None:
        return VerifyError(e.message, None, None, None, filename)
    if text is not None and op.span is not None:
        line, src, fname = op.span.line, text, filename
        span = op.span
    else:
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
        src, fname = print_function(f), f"<@{f.name} as printed>"
        lines = src.splitlines()
        line = max(i for i, ln in enumerate(lines, 1) if ln.startswith("  return"))
        span = TextSpan(line, lines[line - 1].find("return") + 1, len("return"))
    return VerifyError(e.message, "return", span.line, caret_excerpt(src, span, context=2),
                       fname, span.col)


def _header_error(f: Function, e: _Fail, text: str | None, filename: str) -> VerifyError:
    """An error about the function as a whole, shown at its `func` line."""
    span = getattr(f, "span", None)
    if text is None or span is None:
        src, fname = print_function(f), f"<@{f.name} as printed>"
        span = TextSpan(1, 1, len("func"))
    else:
        src, fname = text, filename
    return VerifyError(e.message, None, span.line, caret_excerpt(src, span, context=0),
                       fname, span.col)
