"""`check_grads`: derivatives checked against centered finite differences in float64.

The function is first rewritten to float64 (every f32 becomes f64), so the comparison is
tight: both the AD result and the finite differences are computed in double precision.

- reverse mode: a random output cotangent u; the VJP J^T u is compared elementwise with
  finite differences of <u, f(x)> for small arguments, along random directions otherwise;
- forward mode: the JVP J v along a random direction v of each argument is compared with
  (f(x + eps v) - f(x - eps v)) / (2 eps);
- order k > 1 recurses: x -> J^T u and x -> J v (u, v fixed) are checked to order k - 1,
  which exercises grad-of-grad, jvp-of-vjp and jvp-of-jvp.

`backend="cpu"` (or any registered backend, with its `backend_options`) compiles every
function the check evaluates, the derivatives and the function itself, so the finite
differences check the generated code of each order too; the default runs them on the
reference interpreter.

A failure raises `GradientCheckError` naming the argument, the worst element, both values
and the relative error.
"""

from __future__ import annotations

import numpy as np

from ..api import as_function
from ..backends import get_backend
from ..errors import GradientCheckError, IrgradError
from ..frontend.function import Function, trace
from ..pytree import leaf_paths
from ..frontend.specs import TensorSpec
from ..ir.builder import Builder
from ..ir.interpreter import check_arguments, run_function
from ..ir.core import Function as IrFunction
from ..ir.types import DType, TensorType
from ..passes.forward_ad import forward_ad
from ..passes.reverse_ad import reverse_ad

ELEMENTWISE_LIMIT = 32  # arguments with at most this many elements are checked element by element


def promote_to_f64(f: IrFunction) -> IrFunction:
    """A copy of `f` with every f32 type (parameters, constants, casts, results) in f64."""
    def up(t: TensorType) -> TensorType:
        return t.with_dtype(DType.f64) if t.dtype is DType.f32 else t

    g = IrFunction(f.name, [up(p.type) for p in f.params], [p.name for p in f.params])
    env = dict(zip(f.params, g.params))
    b = Builder(g.body)
    for op in f.ops:
        if op.regions:
            raise IrgradError("check_grads works on unfused IR (run it before fuse)")
        attrs = dict(op.attrs)
        if op.opname == "const":
            attrs["value"] = attrs["value"].astype(up(op.result.type).dtype.np)
        if op.opname == "cast" and attrs["dtype"] is DType.f32:
            attrs["dtype"] = DType.f64
        new = b.emit_op(op.opname, [env[v] for v in op.operands], attrs,
                        [up(t) for t in op.result_types], loc=op.loc)
        env.update(zip(op.results, new.results))
    g.set_outputs([env[v] for v in f.outputs])
    return g


def _to_f64(x):
    x = np.asarray(x)
    return x.astype(np.float64) if x.dtype == np.float32 else x


def check_grads(f, args, order: int = 1, modes=("fwd", "rev"), eps: float | None = None,
                rtol: float | None = None, atol: float | None = None, seed: int = 0,
                backend: str = "numpy", backend_options: dict | None = None) -> None:
    """Check f's derivatives at `args` to `order`; raises GradientCheckError on a mismatch."""
    fn = as_function(f)
    runner = Runner(backend, backend_options or {})
    for m in modes:
        if m not in ("fwd", "rev"):
            raise IrgradError(f"check_grads: unknown mode {m!r} (use 'fwd' and/or 'rev')")
    leaves = fn.flatten_args(tuple(args))
    f64 = Function(promote_to_f64(fn.ir), fn.in_tree, fn.out_tree)
    x = [_to_f64(a) for a in leaves]
    names = []
    for i, child in enumerate(fn.in_tree.children):
        names += leaf_paths(child, f"argument {i}")
    _check(runner, f64.ir, x, names, order, tuple(modes), eps or 1e-5, rtol or 1e-5,
           atol or 1e-6, np.random.default_rng(seed))


def _float_leaves(f: IrFunction) -> list[int]:
    return [i for i, p in enumerate(f.params) if p.dtype.is_float]


class Runner:
    """Runs the functions of one check: on the interpreter, or compiled once each for a
    backend (the arguments are checked as a compiled call checks them)."""

    def __init__(self, backend: str, options: dict):
        self.backend = get_backend(backend) if backend != "numpy" else None
        self.options = options
        self.compiled: dict[int, tuple] = {}

    def __call__(self, f: IrFunction, x) -> list[np.ndarray]:
        if self.backend is None:
            outs = run_function(f, x)
        else:
            got = self.compiled.get(id(f))
            if got is None or got[0] is not f:
                got = self.compiled[id(f)] = (f, self.backend.compile(f, "O2", **self.options))
            arrays = check_arguments([p.type for p in f.params], [p.name for p in f.params],
                                     [np.asarray(a, order="C") for a in x], f.name,
                                     native=self.backend.native)
            outs = got[1].run(arrays)
        return [np.asarray(o, dtype=np.float64) for o in outs]


def _check(_run: Runner, f: IrFunction, x, names, order, modes, eps, rtol, atol, rng) -> None:
    wrt = _float_leaves(f)
    if not wrt:
        raise IrgradError(f"check_grads: {f.name} has no float arguments")
    float_out = [i for i, t in enumerate(f.result_types) if t.dtype.is_float]
    if "rev" in modes:
        u = [rng.standard_normal(f.result_types[i].shape) for i in float_out]
        vjp_f = reverse_ad(f, wrt, cotangent_params=True)
        cts = [np.zeros(t.shape) if not t.dtype.is_float else None for t in f.result_types]
        for k, i in enumerate(float_out):
            cts[i] = u[k]
        cts = [c.astype(t.dtype.np) for c, t in zip(cts, f.result_types)]
        ad = _run(vjp_f, list(x) + cts)

        def scalar(xs):
            outs = _run(f, xs)
            return sum(float(np.sum(outs[i] * u[k])) for k, i in enumerate(float_out))

        for k, i in enumerate(wrt):
            _compare_gradient(scalar, x, i, ad[k], names[i], eps, rtol, atol, rng, f.name)
        if order > 1:
            g = _bake(vjp_f, len(x), cts)
            _check(_run, g, x, names, order - 1, modes, eps, rtol, atol, rng)
    if "fwd" in modes:
        jvp_f = forward_ad(f, wrt)
        n_out = len(f.result_types)
        for k, i in enumerate(wrt):
            v = [np.zeros(x[j].shape, x[j].dtype) for j in wrt]
            v[k] = rng.standard_normal(x[i].shape)
            tangents = _run(jvp_f, list(x) + v)[n_out:]
            plus, minus = list(x), list(x)
            plus[i] = x[i] + eps * v[k]
            minus[i] = x[i] - eps * v[k]
            fp, fm = _run(f, plus), _run(f, minus)
            for o in float_out:
                numeric = (fp[o] - fm[o]) / (2 * eps)
                _assert_close(tangents[o], numeric, f"forward-mode derivative (JVP) of result {o} "
                              f"along a random direction of {names[i]}", rtol, atol, f.name)
        if order > 1:
            v = [rng.standard_normal(x[j].shape) for j in wrt]
            g = _bake(jvp_f, len(x), v, keep=slice(n_out, None))
            _check(_run, g, x, names, order - 1, modes, eps, rtol, atol, rng)


def _bake(g: IrFunction, n_args: int, extra, keep=None) -> IrFunction:
    """x -> g(x, *extra) with `extra` as constants (and only results `keep`)."""
    gf = Function(g)
    specs = [TensorSpec(p.type.dtype, p.type.shape) for p in g.params[:n_args]]

    def baked(*xs):
        outs = gf(*xs, *extra)
        outs = outs if isinstance(outs, tuple) else (outs,)
        return outs[keep] if keep is not None else outs

    return trace(baked, *specs, name=g.name).ir


def _compare_gradient(scalar, x, i, ad, name, eps, rtol, atol, rng, fname):
    xi = x[i]
    if xi.size <= ELEMENTWISE_LIMIT:
        numeric = np.zeros(xi.shape)
        for idx in np.ndindex(*xi.shape):
            plus, minus = list(x), list(x)
            plus[i], minus[i] = xi.copy(), xi.copy()
            plus[i][idx] += eps
            minus[i][idx] -= eps
            numeric[idx] = (scalar(plus) - scalar(minus)) / (2 * eps)
        _assert_close(ad, numeric, f"reverse-mode gradient (VJP) with respect to {name}",
                      rtol, atol, fname)
        return
    for _ in range(2):
        v = rng.standard_normal(xi.shape)
        plus, minus = list(x), list(x)
        plus[i], minus[i] = xi + eps * v, xi - eps * v
        numeric = (scalar(plus) - scalar(minus)) / (2 * eps)
        _assert_close(np.array(np.sum(ad * v)), np.array(numeric),
                      f"reverse-mode gradient (VJP) with respect to {name}, projected on a "
                      f"random direction", rtol, atol, fname)


def _assert_close(ad, numeric, what, rtol, atol, fname):
    ad, numeric = np.asarray(ad, np.float64), np.asarray(numeric, np.float64)
    err = np.abs(ad - numeric)
    tol = atol + rtol * np.abs(numeric)
    bad = ~(err <= tol)  # NaNs count as failures
    if not bad.any():
        return
    scaled = np.where(np.isnan(err), np.inf, err / np.maximum(tol, 1e-300))
    # plain ints, so the message reads `element [2]` rather than `[np.int64(2)]`
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(scaled)), ad.shape))
    a, n = float(ad[worst]), float(numeric[worst])
    rel = abs(a - n) / max(abs(n), 1e-300)
    at = f" at element {list(worst)}" if ad.shape else ""
    raise GradientCheckError(
        f"{fname}: {what} disagrees with centered finite differences{at}: AD gives {a!r}, "
        f"finite differences give {n!r} (relative error {rel:.3g}; rtol {rtol:g}, atol {atol:g}; "
        f"{int(bad.sum())} of {bad.size} element(s) off)")


__all__ = ["check_grads", "promote_to_f64"]
