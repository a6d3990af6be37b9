"""The CUDA backend: CUDA C for the shared kernel form (renderer.py), a loader and cubin
cache (runtime.py), device-resident functions and training steps (backend.py), and a CPU
emulation of the generated kernels for CI (emulate.py). See docs/cuda.md."""
