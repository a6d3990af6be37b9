"""Tokens of the IR text format; every token keeps its span for error carets."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ParseError, TextSpan


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # value func_name ident int float string punct eof
    text: str
    span: TextSpan


_TOKEN_RE = re.compile(r"""
    (?P<ws>[ \t\r]+)
  | (?P<newline>\n)
  | (?P<comment>//[^\n]*)
  | (?P<value>%[A-Za-z0-9_.]+)
  | (?P<func_name>@[A-Za-z0-9_.]+)
  | (?P<float>-?(?:(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|inf\b|nan\b))
  | (?P<int>-?\d+)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<arrow>->)
  | (?P<punct>[()\[\]{},:=])
""", re.VERBOSE)


def tokenize(text: str, filename: str = "<ir>") -> list[Token]:
    tokens: list[Token] = []
    pos, line, line_start = 0, 1, 0
    n = len(text)
    while pos < n:
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            span = TextSpan(line, pos - line_start + 1, 1)
            ch = text[pos]
            what = "an unterminated string" if ch == '"' else f"unexpected character {ch!r}"
            raise ParseError(what, text, span, filename)
        kind = m.lastgroup
        tok_text = m.group()
        if kind == "newline":
            line += 1
            line_start = m.end()
        elif kind not in ("ws", "comment"):
            if kind == "arrow":
                kind = "punct"
            tokens.append(Token(kind, tok_text, TextSpan(line, pos - line_start + 1, len(tok_text))))
        pos = m.end()
    tokens.append(Token("eof", "", TextSpan(line, pos - line_start + 1, 1)))
    return tokens
