"""The CUDA backend: CUDA C through NVRTC or nvcc, run with pycuda or cuda-python (see
backend.py, renderer.py, runtime.py). `device="emulate"` runs the same launch plan on the
CPU (emulate.py: a test device for machines without a GPU).

This module is the plug-in only: the implementation is imported when first used, so that
`import irgrad` does not pay for every backend (about 35 ms each)."""

from __future__ import annotations

from ..base import Backend, register_backend


def _emulated_device():
    from .emulate import EmulatedDevice
    return EmulatedDevice()


@register_backend
class CudaBackend(Backend):
    name = "cuda"
    # threads and opt are accepted for symmetry with the CPU backend and ignored
    options = ("device", "tf32", "threads", "opt")
    step_options = options + ("graphs",)
    native = True
    emits = {"cuda": "the generated CUDA C"}

    def __init__(self):
        from .runtime import register_device
        register_device("emulate", _emulated_device)

    def compile(self, ir, pipeline: str, **options):
        self.check_options(options)
        from .backend import CudaFunction
        return CudaFunction(ir, pipeline, **options)

    def compile_step(self, ir, state, pipeline: str, **options):
        self.check_options(options, step=True)
        from .backend import CudaStep
        return CudaStep(ir, state, pipeline, **options)

    def renderer(self):
        from .cexpr import ExprRenderer
        return ExprRenderer

    def emit(self, ir, what: str, **options) -> str:
        if what != "cuda":
            return super().emit(ir, what)
        from ...codegen.lowering import lower_function, plan_for_codegen
        from .renderer import render_cuda_program
        planned = plan_for_codegen(ir, "")
        self.check_support(planned)
        return render_cuda_program(lower_function(planned)).source
