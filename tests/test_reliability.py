"""Reliability: nothing unverified reaches native code, any IR is valid input to any
pipeline, thread-safe calls, cache entries bound to their key, no recursion on
user-sized structures, errors that stay inside the IrgradError family.

Each test here is a case a hostile user tried (see the reliability issue); the mutation
fuzzer over printed IR is tests/test_fuzz_ir.py, numerics at the extremes
tests/test_numerics.py.
"""

from __future__ import annotations

import os
import re
import threading

import numpy as np
import pytest

import irgrad as ig
from irgrad import f32, i32
import workloads
from irgrad.codegen.lowering import lower_function
from irgrad.pytree import flatten
from irgrad.ir.core import Placement
from irgrad.ir.plan import check_plan
from irgrad.transforms.training import _spec_tree

from cli_runner import REPO, run_cli
from strategies import HAND_PLANNED as PLANNED



def args16():
    return (np.linspace(-1, 1, 16, dtype=np.float32), np.linspace(-2, 2, 16, dtype=np.float32))


def interp(text, *args):
    return ig.compile(ig.parse(text).functions["f"], backend="numpy", pipeline="O0")(*args)


# --- 1. memory plans are verified -------------------------------------------------------------

def test_the_sample_plan_is_sound_and_runs():
    f = ig.parse(PLANNED).functions["f"]
    check_plan(f)
    w, x = args16()
    w0 = w.copy()
    got = ig.compile(f, backend="cpu", pipeline="O0")(w, x)
    want = interp(PLANNED, w, x)
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-6)
    np.testing.assert_array_equal(w, w0)  # a plain call never writes its arguments


@pytest.mark.parametrize("edit,words", [
    (("%1 = tanh %0 : f32[16] mem[64]", "%1 = tanh %0 : f32[16] mem[999999936]"), "outside the arena"),
    (("arena_bytes=128", "arena_bytes=64"), "outside the arena"),
    (("%1 = tanh %0 : f32[16] mem[64]", "%1 = tanh %0 : f32[16] mem[0]"), "overlap"),
    (("%3 = mul %w, %x : f32[16] mem[64]", "%3 = mul %w, %x : f32[16] mem[0]"), "overlap"),
    (("%1 = tanh %0 : f32[16] mem[64]", "%1 = tanh %0 : f32[16] mem[96]"), "misaligned"),
    (("%2 = add %0, %1 : f32[16] mem[0]", "%2 = add %0, %1 : f32[16] mem[%w]"), "still reads"),
    (("%4 = sub %3, %x : f32[16] mem[%w]", "%4 = sub %3, %x : f32[16] mem[%x]"), "does not donate"),
    (("donate=[-1, 0]", "donate=[-1, -1]"), "does not donate"),
    (("donate=[-1, 0]", "donate=[0, 0]"), "two results"),
    (("donate=[-1, 0]", "donate=[-1, 7]"), "not -1 or a parameter index"),
    (("donate=[-1, 0]", "donate=[-1]"), "entries for 2 result"),
    (("donate=[-1, 0]", "donate=[-1, 0.5]"), "list of integers"),
    (("%1 = tanh %0 : f32[16] mem[64]", "%1 = tanh %0 : f32[16]"), "no placement"),
    (("%1 = tanh %0 : f32[16] mem[64]", "%1 = tanh %0 : f32[16] mem[64, 0]"), "placements"),
    (("%1 = tanh %0 : f32[16] mem[64]", "%1 = tanh %0 : f32[16] mem[64] scratch[0]"), "no scratch"),
    ((", arena_bytes=128", ""), "no 'arena_bytes'"),
])
def test_broken_plans_are_refused_before_anything_runs(edit, words, tmp_path):
    text = PLANNED.replace(*edit)
    assert text != PLANNED
    with pytest.raises(ig.VerifyError, match=re.escape(words)):
        ig.parse(text)
    path = tmp_path / "bad.ir"
    path.write_text(text)
    for cmd in (["check", path], ["run", path, "--backend", "cpu"], ["run", path, "-p", "O2"]):
        r = run_cli(tmp_path, *cmd, ok=False)
        assert r.returncode == 1 and "Traceback" not in r.stderr and words in r.stderr, r.stderr


def test_a_donated_parameter_may_hold_other_values_while_dead():
    text = PLANNED.replace("%3 = mul %w, %x : f32[16] mem[64]", "%3 = mul %w, %x : f32[16] mem[%w]") \
                  .replace("%4 = sub %3, %x : f32[16] mem[%w]", "%4 = sub %3, %x : f32[16] mem[64]")
    f = ig.parse(text).functions["f"]
    w, x = args16()
    w0 = w.copy()
    got = ig.compile(f, backend="cpu", pipeline="O0")(w, x)
    for g, e in zip(got, interp(PLANNED, w, x)):
        np.testing.assert_allclose(g, e, rtol=1e-6)
    np.testing.assert_array_equal(w, w0)


def test_plans_edited_in_python_are_verified_too():
    f = ig.parse(PLANNED).functions["f"]
    f.ops[1].mem = Placement.of(0)  # over %0, which add still reads
    with pytest.raises(ig.VerifyError, match="overlap"):
        ig.compile(f, backend="cpu", pipeline="O0")
    with pytest.raises(ig.IrgradError, match="overlap"):
        lower_function(f)  # the lowering proves the plan again


def test_constants_take_no_placement():
    text = """\
func @f(%x: f32[4]) -> f32[4] attributes {arena_bytes=64} {
  %0 = const {value=2.0} : f32[4] mem[0]
  %1 = mul %x, %0 : f32[4] mem[0]
  return %1
}
"""
    with pytest.raises(ig.VerifyError, match="takes no placement"):
        ig.parse(text)


def _w1_step():
    w = workloads.get("W1")
    params = w.init_params()
    loss = ig.trace(w.loss_fn, _spec_tree(params), *w.batch_specs)
    return w, params, ig.training_step(loss, w.optimizer())


def test_an_o2_training_step_compiled_again_never_writes_the_callers_arrays(tmp_path):
    """Unedited `dump -p O2` output of a training step, compiled at O0: its plan writes the
    updated parameters over mem[%params.*]; a plain call does that on copies."""
    w, params, step = _w1_step()
    text = str(ig.run_pipeline(step.ir, "O2"))
    assert "mem[%params." in text
    f = ig.parse(text).functions[step.ir.name]
    state = optimizer_state = w.optimizer().init(params)
    x, y = w.batches(1)[0]
    leaves = flatten((params, state, x, y))[0]
    for a in leaves:
        a.setflags(write=False)  # any write would raise (or crash) here
    before = [a.copy() for a in leaves]
    want = ig.compile(f, backend="numpy", pipeline="O0")(*leaves)
    for pipeline in ("O0", "O2"):
        got = ig.compile(f, backend="cpu", pipeline=pipeline)(*leaves)
        for g, e in zip(got, want):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    for a, b in zip(leaves, before):
        np.testing.assert_array_equal(a, b)
    del optimizer_state


# --- 2. any IR at any stage is valid input to any pipeline ----------------------------------

def _programs_for_idempotence():
    out = {"sample": ig.parse(PLANNED.replace(", arena_bytes=128, naive_bytes=320, lower_bound_bytes=128", "")
                              .replace(" mem[0]", "").replace(" mem[64]", "").replace(" mem[%w]", "")).functions["f"]}
    for name in workloads.ALL:
        out[name] = workloads.get(name).step_function().ir
    return out


PROGRAMS = _programs_for_idempotence()


@pytest.mark.parametrize("preset", ["O0", "O1", "O2"])
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_every_preset_is_idempotent_on_its_own_output(preset, name):
    once = ig.run_pipeline(PROGRAMS[name], preset)
    text = str(once)
    twice = ig.run_pipeline(ig.parse(text).functions[once.name], preset)
    assert str(twice) == text
    assert str(ig.run_pipeline(PROGRAMS[name], f"{preset},{preset}")) == text


def test_parsed_o2_output_compiles_again_at_o2(tmp_path):
    w, params, step = _w1_step()
    text = str(ig.run_pipeline(step.ir, "O2"))
    path = tmp_path / "step.ir"
    path.write_text(text)
    f = ig.parse(text).functions[step.ir.name]
    leaves = flatten((params, w.optimizer().init(params), *w.batches(1)[0]))[0]
    want = ig.compile(step, backend="numpy")(*ig.pytree.unflatten(step.in_tree, leaves))
    got = ig.compile(f, backend="cpu", pipeline="O2")(*leaves)
    for g, e in zip(got, flatten(want)[0]):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    for p in ("O2", "O2,O2", "O1,O2"):
        r = run_cli(tmp_path, "run", path, "-p", p, "--backend", "cpu")
        assert "result 0" in r.stdout


@pytest.mark.parametrize("kind", ["lop", "elementwise", "", "reduce", "matmul"])
def test_a_misspelled_kernel_kind_is_a_verify_error(kind, tmp_path):
    f = ig.run_pipeline(ig.trace(lambda x: ig.tanh(x) * 2.0 + 1.0, f32[8]).ir, "O2")
    text = str(f)
    assert 'kind="loop"' in text
    bad = text.replace('kind="loop"', f'kind="{kind}"')
    with pytest.raises(ig.VerifyError, match="kind"):
        ig.parse(bad)
    path = tmp_path / "k.ir"
    path.write_text(bad)
    r = run_cli(tmp_path, "run", path, "--backend", "cpu", ok=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr


# --- 3. concurrency --------------------------------------------------------------------------

def _hammer(fn, make_args, expect, threads=4, calls=50):
    """Call fn from several threads at once; every result must be right."""
    errors = []

    def work(t):
        rng = np.random.default_rng(t)
        for _ in range(calls):
            args = make_args(rng)
            try:
                got = fn(*args)
                # (sum(a) over 2048 floats, added to every element, rounds at ~1e-5)
                np.testing.assert_allclose(got, expect(*args), rtol=1e-5, atol=1e-4)
            except Exception as e:  # noqa: BLE001 - collected and reported below
                errors.append(e)
                return

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[0]


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_one_compiled_function_from_four_threads(backend):
    f = ig.trace(lambda a, b: ig.tanh(a @ b) * 2.0 + ig.sum(a), f32[64, 32], f32[32, 48])
    c = ig.compile(f, backend=backend, threads=1) if backend == "cpu" else ig.compile(f)

    def make(rng):
        return (rng.standard_normal((64, 32)).astype(np.float32),
                rng.standard_normal((32, 48)).astype(np.float32))
    _hammer(c, make, lambda a, b: f(a, b))


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_a_training_step_from_two_threads_loses_no_update(backend):
    """Steps serialize: N calls from two threads equal N calls from one (same batch)."""
    w = workloads.get("W1")
    batch = w.batches(1)[0]
    kw = {"threads": 1} if backend == "cpu" else {}
    ref = ig.compile_step(w.loss_fn, w.init_params(), w.optimizer(), w.batch_specs, backend=backend, **kw)
    for _ in range(40):
        ref(*batch)
    step = ig.compile_step(w.loss_fn, w.init_params(), w.optimizer(), w.batch_specs, backend=backend, **kw)
    ts = [threading.Thread(target=lambda: [step(*batch) for _ in range(20)]) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for a, b in zip(flatten(step.params)[0], flatten(ref.params)[0]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_assigning_step_params_takes_effect(backend):
    w = workloads.get("W1")
    kw = {"threads": 1} if backend == "cpu" else {}
    step = ig.compile_step(w.loss_fn, w.init_params(), w.optimizer(), w.batch_specs, backend=backend, **kw)
    batch = w.batches(1)[0]
    zeros = {k: {n: np.zeros_like(a) for n, a in layer.items()} for k, layer in step.params.items()}
    step.params["fc0"] = zeros["fc0"]  # a whole sub-dict
    step.params["fc1"]["W"] = zeros["fc1"]["W"]  # one array
    step.params["fc1"]["b"] = zeros["fc1"]["b"]
    assert all(not a.any() for a in flatten(step.params)[0])
    loss = step(*batch)
    np.testing.assert_allclose(loss, np.log(10.0), rtol=1e-5)  # all-zero MLP: uniform logits
    with pytest.raises(ig.ArgumentError, match="shape"):
        step.params["fc0"]["W"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ig.ArgumentError, match="dtype"):
        step.params["fc0"]["W"] = np.zeros((64, 128), np.float64)
    with pytest.raises(ig.ArgumentError, match="structure is fixed"):
        step.params["new"] = np.zeros(3, np.float32)
    with pytest.raises(ig.ArgumentError):
        del step.params["fc0"]


# --- 4. the compile cache trusts nothing it finds: tests/test_cpu_cache.py ---------------


# --- 5. no recursion on user-sized structures ---------------------------------------------------

def test_deep_structures_compile():
    n = 3000
    f = ig.trace(lambda x: ig.concatenate([x * float(i) for i in range(n)], axis=0), f32[2])
    x = np.array([1.0, -2.0], np.float32)
    np.testing.assert_array_equal(ig.compile(f, backend="cpu", pipeline="O0")(x), f(x))
    tree = leaf = np.ones(2, np.float32)
    for _ in range(5000):
        tree = {"a": tree}
    leaves, td = flatten(tree)
    assert leaves == [leaf] and td.num_leaves == 1 and len(str(td)) > 5000
    g = ig.trace(lambda t: ig.sum(flatten(t)[0][0]), tree)
    assert g(tree) == 2.0


def test_a_self_containing_pytree_is_refused():
    t = [np.ones(2, np.float32)]
    t.append(t)
    with pytest.raises(ig.IrgradError, match="contains itself"):
        flatten(t)


# --- 8. errors stay inside the family ---------------------------------------------------------

F2 = ig.trace(lambda a, b: a + b, f32[2], f32[2])
ONES = np.ones(2, np.float32)


def _compile_step(params, specs):
    return ig.compile_step(lambda p, x: ig.sum(p["W"] * x), params, ig.optim.SGD(0.1), specs)


CASES = {
    "python int overflow": lambda: ig.trace(lambda x: x * 2, i32[()])(2 ** 31),
    "python int overflow (cpu)": lambda: ig.compile(ig.trace(lambda x: x * 2, i32[()]), backend="cpu")(2 ** 40),
    "int constant overflow": lambda: ig.trace(lambda x: x + 2 ** 40, i32[3]),
    "negative size": lambda: f32[-1],
    "string size": lambda: f32["a"],
    "huge shape": lambda: f32[2 ** 40, 2 ** 40],
    "list as a params leaf": lambda: _compile_step({"W": [1.0, 2.0]}, (f32[2],)),
    "non-tuple batch_specs": lambda: _compile_step({"W": ONES}, f32[2]),
    "unknown keyword": lambda: F2(a=ONES, c=ONES),
    "keyword twice": lambda: F2(ONES, a=ONES),
    "user code raises": lambda: ig.trace(lambda x: x / [1][5], f32[2]),
    "truth value": lambda: ig.trace(lambda x: x if x > 0 else -x, f32[2]),
    "numpy on a tensor": lambda: ig.trace(lambda x: np.sin(x), f32[2]),
    "float of a tensor": lambda: ig.trace(lambda x: float(x), f32[()]),
    "iterating a tensor": lambda: ig.trace(lambda x: sum(x), f32[2]),
    "float axis": lambda: ig.trace(lambda x: ig.sum(x, axis=1.5), f32[2]),
    "float16 array": lambda: ig.trace(lambda x: x, np.ones(2, np.float16)),
    "negative argnums": lambda: ig.grad(ig.trace(lambda a: ig.sum(a), f32[2]), argnums=-1),
    "duplicate argnums": lambda: ig.grad(ig.trace(lambda a, b: ig.sum(a * b), f32[2], f32[2]), argnums=(0, 0)),
    "fuse max-ops -1": lambda: ig.run_pipeline(F2.ir, "fuse{max-ops=-1}"),
    "fuse max-ops 0": lambda: ig.run_pipeline(F2.ir, "fuse{max-ops=0}"),
    "fold max-elements -1": lambda: ig.run_pipeline(F2.ir, "constant-fold{max-elements=-1}"),
    "threads -2": lambda: ig.compile(F2, backend="cpu", threads=-2),
    "unknown backend option": lambda: ig.compile(F2, backend="cpu", bogus=1),
    "parse bytes that are not UTF-8": lambda: ig.parse(b"\xff\xfe"),
    "parse None": lambda: ig.parse(None),
    "compile None": lambda: ig.compile(None),
    "pipeline not text": lambda: ig.compile(F2, pipeline=3),
    "complex arguments": lambda: F2(np.ones(2, np.complex64), np.ones(2, np.complex64)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_raises_one_irgrad_error(case):
    with pytest.raises(ig.IrgradError) as info:
        CASES[case]()
    assert str(info.value).strip()


def test_user_errors_name_the_users_file_and_line():
    def bad(x):
        return x / [1][5]  # the line the message must name
    with pytest.raises(ig.TraceError) as info:
        ig.trace(bad, f32[2])
    line = bad.__code__.co_firstlineno + 1
    assert f"test_reliability.py:{line}" in str(info.value) and "IndexError" in str(info.value)
    assert isinstance(info.value.__cause__, IndexError)


def test_keyword_arguments_bind_by_name():
    a, b = np.arange(2, dtype=np.float32), np.ones(2, np.float32)
    for fn in (F2, ig.compile(F2), ig.compile(F2, backend="cpu")):
        np.testing.assert_array_equal(fn(b=b, a=a), a + b)
        np.testing.assert_array_equal(fn(a, b=b), a + b)


def test_cli_bad_files_and_paths(tmp_path):
    bad = tmp_path / "latin1.ir"
    bad.write_bytes("func @f() -> f32[] { // caf\xe9\n".encode("latin-1"))
    empty = tmp_path / "empty.ir"
    empty.write_text("")
    good = tmp_path / "good.ir"
    good.write_text("func @f(%x: f32[2]) -> f32[2] {\n  %0 = neg %x : f32[2]\n  return %0\n}\n")
    cases = [(["check", bad], "not UTF-8"), (["run", bad], "not UTF-8"),
             (["run", empty], "holds no function"), (["opt", good, "-p", "O1", "-o", good / "out.ir"], "cannot write"),
             (["opt", good, "-p", "O1", "-o", tmp_path / "missing" / "out.ir"], "cannot write"),
             (["bench", "x.py:f", "--threads", "-2"], "positive integer"),
             (["run", good, "-p", "fuse{max-ops=-1}"], "at least 1")]
    for args, words in cases:
        r = run_cli(tmp_path, *args, ok=False)
        assert r.returncode in (1, 2) and words in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_missing_optional_packages_are_named(tmp_path):
    """matplotlib and scikit-learn hidden behind modules that fail to import: one readable
    error each; without tqdm an example trains, only without its progress bar."""
    shadow = tmp_path / "shadow"
    for name in ("matplotlib", "sklearn", "tqdm"):
        (shadow / name).mkdir(parents=True)
        (shadow / name / "__init__.py").write_text(f'raise ImportError("No module named {name}")\n')
    model = tmp_path / "m.py"
    model.write_text("import irgrad as ig\nfrom irgrad import f32\n\n@ig.function\n"
                     "def f(x: f32[4]):\n    return ig.sum(ig.tanh(x))\n")
    env = {"PYTHONPATH": f"{shadow}{os.pathsep}{REPO}"}
    r = run_cli(tmp_path, "memplan", f"{model}:f", "-o", tmp_path / "m.png", ok=False, env=env)
    assert r.returncode == 1 and "matplotlib" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run_cli(tmp_path, "train", os.path.join(REPO, "examples", "digits_mlp.py"), "--epochs", "1",
                ok=False, env=env)
    assert r.returncode == 1 and "scikit-learn" in r.stderr and "irgrad[examples]" in r.stderr, r.stderr
    (shadow / "sklearn" / "__init__.py").unlink()
    (shadow / "sklearn").rmdir()
    r = run_cli(tmp_path, "train", os.path.join(REPO, "examples", "digits_mlp.py"), "--epochs", "1",
                env=env)
    assert "accuracy" in r.stdout


def _emulator_available():
    try:
        from irgrad.backends.cuda.emulate import compiler
        compiler()
        return True
    except ig.BackendUnavailable:
        return False


@pytest.mark.skipif(not _emulator_available(), reason="the CUDA emulation needs g++")
def test_cuda_step_params_assignment_and_threads_on_the_emulated_device():
    w = workloads.get("W1")
    step = ig.compile_step(w.loss_fn, w.init_params(), w.optimizer(), w.batch_specs,
                           backend="cuda", device="emulate")
    batch = w.batches(1)[0]
    step.params["fc0"] = {k: np.zeros_like(a) for k, a in step.params["fc0"].items()}
    step.params["fc1"] = {k: np.zeros_like(a) for k, a in step.params["fc1"].items()}
    np.testing.assert_allclose(step(*batch), np.log(10.0), rtol=1e-5)  # uploaded
    f = ig.trace(lambda a: ig.tanh(a) * 2.0, f32[256])
    c = ig.compile(f, backend="cuda", device="emulate")
    _hammer(c, lambda rng: (rng.standard_normal(256).astype(np.float32),), f, threads=3, calls=10)


def test_deeply_nested_regions_are_a_parse_error(tmp_path):
    depth = 400
    lines = ["func @f(%x: f32[3]) -> f32[3] {"]
    for d in range(depth):
        src = "%x" if d == 0 else f"%a{d}"
        lines.append("  " * (d + 1) + f'%r{d} = fused {src} {{kind="loop"}} : f32[3] {{')
        lines.append("  " * (d + 2) + f"(%a{d + 1}: f32[3]):")
    text = "\n".join(lines) + "\n"
    with pytest.raises(ig.ParseError, match="nest deeper"):
        ig.parse(text)
    path = tmp_path / "deep.ir"
    path.write_text(text)
    r = run_cli(tmp_path, "check", path, ok=False)
    assert r.returncode == 1 and "nest deeper" in r.stderr and "Traceback" not in r.stderr
