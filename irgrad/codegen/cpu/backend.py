"""The CPU backend: compiled functions and whole training steps in one native call.

`NativeProgram` owns everything a compiled program touches: the JIT-compiled code, the
arena (one 64-byte aligned block for every intermediate), the pointer table the code
reads its buffers from, and the constants. `CpuFunction` (from `ig.compile`) checks its
arguments, points the table at them and copies the results out; `CpuStep` (from
`ig.compile_step`) keeps parameters and optimizer state in persistent buffers that the
step updates in place, copies the batch into persistent buffers, and returns the loss as
a float: no allocation per step, one native call.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import time

import numpy as np

from ...errors import ArgumentError
from ...frontend.pytree import flatten, unflatten
from ...ir.core import Function as IrFunction, Value, clone_function
from ...ir.interpreter import check_argument, check_arguments
from ...ir.printer import print_function
from ..kernel_ir import GemmKernel
from ..lowering import lower_function
from . import cache
from .jit import JitModule, compile_object, target_facts
from .llvm_renderer import render_program

_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
SMALL_PROGRAM_FLOPS = 50e6  # below this many matmul flops per call, BLAS stays on one thread


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_blas_threads = {"current": None}


def set_blas_threads(n: int) -> None:
    """Limit BLAS to n threads (only when it changes: threadpoolctl is not free)."""
    if _blas_threads["current"] == n:
        return
    try:
        from threadpoolctl import threadpool_limits
        _blas_threads["limiter"] = threadpool_limits(limits=n, user_api="blas")
    except Exception:  # noqa: BLE001 - no threadpoolctl or no BLAS found: leave it
        pass
    _blas_threads["current"] = n


def plan_for_codegen(ir: IrFunction, pipeline: str) -> IrFunction:
    """Run `pipeline`; codegen needs a memory plan, so plan-memory runs last if the
    pipeline did not end with it."""
    from ...passes.manager import run_pipeline
    out = run_pipeline(ir, pipeline)
    if "arena_bytes" not in out.attrs or not out.ops or out.ops[-1].mem is None:
        out = run_pipeline(out, "plan-memory")
    return out


def _aligned_empty(nbytes: int, align: int = 64) -> tuple[np.ndarray, int]:
    raw = np.zeros(nbytes + align, dtype=np.uint8)
    addr = raw.ctypes.data
    off = (-addr) % align
    return raw, addr + off


class NativeProgram:
    """A compiled program and its memory: code, arena, pointer table, constants.

    Built from the function's IR before optimization: on a compile-cache hit (cache.py)
    the pipeline, the lowering and LLVM are all skipped.
    """

    def __init__(self, ir: IrFunction, pipeline: str, threads: int, opt: int = 3):
        t0 = time.perf_counter()
        self.threads = threads
        self.pipeline = pipeline
        self.input_ir = ir
        key = cache.make_key("irgrad-native-1", print_function(ir), pipeline, threads, opt,
                             cache.source_fingerprint(), json.dumps(target_facts(), sort_keys=True))
        hit = cache.load(key)
        self.from_cache = hit is not None
        self.timings: dict[str, float] = {}
        if hit is not None:
            meta, blobs = hit
            constants = _load_constants(blobs["constants"])
        else:
            meta, blobs, constants = self._build(ir, pipeline, threads, opt)
            cache.store(key, meta, blobs)
        self._planned_text = blobs["planned_ir"].decode()
        self._planned = None
        self.llvm_ir = blobs["llvm_ir"].decode()
        self.kernel_names = meta["kernels"]
        self.arena_bytes = meta["arena_bytes"]
        # Small programs run BLAS on one thread: waking a second one costs more than it
        # saves (W1 at 2 threads: 50 us against 33 us on one).
        self.blas_threads = 1 if meta["gemm_flops"] < SMALL_PROGRAM_FLOPS else threads
        self.jit = JitModule(blobs["object"], meta["externals"], opt)
        self.compile_seconds = time.perf_counter() - t0
        self._raw_arena, self.arena_addr = _aligned_empty(max(self.arena_bytes, 64))
        self.table = np.zeros(meta["slots"], dtype=np.int64)
        self.table[0] = self.arena_addr
        self._keep = []
        for slot, arr in constants.items():
            self._keep.append(arr)
            if slot >= 0:  # negative keys are results that are constants, not table slots
                self.table[slot] = arr.ctypes.data
        self.table_addr = self.table.ctypes.data
        self._entry = _ENTRY(self.jit.entry_address)
        self.param_slots = [1 + i for i in range(len(ir.params))]
        self.outputs = [tuple(o) if o[0] != "const" else ("const", constants[o[1]]) for o in meta["outputs"]]

    def _build(self, ir, pipeline, threads, opt):
        t0 = time.perf_counter()
        planned = plan_for_codegen(ir, pipeline)
        t1 = time.perf_counter()
        program = lower_function(planned)
        llvm_ir = render_program(program, threads)
        t2 = time.perf_counter()
        obj, externals, timings = compile_object(llvm_ir, opt)
        self.timings = dict(timings, passes=t1 - t0, lower_and_render=t2 - t1)
        constants = dict(program.constants)
        outputs = []
        for v in planned.outputs:
            src = _output_source(planned, v)
            if src[0] == "const":
                slot = -(len(outputs) + 1)  # results that are constants get keys of their own
                constants[slot] = src[1]
                src = ("const", slot)
            outputs.append(list(src))
        gemm_flops = sum(2 * k.batch * k.m * k.n * k.k for k in program.kernels
                         if isinstance(k, GemmKernel))
        meta = {"externals": externals, "arena_bytes": program.arena_bytes,
                "slots": len(program.slots), "outputs": outputs,
                "kernels": [k.name for k in program.kernels], "gemm_flops": gemm_flops}
        blobs = {"object": obj, "planned_ir": print_function(planned).encode(),
                 "llvm_ir": llvm_ir.encode(), "constants": _save_constants(constants)}
        self._planned = planned
        return meta, blobs, constants

    @property
    def ir(self) -> IrFunction:
        """The optimized, memory-planned IR this program was compiled from."""
        if self._planned is None:
            from ...ir.parser import parse_function
            self._planned = parse_function(self._planned_text)
        return self._planned

    def arena_view(self, offset: int, t) -> np.ndarray:
        n = t.size * t.dtype.itemsize
        start = self.arena_addr - self._raw_arena.ctypes.data + offset
        return self._raw_arena[start:start + n].view(t.dtype.np).reshape(t.shape)

    def run(self) -> None:
        set_blas_threads(self.blas_threads)
        self._entry(self.table_addr)

    def profile(self, repeat: int = 20) -> list[tuple[str, float]]:
        """Median seconds of every kernel, run one at a time (the arena and parameters
        must hold valid inputs, e.g. after one normal call). Kernels that update buffers in
        place run several times, so the arena and every parameter buffer are saved first
        and restored afterwards."""
        set_blas_threads(self.blas_threads)
        saved = []
        for slot, p in [(0, None)] + list(zip(self.param_slots, self.input_ir.params)):
            n = self.arena_bytes if p is None else p.type.nbytes
            backup = np.empty(max(n, 1), np.uint8)
            ctypes.memmove(backup.ctypes.data, int(self.table[slot]), n)
            saved.append((int(self.table[slot]), backup, n))
        try:
            return self._profile(repeat)
        finally:
            for addr, backup, n in saved:
                ctypes.memmove(addr, backup.ctypes.data, n)

    def _profile(self, repeat: int) -> list[tuple[str, float]]:
        rows = []
        for name in self.kernel_names:
            fn = _ENTRY(self.jit.address(name))
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn(self.table_addr)
                times.append(time.perf_counter() - t0)
            rows.append((name, float(np.median(times))))
        return rows

    def read_output(self, i: int, params) -> np.ndarray:
        kind, where = self.outputs[i]
        t = self.input_ir.result_types[i]
        if kind == "arena":
            return self.arena_view(where, t)
        if kind == "param":  # a parameter, or a view (reshape) of one
            return params[where].reshape(t.shape)
        return where


def _output_source(planned: IrFunction, v: Value):
    """How to read a result after a call: ('param', i), ('arena', offset), ('const', x)."""
    if v in planned.params:
        return ("param", planned.params.index(v))
    op = v.op
    if op.opname == "const":
        return ("const", np.array(np.broadcast_to(op.attrs["value"], v.shape)))
    place = [p for p in op.mem if not isinstance(p, tuple)][op.results.index(v)]
    if isinstance(place, Value):
        return ("param", planned.params.index(place))
    return ("arena", int(place))


def _save_constants(constants: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{str(k): v for k, v in constants.items()})
    return buf.getvalue()


def _load_constants(data: bytes) -> dict:
    with np.load(io.BytesIO(data)) as z:
        return {int(k): np.array(z[k], order="C") for k in z.files}  # 0-d stays 0-d


class CpuFunction:
    """`ig.compile(f, backend="cpu")`: a native function with checked arguments."""

    backend = "cpu"

    def __init__(self, fn, ir: IrFunction, pipeline: str, threads: int | None = None, opt: int = 3):
        self.fn = fn
        self.pipeline = pipeline
        if "donate" in ir.attrs:
            # a plain call must leave its arguments alone: only compile_step donates
            ir = clone_function(ir)
            del ir.attrs["donate"]
        self.native = NativeProgram(ir, pipeline, threads or default_threads(), opt)
        self._types = [p.type for p in ir.params]
        self._names = [p.name for p in ir.params]

    @property
    def ir(self) -> IrFunction:
        return self.native.ir

    @property
    def llvm_ir(self) -> str:
        return self.native.llvm_ir

    def __call__(self, *args):
        arrays = check_arguments(self._types, self._names, self.fn.flatten_args(args),
                                 self.fn.name, native=True)
        nat = self.native
        for slot, a in zip(nat.param_slots, arrays):
            nat.table[slot] = a.ctypes.data
        nat.run()
        outs = [np.array(nat.read_output(i, arrays), copy=True) for i in range(len(nat.outputs))]
        return unflatten(self.fn.out_tree, outs)


class CpuStep:
    """A whole training step as one native call (see the module docstring)."""

    backend = "cpu"

    def __init__(self, fn, params, opt_state, pipeline: str = "O2", threads: int | None = None,
                 opt: int = 3):
        t0 = time.perf_counter()
        self.fn = fn
        self.params = params
        self.opt_state = opt_state
        self.pipeline = pipeline
        self.threads = threads or default_threads()
        p_leaves, _ = flatten(params)
        s_leaves, _ = flatten(opt_state)
        self._state_leaves = p_leaves + s_leaves
        n_state = len(self._state_leaves)
        ir = fn.ir
        self.native = NativeProgram(ir, pipeline, self.threads, opt)
        nat = self.native
        types = [p.type for p in ir.params]
        for slot, a, t in zip(nat.param_slots, self._state_leaves, types):
            if a.dtype != t.dtype.np or a.shape != t.shape or not a.flags.c_contiguous:
                raise ArgumentError(f"parameter buffer {a.shape} {a.dtype} does not match {t}")
            nat.table[slot] = a.ctypes.data
        # persistent, aligned buffers for the batch
        self._batch_types = types[n_state:]
        self._batch_names = [p.name for p in ir.params[n_state:]]
        self._batch_bufs = []
        for slot, t in zip(nat.param_slots[n_state:], self._batch_types):
            raw, addr = _aligned_empty(max(t.nbytes, 1))
            view = raw[addr - raw.ctypes.data: addr - raw.ctypes.data + t.nbytes].view(t.dtype.np).reshape(t.shape)
            self._batch_bufs.append((raw, view))
            nat.table[slot] = addr
        # results: the loss, then the new state; donated ones are already in place
        self._copy_back = []
        for i in range(1, len(nat.outputs)):
            kind, where = nat.outputs[i]
            dst = self._state_leaves[i - 1]
            if kind == "param" and where == i - 1:
                continue
            self._copy_back.append((i, dst))
        kind, where = nat.outputs[0]
        self._loss = nat.arena_view(where, ir.result_types[0]) if kind == "arena" else None
        self.compile_seconds = time.perf_counter() - t0
        self.n_batch = len(self._batch_types)

    @property
    def llvm_ir(self) -> str:
        return self.native.llvm_ir

    @property
    def ir(self) -> IrFunction:
        """The optimized, memory-planned IR of the step."""
        return self.native.ir

    def __call__(self, *batch) -> float:
        if len(batch) != self.n_batch:
            raise ArgumentError(f"step() takes {self.n_batch} batch argument(s), got {len(batch)}")
        for (raw, buf), t, n, a in zip(self._batch_bufs, self._batch_types, self._batch_names, batch):
            a = check_argument(t, f"%{n}", a, "step", native=False)
            np.copyto(buf, a)
        self.native.run()
        for i, dst in self._copy_back:
            np.copyto(dst, self.native.read_output(i, self._state_leaves))
        if self._loss is not None:
            return float(self._loss)
        return float(self.native.read_output(0, self._state_leaves))


__all__ = ["CpuFunction", "CpuStep", "NativeProgram"]
