"""One op = one entry all the way down (docs/architecture.md).

- "Add an op", followed from outside the package: `softplus` is registered here with its
  traits, reference, VJP/JVP and lowering, each written once, and is then traced, printed,
  parsed, optimized, fused, differentiated to order 2 and compiled, checked against
  finite differences on the interpreter, the CPU backend and the CUDA emulation;
- the registry drives the backends: every op of the registry has a lowering each
  code-generating backend can render, every scalar instruction is spelled by every
  renderer, and an op a backend cannot compile is refused when compiling, naming the op
  and the backend, before any code is generated.
"""

from __future__ import annotations

import numpy as np
import pytest

import irgrad as ig
from irgrad.backends import backend_names, get_backend
from irgrad.errors import BackendUnavailable, IrgradError
from irgrad.ir.registry import REGISTRY, OpDef, all_ops, register, require_dtype
from irgrad.ir.scalar import Const, instruction, instruction_names


# --- the recipe: a new primitive in one entry -------------------------------------------------

def _softplus_infer(types, attrs, declared):
    require_dtype("softplus", types[0], lambda d: d.is_float, "floating-point")
    return [types[0]]


def _softplus_ref(xs, op):
    # softplus x = log(1 + e^x) = max(x, 0) + log(1 + e^-|x|): no overflow for large x
    x = xs[0]
    with np.errstate(over="ignore"):
        return [np.maximum(x, 0) + np.log(1 + np.exp(-np.abs(x)))]


def _softplus_lin(b, op, t):
    # d/dx softplus x = sigmoid x = exp(x - softplus x)  (reads the result y, as exp does)
    return b.mul(t, b.exp(b.sub(op.operands[0], op.result)))


def _softplus_build(ev, op, idx, kids):
    # the reference's formula in scalar instructions, which every renderer spells
    dt, x = op.results[0].dtype, kids[0]

    def i(name, *args):
        return instruction(name, dt, list(args), dt)

    return i("add", i("max", x, Const(dt, 0.0)),
             i("log", i("add", Const(dt, 1.0), i("exp", i("neg", i("abs", x))))))


def softplus_entry() -> OpDef:
    return OpDef(
        name="softplus", infer=_softplus_infer, reference=_softplus_ref,
        vjp=lambda b, op, cts, wanted: [_softplus_lin(b, op, cts[0])
                                        if cts[0] is not None and wanted[0] else None],
        jvp=lambda b, op, ts: [_softplus_lin(b, op, ts[0]) if ts[0] is not None else None],
        num_operands=1, elementwise=True, cost=4, build=_softplus_build,
        doc="log(1 + exp(x)), elementwise.")


@pytest.fixture
def softplus():
    register(softplus_entry())
    try:
        yield lambda x: ig.primitive("softplus", x)
    finally:
        del REGISTRY["softplus"]


def _model(softplus):
    @ig.function
    def f(w: ig.f64[3, 4], x: ig.f64[5, 3]):
        h = softplus(x @ w)
        return (softplus(h * 0.5 - 1.0) * h).sum()
    return f


def test_softplus_flows_through_every_layer(softplus):
    f = _model(softplus)
    rng = np.random.default_rng(0)
    args = (rng.standard_normal((3, 4)), rng.standard_normal((5, 3)))
    x = args[1] @ args[0]
    h = np.logaddexp(0, x)
    want = (np.logaddexp(0, h * 0.5 - 1.0) * h).sum()
    np.testing.assert_allclose(f(*args), want, rtol=1e-12)  # the interpreter
    text = str(f.ir)
    assert "softplus" in text and str(ig.parse(text)) == text  # printed and parsed back
    o2 = ig.run_pipeline(ig.parse(text), "O2")
    fused = [op for op in o2.functions["f"].walk() if op.opname == "fused"]
    assert any(o.opname == "softplus" for k in fused for o in k.regions[0].ops)  # fused
    for backend, opts in _native_backends():
        got = ig.compile(f, backend=backend, **opts)(*args)
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=backend)


def _native_backends():
    """The code-generating backends that can run here, with the options that make them."""
    out = [("cpu", {})]
    try:
        from irgrad.backends.cuda.emulate import compiler
        compiler()
        out.append(("cuda", {"device": "emulate"}))
    except BackendUnavailable:
        pass
    return out


@pytest.mark.parametrize("backend", ["numpy", "cpu", "cuda"])
def test_softplus_gradients_to_order_two(softplus, backend):
    """Order-2 checks against centered finite differences in float64: grad of grad,
    jvp of vjp and jvp of jvp, every function of the check compiled for the backend."""
    opts = {}
    if backend == "cuda":
        if ("cuda", {"device": "emulate"}) not in _native_backends():
            pytest.skip("the CUDA emulator needs g++")
        opts = {"device": "emulate"}
    f = _model(softplus)
    rng = np.random.default_rng(1)
    args = (rng.standard_normal((3, 4)), rng.standard_normal((5, 3)))
    ig.check_grads(f, args, order=2, backend=backend, backend_options=opts)
    # the check can fail: a wrong derivative rule is caught on every backend
    REGISTRY["softplus"].vjp = lambda b, op, cts, wanted: [b.mul(cts[0], op.result)]
    with pytest.raises(ig.GradientCheckError, match="reverse-mode"):
        ig.check_grads(f, args, order=1, modes=("rev",), backend=backend, backend_options=opts)


def test_primitive_names_unknown_ops():
    with pytest.raises(ig.ShapeError, match="no op named 'softplus' is registered") as e:
        ig.trace(lambda x: ig.primitive("softplus", x), ig.f32[3])
    assert "test_architecture.py" in str(e.value)  # the user's file:line


# --- the registry drives the backends ----------------------------------------------------------

def _renderers():
    out = {}
    for name in backend_names():
        r = get_backend(name).renderer()
        if r is not None:
            out[name] = r
    return out


def test_code_generating_backends_are_known():
    assert set(_renderers()) == {"cpu", "cuda"}  # numpy interprets, generates nothing


@pytest.mark.parametrize("backend", ["cpu", "cuda"])
def test_every_op_has_a_lowering_the_backend_renders(backend):
    r = _renderers()[backend]
    assert r.missing_instructions() == [], f"the {backend} renderer cannot spell these"
    assert set(instruction_names()) <= set(r.code_for_op)
    for name, d in all_ops().items():
        if d.kernel == "loop":
            assert d.build is not None, f"'{name}' has no lowering (build hook)"
            assert d.reads is not None or d.num_operands == 0, f"'{name}' reads nothing"
        elif d.kernel == "reduce":
            assert d.reduction in r.reductions and d.identity is not None, name
        elif d.kernel == "expand":
            assert d.expand is not None, name
        else:
            assert d.kernel in ("matmul", "scatter", "region"), name


@pytest.fixture
def unrenderable():
    """Two throwaway ops: `test_cube`, lowered to a scalar instruction no renderer spells,
    and `test_nolower`, with a reference but no lowering."""
    base = dict(infer=lambda types, attrs, declared: [types[0]], num_operands=1,
                elementwise=True, differentiable=False)
    register(OpDef(name="test_cube", reference=lambda xs, op: [xs[0] ** 3], instruction=True,
                   **base))
    register(OpDef(name="test_nolower", reference=lambda xs, op: [xs[0] + 1], build=None, **base))
    try:
        yield
    finally:
        del REGISTRY["test_cube"], REGISTRY["test_nolower"]


@pytest.mark.parametrize("op, why", [
    ("test_cube", "'test_cube' is a scalar instruction the {b} renderer does not spell"),
    ("test_nolower", "'test_nolower' has no lowering to the kernel form"),
])
def test_unsupported_ops_are_refused_at_compile_time(unrenderable, monkeypatch, op, why):
    f = ig.trace(lambda x: ig.primitive(op, ig.exp(x)) * 2.0, ig.f32[8])
    x = np.arange(8, dtype=np.float32)
    np.testing.assert_allclose(ig.compile(f, backend="numpy")(x),
                               REGISTRY[op].reference([np.exp(x)], None)[0] * 2, rtol=1e-6)
    from irgrad.backends.cpu import backend as cpu_impl
    from irgrad.backends.cuda import backend as cuda_impl

    def no_codegen(*a, **k):
        raise AssertionError("code was generated for a program the backend must refuse")

    monkeypatch.setattr(cpu_impl, "render_program", no_codegen)
    monkeypatch.setattr(cuda_impl, "render_cuda_program", no_codegen)
    for backend, opts in (("cpu", {}), ("cuda", {"device": "emulate"})):
        msg = f"the {backend} backend cannot compile @lambda: " + why.format(b=backend)
        with pytest.raises(IrgradError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            ig.compile(f, backend=backend, **opts)
        with pytest.raises(IrgradError, match=f"the {backend} backend cannot compile"):
            ig.compile_step(lambda p, x: ig.primitive(op, p["w"] * x).sum(),
                            {"w": np.ones(8, np.float32)}, ig.optim.SGD(0.1), (ig.f32[8],),
                            backend=backend, **opts)
    with pytest.raises(IrgradError, match="the cpu backend cannot compile"):
        get_backend("cpu").emit(f.ir, "llvm")
