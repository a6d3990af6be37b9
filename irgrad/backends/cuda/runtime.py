"""The CUDA runtime: find a device, compile CUDA C to cubin (cached on disk), move memory,
launch kernels, capture and replay CUDA graphs.

Loader order (`get_device()`): pycuda (the `cuda` extra) first; then cuda-python
(`cuda.bindings.driver`); otherwise `BackendUnavailable` naming, for each, why it cannot
run (not installed, no NVIDIA driver, no GPU). Every check is a local library call: no
network, no waiting. `device="emulate"` gives the CPU emulator (emulate.py) instead.

Compilation (`compile_cubin`): NVRTC from `cuda.bindings.nvrtc` (the `nvrtc` extra), else
pycuda's nvcc driver, else `nvcc` on PATH, always to a cubin for the device's own arch
(sm_XY: no PTX JIT, so a newer compiler's PTX can never be rejected by an older driver).
Cubins are cached under `<cache>/cuda/` (`IRGRAD_CACHE_DIR`, default ~/.cache/irgrad; off
with `IRGRAD_CACHE=0`) keyed by sha256 of the source and options, the target arch, and the
compiler's version; writes are atomic (temporary file + rename) and entries carry a
checksum, so a corrupt entry is rebuilt. A machine without any compiler (or with
IRGRAD_CUDA_PREBUILT=1) uses a cubin that another machine compiled for the same source and
arch with any compiler version: that is how `make gpu-check` runs without NVRTC or nvcc.

Both device classes share one interface (see `EmulatedDevice` for the simplest one):
alloc/free/pinned, htod/dtoh/dtod (ordered on the device's stream), load(CudaProgram) ->
module, launch(module, Launch, slot addresses), synchronize, and begin_capture/end_capture/
graph_launch where `supports_graphs`.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

from ...errors import BackendUnavailable
from ...codegen.filecache import cache_dir, read_regular_file

CUBIN_MAGIC = b"IRGRADCUBIN2\n"
MAX_CUBIN_BYTES = 1 << 30
NVRTC_OPTIONS = ("-std=c++17", "--ptxas-options=-v")
CUDA_INCLUDE = os.environ.get("CUDA_HOME", "/usr/local/cuda") + "/include"


# --- compilers ------------------------------------------------------------------------------------

def nvrtc_module():
    """`cuda.bindings.nvrtc` when NVRTC can actually load, else None."""
    try:
        from cuda.bindings import nvrtc
        err, major, minor = nvrtc.nvrtcVersion()
        if int(err) != 0:
            return None
        return nvrtc
    except Exception:  # noqa: BLE001 - missing package or missing libnvrtc
        return None


def nvrtc_version() -> str | None:
    m = nvrtc_module()
    if m is None:
        return None
    _, major, minor = m.nvrtcVersion()
    return f"nvrtc {major}.{minor}"


def _nvcc() -> str | None:
    for cand in (os.environ.get("NVCC"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and os.path.exists(cand):
            return cand
    return None


def compiler_id() -> str | None:
    """Which compiler `compile_cubin` will use, with its version (None: none here)."""
    v = nvrtc_version()
    if v:
        return v
    nvcc = _nvcc()
    if nvcc:
        try:
            out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
            m = re.search(r"release [\d.]+, V[\d.]+", out)
            return "nvcc " + (m.group(0) if m else out.strip().splitlines()[-1])
        except (OSError, subprocess.SubprocessError):
            return None
    return None


class CompileError(AssertionError):
    """Generated CUDA C that does not compile (a bug in the renderer)."""


def nvrtc_compile(source: str, arch: str, options=()) -> tuple[bytes, str]:
    """(cubin, log) from NVRTC; raises CompileError with the log."""
    nvrtc = nvrtc_module()
    if nvrtc is None:
        raise BackendUnavailable("NVRTC is not available (pip install 'irgrad[nvrtc]')")
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), b"irgrad.cu", 0, [], [])
    try:
        opts = [f"-arch={arch}".encode(), f"-I{CUDA_INCLUDE}".encode()]
        opts += [o.encode() for o in (*NVRTC_OPTIONS, *options)]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        _, n = nvrtc.nvrtcGetProgramLogSize(prog)
        log = b" " * n
        nvrtc.nvrtcGetProgramLog(prog, log)
        log_s = log.rstrip(b"\0 ").decode(errors="replace")
        if int(err) != 0:
            raise CompileError(f"NVRTC could not compile the generated CUDA C for {arch}:\n{log_s[:8000]}")
        _, n = nvrtc.nvrtcGetCUBINSize(prog)
        cubin = b" " * n
        nvrtc.nvrtcGetCUBIN(prog, cubin)
        return bytes(cubin), log_s
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def nvcc_compile(source: str, arch: str, options=()) -> tuple[bytes, str]:
    nvcc = _nvcc()
    if nvcc is None:
        raise BackendUnavailable("no CUDA compiler: neither NVRTC (cuda-bindings) nor nvcc")
    with tempfile.TemporaryDirectory(prefix="irgrad-nvcc-") as d:
        src, out = os.path.join(d, "k.cu"), os.path.join(d, "k.cubin")
        with open(src, "w") as fh:
            fh.write(source)
        cmd = [nvcc, "-cubin", f"-arch={arch}", "-std=c++17", "--ptxas-options=-v", *options,
               "-o", out, src]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise CompileError(f"nvcc could not compile the generated CUDA C for {arch}:\n{r.stderr[:8000]}")
        with open(out, "rb") as fh:
            return fh.read(), r.stderr


def compile_cubin(source: str, arch: str, options=(), use_cache: bool = True) -> bytes:
    """A cubin of `source` for `arch` (e.g. "sm_90"), from the cache when possible."""
    comp = compiler_id()
    cdir = _cache_dir() if use_cache else None
    key_dir = None
    if cdir:
        h = hashlib.sha256()
        for part in (source, arch, " ".join(options)):
            h.update(part.encode())
            h.update(b"\0")
        key = h.hexdigest()
        key_dir = os.path.join(cdir, key)
        if comp is not None:
            got = _read_cubin(os.path.join(key_dir, _comp_key(comp) + ".cubin"), key, arch)
            if got is not None:
                return got
        if comp is None or os.environ.get("IRGRAD_CUDA_PREBUILT") == "1":
            # no compiler here (or told to prefer prebuilt cubins, as make gpu-check does):
            # any compiler's cubin for this source and arch will do
            for name in sorted(os.listdir(key_dir)) if os.path.isdir(key_dir) else ():
                got = _read_cubin(os.path.join(key_dir, name), key, arch)
                if got is not None:
                    return got
    if comp is None:
        raise BackendUnavailable(
            "no CUDA compiler here (pip install 'irgrad[nvrtc]', or put nvcc on PATH) and no "
            f"cached cubin for this program and {arch}")
    if comp.startswith("nvrtc"):
        cubin, _ = nvrtc_compile(source, arch, options)
    else:
        cubin, _ = nvcc_compile(source, arch, options)
    if key_dir:
        _write_cubin(os.path.join(key_dir, _comp_key(comp) + ".cubin"), cubin,
                     {"key": key, "arch": arch, "compiler": comp})
    return cubin


def _comp_key(comp: str) -> str:
    return hashlib.sha256(comp.encode()).hexdigest()[:16]


def _cache_dir() -> str | None:
    d = cache_dir()
    return os.path.join(d, "cuda") if d else None


def _read_cubin(path: str, key: str, arch: str) -> bytes | None:
    """A cached cubin if the file is one, for this source key and arch, intact."""
    data = read_regular_file(path, MAX_CUBIN_BYTES)
    if data is None or not data.startswith(CUBIN_MAGIC):
        return None
    try:
        end = data.index(b"\n", len(CUBIN_MAGIC))
        meta = json.loads(data[len(CUBIN_MAGIC):end])
        body = data[end + 1:]
        if not isinstance(meta, dict) or meta.get("key") != key or meta.get("arch") != arch:
            return None  # another program's cubin, copied here
        if len(body) != meta.get("size") or hashlib.sha256(body).hexdigest() != meta.get("sha256"):
            return None
        return body
    except ValueError:
        return None


def _write_cubin(path: str, cubin: bytes, meta: dict) -> None:
    meta = dict(meta, size=len(cubin), sha256=hashlib.sha256(cubin).hexdigest())
    d = os.path.dirname(path)
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".cubin")
        with os.fdopen(fd, "wb") as fh:
            fh.write(CUBIN_MAGIC + json.dumps(meta).encode() + b"\n" + cubin)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only or full disk only costs the cache


# --- resource usage (ptxas -v) ------------------------------------------------------------------

def parse_resources(log: str) -> dict[str, dict]:
    """kernel name -> {registers, stack, spill_stores, spill_loads, smem} from a ptxas -v log."""
    out: dict[str, dict] = {}
    cur = None
    for line in log.splitlines():
        m = re.search(r"Function properties for (\w+)", line)
        if m:
            cur = out.setdefault(m.group(1), {"registers": 0, "stack": 0, "spill_stores": 0,
                                              "spill_loads": 0, "smem": 0})
            continue
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            cur = out.setdefault(m.group(1), {"registers": 0, "stack": 0, "spill_stores": 0,
                                              "spill_loads": 0, "smem": 0})
            continue
        if cur is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            cur["stack"], cur["spill_stores"], cur["spill_loads"] = map(int, m.groups())
        m = re.search(r"Used (\d+) registers", line)
        if m:
            cur["registers"] = int(m.group(1))
        m = re.search(r"(\d+) bytes smem", line)
        if m:
            cur["smem"] = int(m.group(1))
    return out


# --- devices ----------------------------------------------------------------------------------------

_device_cache: dict = {}
# device kinds beyond the real GPU loaders: name -> factory (the CUDA backend's plug-in
# registers its CPU emulator here; the runtime itself never imports it)
EXTRA_DEVICES: dict = {}


def register_device(kind: str, factory) -> None:
    EXTRA_DEVICES[kind] = factory


def get_device(kind: str | None = None):
    """The device to run on: kind None/'auto' (pycuda, then cuda-python), 'pycuda',
    'cuda-python', or a registered extra kind ('emulate'). Raises BackendUnavailable with
    every reason."""
    kind = kind or os.environ.get("IRGRAD_CUDA_DEVICE") or "auto"
    if kind in _device_cache:
        return _device_cache[kind]
    if kind in EXTRA_DEVICES:
        dev = EXTRA_DEVICES[kind]()
    else:
        reasons = []
        dev = None
        order = {"auto": ("pycuda", "cuda-python"), "pycuda": ("pycuda",),
                 "cuda-python": ("cuda-python",)}.get(kind)
        if order is None:
            known = ", ".join(["auto", "pycuda", "cuda-python", *EXTRA_DEVICES])
            raise BackendUnavailable(f"unknown CUDA device kind {kind!r} ({known})")
        for k in order:
            try:
                dev = PycudaDevice() if k == "pycuda" else CudaPythonDevice()
                break
            except BackendUnavailable as e:
                reasons.append(f"{k}: {e}")
            except Exception as e:  # noqa: BLE001 - a broken install: try the next loader
                reasons.append(f"{k}: failed to start ({type(e).__name__}: {e})")
        if dev is None:
            raise BackendUnavailable("the CUDA backend cannot run here: " + "; ".join(reasons))
    _device_cache[kind] = dev
    return dev


def _libcuda():
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


class _GraphApi:
    """CUDA graphs through the driver library itself (pycuda has no graph API)."""

    def __init__(self, lib):
        self.lib = lib
        self.ok = all(hasattr(lib, f) for f in ("cuStreamBeginCapture_v2", "cuStreamEndCapture",
                                                 "cuGraphInstantiateWithFlags", "cuGraphLaunch"))

    def _check(self, rc, what):
        if rc != 0:
            raise RuntimeError(f"{what} failed with CUDA error {rc}")

    def begin(self, stream: int) -> None:
        self._check(self.lib.cuStreamBeginCapture_v2(ctypes.c_void_p(stream), ctypes.c_int(2)),
                    "cuStreamBeginCapture")

    def end(self, stream: int):
        graph = ctypes.c_void_p()
        self._check(self.lib.cuStreamEndCapture(ctypes.c_void_p(stream), ctypes.byref(graph)),
                    "cuStreamEndCapture")
        exe = ctypes.c_void_p()
        self._check(self.lib.cuGraphInstantiateWithFlags(ctypes.byref(exe), graph, ctypes.c_ulonglong(0)),
                    "cuGraphInstantiate")
        return (graph, exe)

    def launch(self, g, stream: int) -> None:
        self._check(self.lib.cuGraphLaunch(g[1], ctypes.c_void_p(stream)), "cuGraphLaunch")


class PycudaDevice:
    """Device 0 through pycuda (its primary context, one stream)."""

    def __init__(self):
        try:
            import pycuda.driver as drv
        except ImportError as e:
            raise BackendUnavailable(f"pycuda is not usable ({e}); pip install 'irgrad[cuda]'") from None
        try:
            drv.init()
            n = drv.Device.count()
        except drv.Error as e:
            raise BackendUnavailable(f"no usable NVIDIA driver ({e})") from None
        if n == 0:
            raise BackendUnavailable("no NVIDIA GPU found")
        self.drv = drv
        self.dev = drv.Device(0)
        self.ctx = self.dev.retain_primary_context()
        self.ctx.push()
        atexit.register(self._close)
        major, minor = self.dev.compute_capability()
        self.arch = f"sm_{major}{minor}"
        self.name = self.dev.name()
        self.stream = drv.Stream()
        self._allocs: dict[int, object] = {}
        lib = _libcuda()
        self._graphs = _GraphApi(lib) if lib is not None else None
        self.supports_graphs = bool(self._graphs and self._graphs.ok)

    def _close(self) -> None:
        try:
            self.synchronize()
            self._allocs.clear()
            self.ctx.pop()
        except Exception:  # noqa: BLE001 - already torn down
            pass

    def alloc(self, nbytes: int) -> int:
        a = self.drv.mem_alloc(max(int(nbytes), 256))
        self._allocs[int(a)] = a
        return int(a)

    def free(self, ptr: int) -> None:
        a = self._allocs.pop(ptr, None)
        if a is not None:
            a.free()

    def pinned(self, shape, dtype) -> np.ndarray:
        return self.drv.pagelocked_empty(shape, dtype)

    def htod(self, ptr: int, host: np.ndarray, pinned: bool = False) -> None:
        # pageable memory: a synchronous copy (ordered after the blocking stream's work)
        if pinned:
            self.drv.memcpy_htod_async(ptr, host, self.stream)
        else:
            self.drv.memcpy_htod(ptr, np.ascontiguousarray(host))

    def dtoh(self, host: np.ndarray, ptr: int, pinned: bool = False) -> None:
        if pinned:
            self.drv.memcpy_dtoh_async(host, ptr, self.stream)
        else:
            self.stream.synchronize()
            self.drv.memcpy_dtoh(host, ptr)

    def dtod(self, dst: int, src: int, nbytes: int) -> None:
        self.drv.memcpy_dtod_async(dst, src, nbytes, self.stream)

    def load(self, cp):
        cubin = compile_cubin(cp.source, self.arch)
        mod = self.drv.module_from_buffer(cubin)
        fns = {}
        for ln in cp.launches:
            if ln.name not in fns:
                f = mod.get_function(ln.name)
                f.prepare("P" * len(ln.args))
                fns[ln.name] = f
        return (mod, fns)

    def launch(self, module, ln, slot_addrs) -> None:
        ptrs = [slot_addrs[a.slot] + a.offset for a in ln.args]
        module[1][ln.name].prepared_async_call(ln.grid, ln.block, self.stream, *ptrs)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def begin_capture(self) -> None:
        self._graphs.begin(self.stream.handle)

    def end_capture(self):
        return self._graphs.end(self.stream.handle)

    def graph_launch(self, g) -> None:
        self._graphs.launch(g, self.stream.handle)


class CudaPythonDevice:
    """Device 0 through cuda-python's driver bindings (`cuda.bindings.driver`)."""

    def __init__(self):
        try:
            from cuda.bindings import driver as cu
        except Exception as e:  # noqa: BLE001
            raise BackendUnavailable(f"cuda-python is not installed ({e})") from None
        try:
            (err,) = cu.cuInit(0)
        except Exception as e:  # noqa: BLE001 - no libcuda at all
            raise BackendUnavailable(f"no NVIDIA driver ({e})") from None
        if err == cu.CUresult.CUDA_ERROR_NO_DEVICE:
            raise BackendUnavailable("no NVIDIA GPU found")
        if err != cu.CUresult.CUDA_SUCCESS:
            raise BackendUnavailable(f"no usable NVIDIA driver (cuInit: {err.name})")
        self.cu = cu
        err, n = cu.cuDeviceGetCount()
        if err != cu.CUresult.CUDA_SUCCESS or n == 0:
            raise BackendUnavailable("no NVIDIA GPU found")
        self.dev = self._ok(cu.cuDeviceGet(0))
        self.ctx = self._ok(cu.cuDevicePrimaryCtxRetain(self.dev))
        self._ok(cu.cuCtxSetCurrent(self.ctx))
        A = cu.CUdevice_attribute
        major = self._ok(cu.cuDeviceGetAttribute(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, self.dev))
        minor = self._ok(cu.cuDeviceGetAttribute(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, self.dev))
        self.arch = f"sm_{major}{minor}"
        name = self._ok(cu.cuDeviceGetName(256, self.dev))
        self.name = bytes(name).split(b"\0")[0].decode()
        self.stream = self._ok(cu.cuStreamCreate(0))
        self.supports_graphs = True
        self._pinned = []

    def _ok(self, res):
        err, *rest = res if isinstance(res, tuple) else (res,)
        if err != self.cu.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"CUDA driver call failed: {getattr(err, 'name', err)}")
        return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)

    def alloc(self, nbytes: int) -> int:
        return int(self._ok(self.cu.cuMemAlloc(max(int(nbytes), 256))))

    def free(self, ptr: int) -> None:
        self.cu.cuMemFree(ptr)

    def pinned(self, shape, dtype) -> np.ndarray:
        dt = np.dtype(dtype)
        nbytes = max(1, int(np.prod(shape)) * dt.itemsize)
        ptr = int(self._ok(self.cu.cuMemHostAlloc(nbytes, 0)))
        self._pinned.append(ptr)
        buf = (ctypes.c_byte * nbytes).from_address(ptr)
        return np.frombuffer(buf, dtype=np.uint8)[:int(np.prod(shape)) * dt.itemsize].view(dt).reshape(shape)

    def htod(self, ptr: int, host: np.ndarray, pinned: bool = False) -> None:
        host = np.ascontiguousarray(host)
        self._ok(self.cu.cuMemcpyHtoDAsync(ptr, host.ctypes.data, host.nbytes, self.stream))
        if not pinned:
            self.synchronize()  # the pageable source may go away after we return

    def dtoh(self, host: np.ndarray, ptr: int, pinned: bool = False) -> None:
        self._ok(self.cu.cuMemcpyDtoHAsync(host.ctypes.data, ptr, host.nbytes, self.stream))
        if not pinned:
            self.synchronize()

    def dtod(self, dst: int, src: int, nbytes: int) -> None:
        self._ok(self.cu.cuMemcpyDtoDAsync(dst, src, nbytes, self.stream))

    def load(self, cp):
        cubin = compile_cubin(cp.source, self.arch)
        mod = self._ok(self.cu.cuModuleLoadData(cubin))
        fns = {}
        for ln in cp.launches:
            if ln.name not in fns:
                fns[ln.name] = self._ok(self.cu.cuModuleGetFunction(mod, ln.name.encode()))
        return (mod, fns)

    def launch(self, module, ln, slot_addrs) -> None:
        vals = [ctypes.c_void_p(slot_addrs[a.slot] + a.offset) for a in ln.args]
        arr = (ctypes.c_void_p * max(1, len(vals)))(*[ctypes.addressof(v) for v in vals])
        self._ok(self.cu.cuLaunchKernel(module[1][ln.name], *ln.grid, *ln.block, 0, self.stream,
                                        ctypes.addressof(arr), 0))

    def synchronize(self) -> None:
        self._ok(self.cu.cuStreamSynchronize(self.stream))

    def begin_capture(self) -> None:
        self._ok(self.cu.cuStreamBeginCapture(
            self.stream, self.cu.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED))

    def end_capture(self):
        graph = self._ok(self.cu.cuStreamEndCapture(self.stream))
        exe = self._ok(self.cu.cuGraphInstantiate(graph, 0))
        return (graph, exe)

    def graph_launch(self, g) -> None:
        self._ok(self.cu.cuGraphLaunch(g[1], self.stream))
