"""The backend protocol and registry: where compiled code runs.

A backend is a plug-in: a `Backend` subclass registered with `@register_backend`. It
compiles flat IR functions, knowing nothing of pytrees or traced Python functions (the
frontend's wrappers in api.py and transforms/training.py flatten arguments, check them
and rebuild results):

- `compile(ir, pipeline, **options)` returns an executable with `run(arrays) -> [arrays]`
  (arguments already checked: count, shape, dtype, and C-contiguous aligned arrays for a
  `native` backend) and `ir` (the optimized IR it runs);
- `compile_step(ir, state, pipeline, **options)` compiles a training step that owns the
  host arrays `state` (parameters then optimizer state, updated in place): `run(batch)`
  returns the loss, `sync()` makes `state` current (a device backend copies back),
  `upload(array)` sends an assigned entry of `state` to where the step keeps it;
- `emit(ir, what)` shows generated code (`--emit`), for the kinds in `emits`;
- `check_support(ir)` refuses, before any native code exists, an op the backend cannot
  compile, naming the op and the backend (a code-generating backend names its
  `renderer()`, whose `check_support` knows what it can spell).

`options` and `step_options` list the keyword options each accepts.
"""

from __future__ import annotations

from typing import ClassVar

from ..errors import IrgradError

BACKENDS: dict[str, type["Backend"]] = {}


class Backend:
    name: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()
    step_options: ClassVar[tuple[str, ...]] = ()
    native: ClassVar[bool] = False
    emits: ClassVar[dict[str, str]] = {}  # --emit kind -> what it shows

    def compile(self, ir, pipeline: str, **options):  # pragma: no cover - abstract
        raise NotImplementedError

    def compile_step(self, ir, state: list, pipeline: str, **options):  # pragma: no cover
        raise NotImplementedError

    def emit(self, ir, what: str, **options) -> str:
        raise IrgradError(f"the {self.name} backend shows no '{what}' code")

    def renderer(self):
        """The Renderer class (codegen/renderer.py) of a backend that generates code."""
        return None

    def check_support(self, ir) -> None:
        """Raise IrgradError naming the first op of `ir` this backend cannot compile."""
        r = self.renderer()
        if r is not None:
            r.check_support(ir)

    def check_options(self, options: dict, step: bool = False) -> None:
        known = self.step_options if step else self.options
        unknown = [k for k in options if k not in known]
        if unknown:
            raise IrgradError(f"unknown option(s) {', '.join(map(repr, unknown))} for the "
                              f"{self.name} backend (options: {', '.join(known) or 'none'})")


def register_backend(cls: type[Backend]) -> type[Backend]:
    if not cls.name or cls.name in BACKENDS:
        raise ValueError(f"bad or duplicate backend name {cls.name!r}")
    BACKENDS[cls.name] = cls
    return cls


_instances: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    cls = BACKENDS.get(name)
    if cls is None:
        raise IrgradError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")
    if name not in _instances:
        _instances[name] = cls()
    return _instances[name]


def backend_names() -> list[str]:
    return list(BACKENDS)


def emit_kinds() -> dict[str, str]:
    """--emit kind -> the backend that shows it."""
    return {what: name for name, cls in BACKENDS.items() for what in cls.emits}
