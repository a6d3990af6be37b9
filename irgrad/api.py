"""The top of the stack: `ig.compile` and friends, which join frontend, passes and codegen."""

from __future__ import annotations

from .errors import IrgradError
from .frontend.function import Function
from .pytree import unflatten
from .ir.core import Function as IrFunction, Module
from .ir.interpreter import run_function

BACKENDS = ("numpy", "cpu", "cuda")
# the keyword options each backend takes (compile and compile_step)
BACKEND_OPTIONS = {"numpy": ("threads", "opt"), "cpu": ("threads", "opt"),  # numpy: ignored
                   "cuda": ("device", "tf32", "graphs", "threads", "opt")}


def check_backend_options(backend: str, options: dict, step: bool = False) -> None:
    if backend not in BACKENDS:
        raise IrgradError(f"unknown backend '{backend}' (known: {', '.join(BACKENDS)})")
    known = BACKEND_OPTIONS[backend]
    if not step:
        known = tuple(k for k in known if k != "graphs")
    unknown = [k for k in options if k not in known]
    if unknown:
        raise IrgradError(f"unknown option(s) {', '.join(map(repr, unknown))} for the {backend} "
                          f"backend (options: {', '.join(known) or 'none'})")


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
    """A function compiled for the reference (numpy) backend: checks arguments, then runs
    the optimized IR on the interpreter."""

    backend = "numpy"

    def __init__(self, fn: Function, ir: IrFunction, pipeline: str):
        self.fn = fn
        self.ir = ir
        self.pipeline = pipeline

    def __call__(self, *args, **kwargs):
        leaves = self.fn.flatten_args(args, kwargs)
        return unflatten(self.fn.out_tree, run_function(self.ir, leaves))


def compile(f, backend: str = "numpy", pipeline: str = "O2", **options):  # noqa: A001
    """Compile a Function (or ir.Function) for `backend`; returns a callable."""
    fn = as_function(f)
    check_backend_options(backend, options)
    if not isinstance(pipeline, str):
        raise IrgradError(f"pipeline must be pipeline text like \"O2\", got {pipeline!r}")
    from .passes.manager import run_pipeline
    optimized = run_pipeline(fn.ir, pipeline) if backend == "numpy" else None
    if backend == "numpy":
        return CompiledFunction(fn, optimized, pipeline)
    if backend == "cpu":
        from .backends.cpu.backend import CpuFunction
        return CpuFunction(fn, fn.ir, pipeline, **options)
    from .backends.cuda.backend import CudaFunction
    return CudaFunction(fn, fn.ir, pipeline, **options)
