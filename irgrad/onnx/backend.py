"""`irgrad.onnx.backend`: an `onnx.backend.base.Backend` on irgrad's CPU backend.

    import onnx.backend.test, irgrad.onnx.backend
    globals().update(onnx.backend.test.BackendTest(irgrad.onnx.backend, __name__).test_cases)

`prepare` checks and keeps the model; the first `run` imports it with the shapes of the
inputs it is given and compiles it (`ig.compile(..., backend="cpu", pipeline="O2")`),
later runs with the same shapes reuse that. A graph input whose *value* a node needs at
import (a shape fed to Reshape, the axes of a reduction given as an input) is taken as
a constant from the first run's arrays, and the compiled function is keyed by those
values too: a static-shape compiler specializes where a dynamic runtime would branch.
"""

from __future__ import annotations

import numpy as np

from ..errors import IrgradError, UnsupportedOnnxError
from .graph import NeedsConstant

try:
    from onnx.backend.base import Backend, BackendRep
except ImportError:  # onnx is an optional extra: the module still imports for errors
    Backend = BackendRep = object


class IrgradRep(BackendRep):
    def __init__(self, model, backend: str = "cpu", pipeline: str = "O2"):
        from .importer import check_model, read_model
        self.proto, self.name = read_model(model)
        check_model(self.proto, self.name)
        self.backend, self.pipeline = backend, pipeline
        init = {t.name for t in self.proto.graph.initializer}
        self.input_names = [v.name for v in self.proto.graph.input if v.name not in init]
        self._const_names: set[str] = set()
        self._cache = {}

    def _key(self, arrays):
        parts = []
        for nm, a in zip(self.input_names, arrays):
            if a is None:  # an empty optional input
                parts.append(None)
                continue
            parts.append((a.shape, a.dtype.str, a.tobytes() if nm in self._const_names else None))
        return tuple(parts)

    def model_for(self, arrays):
        from . import load
        for _ in range(len(arrays) + 1):
            key = self._key(arrays)
            hit = self._cache.get(key)
            if hit is not None:
                return hit
            consts = {nm: a for nm, a in zip(self.input_names, arrays)
                      if nm in self._const_names or a is None}
            shapes = {nm: a.shape for nm, a in zip(self.input_names, arrays) if nm not in consts}
            try:
                m = load(self.proto, input_shapes=shapes, constants=consts, check=False)
            except NeedsConstant as e:
                if e.input_name in self.input_names and e.input_name not in self._const_names:
                    self._const_names.add(e.input_name)
                    continue
                raise
            run = m.compile(self.backend, self.pipeline)
            self._cache[key] = (m, run, [nm not in consts for nm in self.input_names])
            return self._cache[key]
        raise IrgradError(f"{self.name}: cannot decide which inputs are constants")

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            inputs = [inputs[n] for n in self.input_names]
        elif not isinstance(inputs, (list, tuple)):
            inputs = [inputs]
        if any(isinstance(x, (list, tuple, dict)) for x in inputs):
            raise UnsupportedOnnxError(f"{self.name}: sequence and map inputs are not supported "
                                       f"(irgrad's values are tensors)")
        arrays = [None if x is None else np.asarray(x) for x in inputs]
        if len(arrays) != len(self.input_names):
            raise IrgradError(f"{self.name} takes {len(self.input_names)} inputs "
                              f"({', '.join(self.input_names)}), got {len(arrays)}")
        m, run, live = self.model_for(arrays)
        return tuple(run(*[a for a, keep in zip(arrays, live) if keep]))


class IrgradBackend(Backend):
    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs):
        if not cls.supports_device(device):
            raise IrgradError(f"irgrad's ONNX backend runs on CPU, not {device}")
        return IrgradRep(model, backend=kwargs.get("backend", "cpu"),
                         pipeline=kwargs.get("pipeline", "O2"))

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device: str = "CPU", outputs_info=None, **kwargs):
        raise NotImplementedError("irgrad runs whole models (prepare/run_model)")

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return str(device).upper().startswith("CPU")


prepare = IrgradBackend.prepare
run_model = IrgradBackend.run_model
run_node = IrgradBackend.run_node
supports_device = IrgradBackend.supports_device
