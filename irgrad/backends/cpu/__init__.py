"""The CPU backend: LLVM IR through llvmlite (see backend.py, llvm_renderer.py, jit.py).

This module is the plug-in only: the implementation is imported when first used, so that
`import irgrad` does not pay for every backend (about 35 ms each)."""

from __future__ import annotations

from ..base import Backend, register_backend


@register_backend
class CpuBackend(Backend):
    name = "cpu"
    options = ("threads", "opt")
    step_options = options
    native = True
    emits = {"llvm": "the generated LLVM IR", "asm": "the machine code, as assembly"}

    def compile(self, ir, pipeline: str, **options):
        self.check_options(options)
        from .backend import CpuFunction
        return CpuFunction(ir, pipeline, **options)

    def compile_step(self, ir, state, pipeline: str, **options):
        self.check_options(options, step=True)
        from .backend import CpuStep
        return CpuStep(ir, state, pipeline, **options)

    def renderer(self):
        from .llvm_renderer import KernelRenderer
        return KernelRenderer

    def emit(self, ir, what: str, threads: int | None = None, **options) -> str:
        from ...codegen.lowering import lower_function
        from .backend import default_threads, plan_for_codegen
        from .jit import emit_assembly
        from .llvm_renderer import render_program
        planned = plan_for_codegen(ir, "")
        self.check_support(planned)
        rendered = render_program(lower_function(planned), threads or default_threads())
        if what == "llvm":
            return rendered.text
        if what == "asm":
            return emit_assembly(rendered)
        return super().emit(ir, what)
