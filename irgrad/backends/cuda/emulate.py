"""Run generated CUDA C on the CPU: the kernel-correctness check of CI (no GPU needed).

The translation unit from `render_cuda_program` is compiled as C++ by g++ together with
emu_runtime.h (threadIdx & co. as globals, the threads of a block as ucontext fibers,
`__syncthreads` as a barrier, warp shuffles through per-warp exchange slots, `__shared__`
as statics, atomics as plain adds) and one C entry point per kernel,
`emu_launch_<kernel>(void **args, grid, block, sync)`, called through ctypes with the
addresses of numpy buffers. It runs exactly the launch plan a GPU would (same grids, same
blocks, same index arithmetic, same vector accesses), so wrong indexing, a missing
barrier, a broken reduction tree or a bad launch shape shows up as a wrong result; a
deadlocked barrier is reported, not hung. It does not model timing or races between
blocks, and float results can differ from a GPU's by FMA contraction (g++ does not fuse
here) and by the GPU's transcendental functions (libm here).

- `Emulator(cuda_program)`: the compiled library (cached on disk like the CPU backend's
  objects: IRGRAD_CACHE_DIR, IRGRAD_CACHE=0) and `launch(launch, slot_addresses)`;
- `EmulatedProgram(program)`: a `Program` with its own arena, constants and scratch on
  numpy buffers: `run(params)` runs every kernel in order;
- `run_emulated(planned_ir, args)`: the results of a memory-planned IR function;
- `EmulatedDevice`: the runtime's device interface on host memory, so that `CudaFunction`
  and `CudaStep` run (and are tested) here with `device="emulate"`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading

import numpy as np

from ...codegen.filecache import cache_dir
from ...codegen.kernel_ir import Program
from ...codegen.lowering import lower_function
from ...codegen.program import aligned_empty
from ...errors import BackendUnavailable
from ...ir.plan import result_place
from .cexpr import MT
from .program import CudaProgram, Launch
from .renderer import render_cuda_program

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.path.join(HERE, "emu_runtime.h")
CXXFLAGS = ["-O1", "-std=c++17", "-fPIC", "-shared", "-fno-strict-aliasing", "-fwrapv", "-w",
            "-U_FORTIFY_SOURCE"]
DEVICE_ALIGN = 256  # what cudaMalloc guarantees, so the emulated buffers are as aligned
_lock = threading.Lock()


def compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise BackendUnavailable("the CUDA emulator needs a C++ compiler (g++)")
    return cxx


def _compiler_id(cxx: str) -> str:
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return cxx


def emulation_source(cp: CudaProgram) -> str:
    """The C++ translation unit: the CUDA C (mma.h comes from the emulation header) plus
    one launch entry point per kernel."""
    src = cp.source.replace("#include <mma.h>", "// <mma.h>: emulated in emu_runtime.h")
    stubs = ['extern "C" const char* emu_error() { return emu::error; }']
    seen = set()
    for ln in cp.launches:
        if ln.name in seen:
            continue
        seen.add(ln.name)
        casts = ", ".join(f"({'const ' if a.const else ''}{MT[a.dtype]}*)a[{i}]"
                          for i, a in enumerate(ln.args))
        stubs.append(
            f'extern "C" int emu_launch_{ln.name}(void** a, unsigned gx, unsigned gy, unsigned gz, '
            f"unsigned bx, unsigned by, unsigned bz, int sync) {{\n"
            f"  std::function<void()> fn = [&]() {{ {ln.name}({casts}); }};\n"
            f"  return emu::run(dim3(gx, gy, gz), dim3(bx, by, bz), sync != 0, fn);\n}}")
    return src + "\n// ---- emulator entry points ----\n" + "\n".join(stubs) + "\n"


def _cache_dir() -> str | None:
    d = cache_dir()
    return os.path.join(d, "cuda-emu") if d else None


class Emulator:
    """The generated kernels compiled for the CPU (see the module docstring)."""

    def __init__(self, cp: CudaProgram, sanitize: bool = False):
        self.cuda = cp
        cxx = compiler()
        flags = CXXFLAGS + (["-fsanitize=address", "-g"] if sanitize else [])
        src = emulation_source(cp)
        with open(HEADER) as fh:
            header = fh.read()
        h = hashlib.sha256()
        for part in (header, src, " ".join(flags), _compiler_id(cxx)):
            h.update(part.encode())
            h.update(b"\0")
        key = h.hexdigest()
        # the library names the key it was built for: a file copied over another entry is
        # not used (checked after loading, before any kernel runs)
        src += f'\nextern "C" const char irgrad_emu_key[] = "{key}";\n'
        cdir = _cache_dir()
        self.from_cache = False
        tmpdir = None
        if cdir:
            path = os.path.join(cdir, key[:2], key + ".so")
        else:
            tmpdir = tempfile.mkdtemp(prefix="irgrad-emu-")
            path = os.path.join(tmpdir, "emu.so")
        if os.path.isfile(path) and not os.path.islink(path):
            self.from_cache = True
        else:
            self._build(cxx, flags, src, path)
        self.path = path
        self.lib = self._load(path, key)
        if self.lib is None:  # a corrupt or foreign cache entry: rebuild it once
            self.from_cache = False
            self._build(cxx, flags, src, path)
            self.lib = self._load(path, key)
            if self.lib is None:
                raise AssertionError(f"the emulator library {path} does not load")
        self.lib.emu_error.restype = ctypes.c_char_p
        self._fns = {}
        for ln in cp.launches:
            fn = getattr(self.lib, "emu_launch_" + ln.name)
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 6 + [ctypes.c_int]
            self._fns[ln.name] = fn
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)  # the loaded library stays mapped

    @staticmethod
    def _load(path: str, key: str):
        try:
            lib = ctypes.CDLL(path)
            if (ctypes.c_char * (len(key) + 1)).in_dll(lib, "irgrad_emu_key").value != key.encode():
                return None
            return lib
        except (OSError, ValueError):
            return None

    @staticmethod
    def _build(cxx, flags, src, path) -> None:
        if os.path.lexists(path) and not os.path.isfile(path) or os.path.islink(path):
            os.unlink(path)
        d = os.path.dirname(path)
        os.makedirs(d, exist_ok=True)
        fd, cpp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".cpp")
        with os.fdopen(fd, "w") as fh:
            fh.write(src)
        tmp_so = cpp[:-4] + ".so"
        cmd = [cxx, *flags, "-I", HERE, "-include", HEADER, cpp, "-o", tmp_so]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise AssertionError(f"the generated CUDA C does not compile as C++:\n{r.stderr[:6000]}")
            os.replace(tmp_so, path)
        finally:
            for f in (cpp, tmp_so):
                if os.path.exists(f):
                    os.unlink(f)

    def launch(self, ln: Launch, slot_addrs) -> None:
        """Run one launch; `slot_addrs[slot]` is the host address of each table slot."""
        ptrs = [slot_addrs[a.slot] + a.offset for a in ln.args]
        arr = (ctypes.c_void_p * max(1, len(ptrs)))(*ptrs)
        with _lock:  # the emulator's scheduler state is global
            rc = self._fns[ln.name](arr, *ln.grid, *ln.block, int(ln.sync))
        if rc:
            raise RuntimeError(f"emulated kernel {ln.name}: {self.lib.emu_error().decode()}")


def device_empty(nbytes: int) -> tuple[np.ndarray, int]:
    return aligned_empty(nbytes, DEVICE_ALIGN)


class EmulatedProgram:
    """A Program's kernels on numpy buffers (arena, constants, scratch, parameters)."""

    def __init__(self, program: Program | CudaProgram, **render_options):
        self.cuda = program if isinstance(program, CudaProgram) else render_cuda_program(
            program, **render_options)
        self.program = self.cuda.program
        self.emu = Emulator(self.cuda)
        self._keep = []
        self.addrs = [0] * self.cuda.num_slots
        self.arena_raw, self.addrs[0] = device_empty(self.program.arena_bytes)
        for slot, arr in self.program.constants.items():
            raw, addr = device_empty(arr.nbytes)
            ctypes.memmove(addr, np.ascontiguousarray(arr).ctypes.data, arr.nbytes)
            self._keep.append(raw)
            self.addrs[slot] = addr
        self.scratch_raw, self.addrs[self.cuda.scratch_slot] = device_empty(self.cuda.scratch_bytes)
        self.params: list[np.ndarray] = []

    def set_params(self, arrays) -> None:
        """Copy the parameters into aligned buffers the kernels read and write."""
        self.params = []
        for i, a in enumerate(arrays):
            a = np.ascontiguousarray(a)
            raw, addr = device_empty(a.nbytes)
            view = raw[addr - raw.ctypes.data: addr - raw.ctypes.data + a.nbytes].view(a.dtype).reshape(a.shape)
            view[...] = a
            self._keep.append(raw)
            self.params.append(view)
            self.addrs[1 + i] = addr

    def run(self, arrays=None) -> None:
        if arrays is not None:
            self.set_params(arrays)
        for ln in self.cuda.launches:
            self.emu.launch(ln, self.addrs)

    def arena_view(self, offset: int, t) -> np.ndarray:
        start = self.addrs[0] - self.arena_raw.ctypes.data + offset
        return self.arena_raw[start:start + t.nbytes].view(t.dtype.np).reshape(t.shape)


def run_emulated(planned_ir, args, **render_options) -> list[np.ndarray]:
    """Results of a memory-planned IR function, every kernel run by the emulator."""
    ep = EmulatedProgram(lower_function(planned_ir), **render_options)
    ep.run(args)
    outs = []
    for (kind, where), t in zip([result_place(planned_ir, v) for v in planned_ir.outputs], planned_ir.result_types):
        if kind == "arena":
            outs.append(np.array(ep.arena_view(where, t)))
        elif kind == "param":
            outs.append(np.array(ep.params[where]).reshape(t.shape))
        else:
            outs.append(np.array(where))
    return outs


class EmulatedDevice:
    """The runtime's device interface (see runtime.Device) on host memory: allocations are
    numpy buffers, copies are memmoves, launches run on the emulator, a captured graph
    replays the recorded calls."""

    name = "CPU emulation of a CUDA device"
    arch = "emulated"
    supports_graphs = True

    def __init__(self):
        self._mem: dict[int, np.ndarray] = {}
        self._recording: list | None = None

    # memory ------------------------------------------------------------------------------
    def alloc(self, nbytes: int) -> int:
        raw, addr = device_empty(nbytes)
        self._mem[addr] = raw
        return addr

    def free(self, ptr: int) -> None:
        self._mem.pop(ptr, None)

    def pinned(self, shape, dtype) -> np.ndarray:
        dt = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dt.itemsize
        raw, addr = device_empty(nbytes)
        self._mem[addr] = raw
        off = addr - raw.ctypes.data
        return raw[off:off + nbytes].view(dt).reshape(shape)

    def _do(self, fn) -> None:
        if self._recording is not None:  # captured work runs when the graph is launched
            self._recording.append(fn)
        else:
            fn()

    def htod(self, ptr: int, host: np.ndarray, pinned: bool = False) -> None:
        host = np.ascontiguousarray(host)
        self._do(lambda: ctypes.memmove(ptr, host.ctypes.data, host.nbytes))

    def dtoh(self, host: np.ndarray, ptr: int, pinned: bool = False) -> None:
        self._do(lambda: ctypes.memmove(host.ctypes.data, ptr, host.nbytes))

    def dtod(self, dst: int, src: int, nbytes: int) -> None:
        self._do(lambda: ctypes.memmove(dst, src, nbytes))

    # code -----------------------------------------------------------------------------------
    def load(self, cp: CudaProgram):
        return Emulator(cp)

    def launch(self, module: Emulator, ln: Launch, slot_addrs) -> None:
        self._do(lambda: module.launch(ln, slot_addrs))

    def synchronize(self) -> None:
        pass

    # graphs ---------------------------------------------------------------------------------
    def begin_capture(self) -> None:
        self._recording = []

    def end_capture(self):
        calls, self._recording = self._recording, None
        return calls

    def graph_launch(self, graph) -> None:
        for fn in graph:
            fn()
