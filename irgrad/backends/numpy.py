"""The reference backend: the optimized IR runs on the interpreter (ir/interpreter.py)."""

from __future__ import annotations

import threading

import numpy as np

from ..ir.interpreter import run_function
from .base import Backend, register_backend
from ..passes.manager import run_pipeline


class NumpyFunction:
    """The optimized IR of a function, run by the interpreter (pure: any thread may call)."""

    def __init__(self, ir, pipeline: str):
        self.ir = run_pipeline(ir, pipeline)
        self.pipeline = pipeline

    def run(self, arrays) -> list[np.ndarray]:
        return run_function(self.ir, arrays, check=False)


class NumpyStep:
    """A training step on the interpreter: the state arrays are updated in place; calls
    serialize."""

    def __init__(self, ir, state: list, pipeline: str):
        self.ir = run_pipeline(ir, pipeline)
        self.state = state
        self._lock = threading.Lock()

    def run(self, batch) -> float:
        with self._lock:
            outs = run_function(self.ir, list(self.state) + list(batch), check=False)
            for dst, src in zip(self.state, outs[1:]):
                np.copyto(dst, src)
            return float(outs[0])

    def sync(self) -> None:
        pass

    def upload(self, array) -> None:
        pass


@register_backend
class NumpyBackend(Backend):
    name = "numpy"
    options = ("threads", "opt")  # accepted for symmetry with the native backends, ignored
    step_options = options

    def compile(self, ir, pipeline: str, **options):
        self.check_options(options)
        return NumpyFunction(ir, pipeline)

    def compile_step(self, ir, state, pipeline: str, **options):
        self.check_options(options, step=True)
        return NumpyStep(ir, state, pipeline)
