"""The exception family of irgrad.

Every error a user can cause derives from `IrgradError`, and `str(error)` is the whole
message they need: for IR text the `file:line:col`, the offending line and a caret under
the place; for traced code the user's `file:line` and the shapes involved.
"""

from __future__ import annotations

from dataclasses import dataclass


class IrgradError(Exception):
    """Base class of every error irgrad raises on bad input."""


@dataclass(frozen=True)
class SourceLoc:
    """Where an op came from in the user's Python code (printed as `loc("file":line)`)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class TextSpan:
    """A place in IR text: 1-based line and column, and how many characters it covers."""

    line: int
    col: int
    length: int = 1


def caret_excerpt(text: str, span: TextSpan, context: int = 0) -> str:
    """The line(s) around `span` with a caret line under the spanned characters."""
    lines = text.splitlines() or [""]
    idx = min(max(span.line - 1, 0), len(lines) - 1)
    out = []
    width = len(str(min(len(lines), idx + 1 + context)))
    for i in range(max(0, idx - context), min(len(lines), idx + 1 + context)):
        out.append(f"{i + 1:>{width}} | {lines[i]}")
        if i == idx:
            pad = " " * (width + 3 + max(span.col - 1, 0))
            out.append(pad + "^" + "~" * max(span.length - 1, 0))
    return "\n".join(out)


class ParseError(IrgradError):
    """Malformed IR text; the message names file:line:col and shows a caret."""

    def __init__(self, message: str, text: str, span: TextSpan, filename: str = "<ir>"):
        self.message = message
        self.span = span
        self.filename = filename
        self.line = span.line
        self.col = span.col
        super().__init__(
            f"{filename}:{span.line}:{span.col}: error: {message}\n{caret_excerpt(text, span)}"
        )


class VerifyError(IrgradError):
    """Well-formed IR that breaks a rule (types, definitions, attributes)."""

    def __init__(self, message: str, op_name: str | None = None, line: int | None = None,
                 excerpt: str | None = None, filename: str = "<ir>", col: int | None = None):
        self.message = message
        self.op_name = op_name
        self.line = line
        self.col = col
        where = ""
        if line is not None:
            where = f"{filename}:{line}:{col}: " if col is not None else f"{filename}:{line}: "
        # registry messages already start with the op's name: do not repeat it
        what = f"'{op_name}' " if op_name and not message.startswith(f"'{op_name}'") else ""
        body = f"{where}error: {what}{message}" if what else f"{where}error: {message}"
        if excerpt:
            body += "\n" + excerpt
        super().__init__(body)


class ShapeError(IrgradError):
    """Shapes or dtypes that do not fit together, raised while tracing user code.

    Also raised by the op registry's inference; the tracer then adds the user's file:line.
    """

    def __init__(self, message: str, loc: SourceLoc | None = None):
        self.message = message
        self.loc = loc
        super().__init__(f"{loc}: {message}" if loc else message)

    def at(self, loc: SourceLoc | None) -> "ShapeError":
        """The same error, re-raised at the user's source location."""
        return type(self)(self.message, loc) if loc is not None and self.loc is None else self


class TraceError(IrgradError, TypeError):
    """User code did something a traced function cannot (asked a traced tensor for its
    truth value, handed it to numpy, ...), or raised an exception of its own while it was
    traced; the message names the user's file:line. The original exception, if any, is
    the `__cause__`."""


class ArgumentError(IrgradError, TypeError):
    """A call with the wrong number, shape, dtype or layout of arguments."""


class GradientCheckError(IrgradError):
    """`check_grads` found a derivative that disagrees with finite differences."""


class BackendUnavailable(IrgradError):
    """The requested backend cannot run here (no GPU, no driver, missing package)."""


class PipelineError(IrgradError):
    """A pipeline string names an unknown pass or a bad option."""


class OnnxError(IrgradError):
    """An ONNX model that cannot be read or imported: a malformed file, a graph that breaks
    ONNX's rules, or shapes irgrad cannot fix; the message names the node."""


class UnsupportedOnnxError(OnnxError):
    """An ONNX op, attribute value or dtype that irgrad does not import; the message names
    the op type, the node and the opset."""
