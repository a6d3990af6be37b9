"""Tokens of the IR text format; every token keeps its span for error carets."""

from __future__ import annotations

import re
from typing import NamedTuple

from ..errors import ParseError, TextSpan


class Token(NamedTuple):
    kind: str  # value func_name ident int float string punct eof
    text: str
    line: int
    col: int

    @property
    def span(self) -> TextSpan:
        return TextSpan(self.line, self.col, max(len(self.text), 1))


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
    append = tokens.append
    pos, line, line_start = 0, 1, 0
    n = len(text)
    match = _TOKEN_RE.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            span = TextSpan(line, pos - line_start + 1, 1)
            ch = text[pos]
            what = "an unterminated string" if ch == '"' else f"unexpected character {ch!r}"
            raise ParseError(what, text, span, filename)
        kind = m.lastgroup
        end = m.end()
        if kind == "ws" or kind == "comment":
            pass
        elif kind == "newline":
            line += 1
            line_start = end
        else:
            append(Token("punct" if kind == "arrow" else kind, m.group(), line, pos - line_start + 1))
        pos = end
    append(Token("eof", "", line, pos - line_start + 1))
    return tokens
