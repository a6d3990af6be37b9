"""Compile time as programs grow: where the time goes, phase by phase.

Two families, each compiled cold (empty compile cache) for the CPU backend in a fresh
process:

- the gradient of a chain of N steps `x = sin(x) * 0.999 + 0.001` on f32[64] (about 8
  ops per step with its backward pass), N = 1000, 2000, 10000;
- the W4 tiny transformer's whole training step with L decoder blocks, L = 1, 4, 12.

For each: ops, kernels, the pass timings (`--time-passes`), lowering and rendering,
LLVM's optimization and code generation, and the total from the traced Function to the
first result, checked against the interpreter. Writes bench-results/compile-scaling.md.

    python benchmarks/compile_scaling.py [--chain 1000 2000 10000] [--blocks 1 4 12]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def child(kind: str, n: int) -> dict:
    import io

    import numpy as np

    import irgrad as ig
    from irgrad import f32, i32
    from irgrad.passes.manager import run_pipeline

    t0 = time.perf_counter()
    if kind == "chain":
        def f(x):
            for _ in range(n):
                x = ig.sin(x) * 0.999 + 0.001
            return ig.sum(x)
        fn = ig.grad(ig.trace(f, f32[64]))
        args = [np.random.default_rng(0).standard_normal(64).astype(np.float32)]
    else:
        vocab, seq, batch = 256, 64, 8
        model = ig.nn.TinyTransformer(vocab=vocab, seq=seq, d_model=128, n_heads=4, d_ff=512, n_layers=n)
        params = model.init(0)
        from irgrad.transforms.training import _spec_tree
        loss = ig.trace(lambda p, a, b: model.loss(p, a, b), _spec_tree(params), i32[batch, seq], i32[batch, seq])
        fn = ig.training_step(loss, ig.optim.SGD(0.01))
        tok = np.random.default_rng(0).integers(0, vocab, (batch, seq + 1)).astype(np.int32)
        args = ig.pytree.flatten((params, {}, tok[:, :-1].copy(), tok[:, 1:].copy()))[0]
        fn = ig.Function(fn.ir)
    traced = time.perf_counter() - t0
    report = io.StringIO()
    run_pipeline(fn.ir, "O2", time_passes=True, stream=report)  # the pass report, separately
    t1 = time.perf_counter()
    c = ig.compile(fn, backend="cpu", pipeline="O2")
    compile_s = time.perf_counter() - t1
    got = c(*args)
    want = fn(*args)
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    err = max(float(np.max(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64))
                           / (1 + np.abs(np.asarray(w, np.float64))))) for g, w in zip(got, want))
    timings = c.native.timings
    return {"kind": kind, "n": n, "ops": fn.ir.num_ops(), "kernels": len(c.native.kernel_names),
            "bodies": c.llvm_ir.count("define void @body."), "trace_s": traced, "compile_s": compile_s,
            "passes_s": timings.get("passes", 0.0), "lower_render_s": timings.get("lower_and_render", 0.0),
            "llvm_opt_s": timings.get("optimize", 0.0), "llvm_codegen_s": timings.get("codegen", 0.0),
            "max_rel_err": err, "time_passes": report.getvalue()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chain", type=int, nargs="*", default=[1000, 2000, 10000])
    ap.add_argument("--blocks", type=int, nargs="*", default=[1, 4, 12])
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-results"))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return 0
    rows = []
    env = dict(os.environ, IRGRAD_CACHE="0", PYTHONPATH=ROOT)
    for kind, ns in (("chain", args.chain), ("w4", args.blocks)):
        for n in ns:
            r = subprocess.run([sys.executable, __file__, "--child", kind, str(n)], env=env,
                               capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr, file=sys.stderr)
                return 1
            row = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append(row)
            label = f"{n}-step gradient chain" if kind == "chain" else f"W4 step, {n} block(s)"
            print(f"{label}: {row['ops']} ops, {row['kernels']} kernels ({row['bodies']} distinct bodies): "
                  f"trace {row['trace_s']:.2f} s, compile {row['compile_s']:.2f} s (passes "
                  f"{row['passes_s']:.2f}, lower+render {row['lower_render_s']:.2f}, LLVM opt "
                  f"{row['llvm_opt_s']:.2f}, codegen {row['llvm_codegen_s']:.2f}); max rel. error "
                  f"{row['max_rel_err']:.1e}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    lines = ["# Compile time as programs grow", "",
             "| program | ops | kernels | bodies | trace s | compile s | passes | lower+render | LLVM opt | LLVM codegen |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        label = f"chain {r['n']} (grad)" if r["kind"] == "chain" else f"W4 x{r['n']} step"
        lines.append(f"| {label} | {r['ops']} | {r['kernels']} | {r['bodies']} | {r['trace_s']:.2f} | "
                     f"{r['compile_s']:.2f} | {r['passes_s']:.2f} | {r['lower_render_s']:.2f} | "
                     f"{r['llvm_opt_s']:.2f} | {r['llvm_codegen_s']:.2f} |")
    lines += ["", "Pass timings of the largest program of each family (`--time-passes`):", ""]
    for kind in ("chain", "w4"):
        biggest = [r for r in rows if r["kind"] == kind]
        if biggest:
            lines += ["```", biggest[-1]["time_passes"].rstrip(), "```", ""]
    with open(os.path.join(args.out, "compile-scaling.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {os.path.join(args.out, 'compile-scaling.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
