"""The `irgrad` command, run as a user runs it: `python -m irgrad ...` in a fresh directory.

Contract (DESIGN.md): bad input exits 1 with one readable message (file:line:col and a
caret for IR), never a traceback; wrong usage exits 2.
"""

from __future__ import annotations

import os
import re
import textwrap

import numpy as np
import pytest
import scipy.special as sp

import irgrad as ig
from cli_runner import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MLP = '''\
import irgrad as ig
from irgrad import f32, i32


@ig.function
def mlp_loss(w1: f32[4, 8], b1: f32[8], w2: f32[8, 3], b2: f32[3], x: f32[5, 4], y: i32[5]):
    h = ig.relu(x @ w1 + b1)
    return ig.cross_entropy(h @ w2 + b2, y)


def plain(x: f32[3]):  # not decorated: the CLI traces it from its annotations
    return ig.exp(x).sum()
'''

SIMPLE_IR = '''\
func @axpy(%a: f32[], %x: f32[3], %y: f32[3]) -> (f32[3], f32[]) {
  %0 = broadcast %a {dims=[]} : f32[3]
  %1 = mul %0, %x : f32[3]
  %2 = add %1, %y : f32[3]
  %3 = reduce_sum %2 {axes=[0]} : f32[]
  return %2, %3
}
'''


def irgrad(cwd, *args, ok=True):
    """Run the CLI in `cwd`; returns the CompletedProcess (asserting success when ok)."""
    return run_cli(cwd, *args, ok=ok, timeout=120)


def fails(cwd, *args, status=1) -> str:
    """Run a command that must fail readably; returns its stderr."""
    r = irgrad(cwd, *args, ok=False)
    out = r.stdout + r.stderr
    assert r.returncode == status, f"exit {r.returncode}, wanted {status}:\n{out}"
    assert "Traceback" not in out, out
    assert "internal error" not in out, out
    if status == 1:  # exactly one message: "irgrad: error: ..." or "FILE:LINE:COL: error: ..."
        heads = re.findall(r"^(?:irgrad: error:|\S+:\d+:\d+: error:)", out, flags=re.M)
        assert len(heads) == 1 and out.startswith(heads[0]), out
    return r.stderr


@pytest.fixture
def work(tmp_path):
    (tmp_path / "model.py").write_text(MLP)
    (tmp_path / "simple.ir").write_text(SIMPLE_IR)
    return tmp_path


def results(stdout: str) -> list[str]:
    """The printed values after each `result i: TYPE =` header."""
    parts = re.split(r"^result \d+: \S+ =\n", stdout, flags=re.M)
    return [p.strip() for p in parts[1:]]


def mlp_inputs(seed=0):
    rng = np.random.default_rng(seed)
    return {"w1": rng.normal(0, 0.5, (4, 8)).astype(np.float32),
            "b1": rng.normal(0, 0.5, 8).astype(np.float32),
            "w2": rng.normal(0, 0.5, (8, 3)).astype(np.float32),
            "b2": rng.normal(0, 0.5, 3).astype(np.float32),
            "x": rng.normal(0, 1, (5, 4)).astype(np.float32),
            "y": rng.integers(0, 3, 5).astype(np.int32)}


def np_mlp_loss(p, floor=0.0, act=np.maximum):
    h = act(p["x"].astype(np.float64) @ p["w1"] + p["b1"], floor)
    logits = h @ p["w2"] + p["b2"]
    return -sp.log_softmax(logits, axis=1)[np.arange(5), p["y"]].mean()


# --- the commands ------------------------------------------------------------------------------

def test_dump_prints_parseable_ir_with_locations(work):
    out = irgrad(work, "dump", "model.py:mlp_loss").stdout
    assert out.startswith("func @mlp_loss(%w1: f32[4,8], %b1: f32[8], %w2: f32[8,3], %b2: f32[3], "
                          "%x: f32[5,4], %y: i32[5]) -> f32[] {")
    assert 'loc("model.py":7)' in out and 'loc("model.py":8)' in out  # the user's lines
    assert str(ig.parse(out)) == out


def test_dump_accepts_a_pipeline_and_traces_plain_functions(work):
    out = irgrad(work, "dump", "model.py:plain", "-p", "O0").stdout
    assert "exp %x" in out and "reduce_sum" in out
    assert irgrad(work, "dump", "model.py:mlp_loss", "--pipeline", "O0").stdout == \
        irgrad(work, "dump", "model.py:mlp_loss").stdout


def test_check(work):
    out = irgrad(work, "check", "simple.ir").stdout
    assert out.strip() == "simple.ir: ok (1 function(s): @axpy; 4 ops)"


def test_run_ir_with_inputs(work):
    a, x, y = np.float32(1.5), np.arange(3, dtype=np.float32), np.ones(3, np.float32)
    np.savez(work / "in.npz", a=a, x=x, y=y)
    out = irgrad(work, "run", "simple.ir", "--inputs", "in.npz", "-p", "O0").stdout
    vec, total = results(out)
    assert out.splitlines()[0] == "result 0: f32[3] ="
    np.testing.assert_allclose(np.array(vec.strip("[]").split(), float), a * x + y)
    assert float(total) == pytest.approx(float((a * x + y).sum()))


def test_run_ir_by_position_and_without_inputs(work):
    # arrays may also be given by position (arr_0, arr_1, ... as np.savez names them)
    np.savez(work / "pos.npz", np.float32(2.0), np.ones(3, np.float32), np.zeros(3, np.float32))
    _, total = results(irgrad(work, "run", "simple.ir", "--inputs", "pos.npz").stdout)
    assert float(total) == 6.0
    r = irgrad(work, "run", "simple.ir")  # random inputs, said so on stderr
    assert "no --inputs" in r.stderr and len(results(r.stdout)) == 2


def test_run_python_target_with_and_without_inputs(work):
    p = mlp_inputs()
    np.savez(work / "mlp.npz", **p)
    out = irgrad(work, "run", "model.py:mlp_loss", "--inputs", "mlp.npz", "-p", "O0").stdout
    (loss,) = results(out)
    assert float(loss) == pytest.approx(np_mlp_loss(p), rel=1e-5)
    out = irgrad(work, "run", "model.py:plain").stdout
    assert out.startswith("result 0: f32[] =") and np.isfinite(float(results(out)[0]))


# --- bad input: exit 1, one readable message ---------------------------------------------------------

def test_missing_files(work):
    assert "no such file: nope.ir" in fails(work, "check", "nope.ir")
    assert "no such file: nope.ir" in fails(work, "run", "nope.ir")
    assert "no such file: nope.py" in fails(work, "dump", "nope.py:f")
    assert "no such file: nope.npz" in fails(work, "run", "simple.ir", "--inputs", "nope.npz")


def test_ir_syntax_error_shows_line_col_and_caret(work):
    (work / "bad.ir").write_text(SIMPLE_IR.replace("%1 = mul %0, %x", "%1 = mul %0 %x"))
    err = fails(work, "check", "bad.ir")
    lines = err.splitlines()
    assert lines[0] == "bad.ir:3:15: error: expected ':' and the result type, found '%x'"
    assert lines[1] == "3 |   %1 = mul %0 %x : f32[3]"
    assert lines[2].index("^") == len("3 | ") + 14
    assert fails(work, "run", "bad.ir") == err  # every command reports it the same way


def test_ir_verify_error_names_op_and_line(work):
    (work / "bad.ir").write_text(SIMPLE_IR.replace("%2 = add %1, %y : f32[3]",
                                                   "%2 = add %1, %a : f32[3]"))
    err = fails(work, "check", "bad.ir")
    assert err.startswith("bad.ir:4:")
    assert "'add'" in err and "f32[3], f32[]" in err and "^" in err


def test_python_file_that_raises(work):
    (work / "boom.py").write_text("import irgrad\n\nx = 1\nraise ValueError('kaboom')\n")
    err = fails(work, "dump", "boom.py:f")
    assert "boom.py:4" in err and "ValueError" in err and "kaboom" in err


def test_python_syntax_error(work):
    (work / "syn.py").write_text("def f(:\n    pass\n")
    err = fails(work, "run", "syn.py:f")
    assert "syn.py:1" in err and "syntax error" in err


def test_missing_name_lists_the_functions_there(work):
    err = fails(work, "dump", "model.py:nope")
    assert "model.py has no 'nope'" in err and "mlp_loss" in err


def test_name_that_is_not_a_function(work):
    (work / "vals.py").write_text("X = 3\n")
    assert "not an irgrad Function" in fails(work, "dump", "vals.py:X")


def test_bad_shapes_in_the_dsl_name_the_users_line(work):
    (work / "shapes.py").write_text(textwrap.dedent('''\
        import irgrad as ig
        from irgrad import f32

        @ig.function
        def f(x: f32[3, 4], y: f32[5]):
            return x + y
        '''))
    err = fails(work, "dump", "shapes.py:f")
    assert "shapes.py:6:" in err and "[3, 4]" in err and "[5]" in err


def test_bad_inputs_file(work):
    np.savez(work / "partial.npz", a=np.float32(1))
    assert "has no array for parameter %x" in fails(work, "run", "simple.ir", "--inputs",
                                                    "partial.npz")
    np.savez(work / "shape.npz", a=np.float32(1), x=np.zeros(4, np.float32),
             y=np.zeros(3, np.float32))
    err = fails(work, "run", "simple.ir", "--inputs", "shape.npz")
    assert "%x" in err and "[3]" in err and "[4]" in err
    (work / "junk.npz").write_text("not a zip")
    assert "cannot read junk.npz" in fails(work, "run", "simple.ir", "--inputs", "junk.npz")


def test_bad_pipeline_and_function_name(work):
    assert "unknown pass 'no-such-pass'" in fails(work, "run", "simple.ir", "-p", "no-such-pass")
    assert "no function @nope" in fails(work, "run", "simple.ir", "--function", "nope")


# --- wrong usage: exit 2 ---------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    [], ["frobnicate"], ["run"], ["check"], ["dump"], ["check", "a.ir", "extra"],
    ["run", "simple.ir", "--backend", "tpu"], ["run", "simple.ir", "--nope"],
    ["run", "simple.ir", "--seed", "x"],
])
def test_wrong_usage_exits_2(work, args):
    err = fails(work, *args, status=2)
    assert err.startswith("usage: irgrad")


def test_help_exits_0(work):
    assert "dump" in irgrad(work, "--help").stdout


# --- the user story: write a model, dump, check, edit by hand, run ----------------------------------

def test_user_story_dump_check_edit_run(work):
    p = mlp_inputs(seed=1)
    np.savez(work / "batch.npz", **p)

    text = irgrad(work, "dump", "model.py:mlp_loss").stdout
    (work / "mlp.ir").write_text(text)
    assert irgrad(work, "check", "mlp.ir").stdout.startswith("mlp.ir: ok (1 function(s): @mlp_loss;")
    (loss,) = results(irgrad(work, "run", "mlp.ir", "--inputs", "batch.npz").stdout)
    assert float(loss) == pytest.approx(np_mlp_loss(p), rel=1e-5)

    # edit 1: relu's floor, a constant, goes from 0.0 to 0.25
    lines = text.splitlines()
    (k,) = [i for i, ln in enumerate(lines) if " = max " in ln]
    relu_const = re.search(r"%\d+ = max %\d+, (%\d+)", lines[k]).group(1)
    (c,) = [i for i, ln in enumerate(lines) if ln.strip().startswith(f"{relu_const} = const")]
    assert "{value=0.0}" in lines[c]
    lines[c] = lines[c].replace("{value=0.0}", "{value=0.25}") + "  // hand-edited"
    edited = "\n".join(lines) + "\n"
    (work / "mlp.ir").write_text(edited)
    irgrad(work, "check", "mlp.ir")
    (loss,) = results(irgrad(work, "run", "mlp.ir", "--inputs", "batch.npz").stdout)
    assert float(loss) == pytest.approx(np_mlp_loss(p, floor=0.25), rel=1e-5)
    assert float(loss) != pytest.approx(np_mlp_loss(p), rel=1e-5)

    # edit 2: relu's max becomes min (still valid IR: same operand and result types)
    lines[k] = lines[k].replace(" = max ", " = min ")
    (work / "mlp.ir").write_text("\n".join(lines) + "\n")
    irgrad(work, "check", "mlp.ir")
    (loss,) = results(irgrad(work, "run", "mlp.ir", "--inputs", "batch.npz").stdout)
    assert float(loss) == pytest.approx(np_mlp_loss(p, floor=0.25, act=np.minimum), rel=1e-5)

    # edit 3: a mistake (a type that does not fit) is caught by check, with the line
    lines[k] = re.sub(r": f32\[5,8\]", ": f32[5,9]", lines[k])
    (work / "mlp.ir").write_text("\n".join(lines) + "\n")
    err = fails(work, "check", "mlp.ir")
    assert err.startswith(f"mlp.ir:{k + 1}:") and "'min'" in err and "f32[5,9]" in err
