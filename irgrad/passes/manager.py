"""The pass manager: pipeline text, presets, verification and instrumentation.

A pass is a small frozen dataclass with a kebab-case `name`; its fields are exactly its
options, so `fuse{max-ops=32}` parses straight into `FusePass(max_ops=32)`. Pipelines are
comma-separated pass names with optional `{key=value, ...}` options; the presets `O0`,
`O1`, `O2` expand in place and can be mixed with passes (`"O1,fuse"`). O1's passes repeat
until a round changes nothing, as the passes report it (at most 4 rounds), so O1 applied
twice equals O1 once.

`run_pipeline` never mutates its input: it works on a copy, verifies the input and the
result of every pass (unless `verify=False`), and offers print-before/after hooks, `--print-after=NAME`,
`--time-passes`, and `IRGRAD_DUMP=DIR` (one numbered file per pass: `03-fuse.ir`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
import typing
from dataclasses import dataclass
from typing import Callable, ClassVar

from ..errors import PipelineError, VerifyError
from ..ir.core import Function, Module, clone_function
from ..ir.plan import has_plan, strip_plan
from ..ir.printer import print_function
from ..ir.verifier import verify_function

PASSES: dict[str, type["Pass"]] = {}

PRESETS = {
    "O0": "",
    "O1": "expand,constant-fold,simplify,cse,dce",
    "O2": "O1,fuse,plan-memory",
}
# Presets whose passes repeat until a round changes nothing (each pass can expose work
# for an earlier one: cse turns max(exp(x), exp(x)) into max(e, e), which simplify
# removes), so that running O1 on its own output changes nothing.
FIXPOINT_PRESETS = {"O1": 4}  # preset -> most rounds


@dataclass(frozen=True)
class PassResult:
    """What a pass gives back: the function (its input, changed in place, or a new one)
    and whether it changed anything (the pass manager's fixpoint stops on False)."""

    function: Function
    changed: bool


@dataclass(frozen=True)
class Pass:
    """Base class: subclasses set `name` and implement `apply(function) -> PassResult`
    (a pass that only implements `run(function) -> function` is taken to change the IR
    whenever it runs). Fields are options; their annotations are their types (bool, int,
    float, str, tuple[int, ...]) and a field's metadata may give its least value ("min")."""

    name: ClassVar[str] = ""
    # A memory plan describes one exact list of ops, so it is removed before any pass that
    # may change them (plan-memory makes a new one); passes that only look keep it.
    preserves_plan: ClassVar[bool] = False

    def __post_init__(self):
        # options are checked when a pass is made, from text or from Python
        for fld in dataclasses.fields(self):
            v, key = getattr(self, fld.name), fld.name.replace("_", "-")
            kind = _option_kind(type(self), fld)
            if not kind.accepts(v):
                raise PipelineError(f"option '{key}' of pass '{self.name}' expects {kind.words}, "
                                    f"got {v!r}")
            least = fld.metadata.get("min")
            if least is not None and v < least:
                raise PipelineError(f"option '{key}' of pass '{self.name}' must be at least {least}, got {v}")

    def apply(self, f: Function) -> PassResult:
        return PassResult(self.run(f), True)

    def run(self, f: Function) -> Function:
        """The pass's result alone (for passes that implement `apply`)."""
        return self.apply(f).function

    def spec(self) -> str:
        """The pass as pipeline text, options included (`fuse{max-ops=32}`)."""
        opts = []
        for fld in dataclasses.fields(self):
            v = getattr(self, fld.name)
            if v != fld.default:
                opts.append(f"{fld.name.replace('_', '-')}={_option_kind(type(self), fld).format(v)}")
        return self.name + ("{" + ",".join(opts) + "}" if opts else "")


@dataclass(frozen=True)
class OptionKind:
    """How an option type reads from pipeline text, checks and prints."""

    words: str  # for error messages: "expects an integer"
    accepts: Callable
    parse: Callable  # text -> value; raises ValueError
    format: Callable = str


def _parse_bool(raw: str) -> bool:
    if raw not in ("true", "false"):
        raise ValueError(raw)
    return raw == "true"


def _parse_ints(raw: str) -> tuple:
    inner = raw.strip()
    if not (inner.startswith("[") and inner.endswith("]")):
        raise ValueError(raw)
    inner = inner[1:-1].strip()
    return tuple(int(x) for x in inner.split(",")) if inner else ()


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


OPTION_KINDS = {
    bool: OptionKind("true or false", lambda v: isinstance(v, bool), _parse_bool,
                     lambda v: "true" if v else "false"),
    int: OptionKind("an integer", _is_int, int),
    float: OptionKind("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                      float),
    str: OptionKind("a string", lambda v: isinstance(v, str), lambda raw: raw),
    tuple[int, ...]: OptionKind(
        "a list of integers >= 0, like [0, 1]",
        lambda v: isinstance(v, tuple) and all(_is_int(x) and x >= 0 for x in v), _parse_ints,
        lambda v: "[" + ",".join(str(x) for x in v) + "]"),
}


def _option_kind(cls, fld) -> OptionKind:
    hint = typing.get_type_hints(cls).get(fld.name)
    kind = OPTION_KINDS.get(hint)
    if kind is None:
        raise TypeError(f"option '{fld.name}' of pass '{cls.name}' has the type {hint!r}; "
                        f"options are one of: bool, int, float, str, tuple[int, ...]")
    return kind


def register_pass(cls):
    if not cls.name or cls.name in PASSES:
        raise ValueError(f"bad or duplicate pass name {cls.name!r}")
    if cls.apply is Pass.apply and cls.run is Pass.run:
        raise TypeError(f"pass '{cls.name}' implements neither apply() nor run()")
    for fld in dataclasses.fields(cls):
        _option_kind(cls, fld)  # an option of a type the pipeline text cannot spell fails here
    PASSES[cls.name] = cls
    return cls


@register_pass
@dataclass(frozen=True)
class VerifyPass(Pass):
    """Check the IR against the verifier's rules; changes nothing."""

    name: ClassVar[str] = "verify"
    preserves_plan: ClassVar[bool] = True

    def apply(self, f: Function) -> PassResult:
        verify_function(f)
        return PassResult(f, False)


def _ensure_passes_loaded():
    from . import registry_all  # noqa: F401  (imports every pass module, which registers)


def known_passes() -> list[str]:
    _ensure_passes_loaded()
    return sorted(PASSES)


_ITEM_RE = re.compile(r"\s*([A-Za-z0-9_-]+)\s*(\{[^{}]*\})?\s*(,|$)")


def parse_pipeline(text: str) -> list[Pass]:
    """Pipeline text (with presets) -> pass instances; raises PipelineError."""
    _ensure_passes_loaded()
    text = text.strip()
    out: list[Pass] = []
    pos = 0
    while pos < len(text):
        m = _ITEM_RE.match(text, pos)
        if m is None:
            raise PipelineError(f"cannot read the pipeline {text!r} at position {pos}: expected "
                                f"'name' or 'name{{option=value}}' separated by commas")
        name, opts = m.group(1), m.group(2)
        pos = m.end()
        if name in PRESETS:
            if opts:
                raise PipelineError(f"the preset {name} takes no options")
            inner = parse_pipeline(PRESETS[name])
            if name in FIXPOINT_PRESETS:
                out.append(Fixpoint(name, tuple(inner), FIXPOINT_PRESETS[name]))
            else:
                out += inner
            continue
        cls = PASSES.get(name)
        if cls is None:
            raise PipelineError(f"unknown pass '{name}' in pipeline {text!r}; known passes: "
                                f"{', '.join(sorted(PASSES))}; presets: {', '.join(PRESETS)}")
        out.append(_instantiate(cls, opts[1:-1] if opts else ""))
    return out


def _instantiate(cls, opts_text: str) -> Pass:
    fields = {f.name.replace("_", "-"): f for f in dataclasses.fields(cls)}
    kwargs = {}
    for item in filter(None, (s.strip() for s in _split_options(opts_text))):
        if "=" not in item:
            raise PipelineError(f"option '{item}' of pass '{cls.name}' needs a value (key=value)")
        key, raw = (s.strip() for s in item.split("=", 1))
        fld = fields.get(key)
        if fld is None:
            known = ", ".join(fields) or "none"
            raise PipelineError(f"pass '{cls.name}' has no option '{key}' (options: {known})")
        kwargs[fld.name] = _convert_option(cls, key, raw, fld)
    return cls(**kwargs)


def _split_options(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def _convert_option(cls, key, raw, fld):
    kind = _option_kind(cls, fld)
    try:
        return kind.parse(raw)
    except ValueError:
        raise PipelineError(f"option '{key}' of pass '{cls.name}' expects {kind.words}, "
                            f"got {raw!r}") from None


@dataclass(frozen=True)
class Fixpoint:
    """A group of passes run again while a round still changes the IR (at most
    `max_rounds` rounds), as the passes report it. Every pass run is verified and timed;
    after the first round, only passes that changed something are printed and dumped."""

    name: str
    passes: tuple
    max_rounds: int = 4

    def spec(self) -> str:
        return self.name


@dataclass
class Instruments:
    """What to print or record while a pipeline runs."""

    print_before_all: bool = False
    print_after_all: bool = False
    print_after: tuple[str, ...] = ()
    time_passes: bool = False
    dump_dir: str | None = None
    stream: object = None
    timings: list = dataclasses.field(default_factory=list)
    dumped: set = dataclasses.field(default_factory=set)  # dump files this run has started

    def out(self):
        return self.stream if self.stream is not None else sys.stderr


def run_pipeline(obj, pipeline="O2", *, verify: bool = True, print_before_all: bool = False,
                 print_after_all: bool = False, print_after=(), time_passes: bool = False,
                 dump_dir: str | None = None, stream=None, instruments: Instruments | None = None):
    """Run `pipeline` on a Module or ir.Function; returns a new one of the same kind."""
    passes = parse_pipeline(pipeline) if isinstance(pipeline, str) else list(pipeline)
    if isinstance(print_after, str):
        print_after = (print_after,)
    for name in print_after:
        if name not in PASSES:
            raise PipelineError(f"--print-after names unknown pass '{name}'; known passes: "
                                f"{', '.join(sorted(PASSES))}")
    inst = instruments or Instruments(print_before_all, print_after_all, tuple(print_after),
                                      time_passes, dump_dir or os.environ.get("IRGRAD_DUMP"), stream)
    if isinstance(obj, Module):
        return Module([_run_function(f, passes, verify, inst) for f in obj])
    return _run_function(obj, passes, verify, inst)


def _run_function(f: Function, passes, verify: bool, inst: Instruments) -> Function:
    if verify:
        verify_function(f)  # hand-built or hand-edited IR: nothing unverified goes further
    f = clone_function(f)
    if inst.dump_dir:
        os.makedirs(inst.dump_dir, exist_ok=True)
        _dump(inst, 0, "input", f)
    n = 0  # passes run so far (numbers the dump files)
    for p in passes:
        if isinstance(p, Fixpoint):
            f, n = _run_fixpoint(f, p, verify, inst, n)
        else:
            n += 1
            f, _, _ = _run_pass(f, p, verify, inst, n)
    if inst.time_passes:
        _print_timings(inst, f.name)
    return f


def _run_fixpoint(f: Function, group: Fixpoint, verify: bool, inst: Instruments, n: int):
    for round_ in range(group.max_rounds):
        changed = False
        for p in group.passes:
            f, did, shown = _run_pass(f, p, verify, inst, n + 1, quiet_if_unchanged=round_ > 0)
            n += shown
            changed |= did
        if not changed:
            break
    return f, n


def _run_pass(f: Function, p: Pass, verify: bool, inst: Instruments, i: int,
              quiet_if_unchanged: bool = False):
    """Run one pass with the instruments; returns (function, changed, whether it was shown:
    printed, dumped as file number `i`). A quiet pass that changes nothing shows nothing."""
    before = None
    if inst.print_before_all:
        before = print_function(f)
        if not quiet_if_unchanged:
            _print_text(inst, f"IR Dump Before {p.spec()}", f.name, before)
    t0 = time.perf_counter()
    result = p.apply(_prepare(f, p))
    dt = time.perf_counter() - t0
    if not isinstance(result, PassResult):
        raise TypeError(f"pass '{p.name}' returned {type(result).__name__} from apply(), "
                        f"not a PassResult")
    f = result.function
    if verify and p.name != "verify":
        try:
            verify_function(f)
        except VerifyError as e:
            raise _after_pass(e, p) from None
    inst.timings.append((p.spec(), f.name, dt))
    if quiet_if_unchanged:
        if not result.changed:
            return f, False, False
        if before is not None:
            _print_text(inst, f"IR Dump Before {p.spec()}", f.name, before)
    if inst.print_after_all or p.name in inst.print_after:
        _print(inst, f"IR Dump After {p.spec()}", f)
    if inst.dump_dir:
        _dump(inst, i, p.name, f)
    return f, result.changed, True


def _prepare(f: Function, p) -> Function:
    if not p.preserves_plan and has_plan(f):
        strip_plan(f)
    return f


def _after_pass(e: VerifyError, p: Pass) -> VerifyError:
    """The verifier's error, its first line saying which pass left the IR invalid."""
    note = f" (the IR is invalid after pass '{p.spec()}')"
    first, sep, rest = str(e).partition("\n")
    e.message += note
    e.args = (first + note + sep + rest,)
    return e


def _print(inst: Instruments, title: str, f: Function) -> None:
    _print_text(inst, title, f.name, print_function(f))


def _print_text(inst: Instruments, title: str, fname: str, text: str) -> None:
    out = inst.out()
    out.write(f"// -----// {title} (@{fname}) //----- //\n")
    out.write(text)
    out.write("\n")


def _dump(inst: Instruments, i: int, name: str, f: Function) -> None:
    # one file per pass; the functions of a module follow one another in it (appended
    # after the first), so every file parses as the whole module at that point
    path = os.path.join(inst.dump_dir, f"{i:02d}-{name}.ir")
    mode = "a" if path in inst.dumped else "w"
    inst.dumped.add(path)
    with open(path, mode) as fh:
        if mode == "a":
            fh.write("\n")
        fh.write(f"// after {name} (pass {i}) of @{f.name}\n")
        fh.write(print_function(f))


def _print_timings(inst: Instruments, fname: str) -> None:
    rows = [(spec, dt) for spec, fn, dt in inst.timings if fn == fname]
    total = sum(dt for _, dt in rows) or 1e-12
    out = inst.out()
    out.write(f"===- Pass execution timing report (@{fname}) -===\n")
    out.write(f"  Total: {total * 1e3:.3f} ms\n")
    out.write("   Wall (ms)   (%)   Pass\n")
    for spec, dt in rows:
        out.write(f"  {dt * 1e3:10.3f}  {100 * dt / total:5.1f}  {spec}\n")
