"""JIT compilation of LLVM IR text with llvmlite, and the on-disk compile cache.

- The target is the host CPU with its features (and 512-bit vectors where it has them).
- External symbols are resolved before any code runs: BLAS `sgemm`/`dgemm` from scipy's
  `cython_blas` capsules, `GOMP_parallel` from libgomp, libm functions from the process;
  an unresolved one raises `BackendUnavailable` at compile time (MCJIT would otherwise
  accept it and crash at the call).
- The cache (`~/.cache/irgrad`, `IRGRAD_CACHE_DIR`, off with `IRGRAD_CACHE=0`) stores
  object code keyed by sha256 of the IR text, opt level, CPU name and features and the
  llvmlite version. Entries are written atomically (temporary file + rename) and carry a
  checksum, so a corrupt or truncated entry is detected and rebuilt; two processes
  compiling the same program at once both succeed (the later rename wins).
- An engine is kept alive by the object holding the callable: a collected engine frees
  its code.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import tempfile
import threading
import time

from ...errors import BackendUnavailable

_lock = threading.Lock()
_state: dict = {}

CACHE_MAGIC = b"IRGRADOBJ1\n"


def _llvm():
    import llvmlite.binding as llvm
    return llvm


def initialize() -> dict:
    """One-time LLVM and symbol setup; returns facts about the target."""
    with _lock:
        if _state:
            return _state
        # libgomp's threads must sleep, not spin, between parallel kernels: spinning
        # threads starve BLAS's own threads on a small machine (W2 at 2 threads: 43 ms
        # spinning against 2.2 ms passive). Read once, when libgomp loads.
        if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        llvm = _llvm()
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        cpu = llvm.get_host_cpu_name()
        features = llvm.get_host_cpu_features().flatten()
        if "+avx512f" in features:
            features += ",-prefer-256-bit"  # 512-bit vectors are 15-25% faster here
        _register_blas(llvm)
        for lib in ("libgomp.so.1", "libm.so.6"):
            try:
                llvm.load_library_permanently(lib)
            except RuntimeError:
                pass
        target = llvm.Target.from_default_triple()
        _state.update(cpu=cpu, features=features, target=target,
                      triple=llvm.get_process_triple(), llvmlite=_llvmlite_version())
        return _state


def _llvmlite_version() -> str:
    import llvmlite
    return llvmlite.__version__


def _register_blas(llvm) -> None:
    try:
        from scipy.linalg import cython_blas
    except ImportError as e:  # pragma: no cover - scipy is a dependency
        raise BackendUnavailable(f"the CPU backend needs scipy for BLAS: {e}") from None
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype = ctypes.c_void_p
    get_ptr.argtypes = [ctypes.py_object, ctypes.c_char_p]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    for name in ("sgemm", "dgemm"):
        cap = cython_blas.__pyx_capi__[name]
        llvm.add_symbol(name, get_ptr(cap, get_name(cap)))


def target_machine(opt: int):
    st = initialize()
    return st["target"].create_target_machine(cpu=st["cpu"], features=st["features"], opt=opt,
                                              reloc="default", codemodel="jitdefault")


def cache_dir() -> str | None:
    if os.environ.get("IRGRAD_CACHE", "1") == "0":
        return None
    return os.environ.get("IRGRAD_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "irgrad")


def cache_key(ir_text: str, opt: int) -> str:
    st = initialize()
    h = hashlib.sha256()
    for part in (ir_text, str(opt), st["cpu"], st["features"], st["llvmlite"], st["triple"]):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _read_cache(path: str):
    """(object bytes, metadata) or None when absent, truncated or corrupt."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    if not data.startswith(CACHE_MAGIC):
        return None
    try:
        header_end = data.index(b"\n", len(CACHE_MAGIC))
        meta = json.loads(data[len(CACHE_MAGIC):header_end])
        body = data[header_end + 1:]
    except (ValueError, json.JSONDecodeError):
        return None
    if len(body) != meta.get("size") or hashlib.sha256(body).hexdigest() != meta.get("sha256"):
        return None
    return body, meta


def _write_cache(path: str, obj: bytes, meta: dict) -> None:
    meta = dict(meta, size=len(obj), sha256=hashlib.sha256(obj).hexdigest())
    d = os.path.dirname(path)
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".o")
        with os.fdopen(fd, "wb") as fh:
            fh.write(CACHE_MAGIC + json.dumps(meta).encode() + b"\n" + obj)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only or full disk only costs the cache


class JitModule:
    """Compiled code for one LLVM module; `address(name)` gives a function pointer."""

    def __init__(self, ir_text: str, opt: int = 3, entry: str = "irgrad_entry"):
        self._ir_text = ir_text
        llvm = _llvm()
        self.timings: dict[str, float] = {}
        self.from_cache = False
        t0 = time.perf_counter()
        tm = target_machine(opt)
        key = cache_key(ir_text, opt)
        cdir = cache_dir()
        path = os.path.join(cdir, key[:2], key + ".o") if cdir else None
        cached = _read_cache(path) if path else None
        self._engine = None
        if cached is not None:
            obj, meta = cached
            self._check_symbols(meta.get("externals", []))
            self._engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
            self._engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
            self.from_cache = True
        else:
            try:
                mod = llvm.parse_assembly(ir_text)
                mod.verify()
            except RuntimeError as e:
                raise AssertionError(f"generated LLVM IR does not parse: {e}") from None
            externals = sorted(f.name for f in mod.functions
                               if f.is_declaration and not f.name.startswith("llvm."))
            self._check_symbols(externals)
            t1 = time.perf_counter()
            pto = llvm.create_pipeline_tuning_options(speed_level=opt)
            pto.loop_vectorization = opt >= 2
            pto.slp_vectorization = opt >= 2
            pb = llvm.create_pass_builder(tm, pto)
            pb.getModulePassManager().run(mod, pb)
            self.timings["optimize"] = time.perf_counter() - t1
            self.optimized_ir = str(mod)
            t2 = time.perf_counter()
            obj = tm.emit_object(mod)
            self.timings["codegen"] = time.perf_counter() - t2
            self._engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
            self._engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
            if path:
                _write_cache(path, obj, {"externals": externals, "opt": opt})
        self._engine.finalize_object()
        self.entry_address = self._engine.get_function_address(entry)
        if not self.entry_address:
            raise AssertionError(f"compiled module has no @{entry}")
        self.timings["total"] = time.perf_counter() - t0
        self.tm = tm

    def address(self, name: str) -> int:
        return self._engine.get_function_address(name)

    @staticmethod
    def _check_symbols(names) -> None:
        llvm = _llvm()
        missing = [n for n in names if not llvm.address_of_symbol(n)]
        if missing:
            raise BackendUnavailable(f"the CPU backend cannot resolve {', '.join(missing)} "
                                     f"(is libgomp installed? scipy's BLAS?)")


def emit_assembly(ir_text: str, opt: int = 3) -> str:
    """Optimized machine code of an LLVM module as assembly text (for `--emit asm`)."""
    llvm = _llvm()
    tm = target_machine(opt)
    mod = llvm.parse_assembly(ir_text)
    pto = llvm.create_pipeline_tuning_options(speed_level=opt)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return tm.emit_assembly(mod)


def optimized_ir(ir_text: str, opt: int = 3) -> str:
    llvm = _llvm()
    tm = target_machine(opt)
    mod = llvm.parse_assembly(ir_text)
    pto = llvm.create_pipeline_tuning_options(speed_level=opt)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return str(mod)
