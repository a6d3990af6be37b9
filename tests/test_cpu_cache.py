"""The CPU backend's on-disk compile cache (irgrad/backends/cpu/cache.py; issue 5, point 6).

Every test gets a fresh, empty cache directory through IRGRAD_CACHE_DIR: nothing here
reads or writes ~/.cache/irgrad. Hits and misses are read from `compiled.native.from_cache`;
every program that comes out of the cache is also run and checked, so an entry that
loads but computes the wrong thing fails too.
"""

from __future__ import annotations

import glob
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import irgrad as ig
import workloads
from irgrad.backends.cpu import cache
from irgrad.pytree import flatten

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROGRAM = """
func @f(%x: f32[64,48], %w: f32[48,32], %b: f32[32]) -> (f32[64,32], f32[]) {
  %0 = matmul %x, %w : f32[64,32]
  %1 = broadcast %b {dims=[1]} : f32[64,32]
  %2 = add %0, %1 : f32[64,32]
  %3 = tanh %2 : f32[64,32]
  %4 = reduce_sum %3 {axes=[0, 1]} : f32[]
  return %3, %4
}
"""


def program(scale: float | None = None):
    text = PROGRAM
    if scale is not None:  # a different program: one more op with a constant
        text = text.replace("  return %3, %4", f"  %5 = const {{value={scale}}} : f32[64,32]\n"
                            f"  %6 = mul %3, %5 : f32[64,32]\n  return %6, %4")
    return ig.parse(textwrap.dedent(text)).functions["f"]


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (64, 48)).astype(np.float32),
            rng.uniform(-1, 1, (48, 32)).astype(np.float32),
            rng.uniform(-1, 1, (32,)).astype(np.float32))


def check_runs(c, f=None):
    """The compiled program computes what the interpreter computes."""
    f = f or program()
    args = inputs()
    want = ig.compile(f, backend="numpy")(*args)
    got = c(*args)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * max(1, np.abs(w).max()))


def compile_cpu(f=None, pipeline="O2", threads=1):
    return ig.compile(f or program(), backend="cpu", pipeline=pipeline, threads=threads)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("IRGRAD_CACHE_DIR", str(d))
    monkeypatch.delenv("IRGRAD_CACHE", raising=False)
    return d


def entries(d) -> list[str]:
    return sorted(glob.glob(os.path.join(str(d), "*", "*.entry")))


def leftovers(d) -> list[str]:
    return [p for p in glob.glob(os.path.join(str(d), "**", "*"), recursive=True)
            if os.path.isfile(p) and not p.endswith(".entry")]


# --- hits and misses -------------------------------------------------------------------------

def test_second_compile_is_a_hit(cache_dir):
    first = compile_cpu()
    assert not first.native.from_cache
    assert len(entries(cache_dir)) == 1
    second = compile_cpu()
    assert second.native.from_cache
    check_runs(second)
    # a hit carries everything a miss has: the planned IR, the LLVM IR, the kernels
    assert str(second.ir) == str(first.ir)
    assert second.llvm_ir == first.llvm_ir
    assert second.native.kernel_names == first.native.kernel_names
    assert second.native.arena_bytes == first.native.arena_bytes


def test_different_pipeline_threads_or_program_miss(cache_dir):
    compile_cpu(pipeline="O2", threads=1)
    for kwargs in (dict(pipeline="O0", threads=1), dict(pipeline="O2", threads=2),
                   dict(pipeline="O1", threads=1)):
        c = compile_cpu(**kwargs)
        assert not c.native.from_cache, kwargs
        check_runs(c)
        assert compile_cpu(**kwargs).native.from_cache, kwargs
    assert len(entries(cache_dir)) == 4
    # programs that differ in one constant are different entries with different results
    for scale in (2.0, 3.0):
        f = program(scale)
        c = compile_cpu(f)
        assert not c.native.from_cache
        check_runs(c, f)
        check_runs(compile_cpu(f), f)
    assert len(entries(cache_dir)) == 6


def test_key_inputs(cache_dir, monkeypatch):
    """What goes into a key: the input IR text, the pipeline, the thread count, the LLVM opt
    level, irgrad's source fingerprint and the target (CPU name, features, llvmlite)."""
    seen = []
    real = cache.make_key

    def spy(*parts):
        seen.append(parts)
        return real(*parts)

    monkeypatch.setattr(cache, "make_key", spy)
    compile_cpu(pipeline="O0", threads=1)
    compile_cpu(pipeline="O2", threads=1)
    compile_cpu(pipeline="O2", threads=2)
    for parts in seen:
        print("cache key inputs:", [str(p)[:70] for p in parts])
    o0, o2, o2t2 = seen
    text = str(program())
    assert any(str(p) == text for p in o0), "the IR text is part of the key"
    assert "O0" in o0 and "O2" in o2
    facts = json.loads(next(p for p in o0 if isinstance(p, str) and p.startswith("{")))
    assert {"cpu", "features", "llvmlite"} <= set(facts)
    assert facts["llvmlite"] == __import__("llvmlite").__version__
    assert cache.source_fingerprint() in o0
    # O0 and O2 differ in the pipeline only; threads=1 and 2 in the thread count only
    assert [i for i, (a, b) in enumerate(zip(o0, o2)) if a != b] == [o0.index("O0")]
    assert [(a, b) for a, b in zip(o2, o2t2) if a != b] == [(1, 2)]
    assert len({real(*p) for p in seen}) == 3


def test_cache_off(cache_dir, monkeypatch):
    monkeypatch.setenv("IRGRAD_CACHE", "0")
    for _ in range(2):
        c = compile_cpu()
        assert not c.native.from_cache
        check_runs(c)
    assert not os.path.exists(cache_dir) or entries(cache_dir) == []
    monkeypatch.setenv("IRGRAD_CACHE", "1")
    assert not compile_cpu().native.from_cache
    assert compile_cpu().native.from_cache


def test_compile_step_from_cache_trains_identically(cache_dir):
    w = workloads.get("W1")
    steps = [ig.compile_step(w.loss_fn, w.init_params(), w.optimizer(), w.batch_specs,
                             backend="cpu", pipeline="O2", threads=1) for _ in range(2)]
    assert [s.native.from_cache for s in steps] == [False, True]
    for b in w.batches(3):
        assert steps[0](*b) == steps[1](*b)
    for a, b in zip(flatten(steps[0].params)[0], flatten(steps[1].params)[0]):
        np.testing.assert_array_equal(a, b)


# --- damaged entries ---------------------------------------------------------------------------

def _flip_middle(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 16]) + data[mid + 16:]


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x01])


DAMAGE = {
    "flip-middle": _flip_middle,
    "flip-last-byte": _flip_last,
    "truncate-half": lambda d: d[:len(d) // 2],
    "truncate-one-byte": lambda d: d[:-1],
    "extra-byte": lambda d: d + b"\0",
    "garbage": lambda d: np.random.default_rng(0).integers(0, 256, len(d), np.uint8).tobytes(),
    "empty": lambda d: b"",
    "magic-only": lambda d: cache.MAGIC,
    "header-not-json": lambda d: d.replace(b'{"', b'{{', 1),
    "header-cut": lambda d: d[:d.index(b"\n", len(cache.MAGIC)) - 5] + b"\n",
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_damaged_entry_is_detected_and_rebuilt(cache_dir, damage):
    compile_cpu()
    (path,) = entries(cache_dir)
    good = open(path, "rb").read()
    with open(path, "wb") as fh:
        fh.write(DAMAGE[damage](good))
    c = compile_cpu()
    assert not c.native.from_cache, "a damaged entry was used"
    check_runs(c)
    assert entries(cache_dir) == [path]
    assert open(path, "rb").read() == good, "the entry was not rebuilt"
    hit = compile_cpu()
    assert hit.native.from_cache
    check_runs(hit)


def test_unreadable_cache_directory_only_costs_the_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("IRGRAD_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.delenv("IRGRAD_CACHE", raising=False)
    for _ in range(2):
        c = compile_cpu()
        assert not c.native.from_cache
        check_runs(c)


def test_damaged_header_value_is_detected(cache_dir):
    compile_cpu()
    (path,) = entries(cache_dir)
    data = open(path, "rb").read()
    end = data.index(b"\n", len(cache.MAGIC))
    meta = json.loads(data[len(cache.MAGIC):end])
    old = f'"arena_bytes": {meta["arena_bytes"]}'.encode()
    assert old in data[:end]
    new = f'"arena_bytes": {str(meta["arena_bytes"])[:-1]}0'.encode()  # same length
    if new == old:
        new = f'"arena_bytes": {str(meta["arena_bytes"])[:-1]}1'.encode()
    with open(path, "wb") as fh:
        fh.write(data.replace(old, new, 1))
    c = compile_cpu()  # not run: with a wrong arena size, running it would write out of bounds
    assert not c.native.from_cache, "an entry with a damaged header was used"


# --- concurrency -------------------------------------------------------------------------------

RACER = """
import json, sys, time
import numpy as np
import irgrad as ig
sys.path[:0] = [{tests!r}, {tests!r} + "/../benchmarks"]
import test_cpu_cache as t

start = float(sys.argv[1])
f = t.program()
while time.time() < start:
    time.sleep(0.001)
c = ig.compile(f, backend="cpu", pipeline="O2", threads=1)
t.check_runs(c, f)
print(json.dumps({{"from_cache": c.native.from_cache}}))
"""


def _racers(script, cache_dir, n, start):
    env = dict(os.environ, PYTHONPATH=REPO, IRGRAD_CACHE_DIR=str(cache_dir))
    env.pop("IRGRAD_CACHE", None)
    procs = [subprocess.Popen([sys.executable, str(script), repr(start)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1])["from_cache"])
    return results


def test_two_processes_compiling_at_once_both_succeed(cache_dir, tmp_path):
    script = tmp_path / "racer.py"
    script.write_text(RACER.format(tests=os.path.dirname(os.path.abspath(__file__))))
    # both import irgrad first, then compile at the same moment
    both = _racers(script, cache_dir, 2, time.time() + 3.0)
    print("from_cache in the two racing processes:", both)
    assert len(entries(cache_dir)) == 1
    assert leftovers(cache_dir) == [], "temporary files left behind"
    # the entry they left is whole: a later process loads it and gets the right results
    # (a process, not this one: its fingerprint of irgrad's sources was taken earlier)
    assert _racers(script, cache_dir, 1, 0.0) == [True]


def test_scalar_constant_result_keeps_its_shape_from_the_cache(tmp_path, monkeypatch):
    """A 0-d constant result read back from a cache entry stays 0-d (np.ascontiguousarray
    would have made it shape (1,))."""
    monkeypatch.setenv("IRGRAD_CACHE_DIR", str(tmp_path))
    f = ig.parse("""func @f(%x: f32[2]) -> (f32[2], f32[]) {
  %0 = neg %x : f32[2]
  %1 = const {value=0.5} : f32[]
  return %0, %1
}""").functions["f"]
    shapes = []
    for _ in range(2):
        c = ig.compile(f, backend="cpu")
        neg, half = c(np.ones(2, np.float32))
        shapes.append((c.native.from_cache, np.shape(neg), np.shape(half), float(half)))
    assert shapes == [(False, (2,), (), 0.5), (True, (2,), (), 0.5)]


# --- entries of other programs, and files that are no entries (the reliability issue) ----------

CACHE_PROGRAM = """\
func @f(%x: f32[64]) -> f32[64] {
  %0 = tanh %x : f32[64]
  %1 = const {value=SCALE} : f32[64]
  %2 = mul %0, %1 : f32[64]
  return %2
}
"""


def _cached(scale, size=64):
    text = CACHE_PROGRAM.replace("SCALE", str(scale)).replace("64", str(size))
    return ig.parse(text).functions["f"]



def test_a_copied_entry_is_not_used_for_another_program(cache_dir):
    x = np.linspace(-1, 1, 64, dtype=np.float32)
    ig.compile(_cached(2.0), backend="cpu")
    (a,) = [pathlib.Path(e) for e in entries(cache_dir)]
    ig.compile(_cached(3.0), backend="cpu")
    (b,) = [e for e in [pathlib.Path(e) for e in entries(cache_dir)] if e != a]
    b.write_bytes(a.read_bytes())  # program 2.0's entry where 3.0's belongs
    c = ig.compile(_cached(3.0), backend="cpu")
    assert not c.native.from_cache
    np.testing.assert_allclose(c(x), np.tanh(x) * 3.0, rtol=1e-6)


def test_an_entry_of_a_smaller_program_is_not_used(cache_dir):
    ig.compile(_cached(2.0, size=8), backend="cpu")
    (small,) = [pathlib.Path(e) for e in entries(cache_dir)]
    ig.compile(_cached(2.0, size=4096), backend="cpu")
    (big,) = [e for e in [pathlib.Path(e) for e in entries(cache_dir)] if e != small]
    big.write_bytes(small.read_bytes())
    x = np.linspace(-1, 1, 4096, dtype=np.float32)
    c = ig.compile(_cached(2.0, size=4096), backend="cpu")
    assert not c.native.from_cache
    np.testing.assert_allclose(c(x), np.tanh(x) * 2.0, rtol=1e-6)


@pytest.mark.parametrize("what", ["fifo", "devzero", "directory", "huge"])
def test_no_file_in_the_cache_directory_hangs_or_exhausts_memory(what, cache_dir, tmp_path):
    """Each case in a subprocess with a timeout: a FIFO would block a plain open(), a link
    to /dev/zero would read forever."""
    ig.compile(_cached(2.0), backend="cpu")
    (entry,) = [pathlib.Path(e) for e in entries(cache_dir)]
    entry.unlink()
    if what == "fifo":
        os.mkfifo(entry)
    elif what == "devzero":
        os.symlink("/dev/zero", entry)
    elif what == "directory":
        entry.mkdir()
    else:
        with open(entry, "wb") as fh:  # sparse: 8 GiB of nothing
            fh.truncate(8 << 30)
    script = textwrap.dedent(f"""
        import numpy as np, irgrad as ig
        f = ig.parse({CACHE_PROGRAM.replace('SCALE', '2.0')!r}).functions["f"]
        c = ig.compile(f, backend="cpu")
        x = np.linspace(-1, 1, 64, dtype=np.float32)
        assert not c.native.from_cache
        np.testing.assert_allclose(c(x), np.tanh(x) * 2.0, rtol=1e-6)
        print("ok")
    """)
    env = dict(os.environ, PYTHONPATH=REPO, IRGRAD_CACHE_DIR=str(cache_dir))
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
