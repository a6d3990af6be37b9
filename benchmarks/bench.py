"""`make bench`: W1-W6 training steps, irgrad against numpy by hand, PyTorch and JAX.

Every (system, workload, threads) runs in a fresh process with its thread pools pinned,
checks its first loss against irgrad's interpreter on the same parameters and batch,
then times steps for a few seconds and reports the median, with compile time (irgrad:
cold, with an empty cache, and cached, in a second process) and peak RSS. Systems that
are not installed are skipped. The table goes to stdout and bench-results/bench.md, the
raw rows to bench-results/bench.json. A system with no step for a workload (numpy has
none by hand for the convolutional W5 and W6) shows "n/a" there, which is not a failure.

    python benchmarks/bench.py [--workloads W1 W2] [--systems irgrad-O2 numpy torch]
                               [--threads 1 2] [--seconds 2] [--rounds 3] [--out bench-results]

One-thread runs are pinned to one core (sched_setaffinity), so a system that starts more
threads than asked for gains nothing from them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SYSTEMS = ("irgrad-O2", "irgrad-O0", "numpy", "torch", "jax")
LOSS_RTOL = 1e-4


def reference_loss(workload: str) -> float:
    """irgrad's interpreter (O0) on the workload's first batch: every system's first loss is
    checked against it (computed once per workload: W6's takes seconds)."""
    sys.path.insert(0, HERE)
    sys.path.insert(0, ROOT)
    import irgrad as ig
    import workloads as W
    w = W.get(workload)
    batch = w.batches(1, seed=1)[0]
    ref_step = ig.compile_step(w.loss_fn, w.init_params(), w.optimizer(), w.batch_specs,
                               backend="numpy", pipeline="O0", **w.step_options())
    return ref_step(*batch)


def child(system: str, workload: str, threads: int, seconds: float, max_steps: int,
          ref_loss: float | None = None) -> dict:
    """Runs inside the subprocess: build, check, time; returns one result row."""
    import resource
    if hasattr(os, "sched_setaffinity"):
        # pin to `threads` cores: a system that starts more threads than asked for (XLA's
        # own pools) still gets only the cores the others get
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cores[-threads:] if threads < len(cores) else cores)

    import numpy as np
    sys.path.insert(0, HERE)
    sys.path.insert(0, ROOT)
    import irgrad as ig
    import workloads as W

    w = W.get(workload)
    if system == "numpy":
        from numpy_steps import make_step
        try:
            make_step(w, w.init_params())
        except NotImplementedError as e:  # no by-hand step for this workload
            return {"system": system, "workload": workload, "threads": threads, "na": str(e)}
    batch = w.batches(1, seed=1)[0]
    if ref_loss is None:
        ref_loss = reference_loss(workload)
    params = w.init_params()
    if system.startswith("irgrad-"):
        # once per process (LLVM, BLAS symbols, the backend's modules): not part of a compile
        import irgrad.backends.cpu.backend  # noqa: F401
        from irgrad.backends.cpu.jit import initialize
        initialize()
    t0 = time.perf_counter()
    if system.startswith("irgrad-"):
        step = ig.compile_step(w.loss_fn, params, w.optimizer(), w.batch_specs, backend="cpu",
                               pipeline=system.split("-", 1)[1], threads=threads, **w.step_options())
    elif system == "numpy":
        from numpy_steps import make_step
        step = make_step(w, params)
    elif system == "torch":
        from peer_steps import torch_step
        step = torch_step(w, params, threads)
    elif system == "jax":
        from peer_steps import jax_step
        step = jax_step(w, params, threads)
    else:
        raise SystemExit(f"unknown system {system}")
    built_s = time.perf_counter() - t0
    first = step(*batch)  # for jax this traces and compiles
    # compile time: irgrad's compile_step alone; for the others, building plus the first
    # step (JAX compiles there; for PyTorch and numpy it is just the first step)
    compile_s = built_s if system.startswith("irgrad-") else time.perf_counter() - t0
    rel = abs(first - ref_loss) / max(abs(ref_loss), 1e-30)
    row = {"system": system, "workload": workload, "threads": threads, "compile_s": compile_s,
           "loss_ref": ref_loss, "loss": first, "loss_rel_err": rel, "loss_ok": rel <= LOSS_RTOL}
    for _ in range(3):
        step(*batch)
    times = []
    start = time.perf_counter()
    while (time.perf_counter() - start < seconds or len(times) < 5) and len(times) < max_steps:
        t = time.perf_counter()
        step(*batch)
        times.append(time.perf_counter() - t)
    row["steps"] = len(times)
    row["median_us"] = float(np.median(times)) * 1e6
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def available(system: str) -> bool:
    """Whether the system's package is installed: looked up, not imported (an import here
    would grow this process, and Linux hands a parent's peak RSS on to its children's
    ru_maxrss, so every row's peak RSS would be at least torch's and JAX's)."""
    import importlib.util
    mod = {"torch": "torch", "jax": "jax"}.get(system)
    return mod is None or importlib.util.find_spec(mod) is not None


def spawn(system, workload, threads, seconds, max_steps, cache_dir, ref_loss=None) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["IRGRAD_CACHE_DIR"] = cache_dir
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, "--child", system, workload, str(threads), str(seconds),
           str(max_steps), repr(ref_loss) if ref_loss is not None else "-"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        return {"system": system, "workload": workload, "threads": threads,
                "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict], workloads, threads_list) -> str:
    def cell(system, wl, t):
        r = next((r for r in rows if r["system"] == system and r["workload"] == wl
                  and r["threads"] == t), None)
        if r is None:
            return "-"
        if "error" in r:
            return "error"
        if "na" in r:
            return "n/a"
        mark = "" if r["loss_ok"] else " (loss!)"
        return f"{r['median_us']:,.0f}{mark}"

    systems = [s for s in SYSTEMS if any(r["system"] == s for r in rows)]
    head = ["workload"] + [f"{s} {t}t" for s in systems for t in threads_list]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for wl in workloads:
        lines.append("| " + " | ".join([wl] + [cell(s, wl, t) for s in systems for t in threads_list]) + " |")
    lines.append("")
    lines.append("Median microseconds per training step (forward, loss, backward, SGD update): the "
                 "median over rounds of each round's median step.")
    comp = [r for r in rows if r["system"].startswith("irgrad") and "compile_cold_s" in r]
    if comp:
        lines += ["", "| workload | system | threads | compile cold (s) | compile cached (s) | peak RSS (MB) |",
                  "|---|---|---|---|---|---|"]
        for r in comp:
            lines.append(f"| {r['workload']} | {r['system']} | {r['threads']} | {r['compile_cold_s']:.2f} | "
                         f"{r['compile_cached_s']:.3f} | {r['peak_rss_mb']:.0f} |")
    ratios = []
    for wl in workloads:
        for t in threads_list:
            ours = next((r for r in rows if r["system"] == "irgrad-O2" and r["workload"] == wl
                         and r["threads"] == t and "median_us" in r), None)
            peers = [r for r in rows if r["workload"] == wl and r["threads"] == t and "median_us" in r
                     and not r["system"].startswith("irgrad")]
            if ours and peers:
                best = min(peers, key=lambda r: r["median_us"])
                ratios.append(f"| {wl} | {t} | {ours['median_us'] / best['median_us']:.2f} | {best['system']} |")
    if ratios:
        lines += ["", "| workload | threads | irgrad O2 / best peer | best peer |", "|---|---|---|---|"] + ratios
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="+", default=["W1", "W2", "W3", "W4", "W5", "W6"])
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--seconds", type=float, default=2.0, help="timing per configuration and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every configuration (median)")
    ap.add_argument("--max-steps", type=int, default=5000)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-results"))
    ap.add_argument("--busy", action="store_true",
                    help="keep another process spinning on the first core while timing (a shared machine)")
    args = ap.parse_args(argv)
    spinner = _start_spinner() if args.busy else None
    try:
        return _run(args, spinner is not None)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


def _start_spinner():
    """A process spinning on the first core allowed to us, for the whole run."""
    core = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    code = (f"import os\nif hasattr(os, 'sched_setaffinity'): os.sched_setaffinity(0, {{{core}}})\n"
            "while True: pass\n")
    return subprocess.Popen([sys.executable, "-c", code])


def _run(args, busy: bool) -> int:
    systems = [s for s in args.systems if available(s)]
    skipped = sorted(set(args.systems) - set(systems))
    rows = []
    with tempfile.TemporaryDirectory(prefix="irgrad-bench-cache-") as cache:
        for wl in args.workloads:
            ref = spawn("reference", wl, 1, 0.0, 0, os.path.join(cache, "reference"))
            ref_loss = ref.get("loss_ref")
            if ref_loss is None:
                print(f"{wl} reference loss: {ref['error']} (each system computes its own)",
                      file=sys.stderr, flush=True)
            for t in args.threads:
                # systems take turns, round after round, so a slow spell of the machine
                # hits all of them; each reports the median of its rounds' medians
                runs: dict = {s: [] for s in systems}
                for rnd in range(args.rounds):
                    for system in systems:
                        if any("na" in r for r in runs[system]):
                            continue  # no step for this workload: once is enough
                        cdir = os.path.join(cache, f"{system}-{wl}-{t}")
                        r = spawn(system, wl, t, args.seconds, args.max_steps, cdir, ref_loss)
                        if system.startswith("irgrad") and "error" not in r and rnd == 0:
                            # a second process finds the compiled code in the cache
                            again = spawn(system, wl, t, 0.0, 5, cdir, ref_loss)
                            r["compile_cold_s"] = r["compile_s"]
                            r["compile_cached_s"] = again.get("compile_s", float("nan"))
                        runs[system].append(r)
                        status = r.get("error") or (f"n/a ({r['na']})" if "na" in r else
                                                    f"{r['median_us']:,.0f} us (loss rel err {r['loss_rel_err']:.1e})")
                        print(f"{wl} {system} {t}t round {rnd + 1}: {status}", file=sys.stderr, flush=True)
                for system, rs in runs.items():
                    ok = [r for r in rs if "error" not in r and "na" not in r]
                    if not ok:
                        rows.append(rs[0])
                        continue
                    row = dict(ok[0])
                    row["round_medians_us"] = [r["median_us"] for r in ok]
                    row["median_us"] = float(sorted(row["round_medians_us"])[len(ok) // 2])
                    row["loss_ok"] = all(r["loss_ok"] for r in ok)
                    row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
                    rows.append(row)
    os.makedirs(args.out, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}"
    if busy:
        machine += "; another process spinning on the first core throughout"
    text = f"# irgrad benchmarks\n\nMachine: {machine}\n\n" + table(rows, args.workloads, args.threads)
    if skipped:
        text += f"\nNot installed, skipped: {', '.join(skipped)}\n"
    with open(os.path.join(args.out, "bench.md"), "w") as fh:
        fh.write(text)
    with open(os.path.join(args.out, "bench.json"), "w") as fh:
        json.dump({"machine": machine, "rows": rows}, fh, indent=2)
    print(text)
    bad = [r for r in rows if "error" in r or ("na" not in r and not r.get("loss_ok", False))]
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, system, workload, threads, seconds, max_steps, ref = sys.argv
        if system == "reference":
            print(json.dumps({"loss_ref": reference_loss(workload)}))
        else:
            print(json.dumps(child(system, workload, int(threads), float(seconds), int(max_steps),
                                   None if ref == "-" else float(ref))))
        sys.exit(0)
    sys.exit(main())
