"""IR text: print/parse round trips, bit-exact floats, comments, locations, regions, and
the errors (ParseError, VerifyError) that bad text and bad IR produce.

The contract (DESIGN.md): `parse(print(f))` prints identically to `f`; floats read back
bit-exact; errors name `file:line:col`, show the line and put a caret under the place.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import irgrad as ig
from irgrad.errors import SourceLoc
from irgrad.ir import Builder, Function, Operation, TensorType, run_function, verify_function
from irgrad.ir.core import Block
from irgrad.ir.registry import all_ops
from irgrad.ir.types import DType

from strategies import programs, random_inputs

LOSS = '''\
func @loss(%w: f32[64,10], %b: f32[10], %x: f32[32,64], %y: i32[32]) -> f32[] {
  %0 = matmul %x, %w : f32[32,10]                             loc("model.py":8)
  %1 = broadcast %b {dims=[1]} : f32[32,10]                   loc("model.py":8)
  %2 = add %0, %1 : f32[32,10]                                loc("model.py":8)
  %3 = reduce_max %2 {axes=[1]} : f32[32]                     loc("model.py":9)
  %4 = stop_gradient %3 : f32[32]
  %5 = broadcast %4 {dims=[0]} : f32[32,10]
  %6 = sub %2, %5 : f32[32,10]
  %7 = exp %6 : f32[32,10]
  %8 = reduce_sum %7 {axes=[1]} : f32[32]
  %9 = log %8 : f32[32]
  %10 = broadcast %9 {dims=[0]} : f32[32,10]
  %11 = sub %6, %10 : f32[32,10]
  %12 = iota {axis=1} : i32[32,10]
  %13 = broadcast %y {dims=[0]} : i32[32,10]
  %14 = eq %12, %13 : bool[32,10]
  %15 = const {value=0.0} : f32[32,10]
  %16 = select %14, %11, %15 : f32[32,10]
  %17 = reduce_sum %16 {axes=[0, 1]} : f32[]
  %18 = neg %17 : f32[]
  %19 = const {value=32.0} : f32[]
  %20 = div %18, %19 : f32[]
  return %20
}
'''

SHAPES = '''\
func @shapes(%a: f64[2,3], %idx: i64[4]) -> (f64[3,2], f64[4,3], bool[2,3], i32[2,3]) {
  %0 = transpose %a {perm=[1, 0]} : f64[3,2]
  %1 = gather %a, %idx {axis=0} : f64[4,3]
  %2 = const {value=[[true, false, true], [false, false, true]]} : bool[2,3]
  %3 = cast %a {dtype=i32} : i32[2,3]
  %4 = slice %3 {start=[0, 1], limit=[2, 3]} : i32[2,2]
  %5 = pad %4 {low=[0, 1], high=[0, 0]} : i32[2,3]
  return %0, %1, %2, %5
}
'''

# A fused op with a region: its body is indented one level deeper than the op.
KERNEL = '''\
func @kernel(%x: f32[2,3], %b: f32[3]) -> (f32[2,3], f32[2]) {
  %0, %1 = fused %x, %b {kind="loop"} : f32[2,3], f32[2,3]    loc("k.py":3) {
    (%2: f32[2,3], %3: f32[3]):
    %4 = broadcast %3 {dims=[1]} : f32[2,3]
    %5 = add %2, %4 : f32[2,3]
    %6 = const {value=[0.5, -inf, nan]} : f32[3]
    %7 = broadcast %6 {dims=[1]} : f32[2,3]
    %8 = mul %5, %7 : f32[2,3]
    yield %8, %5
  }
  %9 = reduce_sum %1 {axes=[1]} : f32[2]
  return %0, %9
}
'''

TWO_FUNCS = '''\
func @first(%x: f32[3]) -> f32[3] {
  %0 = neg %x : f32[3]
  return %0
}

func @second(%x.0: f32[], %params.w_1: f32[]) -> (f32[], f32[]) {
  return %params.w_1, %x.0
}
'''

# Regions nest in the text; each sees only its own arguments and values. (A fused kernel
# cannot hold another, so the verifier rejects this one: it is parsed unverified.)
NESTED = '''\
func @nested(%x: f32[3]) -> f32[3] {
  %0 = fused %x {kind="loop"} : f32[3] {
    (%1: f32[3]):
    %2 = fused %1 {kind="loop"} : f32[3] {
      (%3: f32[3]):
      %4 = exp %3 : f32[3]                                    loc("n.py":1)
      yield %4
    }
    %5 = neg %2 : f32[3]
    yield %5
  }
  return %0
}
'''

CANONICAL = [LOSS, SHAPES, KERNEL, TWO_FUNCS, NESTED]


# --- round trips ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text", CANONICAL, ids=["loss", "shapes", "kernel", "two_funcs", "nested"])
def test_printer_output_round_trips(text):
    if text is NESTED:
        m = ig.parse(text, verify=False)
        assert str(m) == text
        with pytest.raises(ig.VerifyError, match="cannot hold 'fused'"):
            ig.verify(m)
        return
    m = ig.parse(text)
    assert str(m) == text
    ig.verify(m)


def test_parsed_function_runs_like_numpy():
    f = ig.parse(LOSS).functions["loss"]
    w, b, x, y = random_inputs(f.params, seed=3)
    logits = x.astype(np.float64) @ w + b
    lsm = logits - logits.max(1, keepdims=True)
    lsm -= np.log(np.exp(lsm).sum(1, keepdims=True))
    want = -lsm[np.arange(32), y].mean()
    (got,) = run_function(f, [w, b, x, y])
    assert got.dtype == np.float32 and got.shape == ()
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_kernel_region_runs():
    f = ig.parse(KERNEL).functions["kernel"]
    x, b = random_inputs(f.params, seed=1)
    out0, out1 = run_function(f, [x, b])
    s = x + b
    np.testing.assert_array_equal(out0[:, 0], s[:, 0] * np.float32(0.5))
    assert np.all(out0[:, 1] == -np.inf * np.sign(s[:, 1])) and np.all(np.isnan(out0[:, 2]))
    np.testing.assert_allclose(out1, s.sum(1), rtol=1e-6)


def test_nested_regions_run():
    f = ig.parse(NESTED, verify=False).functions["nested"]
    x = np.linspace(-1, 1, 3, dtype=np.float32)
    np.testing.assert_array_equal(run_function(f, [x])[0], -np.exp(x))
    e = assert_parse_error(NESTED.replace("exp %3", "exp %1"), 6, 16,
                           "a region cannot use %1 from outside it")
    assert e.filename == "bad.ir"


def test_module_keeps_function_order_and_names():
    m = ig.parse(TWO_FUNCS)
    assert list(m.functions) == ["first", "second"]
    f = m.functions["second"]
    assert [p.name for p in f.params] == ["x.0", "params.w_1"]
    assert f.outputs == [f.params[1], f.params[0]]


def test_non_canonical_text_prints_canonically():
    # odd spacing, comments, other value names: the printer normalizes, then it is stable
    text = '''// a module comment
func   @f( %in : f32[2, 3] ,%k:f32[] )->f32[2,3]{   // header comment
  %t=broadcast %k{dims=[]}:f32[2,3]
  // a full-line comment, then blank lines

  %sum   =   add %in,%t   :   f32[2,3]   loc( "a.py" : 7 )  // trailing comment
  return %sum
}'''
    printed = str(ig.parse(text))
    assert printed == '''\
func @f(%in: f32[2,3], %k: f32[]) -> f32[2,3] {
  %0 = broadcast %k {dims=[]} : f32[2,3]
  %1 = add %in, %0 : f32[2,3]                                 loc("a.py":7)
  return %1
}
'''
    assert str(ig.parse(printed)) == printed


def test_comment_markers_inside_strings_are_not_comments():
    text = LOSS.replace('"model.py"', '"dir//model.py"')
    m = ig.parse(text)
    assert m.functions["loss"].ops[0].loc == SourceLoc("dir//model.py", 8)
    assert str(m) == text


@pytest.mark.parametrize("filename", ["model.py", "a b/c.py", 'q"uote.py', "back\\slash.py",
                                      "tab\there.py", "ünïcode.py", "", "//x"])
def test_locations_round_trip(filename):
    f = Function("f", [TensorType(DType.f32, (2,))], ["x"])
    b = Builder(f.body, SourceLoc(filename, 12345))
    f.set_outputs([b.exp(f.params[0])])
    text = str(f)
    g = ig.parse(text).functions["f"]
    assert g.ops[0].loc == SourceLoc(filename, 12345)
    assert str(g) == text


def test_parameter_names_are_kept_or_made_unique():
    t = TensorType(DType.f32, ())
    f = Function("f", [t, t, t, t], ["x", "x", None, "bad name"])
    b = Builder(f.body)
    f.set_outputs([b.add(b.add(f.params[0], f.params[1]), b.add(f.params[2], f.params[3]))])
    text = str(f)
    assert text.startswith("func @f(%x: f32[], %x_1: f32[], %arg2: f32[], %arg3: f32[]) -> f32[]")
    assert str(ig.parse(text)) == text


def test_function_attributes_round_trip():
    f = Function("f", [TensorType(DType.f32, ())], ["x"])
    f.set_outputs([f.params[0]])
    f.attrs = {"arena_bytes": 128, "note": "planned", "scale": 0.5, "ok": True,
               "offsets": (0, 64), "dt": DType.f64}
    text = str(f)
    assert 'attributes {arena_bytes=128, note="planned", scale=0.5, ok=true' in text
    assert str(ig.parse(text)) == text


def test_empty_dense_constant_round_trips():
    # an empty array cannot be spelled with nested brackets: it must still read back
    for shape in [(0,), (2, 0), (0, 3)]:
        f = Function("f", [])
        b = Builder(f.body)
        f.set_outputs([b.const(np.zeros(shape, np.float32), TensorType(DType.f32, shape))])
        text = str(f)
        g = ig.parse(text).functions["f"]
        assert str(g) == text
        assert run_function(g, [])[0].shape == shape


@given(programs(max_ops=12))
def test_random_programs_round_trip(prog):
    text = prog.text
    m = ig.parse(text, verify=True)
    assert str(m) == text
    # the parsed program means the same: bit-identical results on the interpreter
    args = prog.make_inputs(seed=7)
    for got, want in zip(run_function(m.functions["prog"], args), prog.run(args)):
        np.testing.assert_array_equal(got, want)


# --- floats are bit-exact --------------------------------------------------------------------------

SPECIAL = [0.0, -0.0, 1.0, -1.5, math.inf, -math.inf, math.nan, 1e-45, 1.4e-45, 1e-310,
           5e-324, 3.4028234663852886e38, 1.7976931348623157e308, 0.1, 1 / 3, 2.0**-149,
           1e16, 123456789.0, -2.5e-8]


def float_const_roundtrip(values, dtype: DType):
    arr = np.asarray(values, dtype=dtype.np)
    f = Function("f", [])
    b = Builder(f.body)
    f.set_outputs([b.const(arr, TensorType(dtype, arr.shape)),
                   b.const(arr.reshape(-1)[0], TensorType(dtype, ()))])  # a splat too
    text = str(f)
    g = ig.parse(text).functions["f"]
    assert str(g) == text
    dense, splat = run_function(g, [])
    bits = np.uint32 if dtype is DType.f32 else np.uint64
    # compare bit patterns (so -0.0 vs 0.0 counts); any nan reads back as a nan
    nan = np.isnan(arr)
    assert np.array_equal(np.isnan(dense), nan)
    assert np.array_equal(dense[~nan].view(bits), arr[~nan].view(bits)), text
    first = arr.reshape(-1)[0]
    assert (np.isnan(splat) and np.isnan(first)) or splat.view(bits) == first.view(bits)
    return text


@pytest.mark.parametrize("dtype", [DType.f32, DType.f64])
def test_special_floats_round_trip(dtype):
    with np.errstate(over="ignore"):
        text = float_const_roundtrip(SPECIAL, dtype)
    for word in ("inf", "-inf", "nan", "-0.0"):
        assert re.search(rf"[\[ ]{re.escape(word)}[,\]]", text), word


@given(st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True),
                min_size=1, max_size=8))
def test_random_f32_round_trip(values):
    float_const_roundtrip(values, DType.f32)


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
                min_size=1, max_size=8))
def test_random_f64_round_trip(values):
    float_const_roundtrip(values, DType.f64)


@given(st.integers(0, 2**32 - 1))
def test_every_f32_bit_pattern_round_trips(bits):
    float_const_roundtrip([np.uint32(bits).view(np.float32)], DType.f32)


@pytest.mark.parametrize("dtype,values", [(DType.i32, [-2**31, 2**31 - 1, 0]),
                                          (DType.i64, [-2**63, 2**63 - 1, 7]),
                                          (DType.bool, [True, False])])
def test_integer_and_bool_constants_round_trip(dtype, values):
    f = Function("f", [])
    b = Builder(f.body)
    f.set_outputs([b.const(np.array(values, dtype.np), TensorType(dtype, (len(values),)))])
    text = str(f)
    g = ig.parse(text).functions["f"]
    assert str(g) == text
    np.testing.assert_array_equal(run_function(g, [])[0], np.array(values, dtype.np))


# --- ParseError: line, col, caret ---------------------------------------------------------------

GOOD = "func @f(%a: f32[3], %i: i32[2]) -> f32[3] {\n  %0 = neg %a : f32[3]\n  return %0\n}\n"


def assert_parse_error(text, line, col, words):
    with pytest.raises(ig.ParseError) as info:
        ig.parse(text, filename="bad.ir")
    e = info.value
    msg = str(e)
    assert (e.line, e.col) == (line, col), msg
    assert msg.startswith(f"bad.ir:{line}:{col}: error: "), msg
    assert words in msg, msg
    # the offending line, then a caret under column `col` of it
    lines = msg.splitlines()
    src = text.splitlines()[line - 1] if text.splitlines() else ""
    prefix = f"{line} | "
    assert lines[1] == prefix + src, msg
    assert lines[2].index("^") == len(prefix) + col - 1, msg
    return e


def edit(line: int, new: str) -> str:
    lines = GOOD.splitlines()
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text,line,col,words", [
    (edit(2, "  %0 = frob %a : f32[3]"), 2, 8, "unknown op 'frob'"),
    (edit(2, "  %0 = neg %a : f16[3]"), 2, 17, "unknown dtype 'f16'"),
    (edit(2, "  %0 neg %a : f32[3]"), 2, 6, "expected '='"),
    (edit(2, "  %0 = neg %a f32[3]"), 2, 15, "expected ':' and the result type"),
    (edit(2, "  %0 = neg %b : f32[3]"), 2, 12, "use of undefined value %b"),
    (edit(2, "  %a = neg %a : f32[3]"), 2, 3, "%a is defined twice"),
    (edit(2, "  %0 = neg %a : f32[-3]"), 2, 21, "cannot be negative"),
    (edit(2, "  %0 = neg %a : f32[3] $"), 2, 24, "unexpected character '$'"),
    (edit(2, '  %0 = neg %a : f32[3] loc("x.py:1)'), 2, 28, "unterminated string"),
    (edit(2, '  %0 = neg %a : f32[3] loc("x\\q.py":1)'), 2, 30, "bad string"),
    (edit(2, "  %0 = neg %a {perm=[1.5]} : f32[3]"), 2, 16, "'neg' has no attribute 'perm'"),
    (edit(2, "  %0 = transpose %a {perm=[1.5]} : f32[3]"), 2, 22, "must be a list of integers"),
    (edit(2, "  %0 = transpose %a {perm=[0], perm=[0]} : f32[3]"), 2, 32, "given twice"),
    (edit(2, "  %0 = transpose %a : f32[3]"), 2, 8, "'transpose' needs attribute 'perm'"),
    (edit(2, "  %0 = transpose %a {perm=nope} : f32[3]"), 2, 27, "unexpected 'nope'"),
    (edit(2, "  %0 = transpose %a {perm=[0, [1]} : f32[3]"), 2, 34, "',' or ']'"),
    (edit(2, "  %0 = const {value=[1.0, 2.0]} : bool[3]"), 2, 15, "true/false"),
    (edit(2, "  %0 = const {value=[1.5, 2, 3]} : i32[3]"), 2, 15, "integer values"),
    (edit(2, "  %0 = const {value=[true, 2, 3]} : f32[3]"), 2, 15, "not true/false"),
    (edit(2, "  %0 = const {value=3000000000} : i32[3]"), 2, 15, "does not fit in i32"),
    (edit(2, "  %0 = const {value=[[1.0], [2.0, 3.0]]} : f32[3]"), 2, 15, "rectangular"),
    (edit(2, '  %0 = const {value="one"} : f32[3]'), 2, 15, "must be a number"),
    (edit(2, "  %0, %1 = neg %a : f32[3]"), 2, 12, "2 result name(s) but 1 type(s)"),
    (edit(2, "  %0 = neg %a : f32[3] {"), 2, 24, "'neg' takes no region"),
    (edit(2, '  %0 = fused %a {kind="loop"} : f32[3]'), 3, 3, "needs a region"),
    (edit(3, "  return %zz"), 3, 10, "use of undefined value %zz"),
    (edit(3, "  ret %0"), 3, 3, "expected an op like"),
    (edit(1, "func @f(%a: f32[3], %a: i32[2]) -> f32[3] {"), 1, 21, "%a is defined twice"),
    (edit(1, "func @f(%a: f32[3], %i: i32[2]) f32[3] {"), 1, 33, "'->'"),
    (edit(1, "func f(%a: f32[3], %i: i32[2]) -> f32[3] {"), 1, 6, "a function name like @loss"),
    (edit(1, "fun @f(%a: f32[3], %i: i32[2]) -> f32[3] {"), 1, 1, "expected 'func'"),
    (edit(1, "func @f(%a: f32[3], %i: i32[2]) -> f32[3,] {"), 1, 42, "a dimension size"),
    (GOOD[:-3], 3, 12, "found end of input"),
    (GOOD + GOOD, 5, 1, "function @f is defined twice"),
])
def test_parse_errors_point_at_the_place(text, line, col, words):
    assert_parse_error(text, line, col, words)


def test_region_cannot_use_outer_values():
    text = KERNEL.replace("%4 = broadcast %3", "%4 = broadcast %b")
    e = assert_parse_error(text, 4, 20, "a region cannot use %b from outside it")
    assert "operand of the op that owns the region" in str(e)


def test_region_arguments_cannot_shadow_outer_names():
    assert_parse_error(KERNEL.replace("(%2: f32[2,3]", "(%x: f32[2,3]"), 3, 6, "%x is defined twice")


def test_empty_text_is_an_empty_module():
    assert ig.parse("").functions == {}
    assert ig.parse("// only a comment\n\n").functions == {}


# --- VerifyError --------------------------------------------------------------------------------

def assert_verify_error(text, line, op, words):
    with pytest.raises(ig.VerifyError) as info:
        ig.parse(text, filename="v.ir")
    e = info.value
    msg = str(e)
    assert e.line == line and e.op_name == op, msg
    assert msg.startswith(f"v.ir:{line}:"), msg
    assert f"'{op}'" in msg and words in msg, msg
    assert f"{line} | " + text.splitlines()[line - 1] in msg, msg  # the line itself
    assert "^" in msg
    assert f"'{op}' '{op}'" not in msg  # the op is named once
    return e


@pytest.mark.parametrize("text,line,op,words", [
    (edit(2, "  %0 = neg %a : f32[4]"), 2, "neg", "does not match the type inferred"),
    (edit(2, "  %0 = neg %a : f64[3]"), 2, "neg", "(f32[3])"),
    (edit(2, "  %0 = transpose %a {perm=[0, 0]} : f32[3]"), 2, "transpose", "not a permutation"),
    (edit(2, "  %0 = add %a, %i : f32[3]"), 2, "add", "f32[3], i32[2]"),
    (edit(2, "  %0 = reduce_sum %a {axes=[1]} : f32[]"), 2, "reduce_sum", "axes=[1]"),
    (edit(2, "  %0 = gather %a, %a {axis=0} : f32[3]"), 2, "gather", "must be integers"),
    (edit(2, "  %0 = broadcast %a {dims=[0]} : f32[4]"), 2, "broadcast", "cannot stretch"),
    (edit(2, "  %0 = const {value=[1.0, 2.0]} : f32[3]"), 2, "const", "does not match"),
    (edit(2, "  %0 = slice %a {start=[2], limit=[1]} : f32[0]"), 2, "slice", "do not fit"),
    (edit(3, "  return %a, %a"), 3, "return", "returns 2 value(s) but its signature has 1"),
    (edit(3, "  return %i"), 3, "return", "returns i32[2] as result 0, but its signature says f32[3]"),
])
def test_verify_errors_name_op_and_line(text, line, op, words):
    assert_verify_error(text, line, op, words)


def test_verify_error_inside_a_region():
    text = KERNEL.replace("%5 = add %2, %4 : f32[2,3]", "%5 = add %2, %3 : f32[2,3]")
    assert_verify_error(text, 5, "add", "one type")
    text = KERNEL.replace("yield %8, %5", "yield %8, %3")
    assert_verify_error(text, 2, "fused", "must match the values its region yields")


def builder_function():
    """f(x) = exp(x) + x, built in memory (no text): errors show the printed form."""
    t = TensorType(DType.f32, (3,))
    f = Function("f", [t], ["x"])
    b = Builder(f.body)
    e = b.exp(f.params[0])
    f.set_outputs([b.add(e, f.params[0])])
    verify_function(f)
    return f


def printed_error(f) -> ig.VerifyError:
    with pytest.raises(ig.VerifyError) as info:
        ig.verify(f)
    msg = str(info.value)
    assert msg.startswith("<@f as printed>:"), msg
    return info.value


def test_built_ir_use_before_def():
    f = builder_function()
    f.body.ops.reverse()  # add now uses exp's result before exp runs
    e = printed_error(f)
    assert e.op_name == "add" and e.line == 2 and "not defined before this use" in str(e)


def test_built_ir_wrong_result_type():
    f = builder_function()
    op = f.ops[0]
    op.results[0].type = TensorType(DType.f32, (4,))
    e = printed_error(f)
    assert e.op_name == "exp" and e.line == 2 and "f32[4]" in str(e) and "(f32[3])" in str(e)


def test_built_ir_bad_attribute():
    f = builder_function()
    x = f.params[0]
    bad = Operation("reduce_sum", [x], [TensorType(DType.f32, ())], {"axes": (1,)})
    f.body.ops.insert(1, bad)
    bad.parent = f.body
    e = printed_error(f)
    assert e.op_name == "reduce_sum" and e.line == 3 and "axes=[1]" in str(e)
    bad.attrs = {"axes": (0,), "keepdims": True}
    e = printed_error(f)
    assert "no attribute 'keepdims'" in str(e)


def test_built_ir_bad_return_type():
    f = builder_function()
    f.result_types = [TensorType(DType.f64, (3,))]
    e = printed_error(f)
    assert e.op_name == "return" and e.line == 4
    assert "returns f32[3] as result 0, but its signature says f64[3]" in str(e)
    assert "  return %1" in str(e) and "^" in str(e)


def test_built_ir_region_using_an_outer_value():
    t = TensorType(DType.f32, (3,))
    f = Function("f", [t, t], ["x", "y"])
    region = Block([t])
    rb = Builder(region)
    region.outputs = [rb.add(region.args[0], f.params[1])]  # %y is not visible in there
    op = Operation("fused", [f.params[0]], [t], {"kind": "loop"}, [region])
    f.body.append(op)
    f.set_outputs(op.results)
    e = printed_error(f)
    assert e.op_name == "add" and e.line == 4 and "in this region" in str(e)


def test_built_ir_unknown_op():
    f = builder_function()
    f.ops[1].opname = "frobnicate"
    e = printed_error(f)
    assert "unknown op 'frobnicate'" in str(e) and e.line == 3


# --- fuzzing: mutated text raises only irgrad errors ---------------------------------------------

TOKEN_RE = re.compile(r'%[\w.]+|@[\w.]+|"[^"\n]*"|-?\d+(?:\.\d*)?(?:e[+-]?\d+)?|\w+|->|//|\S')
VOCAB = (sorted(all_ops()) + [d.value for d in DType] +
         ["func", "return", "yield", "loc", "attributes", "true", "false", "inf", "-inf", "nan",
          "%0", "%1", "%x", "@g", '"s"', '"\\q"', "0", "-1", "1e999", "99999999999999999999",
          "2.5", "[", "]", "{", "}", "(", ")", ",", ":", "=", "->", "//", "\n", " ", "[[", "]]"])
CHARS = "%@[]{}(),:=-.\"\\/ \n0123456789aefilnrtu_xé\t"


@st.composite
def mutated_texts(draw):
    """Valid IR text (hand-written or random) with a few character or token mutations."""
    if draw(st.booleans()):
        text = draw(st.sampled_from(CANONICAL))
    else:
        text = draw(programs(max_ops=6)).text
    for _ in range(draw(st.integers(1, 3))):
        toks = [(m.start(), m.end()) for m in TOKEN_RE.finditer(text)]
        kind = draw(st.sampled_from(["del_char", "ins_char", "rep_char", "del_tok", "dup_tok",
                                     "rep_tok", "swap_tok", "vocab_tok", "truncate"]))
        if kind.endswith("_char"):
            i = draw(st.integers(0, len(text) - 1))
            c = draw(st.sampled_from(CHARS))
            text = {"del_char": text[:i] + text[i + 1:], "ins_char": text[:i] + c + text[i:],
                    "rep_char": text[:i] + c + text[i + 1:]}[kind]
        elif kind == "truncate":
            text = text[:draw(st.integers(0, len(text)))]
        else:
            a, b = toks[draw(st.integers(0, len(toks) - 1))]
            c, d = toks[draw(st.integers(0, len(toks) - 1))]
            if kind == "del_tok":
                text = text[:a] + text[b:]
            elif kind == "dup_tok":
                text = text[:b] + " " + text[a:b] + text[b:]
            elif kind == "rep_tok":
                text = text[:a] + text[c:d] + text[b:]
            elif kind == "vocab_tok":
                text = text[:a] + draw(st.sampled_from(VOCAB)) + text[b:]
            elif (a, b) != (c, d):  # swap two tokens
                (a, b), (c, d) = sorted([(a, b), (c, d)])
                if b <= c:
                    text = text[:a] + text[c:d] + text[b:c] + text[a:b] + text[d:]
        if not text:
            break
    return text


@settings(max_examples=max(200, settings().max_examples * 5))
@given(mutated_texts())
def test_mutated_text_raises_only_irgrad_errors(text):
    try:
        m = ig.parse(text)
    except (ig.ParseError, ig.VerifyError) as e:
        assert str(e).strip(), "an error with an empty message"
        return
    # it parsed: then it is valid IR, and prints and reads back like any other
    printed = str(m)
    assert str(ig.parse(printed)) == printed
