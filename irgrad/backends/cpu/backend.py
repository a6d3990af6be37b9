"""The CPU backend: compiled functions and whole training steps in one native call.

`NativeProgram` owns a compiled program: the JIT-compiled code, the constants and the
runtime layout. A `Memory` is what one call touches: the arena (one 64-byte aligned block
for every intermediate) and the pointer table the code reads its buffers from.
`CpuFunction` (from `ig.compile`) takes a memory from a pool per call, points its table
at the (checked) arguments and copies the results out, so threads may call it at once;
`CpuStep` (from `ig.compile_step`) keeps parameters and optimizer state in persistent
buffers that the step updates in place, copies the batch into persistent buffers, and
returns the loss as a float: no allocation per step, one native call; its calls
serialize (one set of parameters). Arguments are flat lists of arrays: pytrees and
argument checks are the frontend's (api.py, transforms/training.py).
"""

from __future__ import annotations

import ctypes
import io
import json
import threading
import time

import numpy as np

from ...errors import ArgumentError, IrgradError
from ...ir.core import Function as IrFunction, clone_function
from ...ir.parser import parse_function
from ...ir.plan import has_plan, result_place, written_params
from ...ir.printer import print_function
from ...codegen.kernel_ir import GemmKernel
from ...codegen.lowering import default_threads, lower_function, plan_for_codegen
from ...codegen.program import aligned_empty
from . import cache
from .jit import JitModule, compile_program, target_facts
from .llvm_renderer import KernelRenderer, render_program

_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
SMALL_PROGRAM_FLOPS = 50e6  # below this many matmul flops per call, BLAS stays on one thread


_blas_threads = {"current": None}


def set_blas_threads(n: int) -> None:
    """Limit BLAS to n threads (only when it changes: threadpoolctl is not free)."""
    if _blas_threads["current"] == n:
        return
    try:
        from threadpoolctl import threadpool_limits  # optional: without it BLAS picks
        _blas_threads["limiter"] = threadpool_limits(limits=n, user_api="blas")
    except Exception:  # noqa: BLE001 - no threadpoolctl or no BLAS found: leave it
        pass
    _blas_threads["current"] = n


class Memory:
    """What one running call touches besides the code: an arena, a pointer table (slot 0
    the arena, then the parameters, then the constants), and private copies of the
    parameters the plan writes into (a plain call never writes its caller's arrays)."""

    __slots__ = ("raw", "arena_addr", "table", "table_addr", "private")

    def __init__(self, program: "NativeProgram"):
        try:
            self.raw, self.arena_addr = aligned_empty(program.arena_bytes)
        except (MemoryError, ValueError) as e:
            raise IrgradError(f"cannot allocate the arena of {program.arena_bytes} bytes: {e}") from None
        self.table = program.table_template.copy()
        self.table[0] = self.arena_addr
        self.table_addr = self.table.ctypes.data
        self.private: dict[int, np.ndarray] = {}

    def private_copy(self, i: int, a: np.ndarray) -> np.ndarray:
        """An aligned buffer of the step's own holding a copy of parameter i's array."""
        buf = self.private.get(i)
        if buf is None:
            raw, addr = aligned_empty(a.nbytes)
            start = addr - raw.ctypes.data
            buf = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
            self.private[i] = buf
        np.copyto(buf, a)
        return buf


class NativeProgram:
    """A compiled program: its code, constants and runtime layout (see the module docstring).

    Built from the function's IR before optimization: on a compile-cache hit (cache.py)
    the pipeline, the lowering and LLVM are all skipped, but the entry is checked against
    the plan it carries before any of its code runs. Calls run on a `Memory` each; plain
    functions take one from a pool per call, so any number of threads can call at once.
    """

    def __init__(self, ir: IrFunction, pipeline: str, threads: int, opt: int = 3):
        t0 = time.perf_counter()
        self.threads = threads
        self.pipeline = pipeline
        self.input_ir = ir
        key = cache.make_key("irgrad-native-1", print_function(ir), pipeline, threads, opt,
                             cache.source_fingerprint(), json.dumps(target_facts(), sort_keys=True))
        hit = cache.load(key)
        planned = None
        if hit is not None:
            meta, blobs = hit
            try:
                constants = _load_constants(blobs["constants"])
                planned = _validated_entry(ir, meta, blobs, constants)
            except Exception:  # noqa: BLE001 - anything wrong with an entry: rebuild it
                hit, planned = None, None
        self.from_cache = hit is not None
        self.timings: dict[str, float] = {}
        if hit is None:
            meta, blobs, constants = self._build(ir, pipeline, threads, opt)
            planned = self._planned
            cache.store(key, meta, blobs)
        self._planned_text = blobs["planned_ir"].decode()
        self._planned = planned
        self.llvm_ir = blobs["llvm_ir"].decode()
        self.kernel_names = meta["kernels"]
        self.arena_bytes = planned.attrs["arena_bytes"]
        # Small programs run BLAS on one thread: waking a second one costs more than it
        # saves (W1 at 2 threads: 50 us against 33 us on one).
        self.blas_threads = 1 if meta["gemm_flops"] < SMALL_PROGRAM_FLOPS else threads
        self.jit = JitModule([blobs["object"], blobs["glue"]], meta["externals"], opt)
        self.compile_seconds = time.perf_counter() - t0
        self.table_template = np.zeros(meta["slots"], dtype=np.int64)
        self._keep = []
        for slot, arr in constants.items():
            self._keep.append(arr)
            if slot >= 0:  # negative keys are results that are constants, not table slots
                self.table_template[slot] = arr.ctypes.data
        self._entry = _ENTRY(self.jit.entry_address)
        self.param_slots = [1 + i for i in range(len(ir.params))]
        self.outputs = [tuple(o) if o[0] != "const" else ("const", constants[o[1]]) for o in meta["outputs"]]
        self.written_params = written_params(planned)
        self._pool: list[Memory] = []
        self._pool_lock = threading.Lock()
        self.last_memory: Memory | None = None

    def _build(self, ir, pipeline, threads, opt):
        t0 = time.perf_counter()
        planned = plan_for_codegen(ir, pipeline)
        KernelRenderer.check_support(planned)
        t1 = time.perf_counter()
        program = lower_function(planned)
        rendered = render_program(program, threads)
        t2 = time.perf_counter()
        (obj, glue), externals, timings = compile_program(rendered, opt)
        self.timings = dict(timings, passes=t1 - t0, lower_and_render=t2 - t1)
        constants = dict(program.constants)
        outputs = []
        for v in planned.outputs:
            src = result_place(planned, v)
            if src[0] == "const":
                slot = -(len(outputs) + 1)  # results that are constants get keys of their own
                constants[slot] = src[1]
                src = ("const", slot)
            outputs.append(list(src))
        gemm_flops = sum(2 * k.batch * k.m * k.n * k.k for k in program.kernels
                         if isinstance(k, GemmKernel))
        meta = {"externals": externals, "arena_bytes": program.arena_bytes,
                "slots": len(program.slots), "slot_names": program.slots, "outputs": outputs,
                "kernels": [k.name for k in program.kernels], "gemm_flops": gemm_flops}
        blobs = {"object": obj, "glue": glue, "planned_ir": print_function(planned).encode(),
                 "llvm_ir": rendered.text.encode(), "constants": _save_constants(constants)}
        self._planned = planned
        return meta, blobs, constants

    @property
    def ir(self) -> IrFunction:
        """The optimized, memory-planned IR this program was compiled from."""
        if self._planned is None:
            self._planned = parse_function(self._planned_text)
        return self._planned

    # -- memory --------------------------------------------------------------------------------
    def acquire(self) -> Memory:
        with self._pool_lock:
            if self._pool:
                return self._pool.pop()
        return Memory(self)

    def release(self, mem: Memory) -> None:
        with self._pool_lock:
            self._pool.append(mem)
            self.last_memory = mem

    def arena_view(self, mem: Memory, offset: int, t) -> np.ndarray:
        n = t.size * t.dtype.itemsize
        start = mem.arena_addr - mem.raw.ctypes.data + offset
        return mem.raw[start:start + n].view(t.dtype.np).reshape(t.shape)

    def run(self, mem: Memory) -> None:
        set_blas_threads(self.blas_threads)
        self._entry(mem.table_addr)

    def profile(self, repeat: int = 20, mem: Memory | None = None) -> list[tuple[str, float]]:
        """Median seconds of every kernel, run one at a time on `mem` (by default the
        memory of the last call, which must hold valid inputs: call once first). Kernels
        that update buffers in place run several times, so the arena and every parameter
        buffer are saved first and restored afterwards."""
        mem = mem or self.last_memory
        if mem is None:
            raise IrgradError("profile() needs one call first (it times the kernels on that call's data)")
        set_blas_threads(self.blas_threads)
        saved = []
        for slot, p in [(0, None)] + list(zip(self.param_slots, self.input_ir.params)):
            n = self.arena_bytes if p is None else p.type.nbytes
            backup = np.empty(max(n, 1), np.uint8)
            ctypes.memmove(backup.ctypes.data, int(mem.table[slot]), n)
            saved.append((int(mem.table[slot]), backup, n))
        try:
            return self._profile(repeat, mem)
        finally:
            for addr, backup, n in saved:
                ctypes.memmove(addr, backup.ctypes.data, n)

    def _profile(self, repeat: int, mem: Memory) -> list[tuple[str, float]]:
        rows = []
        for name in self.kernel_names:
            fn = _ENTRY(self.jit.address(name))
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn(mem.table_addr)
                times.append(time.perf_counter() - t0)
            rows.append((name, float(np.median(times))))
        return rows

    def read_output(self, mem: Memory, i: int, params) -> np.ndarray:
        kind, where = self.outputs[i]
        t = self.input_ir.result_types[i]
        if kind == "arena":
            return self.arena_view(mem, where, t)
        if kind == "param":  # a parameter, or a view (reshape) of one
            return params[where].reshape(t.shape)
        return where


def _validated_entry(ir: IrFunction, meta: dict, blobs: dict, constants: dict) -> IrFunction:
    """The planned IR of a cache entry, after checking that the entry is the program of
    `ir` as its plan describes it (raises otherwise): the plan parses and verifies (the
    verifier proves it sound), its signature is `ir`'s, the runtime layout (arena size,
    pointer-table slots, constants, where the results are) is the plan's."""
    planned = parse_function(blobs["planned_ir"].decode())
    if [p.type for p in planned.params] != [p.type for p in ir.params] or \
            planned.result_types != ir.result_types:
        raise ValueError("signature")
    if meta["arena_bytes"] != planned.attrs["arena_bytes"]:
        raise ValueError("arena size")
    n_fixed = 1 + len(ir.params)
    names = meta["slot_names"]
    if len(names) != meta["slots"] or meta["slots"] < n_fixed:
        raise ValueError("slots")
    for slot in range(n_fixed, meta["slots"]):
        arr = constants[slot]
        if names[slot] != f"const {arr.dtype}{list(arr.shape)}":
            raise ValueError("constant")
    for i, (v, o) in enumerate(zip(planned.outputs, meta["outputs"])):
        want = result_place(planned, v)
        if want[0] == "const":
            if o[0] != "const" or not np.array_equal(constants[o[1]], want[1], equal_nan=True) \
                    or constants[o[1]].dtype != want[1].dtype:
                raise ValueError("constant result")
        elif tuple(o) != want:
            raise ValueError("result placement")
    if len(meta["outputs"]) != len(planned.outputs):
        raise ValueError("results")
    return planned


def _save_constants(constants: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{str(k): v for k, v in constants.items()})
    return buf.getvalue()


def _load_constants(data: bytes) -> dict:
    with np.load(io.BytesIO(data)) as z:
        return {int(k): np.array(z[k], order="C") for k in z.files}  # 0-d stays 0-d


class CpuFunction:
    """A function compiled for the CPU: `run(arrays)` (checked by the caller: api.py).

    Calls are independent: each runs on a memory of its own (arena and pointer table,
    pooled), so threads may call one compiled function at once. Arguments are only read;
    parameters that a donating plan writes into are copied first."""

    backend = "cpu"

    def __init__(self, ir: IrFunction, pipeline: str, threads: int | None = None, opt: int = 3):
        self.pipeline = pipeline
        if "donate" in ir.attrs and not has_plan(ir):
            # a plain call must leave its arguments alone: only compile_step donates (a plan
            # given with the IR keeps its donation, on copies of the arguments)
            ir = clone_function(ir)
            del ir.attrs["donate"]
        self.native = NativeProgram(ir, pipeline, check_threads(threads), opt)

    @property
    def ir(self) -> IrFunction:
        return self.native.ir

    @property
    def llvm_ir(self) -> str:
        return self.native.llvm_ir

    def run(self, arrays) -> list[np.ndarray]:
        arrays = list(arrays)
        nat = self.native
        mem = nat.acquire()
        try:
            for i in nat.written_params:
                arrays[i] = mem.private_copy(i, arrays[i])
            for slot, a in zip(nat.param_slots, arrays):
                mem.table[slot] = a.ctypes.data
            nat.run(mem)
            return [np.array(nat.read_output(mem, i, arrays), copy=True) for i in range(len(nat.outputs))]
        finally:
            nat.release(mem)


def check_threads(threads) -> int:
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise IrgradError(f"threads must be a positive integer, got {threads!r}")
    return threads


class CpuStep:
    """A whole training step as one native call (see the module docstring).

    `state` (parameters, then optimizer state) are the step's own buffers, updated in
    place, so calls serialize: a call from a second thread waits until the first has
    finished. The batch is copied into persistent buffers (checked by the caller)."""

    backend = "cpu"

    def __init__(self, ir: IrFunction, state: list, pipeline: str = "O2",
                 threads: int | None = None, opt: int = 3):
        t0 = time.perf_counter()
        self.pipeline = pipeline
        self.threads = check_threads(threads)
        self._state_leaves = state
        n_state = len(state)
        self.native = NativeProgram(ir, pipeline, self.threads, opt)
        nat = self.native
        self._memory = mem = Memory(nat)
        self._lock = threading.Lock()
        types = [p.type for p in ir.params]
        for slot, a, t in zip(nat.param_slots, state, types):
            if a.dtype != t.dtype.np or a.shape != t.shape or not a.flags.c_contiguous:
                raise ArgumentError(f"parameter buffer {a.shape} {a.dtype} does not match {t}")
            mem.table[slot] = a.ctypes.data
        # persistent, aligned buffers for the batch
        self._batch_bufs = []
        for slot, t in zip(nat.param_slots[n_state:], types[n_state:]):
            raw, addr = aligned_empty(t.nbytes)
            view = raw[addr - raw.ctypes.data: addr - raw.ctypes.data + t.nbytes].view(t.dtype.np).reshape(t.shape)
            self._batch_bufs.append((raw, view))
            mem.table[slot] = addr
        # results: the loss, then the new state; donated ones are already in place
        self._copy_back = []
        for i in range(1, len(nat.outputs)):
            kind, where = nat.outputs[i]
            dst = state[i - 1]
            if kind == "param" and where == i - 1:
                continue
            self._copy_back.append((i, dst))
        kind, where = nat.outputs[0]
        self._loss = nat.arena_view(mem, where, ir.result_types[0]) if kind == "arena" else None
        self.compile_seconds = time.perf_counter() - t0

    @property
    def llvm_ir(self) -> str:
        return self.native.llvm_ir

    @property
    def ir(self) -> IrFunction:
        """The optimized, memory-planned IR of the step."""
        return self.native.ir

    def run(self, batch) -> float:
        with self._lock:
            for (raw, buf), a in zip(self._batch_bufs, batch):
                np.copyto(buf, a)
            nat = self.native
            nat.run(self._memory)
            nat.last_memory = self._memory
            for i, dst in self._copy_back:
                np.copyto(dst, nat.read_output(self._memory, i, self._state_leaves))
            if self._loss is not None:
                return float(self._loss)
            return float(nat.read_output(self._memory, 0, self._state_leaves))

    def sync(self) -> None:
        pass  # the state arrays are the step's own buffers

    def upload(self, array) -> None:
        pass


__all__ = ["CpuFunction", "CpuStep", "NativeProgram"]
