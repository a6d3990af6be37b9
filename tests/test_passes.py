"""The optimization passes and the pass manager (DESIGN.md, "Passes and pipelines").

Oracles:
- the reference interpreter: every pass and preset keeps the results of random programs
  (tests/strategies.py) bit-identical; `simplify` (so O1 and O2) may only change the sign
  of a zero, as its docstring documents;
- the printer/parser: `str(parse(text)) == text` after every pass, fused regions and
  memory plans included, and the parsed function runs the same;
- an arena simulator (`run_planned` below, independent of the planner and of
  `check_plan`): it stores every value at the offset the plan gives it, writes garbage
  into kernel scratch, writes donated results into the parameters' buffers, and reads
  operands back from there. A plan that lets two live values share bytes, or overwrites a
  donated parameter that is still read, gives wrong results;
- `check_plan` itself must accept every plan the planner makes and reject broken ones.
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import irgrad as ig
import workloads
from irgrad.errors import IrgradError
from irgrad.ir import Builder, Function, run_function
from irgrad.ir.core import Value
from irgrad.ir.printer import print_function
from irgrad.ir.registry import get_op
from irgrad.ir.types import TensorType
from irgrad.passes import manager
from irgrad.passes.fuse import FusePass
from irgrad.passes.manager import PASSES, Pass, parse_pipeline, register_pass, run_pipeline
from irgrad.ir.ops.kernel import kernel_scratch_bytes
from irgrad.ir.core import Arena, InParam, Placement, clone_function
from irgrad.ir.plan import ALIGN, check_plan
from irgrad.passes.manager import PassResult
from irgrad.passes.memory import plan_memory
from irgrad.passes.reverse_ad import ReverseADPass
from irgrad.transforms.training import _spec_tree

from strategies import programs

mem = Placement.of  # mem(0), mem(%w): a placement as the IR text writes it

PASS_NAMES = ["constant-fold", "simplify", "cse", "dce", "fuse", "plan-memory"]
PRESETS = ["O0", "O1", "O2"]
# pipelines that may turn -0.0 into +0.0 (and back): simplify's documented exception
SIGN_OF_ZERO_MAY_CHANGE = {"simplify", "O1", "O2"}


# --- helpers ---------------------------------------------------------------------------------

def parse_fn(text: str) -> Function:
    m = ig.parse(text)
    assert len(m.functions) == 1
    return next(iter(m))


def assert_same_results(want, got, exact_zero_sign: bool = True, what: str = ""):
    """Bit-identical results (NaN == NaN); with exact_zero_sign=False, -0.0 == 0.0 too."""
    assert len(want) == len(got), what
    for i, (a, b) in enumerate(zip(want, got)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape, \
            f"{what} result {i}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        if a.dtype.kind == "f":
            same = (a == b) | (np.isnan(a) & np.isnan(b))
            if exact_zero_sign:
                same &= np.signbit(a) == np.signbit(b)
            assert same.all(), f"{what} result {i} differs:\n{a}\nvs\n{b}"
        else:
            assert np.array_equal(a, b), f"{what} result {i} differs:\n{a}\nvs\n{b}"


def assert_round_trips(f: Function) -> Function:
    """The printed function parses back and prints identically; returns the parsed copy."""
    text = print_function(f)
    m = ig.parse(text)
    assert str(m) == text
    return m.functions[f.name]


def aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _storage(arena, pbuf, place, t: TensorType) -> np.ndarray:
    """The bytes a placement names, as an array of type t (a view, writes go through)."""
    if isinstance(place, Arena):
        off = place.offset
        assert 0 <= off and off + t.nbytes <= arena.size, (place, t, arena.size)
        raw = arena[off:off + t.nbytes]
    else:
        buf = pbuf[place.param]
        assert buf.nbytes == t.nbytes, (place, t)
        raw = buf.reshape(-1).view(np.uint8)
    return raw.view(t.dtype.np).reshape(t.shape)


def run_planned(f: Function, args, use_plan: bool = True) -> list[np.ndarray]:
    """Run a memory-planned function the way a native backend would: every value lives in
    the bytes its plan names, and operands are read back from there. With use_plan=False
    every value gets fresh bytes of its own instead: the same computation on the same
    (contiguous) layouts, so the two runs must agree bit for bit."""
    rng = np.random.default_rng(0)
    arena = rng.integers(0, 256, f.attrs["arena_bytes"], dtype=np.uint8)  # garbage
    pbuf = {p: np.array(a, dtype=p.dtype.np, copy=True, order="C") for p, a in zip(f.params, args)}
    where: dict[Value, object] = {}
    own: dict[Value, np.ndarray] = {}  # constants, and every value when use_plan is False

    def read(v: Value) -> np.ndarray:
        if v in own:
            return own[v].copy()
        if v in where:
            return _storage(arena, pbuf, where[v], v.type).copy()
        return pbuf[v].copy()  # a parameter: its buffer, as donation may have left it

    with np.errstate(all="ignore"):
        for op in f.ops:
            if op.opname == "const":
                own[op.result] = np.array(get_op("const").reference([], op)[0], order="C", copy=True)
                continue
            assert op.mem is not None, f"op '{op.opname}' has no placement"
            places = op.mem.results
            if use_plan:
                for off in op.mem.scratch:
                    n = kernel_scratch_bytes(op)  # the kernel's temporaries: garbage
                    arena[off:off + n] = rng.integers(0, 256, n, dtype=np.uint8)
            ins = [read(v) for v in op.operands]
            outs = get_op(op.opname).reference(ins, op)
            for r, p, val in zip(op.results, places, outs):
                val = np.asarray(val, dtype=r.dtype.np)
                if use_plan:
                    where[r] = p
                    _storage(arena, pbuf, p, r.type)[...] = val
                else:
                    own[r] = np.array(val, order="C", copy=True)
    return [read(v) for v in f.outputs]


VIEW_OPS = ("reshape", "stop_gradient")


def inplace_over_a_view(f: Function) -> bool:
    """Does the plan write a result over the bytes of a view (reshape) that its op reads?"""
    place = {}
    for op in f.ops:
        for r, p in zip(op.results, op.mem.results if op.mem else ()):
            place[r] = p
    return any(v.op is not None and v.op.opname in VIEW_OPS and not v.op.regions
               and place.get(v) is not None and place.get(v) == place.get(r)
               for op in f.ops if op.opname not in VIEW_OPS for r in op.results for v in op.operands)


def plan_upper_bound(f: Function) -> int:
    """What one aligned buffer per stored value (and per scratch) would take."""
    total = 0
    for op in f.ops:
        if op.opname == "const":
            continue
        total += sum(aligned(r.type.nbytes) for r in op.results)
        total += aligned(kernel_scratch_bytes(op))
    return total


def check_planned(f: Function, args):
    """Everything a memory plan must satisfy, on one function and its inputs."""
    a = f.attrs
    check_plan(f)
    assert a["lower_bound_bytes"] <= a["arena_bytes"] <= plan_upper_bound(f)
    assert a["naive_bytes"] == sum(r.type.nbytes for op in f.ops if op.opname != "const"
                                   for r in op.results)
    for op in f.ops:
        assert (op.mem is None) == (op.opname == "const"), op
    stored = [r for op in f.ops if op.opname != "const" for r in op.results]
    if len(stored) > 3 and all(r.type.nbytes % ALIGN == 0 for r in stored) and not any(
            kernel_scratch_bytes(op) for op in f.ops):
        assert a["arena_bytes"] <= a["naive_bytes"]  # alignment and scratch aside
    want = run_planned(f, args, use_plan=False)
    assert_same_results(want, run_planned(f, args), what="arena simulation")
    parsed = assert_round_trips(f)
    check_plan(parsed)  # the printed plan is the plan
    assert_same_results(want, run_planned(parsed, args), what="parsed plan")


# --- random programs: every pass and preset -----------------------------------------------

@pytest.mark.parametrize("pipeline", PASS_NAMES + PRESETS)
@settings(max_examples=20)
@given(prog=programs(max_ops=12), seed=st.integers(0, 2**16))
def test_pass_keeps_results_and_round_trips(pipeline, prog, seed):
    f = prog.function
    before = print_function(f)
    out = run_pipeline(f, pipeline)
    assert print_function(f) == before, "run_pipeline changed its input"
    args = prog.make_inputs(seed)
    want = prog.run(args)
    exact = pipeline not in SIGN_OF_ZERO_MAY_CHANGE
    assert_same_results(want, run_function(out, args), exact, pipeline)
    parsed = assert_round_trips(out)
    assert_same_results(want, run_function(parsed, args), exact, f"{pipeline}, parsed back")
    if pipeline in ("plan-memory", "O2"):
        check_planned(out, args)
    if pipeline in ("fuse", "O2"):
        for op in out.ops:  # kernels hold plain ops only; no nesting
            for inner in (op.regions[0].ops if op.regions else ()):
                assert not inner.regions
    if pipeline == "dce":
        live = set(out.outputs)
        for op in reversed(out.ops):
            assert any(r in live for r in op.results), f"dead op left: {op}"
            live.update(op.operands)


@pytest.mark.parametrize("pipeline", ["constant-fold", "simplify", "cse", "fuse", "O2"])
@settings(max_examples=15)
@given(prog=programs(max_ops=10, max_outputs=1), seed=st.integers(0, 2**16))
def test_passes_on_gradients(pipeline, prog, seed):
    """VJPs of random programs: transposed matmul operands, broadcasts and reductions
    everywhere, which passes fold, move and fuse; the numbers stay bit-identical."""
    g = run_pipeline(prog.function, "reverse-ad{cotangent-params=true}")
    args = prog.make_inputs(seed)
    args += [np.ones_like(r) for r in prog.run(args)]
    want = run_function(g, args)
    out = run_pipeline(g, pipeline)
    assert_same_results(want, run_function(out, args), pipeline not in SIGN_OF_ZERO_MAY_CHANGE,
                        pipeline)
    assert_round_trips(out)
    if pipeline == "O2":
        check_planned(out, args)


def test_folding_a_transposed_operand_keeps_the_bits():
    """constant-fold turns transpose(c) (a strided view at run time) into a contiguous
    constant; the interpreter's matmul and reduce_sum must not depend on that layout."""
    rng = np.random.default_rng(7)
    w = rng.uniform(-1, 1, (48, 37)).round(3).astype(np.float32)
    dense = "[" + ", ".join("[" + ", ".join(repr(float(v)) for v in row) + "]" for row in w) + "]"
    f = parse_fn(f"""\
func @f(%g: f32[5,48], %h: f32[37,48]) -> (f32[5,37], f32[37], f32[48]) {{
  %0 = const {{value={dense}}} : f32[48,37]
  %1 = transpose %0 {{perm=[1, 0]}} : f32[37,48]
  %2 = matmul %g, %0 : f32[5,37]
  %3 = add %1, %h : f32[37,48]
  %4 = transpose %3 {{perm=[1, 0]}} : f32[48,37]
  %5 = reduce_sum %4 {{axes=[0]}} : f32[37]
  %6 = reduce_sum %1 {{axes=[0]}} : f32[48]
  return %2, %5, %6
}}
""")
    args = [rng.standard_normal((5, 48)).astype(np.float32),
            rng.standard_normal((37, 48)).astype(np.float32)]
    want = run_function(f, args)
    for pipeline in ("constant-fold", "O1", "O2"):
        assert_same_results(want, run_function(run_pipeline(f, pipeline), args), what=pipeline)
    xs = [rng.standard_normal((64, 40)).astype(np.float32) for _ in range(2)]
    for a in xs:  # directly: a transposed view and its contiguous copy give the same bits
        c = np.ascontiguousarray(a.T)
        mm = get_op("matmul").reference
        assert np.array_equal(mm([a.T, a], None)[0], mm([c, a], None)[0])
        op = run_pipeline(parse_fn("""\
func @s(%x: f32[40,64]) -> f32[40] {
  %0 = reduce_sum %x {axes=[1]} : f32[40]
  return %0
}
"""), "O0").ops[0]
        rs = get_op("reduce_sum").reference
        assert np.array_equal(rs([a.T], op)[0], rs([c], op)[0])


DATA_MOVEMENT = ("transpose", "reshape", "broadcast", "reduce", "slice", "pad", "concat",
                 "unary", "binary", "cast")


@pytest.mark.parametrize("pipeline", ["simplify", "O2"])
@settings(max_examples=30)
@given(prog=programs(max_ops=10, kinds=DATA_MOVEMENT, max_rank=3), seed=st.integers(0, 2**16))
def test_data_movement_chains(pipeline, prog, seed):
    """Mostly transposes, reshapes, broadcasts and reductions: the compositions simplify
    makes (transpose of transpose, broadcast of broadcast, ...) and the fused kernels."""
    out = run_pipeline(prog.function, pipeline)
    args = prog.make_inputs(seed)
    assert_same_results(prog.run(args), run_function(out, args), exact_zero_sign=False)
    assert_round_trips(out)


@st.composite
def layout_chains(draw):
    """x -> a chain of transposes, reshapes and broadcasts (what simplify composes) -> exp."""
    rank = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank)))
    f = Function("chain", [TensorType(ig.DType.f32, shape)], ["x"])
    b = Builder(f.body)
    v = f.params[0]
    for _ in range(draw(st.integers(2, 6))):
        kind = draw(st.sampled_from(["transpose", "broadcast", "reshape"]))
        r = len(v.shape)
        if kind == "transpose" and r >= 2:
            v = b.transpose(v, tuple(draw(st.permutations(range(r)))))
        elif kind == "broadcast" and r <= 3 and math.prod(v.shape) <= 27:
            pos = draw(st.integers(0, r))  # where the new axis goes
            dims = tuple(i if i < pos else i + 1 for i in range(r))
            out = list(v.shape)
            out.insert(pos, draw(st.integers(1, 3)))
            for i, d in enumerate(dims):  # size-1 axes may stretch
                if v.shape[i] == 1:
                    out[d] = draw(st.integers(1, 3))
            v = b.broadcast(v, tuple(out), dims)
        elif kind == "reshape" and r >= 1:
            dims = list(v.shape)
            draw(st.randoms()).shuffle(dims)
            v = b.reshape(v, tuple(dims) if draw(st.booleans()) else (math.prod(dims),))
    f.set_outputs([b.exp(v)])
    ig.verify(f)
    return f


@settings(max_examples=40)
@given(f=layout_chains(), seed=st.integers(0, 2**16))
def test_layout_chains(f, seed):
    """simplify composes transposes, broadcasts and reshapes: bit-identical results."""
    args = [np.random.default_rng(seed).standard_normal(f.params[0].shape).astype(np.float32)]
    want = run_function(f, args)
    for pipeline in ("simplify", "O2"):
        out = run_pipeline(f, pipeline)
        assert_same_results(want, run_function(out, args), what=pipeline)
    out = run_pipeline(f, "simplify")
    for op in out.ops:  # every same-kind pair was composed into one op
        src = op.operands[0].op if op.operands else None
        if op.opname in ("transpose", "reshape", "broadcast") and src is not None:
            assert src.opname != op.opname, print_function(out)
        if op.opname == "transpose":
            assert op.attrs["perm"] != tuple(range(len(op.attrs["perm"]))), print_function(out)


@settings(max_examples=40)
@given(prog=programs(max_ops=12), seed=st.integers(0, 2**16), data=st.data())
def test_plan_with_random_donation(prog, seed, data):
    """Results donated to parameters of the same type, each parameter at most once (as a
    training step's updates): the plan stays sound under the arena simulation, with or
    without fusion."""
    f = run_pipeline(prog.function, "O0")  # a copy
    donate = []
    for v in f.outputs:
        cands = [i for i, p in enumerate(f.params) if p.type == v.type and i not in donate]
        donate.append(data.draw(st.sampled_from([-1] + cands)))
    f.attrs["donate"] = tuple(donate)
    args = prog.make_inputs(seed)
    for pipeline in ("plan-memory", "fuse,plan-memory"):
        planned = run_pipeline(f, pipeline)
        check_planned(planned, args)
        for op in planned.ops:  # every mem[%p] is a parameter the attribute allows
            for r, place in zip(op.results, op.mem.results if op.mem else ()):
                p = place.param if isinstance(place, InParam) else None
                if p is not None and not (op.opname in ("reshape", "stop_gradient")
                                          and op.operands[0] is p):
                    assert r in planned.outputs
                    i = planned.outputs.index(r)
                    assert planned.params[donate[i]] is p


@pytest.mark.parametrize("pipeline", ["constant-fold", "simplify", "cse", "dce", "O1"])
@settings(max_examples=20)
@given(prog=programs(max_ops=12))
def test_idempotent(pipeline, prog):
    once = run_pipeline(prog.function, pipeline)
    twice = run_pipeline(once, pipeline)
    assert print_function(twice) == print_function(once)


O1_FEEDS_ITSELF = """\
func @f(%x: f32[4], %c: bool[4], %i: i32[4]) -> (f32[4], f32[4], f32[4], i32[4]) {
  %0 = exp %x : f32[4]
  %1 = exp %x : f32[4]
  %2 = max %0, %1 : f32[4]
  %3 = select %c, %0, %1 : f32[4]
  %4 = neg %x : f32[4]
  %5 = neg %x : f32[4]
  %6 = mul %4, %5 : f32[4]
  %7 = const {value=0} : i32[4]
  %8 = mul %i, %7 : i32[4]
  %9 = const {value=5} : i32[4]
  %10 = max %8, %9 : i32[4]
  return %2, %3, %6, %10
}
"""


def test_o1_reaches_a_fixpoint():
    """cse exposes max(e, e) and select(c, e, e) to simplify; simplify exposes max(0, 5)
    to constant-fold: O1 repeats its passes until nothing changes."""
    f = parse_fn(O1_FEEDS_ITSELF)
    once = run_pipeline(f, "O1")
    assert print_function(run_pipeline(once, "O1")) == print_function(once)
    text = print_function(once)
    assert "max" not in text and "select" not in text and "neg" not in text
    assert "const {value=5} : i32[4]" in text
    args = [np.array([0.5, -1.0, 2.0, 0.0], np.float32), np.array([True, False, True, False]),
            np.array([1, 2, 3, 4], np.int32)]
    assert_same_results(run_function(f, args), run_function(once, args))


def test_o2_reaches_the_o1_fixpoint_too():
    f = parse_fn(O1_FEEDS_ITSELF)
    o2 = run_pipeline(f, "O2")
    assert "max" not in print_function(o2)
    check_plan(o2)


# --- passes report whether they changed anything ------------------------------------------

@settings(max_examples=80, deadline=None)
@given(programs(max_ops=12))
def test_passes_report_exactly_when_they_change(prog):
    """`changed` is the truth: the printed IR differs exactly when a pass says it changed
    (the O1 fixpoint relies on it), on random programs and on their O1/O2 output."""
    for start in (prog.function, run_pipeline(prog.function, "O1")):
        for name in ["constant-fold", "simplify", "cse", "dce", "fuse"]:
            (p,) = parse_pipeline(name)
            f = clone_function(start)
            before = print_function(f)
            result = p.apply(f)
            assert isinstance(result, PassResult)
            assert result.changed == (print_function(result.function) != before), name


def test_o1_rounds_follow_the_reported_changes():
    """The fixpoint runs another round only when a pass of the last one changed
    something; later rounds show (print, dump) only the passes that changed the IR."""
    f = parse_fn(O1_FEEDS_ITSELF)
    out = io.StringIO()
    run_pipeline(f, "O1", print_after_all=True, time_passes=True, stream=out)
    labels = [label for label, _ in _dumps(out.getvalue().split("===-")[0])]
    o1 = ["expand", "constant-fold", "simplify", "cse", "dce"]
    assert labels[:5] == [f"IR Dump After {p} (@f)" for p in o1]
    assert len(labels) > 5  # cse exposed work for simplify: a second round showed it
    timed = re.findall(r"^\s+[0-9.]+\s+[0-9.]+\s+(\S+)$", out.getvalue(), flags=re.M)
    assert len(timed) % 5 == 0 and timed == o1 * (len(timed) // 5)  # whole rounds ran
    assert len(timed) // 5 <= manager.FIXPOINT_PRESETS["O1"]
    # on its own output, one quiet round: nothing changes, so nothing more is shown
    out = io.StringIO()
    once = run_pipeline(f, "O1")
    run_pipeline(once, "O1", print_after_all=True, stream=out)
    assert [label for label, _ in _dumps(out.getvalue())] == [
        f"IR Dump After {p} (@f)" for p in o1]


def test_a_pass_that_only_runs_counts_as_changing(tmp_path):
    """A pass written with run() alone is taken to change the IR; one that implements
    neither apply() nor run(), or whose option type pipeline text cannot spell, is refused
    when registered; option types come from the annotations."""
    calls = []

    @dataclass(frozen=True)
    class Counting(Pass):
        name: ClassVar[str] = "test-counting"
        scale: float = 1.0
        label: str = "x"
        on: bool = False
        axes: tuple[int, ...] = ()

        def run(self, f):
            calls.append(self)
            return f

    register_pass(Counting)
    try:
        (p,) = parse_pipeline("test-counting{scale=2.5, label=hello, on=true, axes=[1,2]}")
        assert p == Counting(2.5, "hello", True, (1, 2))
        assert parse_pipeline(p.spec()) == [p]
        assert p.apply(parse_fn(SMALL)).changed is True
        with pytest.raises(ig.PipelineError, match="'scale' of pass 'test-counting' expects a number"):
            parse_pipeline("test-counting{scale=big}")
        with pytest.raises(ig.PipelineError, match="'axes' .* expects a list of integers"):
            Counting(axes=(-1,))
        with pytest.raises(ig.PipelineError, match="'on' .* expects true or false, got 1"):
            Counting(on=1)
    finally:
        del PASSES["test-counting"]

    @dataclass(frozen=True)
    class Nothing(Pass):
        name: ClassVar[str] = "test-nothing"

    with pytest.raises(TypeError, match="neither apply"):
        register_pass(Nothing)

    @dataclass(frozen=True)
    class OddOption(Pass):
        name: ClassVar[str] = "test-odd"
        table: dict = None

        def run(self, f):
            return f

    with pytest.raises(TypeError, match="option 'table' of pass 'test-odd' has the type"):
        register_pass(OddOption)
    assert "test-nothing" not in PASSES and "test-odd" not in PASSES


# --- memory plans: check_plan rejects broken plans ---------------------------------------

PLANNED = """\
func @f(%w: f32[16], %x: f32[16]) -> (f32[16], f32[16]) attributes {donate=[-1, 0]} {
  %0 = exp %x : f32[16]
  %1 = tanh %0 : f32[16]
  %2 = add %0, %1 : f32[16]
  %3 = mul %w, %x : f32[16]
  %4 = sub %3, %x : f32[16]
  return %2, %4
}
"""


@pytest.fixture
def planned():
    f = run_pipeline(parse_fn(PLANNED), "plan-memory")
    ops = f.ops
    # the plan these tests edit: %0 and %1 live together, %2 in place over %0, %4 into %w
    assert ops[0].mem == mem(0) and ops[1].mem == mem(64) and ops[2].mem == mem(0)
    assert ops[4].mem == mem(f.params[0])
    check_plan(f)
    return f


def test_check_plan_catches_overlapping_live_buffers(planned):
    planned.ops[1].mem = mem(0)  # tanh over exp's bytes while exp is still read by add
    with pytest.raises(IrgradError, match="overlap"):
        check_plan(planned)
    args = [np.linspace(-1, 1, 16, dtype=np.float32), np.linspace(-2, 2, 16, dtype=np.float32)]
    want = run_function(planned, args)
    got = run_planned(planned, args)  # the simulator sees the clobbered value too
    assert not np.array_equal(got[0], want[0])


def test_check_plan_catches_misaligned_offset(planned):
    planned.ops[1].mem = mem(96)
    with pytest.raises(IrgradError, match="misaligned"):
        check_plan(planned)


def test_check_plan_catches_buffer_outside_the_arena(planned):
    planned.ops[1].mem = mem(planned.attrs["arena_bytes"])
    with pytest.raises(IrgradError, match="outside the arena"):
        check_plan(planned)


def test_check_plan_catches_donated_parameter_read_after_write(planned):
    w = planned.params[0]
    planned.ops[3].mem = mem(w)  # mul writes over %w, which it reads elementwise: allowed
    planned.ops[4].mem = mem(64)
    check_plan(planned)
    planned.ops[3].mem, planned.ops[4].mem = mem(64), mem(w)
    planned.ops[2].mem = mem(w)  # add writes %w, which mul (op 3) still reads
    with pytest.raises(IrgradError, match="overwrites %w, which op 3 still reads"):
        check_plan(planned)
    args = [np.linspace(-1, 1, 16, dtype=np.float32), np.linspace(-2, 2, 16, dtype=np.float32)]
    assert not np.array_equal(run_planned(planned, args)[1], run_function(planned, args)[1])


def test_check_plan_catches_non_elementwise_write_over_its_operand():
    f = run_pipeline(parse_fn("""\
func @t(%w: f32[4,4]) -> f32[4,4] attributes {donate=[0]} {
  %0 = transpose %w {perm=[1, 0]} : f32[4,4]
  return %0
}
"""), "plan-memory")
    f.ops[0].mem = mem(f.params[0])
    with pytest.raises(IrgradError, match="cannot write over"):
        check_plan(f)
    del f.attrs["donate"]
    with pytest.raises(IrgradError, match="does not donate"):
        check_plan(f)


def test_check_plan_catches_missing_or_absent_plans(planned):
    planned.ops[1].mem = None
    with pytest.raises(IrgradError, match="no placement"):
        check_plan(planned)
    planned.ops[1].mem = mem(64, 128)
    with pytest.raises(IrgradError, match="placements"):
        check_plan(planned)
    with pytest.raises(IrgradError, match="no memory plan"):
        check_plan(parse_fn(PLANNED))


def test_check_plan_catches_scratch_over_a_live_value():
    f = run_pipeline(parse_fn("""\
func @s(%x: f32[8,16], %w: f32[16,4], %y: f32[4]) -> (f64[8,4], f32[4]) {
  %0 = exp %y : f32[4]
  %1 = matmul %x, %w : f32[8,4]
  %2 = cast %1 {dtype=f64} : f64[8,4]
  %3 = neg %0 : f32[4]
  return %2, %3
}
"""), "fuse,plan-memory")
    kernel = next(op for op in f.ops if op.regions)
    scratch = kernel.mem.scratch
    assert scratch, print_function(f)
    exp_offset = f.ops[0].mem.results[0].offset
    kernel.mem = Placement(kernel.mem.results, (exp_offset,))
    with pytest.raises(IrgradError, match="overlap"):
        check_plan(f)


VIEW_THEN_IN_PLACE = """\
func @f(%x: f32[4]) -> f32[2,2] {
  %0 = exp %x : f32[4]
  %1 = reshape %0 : f32[2,2]
  %2 = neg %1 : f32[2,2]
  return %2
}
"""


def test_plan_in_place_over_a_view_is_sound():
    """The planner writes neg's result over exp's bytes, read through the reshape view,
    where exp dies: sound, as the arena simulation shows."""
    f = plan_memory(parse_fn(VIEW_THEN_IN_PLACE))
    assert [op.mem for op in f.ops] == [mem(0), mem(0), mem(0)]
    assert inplace_over_a_view(f)
    x = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    assert_same_results(run_planned(f, [x], use_plan=False), run_planned(f, [x]))


def test_check_plan_accepts_in_place_over_a_view():
    """check_plan once rejected this sound plan ('buffers overlap'), so plan-memory (and
    compile(backend='cpu')) failed on it."""
    f = run_pipeline(parse_fn(VIEW_THEN_IN_PLACE), "plan-memory")
    assert [op.mem for op in f.ops] == [mem(0), mem(0), mem(0)]
    check_plan(assert_round_trips(f))


def test_plan_reuses_memory_on_a_long_chain():
    """A chain of 40 elementwise ops needs one buffer, not 40."""
    lines = ["func @chain(%x: f32[256]) -> f32[256] {", "  %0 = exp %x : f32[256]"]
    for i in range(1, 40):
        lines.append(f"  %{i} = {'tanh' if i % 2 else 'neg'} %{i - 1} : f32[256]")
    lines += ["  return %39", "}", ""]
    f = run_pipeline(parse_fn("\n".join(lines)), "plan-memory")
    assert f.attrs["arena_bytes"] == 1024 == f.attrs["lower_bound_bytes"]
    assert f.attrs["naive_bytes"] == 40 * 1024
    check_plan(f)


# --- the workloads W1-W4: whole training steps ------------------------------------------

_STEPS: dict = {}


def training_step(name: str):
    """(workload, step Function, O1 IR, O2 IR), built once per test session."""
    if name not in _STEPS:
        w = workloads.get(name)
        step = w.step_function()
        _STEPS[name] = (w, step, run_pipeline(step.ir, "O1"), run_pipeline(step.ir, "O2"))
    return _STEPS[name]


@pytest.mark.parametrize("name", workloads.ALL)
def test_workload_plan_is_tight(name):
    w, step, o1, o2 = training_step(name)
    a = o2.attrs
    check_plan(o2)
    assert a["lower_bound_bytes"] <= a["arena_bytes"] <= 1.15 * a["lower_bound_bytes"]
    assert a["arena_bytes"] <= a["naive_bytes"]
    # the updated parameters are written over the old ones
    donated = {p.param for op in o2.ops for p in (op.mem.results if op.mem else ())
               if isinstance(p, InParam)}
    n_params = len(w.init_params())
    if name in workloads.FIRST:
        assert len(donated & set(o2.params[:n_params])) == n_params
    else:
        # conv layers' weights and biases are still read by backward kernels scheduled
        # after their update (the dx GEMM, recomputed ReLU masks), so only the dense
        # layers' updates are written in place today (a known gap, see the issue-12 note)
        dense = [p for p in o2.params if p.name.startswith("params.") and p.name.endswith((".W", ".b"))]
        assert dense and set(dense) <= donated
    assert print_function(assert_round_trips(o2)) == print_function(o2)


@pytest.mark.parametrize("name", workloads.ALL)
def test_workload_fusion_shrinks_the_step(name):
    _, _, o1, o2 = training_step(name)
    kernels = [op for op in o2.ops if op.opname != "const"]
    assert len(o2.ops) * 3 <= len(o1.ops), (len(o1.ops), len(o2.ops))
    assert sum(1 for op in kernels if op.opname == "fused") * 2 >= len(kernels)


@pytest.mark.parametrize("name", workloads.ALL)
def test_workload_fused_steps_match_unfused(name):
    """Two SGD steps, feeding the updated parameters back: the fused, planned step (run
    by the interpreter and by the arena simulation) gives the unfused step's numbers."""
    w, step, o1, o2 = training_step(name)
    params = w.init_params()
    batches = w.batches(2, seed=3)
    args = step.flatten_args(w.step_state(params) + batches[0])
    state = args[:len(args) - len(batches[0])]  # parameters and optimizer state
    s1 = s2 = state
    for i, batch in enumerate(batches):
        r1 = run_function(o1, [*s1, *batch])
        r2 = run_function(o2, [*s2, *batch])
        assert_same_results(r1, r2, what=f"{name} step {i}")
        if i == 0:
            assert_same_results(run_planned(o2, [*s2, *batch], use_plan=False),
                                run_planned(o2, [*s2, *batch]), what=f"{name} arena simulation")
        assert r1[0].shape == () and np.isfinite(r1[0])
        s1, s2 = r1[1:], r2[1:]
    unfused = run_function(step.ir, [*state, *batches[0]])
    first = run_function(o2, [*state, *batches[0]])
    if name in workloads.FIRST:
        assert_same_results(unfused, first, exact_zero_sign=False, what=f"{name} O0 vs O2")
    else:
        # O0 evaluates `conv` by its reference, O2 its expansion (window + matmul): the
        # same sums in another order
        for a, b in zip(unfused, first):
            np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5 * max(1.0, float(np.abs(a).max())))


# --- the pass manager ------------------------------------------------------------------------

SMALL = """\
func @f(%x: f32[4], %y: f32[4]) -> f32[] {
  %0 = const {value=1.0} : f32[4]
  %1 = mul %x, %0 : f32[4]
  %2 = exp %1 : f32[4]
  %3 = add %2, %y : f32[4]
  %4 = reduce_sum %3 {axes=[0]} : f32[]
  %5 = exp %x : f32[4]
  return %4
}
"""


def flat_names(passes) -> list[str]:
    out = []
    for p in passes:
        inner = getattr(p, "passes", None)
        out += flat_names(inner) if inner is not None else [p.name]
    return out


def test_pipeline_text_with_options():
    (p,) = parse_pipeline("fuse{max-ops=32}")
    assert p == FusePass(max_ops=32) and p.spec() == "fuse{max-ops=32}"
    (p,) = parse_pipeline(" fuse { max-ops = 8 , max-recompute=0 } ")
    assert (p.max_ops, p.max_recompute) == (8, 0)
    assert parse_pipeline("fuse")[0].spec() == "fuse"
    (p,) = parse_pipeline("reverse-ad{wrt=[0, 2],return-value=true}")
    assert p == ReverseADPass(wrt=(0, 2), return_value=True)
    assert parse_pipeline(p.spec()) == [p]
    assert flat_names(parse_pipeline("simplify, cse,dce")) == ["simplify", "cse", "dce"]
    assert parse_pipeline("") == []


def test_presets_expand():
    assert flat_names(parse_pipeline("O0")) == []
    o1 = ["expand", "constant-fold", "simplify", "cse", "dce"]
    assert flat_names(parse_pipeline("O1")) == o1
    assert flat_names(parse_pipeline("O2")) == o1 + ["fuse", "plan-memory"]
    assert flat_names(parse_pipeline("O1,fuse{max-ops=4}")) == o1 + ["fuse"]
    f = parse_fn(SMALL)
    assert print_function(run_pipeline(f, "O2")) == print_function(
        run_pipeline(f, "O1,fuse,plan-memory"))
    assert print_function(run_pipeline(f, "O1")) == print_function(
        run_pipeline(f, "expand,constant-fold,simplify,cse,dce"))
    assert print_function(run_pipeline(f, "O0")) == print_function(f)


@pytest.mark.parametrize("text, pattern", [
    ("nope", r"unknown pass 'nope'"),
    ("simplify,Fuse", r"unknown pass 'Fuse'"),
    ("fuse{max_ops=3}", r"pass 'fuse' has no option 'max_ops' \(options: max-ops, max-recompute\)"),
    ("fuse{max-ops=many}", r"option 'max-ops' of pass 'fuse' expects an integer, got 'many'"),
    ("fuse{max-ops}", r"option 'max-ops' of pass 'fuse' needs a value"),
    ("reverse-ad{return-value=yes}", r"'return-value' of pass 'reverse-ad' expects true or false"),
    ("reverse-ad{wrt=[0, x]}", r"'wrt' of pass 'reverse-ad' expects a list of integers"),
    ("O2{max-ops=3}", r"the preset O2 takes no options"),
    ("simplify cse", r"cannot read the pipeline"),
    ("fuse{max-ops=3", r"cannot read the pipeline"),
    ("cse,,dce", r"cannot read the pipeline"),
])
def test_bad_pipelines(text, pattern):
    with pytest.raises(ig.PipelineError, match=pattern) as e:
        run_pipeline(parse_fn(SMALL), text)
    assert "\n" not in str(e.value)


def test_unknown_pass_lists_known_passes():
    with pytest.raises(ig.PipelineError) as e:
        parse_pipeline("simplify,fusion")
    msg = str(e.value)
    for name in ["constant-fold", "simplify", "cse", "dce", "fuse", "plan-memory", "reverse-ad",
                 "forward-ad", "verify"]:
        assert name in msg
    assert "O2" in msg


def test_print_after_unknown_pass():
    with pytest.raises(ig.PipelineError, match="unknown pass 'fusion'"):
        run_pipeline(parse_fn(SMALL), "O2", print_after="fusion")


@pytest.fixture
def broken_pass():
    """Two throwaway passes: one gives an op a result type the op does not infer, the
    other puts the right type back. Removed from the registry afterwards."""

    def target(f):
        return next(op for op in f.ops if op.operands and get_op(op.opname).elementwise)

    @dataclass(frozen=True)
    class BreakIR(Pass):
        name: ClassVar[str] = "test-break-ir"

        def run(self, f):
            r = target(f).results[0]
            r.type = TensorType(r.dtype, (r.type.size + 1,))
            return f

    @dataclass(frozen=True)
    class RepairIR(Pass):
        name: ClassVar[str] = "test-repair-ir"

        def run(self, f):
            op = target(f)
            op.results[0].type = op.operands[0].type
            return f

    register_pass(BreakIR)
    register_pass(RepairIR)
    try:
        yield BreakIR
    finally:
        del PASSES["test-break-ir"], PASSES["test-repair-ir"]
    assert "test-break-ir" not in PASSES and "test-repair-ir" not in PASSES


def test_verifier_runs_after_every_pass(broken_pass):
    f = parse_fn(SMALL)
    with pytest.raises(ig.VerifyError, match="after pass 'test-break-ir'") as e:
        run_pipeline(f, "simplify,test-break-ir,cse")
    assert "does not match" in str(e.value)
    # caught right after the pass that broke it, not only at the end of the pipeline
    with pytest.raises(ig.VerifyError, match="after pass 'test-break-ir'"):
        run_pipeline(f, "test-break-ir,test-repair-ir")
    assert print_function(run_pipeline(f, "test-break-ir,test-repair-ir", verify=False)) == SMALL
    out = run_pipeline(f, "simplify,test-break-ir", verify=False)  # turned off: not caught
    with pytest.raises(ig.VerifyError):
        ig.verify(out)
    with pytest.raises(ig.VerifyError):  # ... except by an explicit verify pass
        run_pipeline(f, "test-break-ir,verify", verify=False)
    assert print_function(f) == SMALL  # the input is never touched


def _dumps(text: str):
    """[(label, IR text)] from print-before/after output."""
    parts = re.split(r"^// -----// (.*?) //----- //\n", text, flags=re.M)
    assert parts[0] == ""
    return list(zip(parts[1::2], parts[2::2]))


def test_print_after_all_labels_every_pass():
    f = parse_fn(SMALL)
    out = io.StringIO()
    result = run_pipeline(f, "O2", print_after_all=True, stream=out)
    dumps = _dumps(out.getvalue())
    assert [label for label, _ in dumps] == [
        f"IR Dump After {p} (@f)" for p in
        ["expand", "constant-fold", "simplify", "cse", "dce", "fuse", "plan-memory"]]
    stage = f
    for (label, text), p in zip(dumps, ["expand", "constant-fold", "simplify", "cse", "dce", "fuse",
                                        "plan-memory"]):
        stage = run_pipeline(stage, p)
        assert text.strip() == print_function(stage).strip(), label
        assert str(ig.parse(text)).strip() == text.strip()
    assert dumps[-1][1].strip() == print_function(result).strip()


def test_print_before_all_and_print_after():
    f = parse_fn(SMALL)
    out = io.StringIO()
    run_pipeline(f, "simplify,dce", print_before_all=True, stream=out)
    dumps = _dumps(out.getvalue())
    assert [label for label, _ in dumps] == ["IR Dump Before simplify (@f)",
                                             "IR Dump Before dce (@f)"]
    assert dumps[0][1].strip() == SMALL.strip()
    out = io.StringIO()
    result = run_pipeline(f, "O2", print_after=("fuse",), stream=out)
    dumps = _dumps(out.getvalue())
    assert [label for label, _ in dumps] == ["IR Dump After fuse (@f)"]
    assert "fused" in dumps[0][1] and "mem[" not in dumps[0][1] and "mem[" in str(result)


def test_time_passes_report():
    out = io.StringIO()
    run_pipeline(parse_fn(SMALL), "O2", time_passes=True, stream=out)
    text = out.getvalue()
    assert text.startswith("===- Pass execution timing report (@f) -===\n")
    total = float(re.search(r"Total: ([0-9.]+) ms", text).group(1))
    rows = re.findall(r"^\s+([0-9.]+)\s+([0-9.]+)\s+(\S.*)$", text, flags=re.M)
    names = [name for _, _, name in rows]
    for p in ["constant-fold", "simplify", "cse", "dce", "fuse", "plan-memory"]:
        assert p in names
    assert sum(float(ms) for ms, _, _ in rows) == pytest.approx(total, rel=0.05, abs=0.01)
    assert sum(float(pct) for _, pct, _ in rows) == pytest.approx(100, abs=1)


def test_irgrad_dump_writes_one_parseable_file_per_pass(tmp_path, monkeypatch):
    second = SMALL.replace("@f", "@g").replace("exp", "tanh")
    m = ig.parse(SMALL + "\n" + second)
    monkeypatch.setenv("IRGRAD_DUMP", str(tmp_path / "dumps"))
    result = run_pipeline(m, "O2")
    files = sorted(os.listdir(tmp_path / "dumps"))
    assert files == ["00-input.ir", "01-expand.ir", "02-constant-fold.ir", "03-simplify.ir",
                     "04-cse.ir", "05-dce.ir", "06-fuse.ir", "07-plan-memory.ir"]
    for name in files:
        dumped = ig.parse((tmp_path / "dumps" / name).read_text(), name)
        assert list(dumped.functions) == ["f", "g"], name  # both functions, none overwritten
    first = ig.parse((tmp_path / "dumps" / "00-input.ir").read_text())
    assert str(first) == str(m)
    last = ig.parse((tmp_path / "dumps" / "07-plan-memory.ir").read_text())
    assert str(last) == str(result)


def test_reverse_and_forward_ad_as_pipeline_passes():
    f = parse_fn("""\
func @f(%x: f32[3], %y: f32[3]) -> f32[] {
  %0 = mul %x, %x : f32[3]
  %1 = mul %0, %y : f32[3]
  %2 = reduce_sum %1 {axes=[0]} : f32[]
  return %2
}
""")
    x = np.array([1.0, -2.0, 0.5], np.float32)
    y = np.array([3.0, 0.25, -1.0], np.float32)
    g = run_pipeline(f, "reverse-ad{wrt=[0]}")
    assert [str(t) for t in g.result_types] == ["f32[3]"]
    (dx,) = run_function(g, [x, y])
    np.testing.assert_allclose(dx, 2 * x * y, rtol=1e-6)
    g2 = run_pipeline(f, "reverse-ad{wrt=[0]},O2")
    assert_same_results([dx], run_function(g2, [x, y]), exact_zero_sign=False)
    vg = run_pipeline(f, "reverse-ad{wrt=[0, 1],return-value=true}")
    val, gx, gy = run_function(vg, [x, y])
    np.testing.assert_allclose(val, np.sum(x * x * y), rtol=1e-6)
    np.testing.assert_allclose(gy, x * x, rtol=1e-6)
    jvp = run_pipeline(f, "forward-ad{wrt=[0]},O1")
    t = np.array([1.0, 1.0, -1.0], np.float32)
    val, tan = run_function(jvp, [x, y, t])
    np.testing.assert_allclose(tan, np.sum(2 * x * y * t), rtol=1e-6)
    fused = run_pipeline(f, "fuse")
    assert any(op.regions for op in fused.ops)
    with pytest.raises(IrgradError, match="run forward-ad before fuse"):
        run_pipeline(fused, "forward-ad")


def test_spec_of_defaults_and_options_round_trip():
    for name in sorted(PASSES):
        cls = PASSES[name]
        p = cls()
        assert p.spec() == name
        assert parse_pipeline(p.spec()) == [p]
    assert manager.known_passes() == sorted(PASSES)
