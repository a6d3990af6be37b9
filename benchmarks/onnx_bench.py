"""ResNet-50 inference from ONNX: irgrad against onnxruntime (part of `make bench`).

The light resnet50 of the onnx package with random He-scaled weights as initializers
(benchmarks/onnx_models.py), batch 1 of 3x224x224. Each (system, threads) runs in a fresh
process pinned to `threads` cores: irgrad imports the model, compiles it on the CPU
backend (O2; cold, with an empty cache) and checks its output against onnxruntime's;
both are timed as the median of many calls. The table goes to stdout and
bench-results/onnx.md, with irgrad's slowest kernels from `profile()`.

    python benchmarks/onnx_bench.py [--model resnet50] [--threads 1 2] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _model(name: str):
    import onnx
    sys.path.insert(0, HERE)
    import onnx_models as M
    return M.with_logits(M.with_random_weights(onnx.load(M.light_path(name)), seed=0))


def child(system: str, name: str, threads: int, seconds: float) -> dict:
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cores[-threads:] if threads < len(cores) else cores)
    import numpy as np
    model = _model(name)
    x = np.random.default_rng(1).random((1, 3, 224, 224), dtype=np.float32)
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    ref = sess.run(None, feed)[-1]  # the logits
    row = {"system": system, "model": name, "threads": threads}
    if system == "onnxruntime":
        def call():
            return sess.run(None, feed)[-1]
        row["compile_s"] = 0.0
    else:
        sys.path.insert(0, ROOT)
        import irgrad as ig
        from irgrad.backends.cpu.jit import initialize
        initialize()
        t0 = time.perf_counter()
        m = ig.onnx.load(model)
        t1 = time.perf_counter()
        run = m.compile("cpu", "O2", threads=threads)
        row["import_s"] = t1 - t0
        row["compile_s"] = time.perf_counter() - t0

        def call():
            return run(x)[-1]
        compiled = run.compiled
    out = call()
    # the logits (random weights saturate the softmax), relative to their scale: both
    # round differently through 53 layers
    scale = float(np.max(np.abs(ref)))
    row["max_abs_err"] = float(np.max(np.abs(out - ref))) / scale
    row["ok"] = bool(row["max_abs_err"] < 1e-4)
    for _ in range(3):
        call()
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 10:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    row["median_ms"] = float(np.median(times)) * 1e3
    row["calls"] = len(times)
    if system == "irgrad-O2":
        prof = sorted(compiled.native.profile(repeat=5), key=lambda kv: -kv[1])
        row["kernels"] = len(prof)
        row["kernel_ms"] = sum(t for _, t in prof) * 1e3
        row["top"] = [(k, t * 1e3) for k, t in prof[:8]]
    return row


def spawn(system, name, threads, seconds, cache) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["IRGRAD_CACHE_DIR"] = cache
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, __file__, "--child", system, name, str(threads), str(seconds)],
                         env=env, capture_output=True, text=True)
    if out.returncode != 0:
        return {"system": system, "model": name, "threads": threads,
                "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-results"))
    args = ap.parse_args(argv)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        print(f"onnx benchmark skipped: {e}")
        return 0
    rows = []
    for t in args.threads:
        for system in ("onnxruntime", "irgrad-O2"):
            with tempfile.TemporaryDirectory(prefix="irgrad-onnx-bench-") as cache:
                r = spawn(system, args.model, t, args.seconds, cache)
            rows.append(r)
            print(f"{args.model} {system} {t}t: " + (r.get("error") or f"{r['median_ms']:.1f} ms"),
                  file=sys.stderr, flush=True)
    lines = [f"# {args.model} inference from ONNX (batch 1, 3x224x224)", "",
             "| system | threads | median ms | compile cold s | output ok |", "|---|---|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['system']} | {r['threads']} | error: {r['error'][:80]} | | |")
        else:
            lines.append(f"| {r['system']} | {r['threads']} | {r['median_ms']:.1f} | {r['compile_s']:.2f} | "
                         f"{'yes' if r['ok'] else 'NO'} (max err {r['max_abs_err']:.1e} of the largest logit) |")
    lines += ["", "| threads | irgrad / onnxruntime |", "|---|---:|"]
    for t in args.threads:
        a = next((r for r in rows if r["system"] == "irgrad-O2" and r["threads"] == t and "median_ms" in r), None)
        b = next((r for r in rows if r["system"] == "onnxruntime" and r["threads"] == t and "median_ms" in r), None)
        if a and b:
            lines.append(f"| {t} | {a['median_ms'] / b['median_ms']:.2f} |")
    for r in rows:
        if r.get("top"):
            lines += ["", f"irgrad {r['threads']}t profile(): {r['kernels']} kernels, {r['kernel_ms']:.1f} ms "
                      f"in all; slowest: " + ", ".join(f"{k} {ms:.2f} ms" for k, ms in r["top"])]
    text = "\n".join(lines) + "\n"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "onnx.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "onnx.json"), "w") as f:
        json.dump(rows, f, indent=2)
    print(text)
    return 1 if any("error" in r or not r.get("ok") for r in rows) else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, system, name, threads, seconds = sys.argv
        print(json.dumps(child(system, name, int(threads), float(seconds))))
        sys.exit(0)
    sys.exit(main())
