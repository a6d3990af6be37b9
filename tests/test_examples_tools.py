"""The user's tools and examples: `irgrad viz`, `memplan`, `bench --plot`, `train`, and the
examples' training loops (digits MLP, char transformer, Hessian-vector products).

Fast by default: pictures of small functions, a few training steps of small models on the
reference interpreter. Tests marked `slow` (the real transformer on real text) run with
IRGRAD_SLOW=1 or `pytest -m slow`.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import irgrad as ig
from irgrad.tools import cli
from irgrad.tools import plots
from irgrad.passes.manager import run_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
DIGITS = os.path.join(EXAMPLES, "digits_mlp.py")
CHAR = os.path.join(EXAMPLES, "char_transformer.py")
HIGHER = os.path.join(EXAMPLES, "higher_order.py")
CNN = os.path.join(EXAMPLES, "digits_cnn.py")
FINETUNE = os.path.join(EXAMPLES, "onnx_finetune.py")


@pytest.fixture(autouse=True)
def _slow_gate(request):
    if request.node.get_closest_marker("slow") and not os.environ.get("IRGRAD_SLOW") \
            and "slow" not in (request.config.getoption("-m") or ""):
        pytest.skip("slow: run with IRGRAD_SLOW=1 or pytest -m slow")


def run_cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main([str(a) for a in args])
    return status, out.getvalue(), err.getvalue()


def example(path):
    return cli.load_python_file(path)


def quiet(fn, *args, **kw):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kw)


# --- examples as targets ----------------------------------------------------------------------

def test_examples_expose_functions_without_training():
    for path, names in ((DIGITS, ("loss", "step", "predict")), (CHAR, ("loss", "step")),
                        (HIGHER, ("loss", "gradient", "hessian_vector"))):
        mod = example(path)
        for name in names:
            assert isinstance(getattr(mod, name), ig.Function), (path, name)
        assert callable(mod.train)
    status, out, _ = run_cli("dump", f"{DIGITS}:step", "-p", "O2")
    assert status == 0 and "func @step(" in out and "fused" in out


# --- viz ----------------------------------------------------------------------------------------

def fused_count(ir) -> int:
    return sum(1 for op in ir.walk() if op.opname == "fused")


def test_viz_writes_dot_with_one_cluster_per_fused_kernel(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "dot_available", lambda: False)
    out = tmp_path / "graph.svg"
    status, _, err = run_cli("viz", f"{DIGITS}:step", "-o", out, "-p", "O2")
    assert status == 0, err
    dot_path = tmp_path / "graph.dot"
    assert not out.exists() and dot_path.exists()
    assert "Graphviz" in err and str(dot_path) in err
    text = dot_path.read_text()
    planned = run_pipeline(example(DIGITS).step.ir, "O2")
    n = fused_count(planned)
    assert n >= 5
    assert len(re.findall(r"subgraph cluster_\w+ \{", text)) == n
    # labels use the printed IR's names: every fused result line of the dump is a cluster
    printed = str(planned)
    for m in re.finditer(r"^  (%[\w.]+(?:, %[\w.]+)*) = fused", printed, re.M):
        assert f"<b>{m.group(1)} = fused</b>" in text
    for p in planned.params:
        assert f"%{p.name}" in text
    assert text.count("result ") >= len(planned.outputs)


def test_viz_collapse_and_plain_dot(tmp_path):
    out = tmp_path / "g.dot"
    status, _, err = run_cli("viz", f"{DIGITS}:loss", "-o", out, "--collapse", "--grad")
    assert status == 0, err
    text = out.read_text()
    assert "cluster_" not in text and "= <b>fused</b>" in text
    assert text.startswith("digraph")


@pytest.mark.skipif(not plots.dot_available(), reason="Graphviz dot is not installed")
def test_viz_svg_with_graphviz(tmp_path):
    out = tmp_path / "graph.svg"
    status, _, err = run_cli("viz", f"{DIGITS}:step", "-o", out)
    assert status == 0, err
    svg = out.read_text()
    assert "<svg" in svg and "fused" in svg and not (tmp_path / "graph.dot").exists()


def test_graph_dot_of_ir_text_regions():
    m = ig.parse('''
func @f(%x: f32[4], %y: f32[4]) -> (f32[4], f32[]) {
  %0 = fused %x, %y {kind="loop"} : f32[4] {
    (%1: f32[4], %2: f32[4]):
    %3 = add %1, %2 : f32[4]
    %4 = exp %3 : f32[4]
    yield %4
  }
  %5 = reduce_sum %0 {axes=[0]} : f32[]
  return %0, %5
}
''')
    text = plots.graph_dot(m.functions["f"])
    assert text.count("subgraph cluster_") == 1
    assert "%3 = <b>add</b>" in text and "%4 = <b>exp</b>" in text and "→ %0" in text
    # region arguments become edges from the parameters; the kernel result from %4's node
    ids = dict(re.findall(r"(\w+) \[[^\]]*label=<(?:<b>)?(%[\w.]+)", text))
    by_name = {v: k for k, v in ids.items()}
    assert f"{by_name['%x']} -> {by_name['%3']};" in text
    assert f"{by_name['%4']} -> {by_name['%5']};" in text


# --- memplan --------------------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n"


def test_memplan_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plan.png"
    status, _, err = run_cli("memplan", f"{DIGITS}:step", "-o", out)
    assert status == 0, err
    assert out.read_bytes()[:8] == PNG
    assert "arena" in err


def test_memory_intervals_match_the_plan():
    planned = run_pipeline(example(DIGITS).step.ir, "O2")
    bufs = plots.memory_intervals(planned)
    arena = planned.attrs["arena_bytes"]
    assert bufs and all(0 <= b["offset"] and b["offset"] + b["size"] <= arena for b in bufs)
    # buffers live at the same time never share bytes, except in place (one dies where the
    # other is born, at the same offset)
    for i, a in enumerate(bufs):
        for b in bufs[i + 1:]:
            overlap = (a["offset"] < b["offset"] + b["size"]
                       and b["offset"] < a["offset"] + a["size"])
            live = not (a["end"] < b["start"] or b["end"] < a["start"])
            if overlap and live:
                assert a["offset"] == b["offset"]
                assert a["end"] == b["start"] or b["end"] == a["start"]


def test_memplan_without_matplotlib(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_mpl(name, *a, **kw):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    status, _, err = run_cli("memplan", f"{DIGITS}:loss", "-o", tmp_path / "p.png")
    assert status == 1 and "matplotlib" in err and "pip install" in err
    assert "Traceback" not in err


# --- bench --plot -------------------------------------------------------------------------------

def test_bench_plot_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "bench.png"
    status, stdout, err = run_cli("bench", f"{DIGITS}:loss", "--pipelines", "O0", "O2",
                                  "--backend", "numpy", "--repeat", "2", "--json", "--plot", out)
    assert status == 0, err
    import json
    rows = json.loads(stdout)  # --plot keeps stdout pure JSON
    assert [r["pipeline"] for r in rows] == ["O0", "O2"]
    assert out.read_bytes()[:8] == PNG


# --- train --------------------------------------------------------------------------------------

def test_irgrad_train_digits_one_epoch_numpy():
    env = dict(os.environ, PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, "-m", "irgrad", "train", "examples/digits_mlp.py",
                        "--epochs", "1", "--backend", "numpy", "--quiet"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.search(r"epoch +1/1 +loss \d\.\d+ +test accuracy", r.stdout)
    assert "numpy backend" in r.stdout and "irgrad dump examples/digits_mlp.py:loss" in r.stdout


def test_digits_reaches_96_percent_on_the_cpu_backend():
    result = quiet(example(DIGITS).train, epochs=60, quiet=True)
    assert result["backend"] == "cpu"
    assert result["accuracy"][-1] >= 0.96, result["accuracy"]
    assert result["losses"][-1] < result["losses"][0] / 5
    assert result["seconds"] < 20


def test_digits_cnn_reaches_98_5_percent_on_the_cpu_backend():
    """The CNN (batch norm, dropout) beats the MLP demo's 96.9% on the same split: at least
    98.5% at one of the last five epochs (test accuracy moves by a few images per epoch),
    never below 98% at the end, in seconds of training."""
    ex = example(CNN)
    assert {"loss", "step"} <= set(vars(ex)) and isinstance(ex.step, ig.Function)
    result = quiet(ex.train, epochs=30, quiet=True)
    assert result["backend"] == "cpu"
    assert max(result["accuracy"][-5:]) >= 0.985, result["accuracy"]
    assert result["accuracy"][-1] >= 0.98, result["accuracy"]
    assert result["losses"][-1] < result["losses"][0] / 10
    assert result["seconds"] < 30


def test_irgrad_train_digits_cnn_one_epoch():
    env = dict(os.environ, PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, "-m", "irgrad", "train", "examples/digits_cnn.py",
                        "--epochs", "1", "--quiet"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert re.search(r"epoch +1/1 +loss \d\.\d+ +test accuracy", r.stdout)


def test_onnx_finetune_reaches_97_percent_and_saves_a_model_onnxruntime_runs(tmp_path):
    """An imported ONNX CNN fine-tuned with ig.compile_step: at least 97% at one of the last
    five epochs, 95% at the end, in seconds; --save writes the same graph with the new
    weights, which onnxruntime scores the same, and --model fine-tunes it further."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    ex = example(FINETUNE)
    out = tmp_path / "tuned.onnx"
    result = quiet(ex.train, quiet=True, save=str(out))
    assert result["backend"] == "cpu"
    assert max(result["accuracy"][-5:]) >= 0.97, result["accuracy"]
    assert result["accuracy"][-1] >= 0.95, result["accuracy"]
    assert result["losses"][-1] < result["losses"][0] / 10
    assert result["seconds"] < 20
    _, _, x_test, y_test = ex.load_data(0)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"image": x_test.reshape(-1, 1, 8, 8)})[0]
    ort_accuracy = float(np.mean(np.argmax(logits, axis=1) == y_test))
    assert abs(ort_accuracy - result["accuracy"][-1]) <= 1.5 / len(y_test)  # a near-tie may flip
    again = quiet(ex.train, epochs=1, quiet=True, model=str(out), lr=0.01)
    assert again["accuracy"][0] >= 0.95  # it starts from the saved weights, not from scratch


def test_irgrad_train_onnx_finetune_one_epoch():
    pytest.importorskip("onnx")
    env = dict(os.environ, PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, "-m", "irgrad", "train", "examples/onnx_finetune.py",
                        "--epochs", "1", "--quiet"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "ONNX model from onnx.helper" in r.stdout
    assert re.search(r"epoch +1/1 +loss \d\.\d+ +test accuracy", r.stdout)
    r = subprocess.run([sys.executable, "-m", "irgrad", "train", "examples/onnx_finetune.py",
                        "--model", "README.md"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1 and "not an ONNX model" in r.stderr and "Traceback" not in r.stderr


def test_onnx_finetune_from_pytorch():
    pytest.importorskip("onnx")
    pytest.importorskip("torch")
    result = quiet(example(FINETUNE).train, epochs=3, quiet=True, torch=True)
    assert result["accuracy"][-1] >= 0.85, result["accuracy"]
    assert sorted(result["params"]) == ["0.bias", "0.weight", "3.bias", "3.weight", "6.bias",
                                        "6.weight"]  # torch.nn.Sequential's names


def test_train_options_reach_the_example(tmp_path):
    ex = tmp_path / "ex.py"
    ex.write_text('''
import sys
import irgrad.tools.train

seen = {}

def add_arguments(parser):
    parser.add_argument("--width", type=int, default=None)

def train(backend="cpu", epochs=3, pipeline="O2", threads=None, seed=0, width=7):
    seen.update(backend=backend, epochs=epochs, pipeline=pipeline, seed=seed, width=width)
    print("ran", sorted(seen.items()))
''')
    status, out, err = run_cli("train", ex, "--epochs", "2", "--width", "5", "--seed", "9")
    assert status == 0, err
    assert "('epochs', 2)" in out and "('width', 5)" in out and "('seed', 9)" in out
    assert "('backend', 'cpu')" in out  # the example's default when not given
    status, out, err = run_cli("train", "--backend", "numpy", ex)
    assert status == 0 and "('backend', 'numpy')" in out and "('epochs', 3)" in out
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    status, _, err = run_cli("train", bad)
    assert status == 1 and "defines no train(" in err


def test_unavailable_backend_falls_back_to_the_interpreter(monkeypatch):
    from irgrad.tools import train as T
    monkeypatch.setitem(T._backend_ok, "cuda", "numpy")
    assert T.resolve_backend("cuda") == "numpy"
    monkeypatch.delitem(T._backend_ok, "cuda")
    import irgrad.api

    def broken(*a, **kw):
        raise ig.BackendUnavailable("no GPU here")

    monkeypatch.setattr(irgrad.api, "compile", broken)
    notes = []
    assert T.resolve_backend("cuda", log=notes.append) == "numpy"
    assert "no GPU here" in notes[0] and "interpreter" in notes[0]


# --- higher-order example -----------------------------------------------------------------------

def small_problem(seed=0, n=60):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 64))
    w = rng.standard_normal((64, 10))
    y = np.argmax(x @ w + 0.3 * rng.standard_normal((n, 10)), axis=1).astype(np.int32)
    return x, y, x[:20], y[:20]


def test_higher_order_hvp_and_newton_cg():
    mod = example(HIGHER)
    r = mod.train(backend="numpy", epochs=6, data=small_problem(), log=lambda *a: None)
    err = r["hvp_errors"]
    assert err["fd"] < 1e-6 and err["rev_over_rev"] < 1e-10 and err["symmetry"] < 1e-10, err
    losses = r["losses"]
    assert all(b <= a for a, b in zip(losses, losses[1:]))
    assert losses[0] == pytest.approx(math.log(10))
    assert losses[-1] < 0.5 * losses[0]
    assert losses[-1] < r["gd_loss"]  # Newton-CG beats gradient descent on the same budget


def test_conjugate_gradient_solves_spd_systems():
    mod = example(HIGHER)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((12, 12))
    h = a @ a.T + 12 * np.eye(12)
    b = rng.standard_normal(12)
    p, iters = mod.conjugate_gradient(lambda v: h @ v, b, 50, 1e-10)
    np.testing.assert_allclose(h @ p, b, atol=1e-8)
    assert iters <= 12 + 1


# --- char transformer --------------------------------------------------------------------------

def test_char_transformer_small_model_learns_a_tiny_text(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    mod = example(CHAR)
    r = quiet(mod.train, backend="numpy", epochs=2, steps_per_epoch=25, text=str(text),
              d_model=32, n_heads=2, d_ff=64, seq=16, batch=4, lr=1e-2, eval_batches=4,
              sample_bytes=12, prompt="the ", quiet=True)
    assert r["losses"][1] < r["losses"][0] < math.log(256) + 0.5
    assert r["val_losses"][-1] < 2.0
    assert len(r["sample"]) == len("the ") + 12 and r["sample"].startswith(b"the ")


def test_char_transformer_split_keeps_windows_apart():
    mod = example(CHAR)
    data = np.arange(50_000) % 251
    tr, va = mod.split(data, 64)
    held = (np.arange(len(data)) // 2048) % 10 == 9
    assert len(tr) and len(va)
    for s in tr[::97]:
        assert not held[s:s + 65].any()
    for s in va[::13]:
        assert held[s:s + 65].all()


def test_char_transformer_text_errors(tmp_path):
    mod = example(CHAR)
    with pytest.raises(ig.IrgradError, match="--text"):
        mod.load_text(str(tmp_path / "missing.txt"))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/usr/share/common-licenses"), reason="no license texts")
def test_char_transformer_w4_on_licenses():
    """The real W4 model on the real text, on the CPU backend: the loss falls well below
    uniform guessing (5.55 nats) within a few hundred steps."""
    mod = example(CHAR)
    r = quiet(mod.train, epochs=2, steps_per_epoch=200, sample_bytes=50, quiet=True)
    assert r["val_losses"][-1] < 2.6, r
