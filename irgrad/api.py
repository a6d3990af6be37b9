"""The top of the stack: `ig.compile`, which joins a traced Function, the passes and a
backend of the registry (backends/)."""

from __future__ import annotations

from .backends import get_backend
from .errors import IrgradError
from .frontend.function import Function
from .ir.core import Function as IrFunction, Module
from .ir.interpreter import check_arguments
from .pytree import unflatten


def as_function(f) -> Function:
    """A frontend Function from a Function, an ir.Function or a one-function Module."""
    if isinstance(f, Function):
        return f
    if isinstance(f, IrFunction):
        return Function(f)
    if isinstance(f, Module):
        if len(f.functions) != 1:
            raise IrgradError(f"the module holds {len(f.functions)} functions; pass one of "
                              f"m.functions[...]")
        return Function(next(iter(f)))
    raise IrgradError(f"expected an irgrad Function or ir.Function, got {type(f).__name__}")


class CompiledFunction:
    """`ig.compile(f, backend=...)`: flattens and checks the arguments (count, structure,
    shape, dtype; C-contiguous and aligned for a native backend) before the backend's
    executable runs, and rebuilds the result's pytree. Backend-specific facts (`native`,
    `llvm_ir`, `cuda_source`, ...) are the executable's attributes, reachable here."""

    def __init__(self, fn: Function, backend, executable, pipeline: str):
        self.fn = fn
        self.backend = backend.name
        self.executable = executable
        self.pipeline = pipeline
        self._native = backend.native
        self._types = [p.type for p in fn.ir.params]
        self._names = [p.name for p in fn.ir.params]

    @property
    def ir(self) -> IrFunction:
        """The optimized IR the backend runs."""
        return self.executable.ir

    def __call__(self, *args, **kwargs):
        arrays = check_arguments(self._types, self._names, self.fn.flatten_args(args, kwargs),
                                 self.fn.name, native=self._native)
        return unflatten(self.fn.out_tree, self.executable.run(arrays))

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["executable"], name)


def compile(f, backend: str = "numpy", pipeline: str = "O2", **options):  # noqa: A001
    """Compile a Function (or ir.Function) for `backend`; returns a callable."""
    fn = as_function(f)
    if not isinstance(pipeline, str):
        raise IrgradError(f"pipeline must be pipeline text like \"O2\", got {pipeline!r}")
    be = get_backend(backend)
    be.check_options(options)
    return CompiledFunction(fn, be, be.compile(fn.ir, pipeline, **options), pipeline)
