"""The CUDA backend: compiled functions and whole training steps resident on the GPU.

`DeviceProgram` owns what a compiled program touches on the device: the loaded module,
the arena (one allocation for every intermediate), the constants (uploaded once), the
runtime scratch of two-pass reductions, and the address of every pointer-table slot
(kernel arguments are these addresses plus byte offsets, fixed for the program's life).

- `CudaFunction` (`ig.compile(f, backend="cuda")`): uploads the arguments (checked by the
  frontend's wrapper before anything touches the device) into device buffers it owns,
  runs the kernels in order on one stream and copies the results back.
- `CudaStep` (`ig.compile_step(..., backend="cuda")`): parameters and optimizer state live
  on the device for the step's whole life and are updated in place by the kernels (the
  training step donates them); the batch is staged through pinned host buffers. A step is
  one fixed sequence: batch upload, every kernel, the copies of results that were not
  written in place, and the loss download; from the second call on it is replayed as one
  CUDA graph (when the driver offers graphs; `graphs=False` turns it off). `step(*batch)`
  returns the loss as a Python float. `sync()` copies the current state from the device
  into the host arrays (`step.params` does it on every access: one device-to-host copy per
  tensor), `upload(array)` sends an assigned entry to the device; writing into a returned
  array in place does not change the device copy.

Calls of one compiled function, or of one step, serialize (they share device buffers).

Options: `device` ("auto", "pycuda", "cuda-python" or "emulate": the CPU emulator, which
runs the same launch plan and is how CI tests this file), `tf32` (tensor-core float32
GEMMs; see prelude.PRELUDE_TF32 for the accuracy), `graphs`; `threads` and `opt` are
accepted for symmetry with the CPU backend and ignored.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from ...errors import ArgumentError
from ...ir.core import Function as IrFunction
from ...ir.plan import result_place
from ...codegen.lowering import lower_function, plan_for_codegen
from .cexpr import ExprRenderer
from .renderer import render_cuda_program
from .runtime import get_device

class DeviceProgram:
    """A lowered program resident on a device (see the module docstring)."""

    def __init__(self, ir: IrFunction, device, tf32: bool = False):
        t0 = time.perf_counter()
        self.ir = ir
        self.device = device
        ExprRenderer.check_support(ir)
        self.program = lower_function(ir)
        self.cuda = render_cuda_program(self.program, tf32=tf32)
        self.module = device.load(self.cuda)
        self.compile_seconds = time.perf_counter() - t0
        self.addrs = [0] * self.cuda.num_slots
        self._owned = []
        self.addrs[0] = self._alloc(max(self.program.arena_bytes, 256))
        for slot, arr in self.program.constants.items():
            arr = np.ascontiguousarray(arr)
            self.addrs[slot] = self._alloc(arr.nbytes)
            device.htod(self.addrs[slot], arr)
        self.addrs[self.cuda.scratch_slot] = self._alloc(max(self.cuda.scratch_bytes, 256))
        self.param_slots = [1 + i for i in range(len(ir.params))]
        self.outputs = [result_place(ir, v) for v in ir.outputs]
        device.synchronize()

    def _alloc(self, nbytes: int) -> int:
        p = self.device.alloc(nbytes)
        self._owned.append(p)
        return p

    def enqueue(self) -> None:
        """Every kernel of the program, in order, on the device's stream."""
        for ln in self.cuda.launches:
            self.device.launch(self.module, ln, self.addrs)

    def output_address(self, i: int) -> int | None:
        kind, where = self.outputs[i]
        if kind == "arena":
            return self.addrs[0] + where
        if kind == "param":
            return self.addrs[self.param_slots[where]]
        return None

    @property
    def source(self) -> str:
        return self.cuda.source

    def __del__(self):
        try:
            for p in self._owned:
                self.device.free(p)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class CudaFunction:
    """A function compiled for the device: `run(arrays)` (checked by the caller) uploads
    the arguments into device buffers it owns, runs the kernels in order on one stream
    and copies the results back; calls serialize (they share the device buffers)."""

    backend = "cuda"

    def __init__(self, ir: IrFunction, pipeline: str, device=None, tf32: bool = False,
                 threads=None, opt=None):
        self.device = device if not isinstance(device, (str, type(None))) else get_device(device)
        self.pipeline = pipeline
        self.ir = plan_for_codegen(ir, pipeline)
        self.native = DeviceProgram(self.ir, self.device, tf32)
        self._types = [p.type for p in self.ir.params]
        for slot, t in zip(self.native.param_slots, self._types):
            self.native.addrs[slot] = self.native._alloc(max(t.nbytes, 1))
        self._lock = threading.Lock()

    @property
    def cuda_source(self) -> str:
        return self.native.source

    def run(self, arrays) -> list:
        with self._lock:
            return self._run(arrays)

    def _run(self, arrays) -> list:
        nat, dev = self.native, self.device
        for slot, a in zip(nat.param_slots, arrays):
            dev.htod(nat.addrs[slot], a)
        nat.enqueue()
        outs = []
        for i, t in enumerate(self.ir.result_types):
            addr = nat.output_address(i)
            if addr is None:
                outs.append(np.array(nat.outputs[i][1], copy=True))
                continue
            host = np.empty(t.shape, t.dtype.np)
            dev.dtoh(host, addr)
            outs.append(host)
        dev.synchronize()
        return outs


class CudaStep:
    """A whole training step resident on the device (see the module docstring)."""

    backend = "cuda"

    def __init__(self, ir: IrFunction, state: list, pipeline: str = "O2", device=None,
                 tf32: bool = False, graphs: bool = True, threads=None, opt=None):
        t0 = time.perf_counter()
        self.device = device if not isinstance(device, (str, type(None))) else get_device(device)
        dev = self.device
        self.pipeline = pipeline
        self._state_leaves = state
        self._lock = threading.Lock()
        n_state = len(state)
        self.ir = plan_for_codegen(ir, pipeline)
        self.native = nat = DeviceProgram(self.ir, dev, tf32)
        types = [p.type for p in self.ir.params]
        for slot, a, t in zip(nat.param_slots, self._state_leaves, types):
            if a.dtype != t.dtype.np or a.shape != t.shape or not a.flags.c_contiguous:
                raise ArgumentError(f"parameter buffer {a.shape} {a.dtype} does not match {t}")
            nat.addrs[slot] = nat._alloc(max(a.nbytes, 1))
            dev.htod(nat.addrs[slot], a)
        self._batch_types = types[n_state:]
        self._batch_names = [p.name for p in self.ir.params[n_state:]]
        self._batch_slots = nat.param_slots[n_state:]
        self._staging = []
        for slot, t in zip(self._batch_slots, self._batch_types):
            nat.addrs[slot] = nat._alloc(max(t.nbytes, 1))
            self._staging.append(dev.pinned(t.shape, t.dtype.np))
        # results: the loss, then the new state; donated ones are already in place
        self._copy_back = []
        self._const_back = []
        for i in range(1, len(nat.outputs)):
            kind, where = nat.outputs[i]
            dst = nat.addrs[nat.param_slots[i - 1]]
            if kind == "param" and where == i - 1:
                continue
            if kind == "const":
                host = dev.pinned(where.shape, where.dtype)
                host[...] = where
                self._const_back.append((dst, host))
            else:
                self._copy_back.append((dst, nat.output_address(i), self.ir.result_types[i].nbytes))
        lt = self.ir.result_types[0]
        self._loss = dev.pinned((1,), lt.dtype.np)
        self._loss_addr = nat.output_address(0)
        if self._loss_addr is None:
            self._loss[0] = nat.outputs[0][1]
        self.n_batch = len(self._batch_types)
        self.use_graphs = graphs and getattr(dev, "supports_graphs", False)
        self._graph = None
        self.graph_error: str | None = None
        self.steps = 0
        dev.synchronize()
        self.compile_seconds = time.perf_counter() - t0

    @property
    def cuda_source(self) -> str:
        return self.native.source

    def _sequence(self) -> None:
        dev, nat = self.device, self.native
        for slot, host in zip(self._batch_slots, self._staging):
            dev.htod(nat.addrs[slot], host, pinned=True)
        nat.enqueue()
        for dst, src, nbytes in self._copy_back:
            dev.dtod(dst, src, nbytes)
        for dst, host in self._const_back:
            dev.htod(dst, host, pinned=True)
        if self._loss_addr is not None:
            dev.dtoh(self._loss, self._loss_addr, pinned=True)

    def run(self, batch) -> float:
        with self._lock:
            for host, a in zip(self._staging, batch):
                np.copyto(host, a)
            dev = self.device
            if self._graph is not None:
                dev.graph_launch(self._graph)
            else:
                self._sequence()
            dev.synchronize()
            self.steps += 1
            if self._graph is None and self.use_graphs and self.graph_error is None:
                self._capture()
            return float(self._loss[0])

    def _capture(self) -> None:
        """Record the step as a CUDA graph (after one eager step proved it runs)."""
        try:
            self.device.begin_capture()
            try:
                self._sequence()
            finally:
                g = self.device.end_capture()
            self._graph = g
        except Exception as e:  # noqa: BLE001 - no graphs: keep launching eagerly
            self.graph_error = f"{type(e).__name__}: {e}"
            self._graph = None

    def _slot_of(self, a) -> int:
        index = next(i for i, b in enumerate(self._state_leaves) if b is a)
        return self.native.param_slots[index]

    def sync(self) -> None:
        """Copy the current state from the device into the host arrays."""
        with self._lock:
            for a in self._state_leaves:
                self.device.dtoh(a, self.native.addrs[self._slot_of(a)])
            self.device.synchronize()

    def upload(self, a) -> None:
        """An entry of the state was assigned on the host: copy it to the device."""
        with self._lock:
            self.device.htod(self.native.addrs[self._slot_of(a)], a)
            self.device.synchronize()


__all__ = ["CudaFunction", "CudaStep", "DeviceProgram"]
