"""`make gpu-check`: the CUDA backend on a GPU machine with no network, in a few minutes.

On the GPU machine (default mode):
1. fail fast, with the reason, when there is no NVIDIA driver or GPU (ctypes, no imports);
2. install what the machine's Python lacks (pycuda, and pytest/hypothesis/scipy/
   threadpoolctl if missing) from the wheel folder `.gpu-wheels` into a private target
   directory, `pip --no-index` (nothing is downloaded);
3. use `.gpu-cache` as IRGRAD_CACHE_DIR when present (cubins precompiled by `--prepare`,
   so no CUDA compiler is needed there), else a temporary cache;
4. run `pytest -m gpu` (tests/test_cuda_gpu.py) and the benchmark (benchmarks/cuda_bench.py),
   writing gpu-tests.txt, cuda-bench.md and cuda-bench.json to --out ($OUT or gpu-results).
Exit status: 0 when the tests passed, 1 otherwise (the benchmark table is written anyway).

On a development machine (`--prepare`): build the pycuda wheel for the GPU machine's
Python 3.12 with ../shared/gpu/build_pycuda_wheel.sh (skipped when already there), download
the other wheels for cp312 into `.gpu-wheels`, and precompile every cubin the check needs
for sm_90 (H100/H200) into `.gpu-cache`. Carry both folders to the GPU machine.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEELS = os.path.join(ROOT, ".gpu-wheels")
CUBINS = os.path.join(ROOT, ".gpu-cache")
EXTRA = ["pytest", "hypothesis", "threadpoolctl"]  # module == distribution name
NO_DEPS = ["scipy"]  # installed without its numpy: the machine's numpy (torch's) stays


def gpu_problem() -> str | None:
    """Why no GPU can be used here (None: one can)."""
    lib = None
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        return "no NVIDIA driver (libcuda.so.1 not found)"
    rc = lib.cuInit(0)
    if rc == 100:
        return "no NVIDIA GPU (cuInit: CUDA_ERROR_NO_DEVICE)"
    if rc != 0:
        return f"the NVIDIA driver does not initialize (cuInit returned {rc}; 34 = stub library)"
    n = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(n)) != 0 or n.value == 0:
        return "no NVIDIA GPU (cuDeviceGetCount = 0)"
    return None


def missing_modules(py: str, mods) -> list[str]:
    out = []
    for m in mods:
        r = subprocess.run([py, "-c", f"import {m}"], capture_output=True)
        if r.returncode != 0:
            out.append(m)
    return out


def check(out: str, seconds: float, rehearse: bool = False) -> int:
    t0 = time.time()
    why = None if rehearse else gpu_problem()
    if why:
        print(f"gpu-check: cannot run here: {why}. Run it on the GPU machine "
              f"(see docs/cuda.md).", file=sys.stderr)
        return 1
    os.makedirs(out, exist_ok=True)
    py = sys.executable
    site = tempfile.mkdtemp(prefix="irgrad-gpu-site-")
    need = missing_modules(py, ["pycuda.driver", "llvmlite"] + EXTRA + NO_DEPS)
    need = ["pycuda" if m == "pycuda.driver" else m for m in need]
    no_deps = [m for m in need if m in NO_DEPS]
    need = [m for m in need if m not in NO_DEPS]
    if need or no_deps:
        if not os.path.isdir(WHEELS):
            print(f"gpu-check: missing {', '.join(need + no_deps)} and no {WHEELS} to install "
                  f"them from (python benchmarks/gpu_check.py --prepare on the dev machine)",
                  file=sys.stderr)
            return 1
        print(f"gpu-check: installing {', '.join(need + no_deps)} from .gpu-wheels", flush=True)
        for pkgs, extra in ((need, []), (no_deps, ["--no-deps"])):
            if not pkgs:
                continue
            r = subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", "--find-links",
                                WHEELS, "--target", site, *extra, *pkgs])
            if r.returncode != 0:
                return 1
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([site, ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if os.path.isdir(CUBINS):
        env["IRGRAD_CACHE_DIR"] = CUBINS
        env["IRGRAD_CUDA_PREBUILT"] = "1"
    else:
        env["IRGRAD_CACHE_DIR"] = tempfile.mkdtemp(prefix="irgrad-cache-")
    print(f"gpu-check: pytest -m gpu ({time.time() - t0:.0f}s)", flush=True)
    r = subprocess.run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
                        "tests/test_cuda_gpu.py"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=240)
    with open(os.path.join(out, "gpu-tests.txt"), "w") as fh:
        fh.write(r.stdout + r.stderr)
    print(r.stdout[-4000:] + r.stderr[-2000:], flush=True)
    tests_ok = r.returncode == 0
    print(f"gpu-check: benchmark ({time.time() - t0:.0f}s)", flush=True)
    rb = subprocess.run([py, os.path.join(ROOT, "benchmarks", "cuda_bench.py"), "--out", out,
                         "--seconds", str(seconds)], cwd=ROOT, env=env, timeout=240)
    print(f"gpu-check: done in {time.time() - t0:.0f}s; tests {'passed' if tests_ok else 'FAILED'}; "
          f"results in {out}", flush=True)
    return 0 if tests_ok and rb.returncode == 0 else 1


def prepare(arch: str) -> int:
    """Wheels and cubins for the GPU machine (run on the development machine)."""
    os.makedirs(WHEELS, exist_ok=True)
    if not glob.glob(os.path.join(WHEELS, "pycuda-*cp312*.whl")):
        script = os.path.join(os.path.dirname(ROOT), "shared", "gpu", "build_pycuda_wheel.sh")
        subprocess.run(["bash", script], env=dict(os.environ, OUT=WHEELS), check=True)
    for pkgs, extra in ((EXTRA, []), (NO_DEPS, ["--no-deps"])):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp",
                        "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
                        "--platform", "manylinux2014_x86_64", "-d", WHEELS, *extra, *pkgs],
                       check=True)
    os.environ["IRGRAD_CACHE_DIR"] = CUBINS
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import irgrad as ig
    import workloads
    from irgrad.codegen.lowering import plan_for_codegen
    from irgrad.backends.cuda.renderer import render_cuda_program
    from irgrad.backends.cuda.runtime import compile_cubin
    from irgrad.codegen.lowering import lower_function
    from test_cuda import PROGRAMS
    sources = []
    for name in workloads.ALL:
        fn = workloads.get(name).step_function()
        sources.append(render_cuda_program(lower_function(plan_for_codegen(fn.ir, "O2"))).source)
    for text, _, _ in PROGRAMS.values():
        f = next(iter(ig.parse(text)))
        sources.append(render_cuda_program(lower_function(plan_for_codegen(f, "O2"))).source)
    f = next(iter(ig.parse("""
func @f(%a: f32[300,200], %b: f32[200,100]) -> f32[300,100] {
  %0 = matmul %a, %b : f32[300,100]
  return %0
}""")))
    sources.append(render_cuda_program(lower_function(plan_for_codegen(f, "O2")), tf32=True).source)
    for src in sources:
        compile_cubin(src, arch)
    size = sum(os.path.getsize(p) for p in glob.glob(os.path.join(CUBINS, "**"), recursive=True)
               if os.path.isfile(p))
    print(f"prepared {WHEELS} and {len(sources)} programs' cubins for {arch} in {CUBINS} "
          f"({size / 1e6:.1f} MB)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepare", action="store_true", help="build wheels and cubins (dev machine)")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu-results")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rehearse", action="store_true",
                    help="skip the GPU probe (dry run of the install and test steps on a CPU machine)")
    args = ap.parse_args(argv)
    if args.prepare:
        return prepare(args.arch)
    return check(args.out, args.seconds, args.rehearse)


if __name__ == "__main__":
    sys.exit(main())
