"""Code generation: lowering to a backend-neutral kernel form, rendered for the CPU (LLVM IR
through llvmlite) and for NVIDIA GPUs (CUDA C)."""

from __future__ import annotations


def emit_code(ir, what: str, threads: int | None = None) -> str:
    """The generated code of an IR function: 'llvm' (LLVM IR), 'asm' or 'cuda'."""
    from ..backends.cpu.backend import default_threads, plan_for_codegen
    from .lowering import lower_function
    planned = plan_for_codegen(ir, "")
    program = lower_function(planned)
    if what == "llvm":
        from ..backends.cpu.llvm_renderer import render_program
        return render_program(program, threads or default_threads()).text
    if what == "asm":
        from ..backends.cpu.jit import emit_assembly
        from ..backends.cpu.llvm_renderer import render_program
        return emit_assembly(render_program(program, threads or default_threads()))
    if what == "cuda":
        from ..backends.cuda.renderer import render_cuda_program
        return render_cuda_program(program).source
    raise ValueError(f"unknown --emit {what!r} (ir, llvm, asm, cuda)")
