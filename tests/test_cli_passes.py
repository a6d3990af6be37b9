"""The pass-related commands, run as a user runs them (`python -m irgrad ...`):
`irgrad opt`, `irgrad dump ... -p ... --print-after-all/--print-after/--time-passes`,
IRGRAD_DUMP, and `irgrad bench ... --json` (DESIGN.md, "CLI").
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

import irgrad as ig
from cli_runner import run_cli
from irgrad.ir import run_function
from irgrad.ir.plan import check_plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODEL = '''\
import irgrad as ig
from irgrad import f32, i32


@ig.function
def mlp_loss(w1: f32[4, 8], b1: f32[8], w2: f32[8, 3], b2: f32[3], x: f32[5, 4], y: i32[5]):
    h = ig.relu(x @ w1 + b1)
    return ig.cross_entropy(h @ w2 + b2, y)
'''

IR = '''\
func @mlp(%x: f32[8,16], %w: f32[16,4], %b: f32[4]) -> f32[] {
  %0 = const {value=1.0} : f32[8,16]
  %1 = mul %x, %0 : f32[8,16]
  %2 = matmul %1, %w : f32[8,4]
  %3 = broadcast %b {dims=[1]} : f32[8,4]
  %4 = add %2, %3 : f32[8,4]
  %5 = const {value=0.0} : f32[8,4]
  %6 = max %4, %5 : f32[8,4]
  %7 = reduce_sum %6 {axes=[0, 1]} : f32[]
  %8 = exp %x : f32[8,16]
  return %7
}

func @other(%x: f32[4]) -> f32[4] {
  %0 = exp %x : f32[4]
  %1 = tanh %0 : f32[4]
  return %1
}
'''

O2_PASSES = ["expand", "constant-fold", "simplify", "cse", "dce", "fuse", "plan-memory"]
BENCH_KEYS = {"pipeline", "ops", "kernels", "arena_bytes", "naive_bytes", "lower_bound_bytes",
              "compile_ms", "step_us_median"}


irgrad = run_cli


def fails(cwd, *args) -> str:
    """A command that must end with exit status 1 and one readable message."""
    r = irgrad(cwd, *args, ok=False)
    out = r.stdout + r.stderr
    assert r.returncode == 1, f"exit {r.returncode}:\n{out}"
    assert "Traceback" not in out and "internal error" not in out, out
    assert r.stdout == ""
    heads = re.findall(r"^(?:irgrad: error:|\S+:\d+:\d+: error:)", out, flags=re.M)
    assert len(heads) == 1 and out.startswith(heads[0]), out
    return r.stderr


def dumps(text: str):
    """[(label, IR text)] of print-after output."""
    parts = re.split(r"^// -----// (.*?) //----- //\n", text, flags=re.M)
    assert parts[0].strip() == "", parts[0]
    return list(zip(parts[1::2], parts[2::2]))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_passes")
    (d / "model.py").write_text(MODEL)
    (d / "prog.ir").write_text(IR)
    return d


@pytest.fixture(scope="module")
def expected_o2():
    return str(ig.run_pipeline(ig.parse(IR), "O2"))


def test_opt_file_o2(work, expected_o2):
    r = irgrad(work, "opt", "prog.ir", "-p", "O2")
    assert r.stdout == expected_o2
    assert r.stderr == ""
    m = ig.parse(r.stdout)
    assert str(m) == r.stdout
    assert any(op.opname == "fused" for op in m.functions["mlp"].ops)
    for f in m:
        check_plan(f)
    x = np.linspace(-1, 1, 128, dtype=np.float32).reshape(8, 16)
    w = np.linspace(-2, 2, 64, dtype=np.float32).reshape(16, 4)
    b = np.array([0.5, -0.5, 0.0, 1.0], np.float32)
    want = run_function(ig.parse(IR).functions["mlp"], [x, w, b])
    np.testing.assert_allclose(run_function(m.functions["mlp"], [x, w, b])[0], want[0], rtol=1e-6)


def test_opt_stdin_and_output_file(work, expected_o2):
    r = irgrad(work, "opt", "-", "-p", "O2", stdin=IR)
    assert r.stdout == expected_o2
    r = irgrad(work, "opt", "prog.ir", "-p", "O2", "-o", "out.ir")
    assert r.stdout == "" and r.stderr == ""
    assert (work / "out.ir").read_text() == expected_o2
    r = irgrad(work, "check", "out.ir")  # the optimized, planned IR is valid IR
    assert "ok (2 function(s)" in r.stdout


def test_opt_other_pipelines(work):
    r = irgrad(work, "opt", "prog.ir", "-p", "simplify,cse,dce,fuse{max-ops=3}")
    assert r.stdout == str(ig.run_pipeline(ig.parse(IR), "simplify,cse,dce,fuse{max-ops=3}"))
    assert "mem[" not in r.stdout and "fused" in r.stdout
    r = irgrad(work, "opt", "prog.ir", "-p", "O0")
    assert r.stdout == str(ig.parse(IR))


def test_opt_print_after_all(work, expected_o2):
    r = irgrad(work, "opt", "prog.ir", "-p", "O2", "--print-after-all")
    assert r.stdout == expected_o2  # the dumps go to stderr, the result to stdout
    ds = dumps(r.stderr)
    want = [f"IR Dump After {p} (@{fn})" for fn in ("mlp", "other") for p in O2_PASSES]
    assert [label for label, _ in ds] == want
    for label, text in ds:
        assert str(ig.parse(text)).strip() == text.strip(), label
    last_mlp = ds[len(O2_PASSES) - 1][1]
    assert last_mlp.strip() == str(ig.parse(expected_o2).functions["mlp"]).strip()


def test_opt_print_after_one_pass(work):
    r = irgrad(work, "opt", "prog.ir", "-p", "O2", "--print-after", "dce")
    assert [label for label, _ in dumps(r.stderr)] == ["IR Dump After dce (@mlp)",
                                                       "IR Dump After dce (@other)"]


def test_opt_time_passes(work):
    r = irgrad(work, "opt", "prog.ir", "-p", "O2", "--time-passes")
    reports = re.findall(r"^===- Pass execution timing report \(@(\w+)\) -===$", r.stderr, flags=re.M)
    assert reports == ["mlp", "other"]
    for p in O2_PASSES:
        assert re.search(rf"^\s+[0-9.]+\s+[0-9.]+\s+{re.escape(p)}$", r.stderr, flags=re.M), p
    assert r.stdout == str(ig.run_pipeline(ig.parse(IR), "O2"))


def test_opt_irgrad_dump(work, tmp_path):
    irgrad(work, "opt", "prog.ir", "-p", "O2", env={"IRGRAD_DUMP": str(tmp_path / "d")})
    files = sorted(os.listdir(tmp_path / "d"))
    assert files == [f"{i:02d}-{p}.ir" for i, p in enumerate(["input"] + O2_PASSES)]
    for name in files:
        m = ig.parse((tmp_path / "d" / name).read_text(), name)
        assert list(m.functions) == ["mlp", "other"], name
    r = irgrad(tmp_path / "d", "check", files[-1])
    assert "ok (2 function(s): @mlp, @other" in r.stdout
    assert (tmp_path / "d" / files[-1]).read_text().split("\n", 1)[1].replace(
        "// after plan-memory (pass 7) of @other\n", "") == str(ig.run_pipeline(ig.parse(IR), "O2"))


def test_dump_grad_o2_print_after_all(work):
    r = irgrad(work, "dump", "model.py:mlp_loss", "--grad", "-p", "O2", "--print-after-all")
    ds = dumps(r.stdout)
    labels = [label for label, _ in ds]
    assert len(labels) == len(O2_PASSES), labels
    for label, p in zip(labels, O2_PASSES):
        assert re.fullmatch(rf"IR Dump After {re.escape(p)} \(@\w+\)", label), label
    for label, text in ds:
        m = ig.parse(text)
        assert str(m).strip() == text.strip(), label
    final = ig.parse(ds[-1][1])
    f = next(iter(final))
    check_plan(f)
    # the gradient of every float argument: w1, b1, w2, b2, x
    assert [str(t) for t in f.result_types] == ["f32[4,8]", "f32[8]", "f32[8,3]", "f32[3]",
                                                "f32[5,4]"]
    assert "fused" in ds[5][1] and "mem[" not in ds[5][1] and "mem[" in ds[6][1]


def test_dump_print_after_fuse(work):
    r = irgrad(work, "dump", "model.py:mlp_loss", "--grad", "-p", "O2", "--print-after", "fuse")
    ds = dumps(r.stdout)
    assert [label for label, _ in ds] == ["IR Dump After fuse (@grad_mlp_loss)"]
    assert "fused" in ds[0][1] and "mem[" not in ds[0][1]


def test_dump_without_instrumentation_prints_the_result(work):
    r = irgrad(work, "dump", "model.py:mlp_loss", "-p", "O1")
    m = ig.parse(r.stdout)
    assert str(m) == r.stdout and "fused" not in r.stdout
    r = irgrad(work, "dump", "model.py:mlp_loss", "-p", "O2", "--time-passes")
    assert "===- Pass execution timing report (@mlp_loss) -===" in r.stdout


@pytest.mark.parametrize("args, message", [
    (("opt", "prog.ir", "-p", "nope"), r"unknown pass 'nope'.*known passes: .*constant-fold"),
    (("opt", "prog.ir", "-p", "fuse{max-ops=lots}"), r"option 'max-ops' of pass 'fuse' expects an integer"),
    (("opt", "prog.ir", "-p", "fuse{maxops=2}"), r"pass 'fuse' has no option 'maxops'"),
    (("opt", "prog.ir", "-p", "O2", "--print-after", "fusion"), r"unknown pass 'fusion'"),
    (("dump", "model.py:mlp_loss", "-p", "O1,bogus"), r"unknown pass 'bogus'"),
    (("dump", "model.py:mlp_loss", "-p", "O3"), r"unknown pass 'O3'.*presets: O0, O1, O2"),
])
def test_bad_pipeline_is_one_readable_error(work, args, message):
    err = fails(work, *args)
    assert re.search(message, err), err


def test_bench_json_numpy(work):
    r = irgrad(work, "bench", "model.py:mlp_loss", "--pipelines", "O0", "O2", "--backend", "numpy",
               "--json", "--repeat", "3")
    rows = json.loads(r.stdout)
    assert isinstance(rows, list) and [row["pipeline"] for row in rows] == ["O0", "O2"]
    for row in rows:
        assert BENCH_KEYS <= set(row), set(row) ^ BENCH_KEYS
        assert all(isinstance(row[k], (int, float)) for k in BENCH_KEYS - {"pipeline"})
        assert 0 < row["lower_bound_bytes"] <= row["arena_bytes"]
        assert row["compile_ms"] >= 0 and row["step_us_median"] > 0
        assert 0 < row["kernels"] <= row["ops"]
    o0, o2 = rows
    assert o2["kernels"] < o0["kernels"]
    assert o2["naive_bytes"] < o0["naive_bytes"]  # fusion stores fewer intermediates


def test_bench_json_cpu(work):
    r = irgrad(work, "bench", "model.py:mlp_loss", "--pipelines", "O2", "--backend", "cpu",
               "--json", "--repeat", "3")
    (row,) = json.loads(r.stdout)
    assert BENCH_KEYS <= set(row)
    assert row["pipeline"] == "O2" and row["step_us_median"] > 0
    assert 0 < row["lower_bound_bytes"] <= row["arena_bytes"]


def test_bench_bad_pipeline(work):
    err = fails(work, "bench", "model.py:mlp_loss", "--pipelines", "O2", "fuse{max-ops=}",
                "--backend", "numpy", "--json", "--repeat", "1")
    assert "max-ops" in err
