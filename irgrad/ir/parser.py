"""The IR text parser: reads what `printer.py` writes (and hand-edited variants of it).

Errors are `ParseError`s with `file:line:col`, the line and a caret. `parse` then runs the
verifier, whose `VerifyError`s point at the op's line in the same text.
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import ParseError, ShapeError, SourceLoc, TextSpan
from .core import Arena, Block, Function, InParam, Module, Operation, Placement, Value
from .lexer import Token, tokenize
from .registry import check_attrs, get_op
from .types import DType, TensorType
from .verifier import verify_module

_DTYPES = {d.value: d for d in DType}
MAX_REGION_DEPTH = 64  # regions nested deeper than this are refused (the parser recurses)


class Parser:
    def __init__(self, text: str, filename: str = "<ir>"):
        self.text = text
        self.filename = filename
        self.toks = tokenize(text, filename)
        self.pos = 0
        self.depth = 0  # regions open around the current op

    # -- token helpers ------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.toks[self.pos]

    def error(self, message: str, tok: Token | None = None) -> ParseError:
        tok = tok or self.tok
        return ParseError(message, self.text, tok.span, self.filename)

    def next(self) -> Token:
        t = self.toks[self.pos]
        self.pos += 1
        return t

    def at(self, text: str) -> bool:
        return self.tok.kind in ("punct", "ident") and self.tok.text == text

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.pos += 1
            return True
        return False

    def expect(self, text: str, what: str | None = None) -> Token:
        if not self.at(text):
            found = "end of input" if self.tok.kind == "eof" else f"'{self.tok.text}'"
            raise self.error(f"expected {what or repr(text)}, found {found}")
        return self.next()

    def expect_kind(self, kind: str, what: str) -> Token:
        if self.tok.kind != kind:
            found = "end of input" if self.tok.kind == "eof" else f"'{self.tok.text}'"
            raise self.error(f"expected {what}, found {found}")
        return self.next()

    # -- grammar ------------------------------------------------------------------------------
    def module(self) -> Module:
        m = Module()
        while self.tok.kind != "eof":
            start = self.tok
            f = self.function()
            if f.name in m.functions:
                raise self.error(f"function @{f.name} is defined twice", start)
            m.add(f)
        return m

    def function(self) -> Function:
        func_tok = self.expect("func", "'func'")
        name = self.expect_kind("func_name", "a function name like @loss").text[1:]
        scope: dict[str, Value] = {}
        params, names = self.param_list(scope, "(", ")")
        self.expect("->", "'->' and the result types")
        if self.at("("):
            self.next()
            results = []
            if not self.at(")"):
                results.append(self.type())
                while self.accept(","):
                    results.append(self.type())
            self.expect(")")
        else:
            results = [self.type()]
        fattrs = {}
        if self.accept("attributes"):
            fattrs = {k: v for k, (v, _) in self.attr_dict().items()}
        f = Function(name, [t for _, t in params], names, results)
        f.attrs = fattrs
        f.span = func_tok.span
        for (tok, _), v in zip(params, f.params):
            scope[tok.text[1:]] = v
        self.expect("{", "'{' to open the function body")
        self.block_body(f.body, scope, "return")
        self.expect("}", "'}' to close the function")
        return f

    def param_list(self, scope, open_, close):
        self.expect(open_)
        params, names, seen = [], [], set()
        if not self.at(close):
            while True:
                tok = self.expect_kind("value", "a parameter like %x")
                if tok.text[1:] in seen or tok.text[1:] in scope:
                    raise self.error(f"{tok.text} is defined twice", tok)
                seen.add(tok.text[1:])
                self.expect(":", "':' and a type")
                params.append((tok, self.type()))
                names.append(tok.text[1:])
                if not self.accept(","):
                    break
        self.expect(close, f"',' or '{close}'")
        return params, names

    def type(self) -> TensorType:
        tok = self.expect_kind("ident", "a type like f32[64,10]")
        if tok.text not in _DTYPES:
            raise self.error(f"unknown dtype '{tok.text}' (known: f32 f64 i32 i64 bool)", tok)
        self.expect("[", "'[' and the shape")
        dims = []
        if not self.at("]"):
            while True:
                d = self.expect_kind("int", "a dimension size")
                if int(d.text) < 0:
                    raise self.error("dimension sizes cannot be negative", d)
                dims.append(int(d.text))
                if not self.accept(","):
                    break
        self.expect("]", "',' or ']'")
        try:
            return TensorType(_DTYPES[tok.text], tuple(dims))
        except ShapeError as e:
            raise self.error(e.message, tok) from None

    def block_body(self, block: Block, scope: dict, terminator: str) -> None:
        while True:
            if self.at(terminator):
                block.span = self.next().span
                block.outputs = self.value_list(scope)
                return
            if self.tok.kind != "value":
                found = "end of input" if self.tok.kind == "eof" else f"'{self.tok.text}'"
                raise self.error(f"expected an op like '%0 = add %a, %b : f32[3]' or "
                                 f"'{terminator}', found {found}")
            block.append(self.operation(scope))

    def value_list(self, scope) -> list[Value]:
        vals = [self.use(scope)]
        while self.accept(","):
            vals.append(self.use(scope))
        return vals

    def use(self, scope) -> Value:
        tok = self.expect_kind("value", "a value like %x")
        try:
            return scope[tok.text[1:]]
        except KeyError:
            if isinstance(scope, _RegionScope) and tok.text[1:] in scope.outer:
                raise self.error(f"a region cannot use {tok.text} from outside it; pass it as an "
                                 f"operand of the op that owns the region", tok) from None
            raise self.error(f"use of undefined value {tok.text}", tok) from None

    def operation(self, scope) -> Operation:
        result_toks = [self.expect_kind("value", "a result name")]
        while self.accept(","):
            result_toks.append(self.expect_kind("value", "a result name"))
        self.expect("=", "'='")
        name_tok = self.expect_kind("ident", "an op name")
        try:
            opdef = get_op(name_tok.text)
        except KeyError:
            raise self.error(f"unknown op '{name_tok.text}'", name_tok) from None
        operands = []
        if self.tok.kind == "value":
            operands = self.value_list(scope)
        raw_attrs = self.attr_dict() if self.at("{") else {}
        self.expect(":", "':' and the result type")
        types = [self.type()]
        while self.accept(","):
            types.append(self.type())
        if len(types) != len(result_toks):
            raise self.error(f"{len(result_toks)} result name(s) but {len(types)} type(s)", name_tok)
        mem = self.placement(scope) if self.at("mem") else None
        loc = self.loc() if self.at("loc") else None
        attrs = self.convert_attrs(opdef, raw_attrs, types, name_tok)
        regions = []
        if self.at("{"):
            if not opdef.has_region:
                raise self.error(f"'{opdef.name}' takes no region")
            regions.append(self.region(scope))
        elif opdef.has_region:
            raise self.error(f"'{opdef.name}' needs a region '{{ ... }}' after its type")
        op = Operation(name_tok.text, operands, types, attrs, regions, loc, name_tok.span)
        op.mem = mem
        for tok, r in zip(result_toks, op.results):
            key = tok.text[1:]
            if key in scope:
                raise self.error(f"{tok.text} is defined twice", tok)
            scope[key] = r
        return op

    def region(self, outer_scope) -> Block:
        if self.depth >= MAX_REGION_DEPTH:
            raise self.error(f"regions nest deeper than {MAX_REGION_DEPTH} levels")
        self.depth += 1
        try:
            return self._region(outer_scope)
        finally:
            self.depth -= 1

    def _region(self, outer_scope) -> Block:
        self.expect("{")
        # A region sees only its own arguments and values (it is isolated from above),
        # but its names must not shadow outer ones, so printing stays unambiguous.
        params, names = self.param_list(outer_scope, "(", ")")
        self.expect(":", "':' after the region arguments")
        block = Block([t for _, t in params], [None] * len(params))
        inner = {}
        for (tok, _), a in zip(params, block.args):
            inner[tok.text[1:]] = a
        scope = _RegionScope(inner, outer_scope)
        self.block_body(block, scope, "yield")
        self.expect("}", "'}' to close the region")
        return block

    def placement(self, scope) -> Placement:
        """`mem[OFFSET or %param, ...]` then optionally `scratch[OFFSET, ...]`."""
        self.expect("mem")
        self.expect("[", "'[' and the placement of each result")
        places, scratch = [], []
        while True:
            if self.tok.kind == "int":
                tok = self.next()
                if int(tok.text) < 0:
                    raise self.error("an arena offset cannot be negative", tok)
                places.append(Arena(int(tok.text)))
            else:
                places.append(InParam(self.use(scope)))
            if not self.accept(","):
                break
        self.expect("]", "',' or ']'")
        if self.accept("scratch"):
            self.expect("[")
            while True:
                tok = self.expect_kind("int", "a scratch offset")
                scratch.append(int(tok.text))
                if not self.accept(","):
                    break
            self.expect("]", "',' or ']'")
        return Placement(tuple(places), tuple(scratch))

    def loc(self) -> SourceLoc:
        self.expect("loc")
        self.expect("(")
        f = self.expect_kind("string", "a quoted file name")
        self.expect(":")
        line = self.expect_kind("int", "a line number")
        self.expect(")")
        return SourceLoc(self.string(f), int(line.text))

    def string(self, tok: Token) -> str:
        """The text of a quoted string token (JSON escapes: \\n \\" \\uXXXX ...)."""
        try:
            return json.loads(tok.text)
        except json.JSONDecodeError as e:
            msg = e.msg.removesuffix(" starting at").removesuffix(" at")
            at = TextSpan(tok.span.line, tok.span.col + e.pos, 1)
            raise ParseError(f"bad string: {msg.lower()}", self.text, at, self.filename) from None

    # -- attributes ---------------------------------------------------------------------------
    def attr_dict(self) -> dict:
        self.expect("{")
        out = {}
        if not self.at("}"):
            while True:
                key = self.expect_kind("ident", "an attribute name")
                if key.text in out:
                    raise self.error(f"attribute '{key.text}' given twice", key)
                self.expect("=", "'=' and a value")
                out[key.text] = (self.attr_value(), key)
                if not self.accept(","):
                    break
        self.expect("}", "',' or '}'")
        return out

    def attr_value(self):
        tok = self.tok
        if tok.kind == "int":
            self.next()
            return int(tok.text)
        if tok.kind == "float":
            self.next()
            return float(tok.text)
        if tok.kind == "string":
            self.next()
            return self.string(tok)
        if tok.kind == "ident":
            self.next()
            if tok.text in ("true", "false"):
                return tok.text == "true"
            if tok.text in _DTYPES:
                return _DTYPES[tok.text]
            raise self.error(f"unexpected '{tok.text}' in an attribute value", tok)
        if self.at("["):
            return self.attr_list()
        raise self.error("expected an attribute value (number, list, dtype, string, true/false)")

    def attr_list(self) -> list:
        # Nested lists are read with an explicit stack so huge constants cannot overflow;
        # a tight loop over the tokens, since dense constants can be long.
        self.expect("[")
        toks, pos = self.toks, self.pos
        stack: list = [[]]
        expect_item = True  # after '[' or ',': an item or ']' (after '['); else ',' or ']'
        while True:
            tok = toks[pos]
            kind, text = tok.kind, tok.text
            if kind == "punct" and text == "]":
                pos += 1
                done = stack.pop()
                if not stack:
                    self.pos = pos
                    return done
                stack[-1].append(done)
                expect_item = False
                continue
            if not expect_item:
                if kind == "punct" and text == ",":
                    pos += 1
                    expect_item = True
                    continue
                self.pos = pos
                raise self.error("expected ',' or ']'")
            if kind == "punct" and text == "[":
                stack.append([])
            elif kind == "int":
                stack[-1].append(int(text))
                expect_item = False
            elif kind == "float":
                stack[-1].append(float(text))
                expect_item = False
            elif kind == "ident" and text in ("true", "false"):
                stack[-1].append(text == "true")
                expect_item = False
            else:
                self.pos = pos
                raise self.error("expected a number, true/false, '[' or ']' in a list")
            pos += 1

    def convert_attrs(self, opdef, raw: dict, types, name_tok) -> dict:
        attrs = {k: v for k, (v, _) in raw.items()}
        for key, (v, tok) in raw.items():
            spec = opdef.attrs.get(key)
            if spec is not None and spec.kind == "value":
                attrs[key] = self.dense_value(v, types[0].dtype if types else DType.f64, tok)
        try:
            return check_attrs(opdef, attrs)
        except ShapeError as e:
            bad = next((t for k, (_, t) in raw.items() if f"'{k}'" in e.message), name_tok)
            raise self.error(e.message, bad) from None

    def dense_value(self, v, dtype: DType, tok: Token) -> np.ndarray:
        if isinstance(v, (str, DType)):
            raise self.error("a dense value must be a number, true/false, or a nested list "
                             "of them", tok)
        try:
            arr = np.array(v)
            if arr.dtype == object:  # rectangular but with ints too big for int64
                arr = np.array(v, dtype=np.float64)
                if not dtype.is_float:
                    raise self.error(f"a value does not fit in {dtype}", tok)
        except (ValueError, TypeError, OverflowError):
            raise self.error("a dense value must be a rectangular nested list", tok) from None
        if arr.dtype.kind not in "biuf":
            raise self.error("a dense value must be a number, true/false, or a nested list "
                             "of them", tok)
        if dtype is DType.bool:
            if arr.size and arr.dtype != np.bool_:
                raise self.error("a bool constant needs true/false values", tok)
            return arr.astype(np.bool_)
        if arr.size and (arr.dtype == np.bool_ or _has_bool(v)):  # numpy turns true into 1
            raise self.error(f"a {dtype} constant needs numbers, not true/false", tok)
        if dtype.is_int:
            if arr.size and arr.dtype.kind == "f":
                raise self.error(f"an {dtype} constant needs integer values", tok)
            info = np.iinfo(dtype.np)
            if arr.size and (arr.min() < info.min or arr.max() > info.max):
                raise self.error(f"a value does not fit in {dtype}", tok)
        with np.errstate(over="ignore"):
            return arr.astype(dtype.np)


def _has_bool(v) -> bool:
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, bool):
            return True
        if isinstance(x, list):
            stack.extend(x)
    return False


class _RegionScope(dict):
    """Region lookups: own names only, but report outer names clearly."""

    def __init__(self, inner, outer):
        super().__init__(inner)
        self.outer = outer

    def __contains__(self, key):
        return dict.__contains__(self, key) or key in self.outer


def parse(text: str, filename: str = "<ir>", verify: bool = True) -> Module:
    """Parse IR text into a Module and (by default) verify it."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ParseError(f"IR text must be UTF-8 (byte {e.start} is not)", "", TextSpan(1, 1), filename) from None
    if not isinstance(text, str):
        raise ParseError(f"parse() takes IR text (a str), got {type(text).__name__}", "",
                         TextSpan(1, 1), filename)
    m = Parser(text, filename).module()
    if verify:
        verify_module(m, text=text, filename=filename)
    return m


def parse_function(text: str, filename: str = "<ir>") -> Function:
    m = parse(text, filename)
    if len(m.functions) != 1:
        raise ParseError(f"expected one function, found {len(m.functions)}", text,
                         TextSpan(1, 1), filename)
    return next(iter(m))
