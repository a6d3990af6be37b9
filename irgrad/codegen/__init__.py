"""Code generation: lowering to a backend-neutral kernel form (kernel_ir.py, lowering.py),
the renderer base that every backend's renderer builds on (renderer.py), program-level
types (program.py) and the compile caches' files (filecache.py)."""
