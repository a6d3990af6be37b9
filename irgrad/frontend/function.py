"""`Function`: a traced IR function plus the pytree structure of its arguments and results.

`@ig.function` traces once, from the parameter annotations; `ig.trace(fn, *specs)` traces
from explicit specs or example arrays. Calling a `Function` with arrays runs the reference
interpreter; calling it with traced tensors (inside another trace) inlines its IR.
"""

from __future__ import annotations

import inspect
import re
import traceback

import numpy as np

from ..errors import ArgumentError, IrgradError, SourceLoc, TraceError
from ..ir.core import Function as IrFunction, clone_ops_into
from ..ir.interpreter import run_function
from ..ir.rewrite import remove_dead_ops
from ..ir.verifier import verify_function
from ..pytree import LEAF, TreeDef, flatten, leaf_paths, sanitize, unflatten
from .specs import TensorSpec
from .tensor import _PKG_DIR, Tensor, TraceContext, as_tensor, current_context, display_path


_MISSING = object()


class Function:
    """A traced function: `.ir` is an ordinary IR function; calling it runs the interpreter."""

    def __init__(self, ir: IrFunction, in_tree: TreeDef | None = None,
                 out_tree: TreeDef | None = None):
        self.ir = ir
        n_in, n_out = len(ir.params), len(ir.result_types)
        self.in_tree = in_tree or TreeDef("tuple", (), (LEAF,) * n_in)
        self.out_tree = out_tree or (LEAF if n_out == 1 else TreeDef("tuple", (), (LEAF,) * n_out))
        if self.in_tree.num_leaves != n_in or self.out_tree.num_leaves != n_out:
            raise ValueError("tree structure does not match the IR function's signature")

    @property
    def name(self) -> str:
        return self.ir.name

    @property
    def specs(self) -> list[TensorSpec]:
        return [TensorSpec(p.type.dtype, p.type.shape) for p in self.ir.params]

    @property
    def arg_specs(self):
        """The argument specs as the pytree the function was traced with."""
        return unflatten(self.in_tree, self.specs)

    def bind(self, args, kwargs) -> tuple:
        """Positional arguments, with keyword arguments put in their places by name."""
        if not kwargs:
            return tuple(args)
        names = self._arg_names()
        out = list(args) + [_MISSING] * (len(names) - len(args))
        for k, v in kwargs.items():
            if k not in names:
                raise ArgumentError(f"{self.name}() has no argument '{k}' (arguments: "
                                    f"{', '.join(names)})")
            i = names.index(k)
            if i < len(args) or out[i] is not _MISSING:
                raise ArgumentError(f"{self.name}() got argument '{k}' twice")
            out[i] = v
        missing = [n for n, v in zip(names, out) if v is _MISSING]
        if missing:
            raise ArgumentError(f"{self.name}() is missing argument(s) {', '.join(missing)}")
        return tuple(out)

    def flatten_args(self, args, kwargs=None) -> list:
        args = self.bind(args, kwargs)
        leaves, tree = flatten(tuple(args))
        n_want = len(self.in_tree.children)
        if len(args) != n_want:
            names = ", ".join(self._arg_names())
            raise ArgumentError(f"{self.name}() takes {n_want} argument{'s' * (n_want != 1)} "
                                f"({names}), got {len(args)}")
        if tree != self.in_tree:
            for name, arg, want in zip(self._arg_names(), args, self.in_tree.children):
                got = flatten(arg)[1]
                if got != want:
                    raise ArgumentError(f"{self.name}(): argument {name} has structure {got}, "
                                        f"expected {want}")
            raise ArgumentError(f"{self.name}() arguments have structure {tree}, expected "
                                f"{self.in_tree}")
        return leaves

    def _arg_names(self) -> list[str]:
        """One name per top-level argument: the common prefix of its leaves' IR names."""
        names, i = [], 0
        for sub in self.in_tree.children:
            n = sub.num_leaves
            leaf_names = [p.name or f"arg{i + k}" for k, p in enumerate(self.ir.params[i:i + n])]
            if sub.kind == "leaf":
                names.append(leaf_names[0])
            else:  # a pytree: its leaves are named `arg.key...`
                names.append(leaf_names[0].split(".")[0] if leaf_names else f"arg{len(names)}")
            i += n
        return names

    def __call__(self, *args, **kwargs):
        leaves = self.flatten_args(args, kwargs)
        if current_context() is not None and any(isinstance(x, Tensor) for x in leaves):
            return unflatten(self.out_tree, inline(self.ir, leaves))
        outs = run_function(self.ir, leaves)
        return unflatten(self.out_tree, outs)

    def __str__(self) -> str:
        return str(self.ir)

    def __repr__(self) -> str:
        sig = ", ".join(str(s) for s in self.specs)
        return f"<irgrad.Function {self.name}({sig})>"


def inline(fn: IrFunction, leaves) -> list[Tensor]:
    """Copy `fn`'s ops into the function being traced, with `leaves` as its arguments."""
    ctx = current_context()
    args = []
    for p, x in zip(fn.params, leaves):
        t = as_tensor(x) if not isinstance(x, (int, float)) else as_tensor(np.asarray(x, p.type.dtype.np))
        if t.type != p.type:
            raise ArgumentError(f"{fn.name}() parameter %{p.name} expects {p.type}, got {t.type}")
        args.append(t.value)
    mapping = dict(zip(fn.params, args))
    clone_ops_into(fn.ops, ctx.builder.block, mapping)
    return [Tensor(mapping.get(v, v)) for v in fn.outputs]


def _spec_leaf(x, label: str) -> TensorSpec:
    if isinstance(x, TensorSpec):
        return x
    if isinstance(x, Tensor):
        return TensorSpec(x.dtype, x.shape)
    if isinstance(x, (np.ndarray, np.generic, bool, int, float)):
        return TensorSpec.of(x)
    raise IrgradError(f"{label}: expected a TensorSpec like f32[64, 10] or an array, got "
                      f"{type(x).__name__} {x!r}")


def _param_names(fn, n: int) -> list[str]:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    star = next((p.name for p in params if p.kind == p.VAR_POSITIONAL), None)
    out = []
    for i in range(n):
        if i < len(names):
            out.append(names[i])
        else:
            out.append(f"{star}{i - len(names)}" if star else f"arg{i}")
    return out


def _function_name(fn) -> str:
    name = getattr(fn, "__name__", "fn")
    name = re.sub(r"[^A-Za-z0-9_.]", "_", name).strip("_") or "fn"
    return name


def trace(fn, *specs, name: str | None = None) -> Function:
    """Trace `fn` on arguments described by `specs` (TensorSpecs, arrays, or pytrees of them)."""
    arg_names = _param_names(fn, len(specs))
    leaves, in_tree = flatten(tuple(specs))
    spec_leaves = [_spec_leaf(x, f"argument of {_function_name(fn)}") for x in leaves]
    names = []
    for i, (argname, subtree) in enumerate(zip(arg_names, in_tree.children)):
        names += leaf_paths(subtree, sanitize(argname))
    ir_fn = IrFunction(name or _function_name(fn), [s.type for s in spec_leaves], names)
    with TraceContext(ir_fn):
        args = unflatten(in_tree, [Tensor(p) for p in ir_fn.params])
        try:
            out = fn(*args)
        except IrgradError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's code raised: say where
            raise _raised_while_tracing(e, ir_fn.name) from e
        out_leaves, out_tree = flatten(out)
        if not out_leaves:
            raise IrgradError(f"{ir_fn.name} returned no tensors")
        ir_fn.set_outputs([as_tensor(o).value for o in out_leaves])
    remove_dead_ops(ir_fn.body)  # helpers may leave values nobody reads
    verify_function(ir_fn)
    return Function(ir_fn, in_tree, out_tree)


def _raised_while_tracing(e: Exception, name: str) -> TraceError:
    """`e` (raised by user code inside a trace) as a TraceError at the user's file:line:
    the innermost frame of its traceback outside the irgrad package."""
    frames = [fr for fr in traceback.extract_tb(e.__traceback__)
              if not fr.filename.startswith(_PKG_DIR)]
    where = f"{display_path(frames[-1].filename)}:{frames[-1].lineno}: " if frames else ""
    return TraceError(f"{where}{type(e).__name__} while tracing {name}: {e}")


def function(fn=None, *, name: str | None = None):
    """Decorator: trace `fn` once from its parameter annotations (`x: f32[32, 64]`)."""
    if fn is None:
        return lambda f: function(f, name=name)
    try:
        sig = inspect.signature(fn, eval_str=True)
    except NameError as e:
        raise IrgradError(f"{_where(fn)}: cannot evaluate the annotations of {fn.__name__}: {e}") from None
    specs = []
    for p in sig.parameters.values():
        if p.annotation is inspect.Parameter.empty:
            raise IrgradError(f"{_where(fn)}: parameter '{p.name}' of {fn.__name__} needs a "
                              f"TensorSpec annotation like f32[64, 10] (or use ig.trace)")
        specs.append(p.annotation)
    return trace(fn, *specs, name=name)


def _where(fn) -> SourceLoc | str:
    code = getattr(fn, "__code__", None)
    return SourceLoc(code.co_filename, code.co_firstlineno) if code else "<function>"


__all__ = ["Function", "function", "trace", "inline"]
