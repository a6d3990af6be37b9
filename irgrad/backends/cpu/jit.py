"""JIT compilation of LLVM IR text with llvmlite (the compile cache is cache.py).

- The target is the host CPU with its features (and 512-bit vectors where it has them).
- External symbols are resolved before any code runs: BLAS `sgemm`/`dgemm` from scipy's
  `cython_blas` capsules, `GOMP_parallel` from libgomp, libm functions from the process;
  an unresolved one raises `BackendUnavailable` at compile time (MCJIT would otherwise
  accept it and crash at the call).
- Object code is what the compile cache (cache.py) stores; `JitModule` loads it.
- An engine is kept alive by the object holding the callable: a collected engine frees
  its code.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time

from ...errors import BackendUnavailable

_lock = threading.Lock()
_state: dict = {}


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


def target_facts() -> dict:
    """What compiled code depends on besides its source: part of every cache key."""
    st = initialize()
    return {"cpu": st["cpu"], "features": st["features"], "llvmlite": st["llvmlite"],
            "triple": st["triple"]}


def _parse(ir_text: str):
    llvm = _llvm()
    try:
        mod = llvm.parse_assembly(ir_text)
        mod.verify()
    except RuntimeError as e:
        raise AssertionError(f"generated LLVM IR does not parse: {e}") from None
    return mod


def _declared(mod) -> list[str]:
    return sorted(f.name for f in mod.functions if f.is_declaration and not f.name.startswith("llvm."))


def compile_object(ir_text: str, opt: int = 3) -> tuple[bytes, list[str], dict]:
    """Optimize and compile one LLVM module: (object code, external symbols, timings)."""
    externals = _declared(_parse(ir_text))
    check_symbols(externals)
    obj, timings = _compile(ir_text, opt)
    return obj, externals, timings


def compile_program(rendered, opt: int = 3) -> tuple[list[bytes], list[str], dict]:
    """Compile a RenderedProgram: the kernels module at `opt`, the glue module (entry
    points, a few loads and calls each) without optimization. Returns the object files,
    the symbols they need from the process, and timings."""
    kernels, glue = _parse(rendered.kernels), _parse(rendered.glue)
    defined = {f.name for m in (kernels, glue) for f in m.functions if not f.is_declaration}
    externals = sorted(set(_declared(kernels) + _declared(glue)) - defined)
    check_symbols(externals)
    objs, timings = [], {}
    for text, level in ((rendered.kernels, opt), (rendered.glue, 0)):
        obj, t = _compile(text, level)
        objs.append(obj)
        for k, v in t.items():
            timings[k] = timings.get(k, 0.0) + v
    return objs, externals, timings


def _optimize(tm, mod, opt: int) -> None:
    if opt > 0:
        llvm = _llvm()
        pto = llvm.create_pipeline_tuning_options(speed_level=opt)
        pto.loop_vectorization = opt >= 2
        pto.slp_vectorization = opt >= 2
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)


def _compile(ir_text: str, opt: int) -> tuple[bytes, dict]:
    tm = target_machine(opt)
    mod = _parse(ir_text)
    t1 = time.perf_counter()
    _optimize(tm, mod, opt)
    t2 = time.perf_counter()
    obj = tm.emit_object(mod)
    return obj, {"optimize": t2 - t1, "codegen": time.perf_counter() - t2}


def check_symbols(names) -> None:
    """Every external symbol must resolve before code runs (MCJIT would crash instead)."""
    llvm = _llvm()
    initialize()
    missing = [n for n in names if not llvm.address_of_symbol(n)]
    if missing:
        raise BackendUnavailable(f"the CPU backend cannot resolve {', '.join(missing)} "
                                 f"(is libgomp installed? scipy's BLAS?)")


class JitModule:
    """Loaded object code; `address(name)` gives a function pointer."""

    def __init__(self, objs, externals, opt: int = 3, entry: str = "irgrad_entry"):
        llvm = _llvm()
        check_symbols(externals)
        self._engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), target_machine(opt))
        for obj in ([objs] if isinstance(objs, bytes) else objs):
            self._engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self._engine.finalize_object()
        self.entry_address = self._engine.get_function_address(entry)
        if not self.entry_address:
            raise AssertionError(f"compiled module has no @{entry}")

    def address(self, name: str) -> int:
        return self._engine.get_function_address(name)


def emit_assembly(rendered, opt: int = 3) -> str:
    """Machine code as assembly text (for `--emit asm`): of one module's text, or of a
    RenderedProgram (the kernels module optimized at `opt`, then the glue module)."""
    parts = [(rendered, opt, None)] if isinstance(rendered, str) else \
        [(rendered.kernels, opt, "kernels"), (rendered.glue, 0, "glue")]
    out = []
    for text, level, what in parts:
        tm = target_machine(level)
        mod = _parse(text)
        _optimize(tm, mod, level)
        out.append((f"# ---- {what} module ----\n" if what else "") + tm.emit_assembly(mod))
    return "\n".join(out)
