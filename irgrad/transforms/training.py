"""Whole training steps: `training_step` builds the IR, `compile_step` makes it runnable.

`training_step(loss, optimizer)` builds one `Function`
`(params, opt_state, *batch) -> (loss, new_params, new_opt_state)`: the forward pass, the
loss, the backward pass (by `reverse-ad`) and the optimizer update, all in one IR
function that can be printed, optimized, benchmarked and compiled like any other.
"""

from __future__ import annotations

import numpy as np

from ..api import as_function
from ..backends import get_backend
from ..errors import ArgumentError, IrgradError
from ..frontend.function import Function, trace
from ..frontend.specs import TensorSpec
from ..ir.interpreter import check_argument
from ..pytree import LiveTree, flatten, leaf_paths, unflatten
from .autodiff import value_and_grad


def _spec_tree(tree):
    leaves, td = flatten(tree)
    return unflatten(td, [TensorSpec.of(x) for x in leaves])


def training_step(loss, optimizer, name: str | None = None) -> Function:
    """The IR of one step of `optimizer` on `loss` (a traced Function whose first argument
    is the params pytree)."""
    loss = as_function(loss)
    if loss.out_tree.num_leaves != 1:
        raise IrgradError(f"training_step: {loss.name} must return one scalar loss")
    specs = loss.arg_specs
    param_specs, batch_specs = specs[0], specs[1:]
    fake_params = _zeros_tree(param_specs)
    state_specs = _spec_tree(optimizer.init(fake_params))
    vg = value_and_grad(loss, argnums=0)

    def step(params, opt_state, *batch):
        value, grads = vg(params, *batch)
        new_params, new_state = optimizer.update(params, grads, opt_state)
        return value, new_params, new_state

    fn = trace(step, param_specs, state_specs, *batch_specs, name=name or f"step_{loss.name}")
    # the updated parameters and optimizer state may be written over the old ones
    n_state = len(flatten(param_specs)[0]) + len(flatten(state_specs)[0])
    fn.ir.attrs["donate"] = (-1,) + tuple(range(n_state))
    return fn


def _zeros_tree(spec_tree):
    leaves, td = flatten(spec_tree)
    return unflatten(td, [np.zeros(s.shape, s.dtype.np) for s in leaves])


class TrainingStep:
    """`ig.compile_step(...)`: `step(*batch)` checks the batch (count, shape, dtype), runs one
    step on the backend's executable and returns the loss as a float. The parameters and
    optimizer state are the step's own arrays, updated in place: `step.params` and
    `step.opt_state` show their current values (a device backend copies them back first),
    and assigning an entry (`step.params["fc0"]["W"] = array`, or a sub-dict) checks and
    copies it in (and up to the device). Calls serialize. Backend-specific facts (`native`,
    `ir`, `llvm_ir`, ...) are the executable's attributes, reachable here."""

    def __init__(self, fn: Function, backend, executable, params, opt_state, pipeline: str):
        self.fn = fn
        self.backend = backend.name
        self.executable = executable
        self.pipeline = pipeline
        p_leaves, p_tree = flatten(params)
        s_leaves, s_tree = flatten(opt_state)
        self._params = LiveTree.of(params, p_tree, p_leaves, on_write=executable.upload)
        self._opt_state = LiveTree.of(opt_state, s_tree, s_leaves, on_write=executable.upload)
        n_state = len(p_leaves) + len(s_leaves)
        batch = fn.ir.params[n_state:]
        self._batch = [(p.type, p.name) for p in batch]
        self.n_batch = len(batch)

    @property
    def params(self):
        self.executable.sync()
        return self._params

    @property
    def opt_state(self):
        self.executable.sync()
        return self._opt_state

    def __call__(self, *batch) -> float:
        if len(batch) != self.n_batch:
            raise ArgumentError(f"step() takes {self.n_batch} batch argument(s), got {len(batch)}")
        checked = [check_argument(t, f"%{n}", a, "step") for (t, n), a in zip(self._batch, batch)]
        return self.executable.run(checked)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["executable"], name)


def _check_params(params) -> None:
    """Every leaf of the parameter tree is a numpy array (or number) irgrad has a dtype for."""
    leaves, td = flatten(params)
    if not leaves:
        raise IrgradError("compile_step: params holds no arrays")
    for path, x in zip(leaf_paths(td, "params"), leaves):
        if isinstance(x, (np.ndarray, np.generic)) and x.dtype.kind in "fiub":
            try:
                TensorSpec.of(x)
            except IrgradError as e:
                raise IrgradError(f"compile_step: {path}: {e}") from None
            continue
        what = "a list (of arrays' values?)" if isinstance(x, list) else type(x).__name__
        raise IrgradError(f"compile_step: {path} is {what} {x!r:.60}; every parameter must be a "
                          f"numpy array (np.asarray(...))")


def _own_params(params):
    """Copies of the caller's arrays as C-contiguous, writable buffers the step owns."""
    leaves, td = flatten(params)
    return unflatten(td, [np.array(x, copy=True, order="C") for x in leaves])


def compile_step(loss_fn, params, optimizer, batch_specs=(), backend: str = "cpu",
                 pipeline: str = "O2", **options):
    """Compile one whole training step; `step(*batch)` runs it and returns the loss.

    `loss_fn(params, *batch)` is a Python function (traced here from `params` and
    `batch_specs`) or a traced Function. Parameters are copied into buffers the step owns
    and updated in place; `step.params` is the dict of current parameters.
    """
    be = get_backend(backend)
    be.check_options(options, step=True)
    _check_params(params)
    if isinstance(batch_specs, (list, tuple)):
        batch_specs = tuple(batch_specs)
    else:
        raise IrgradError(f"compile_step: batch_specs must be a tuple of TensorSpecs, like "
                          f"(f32[32, 64], i32[32]), got {type(batch_specs).__name__} {batch_specs!r}")
    if isinstance(loss_fn, Function):
        loss = loss_fn
    elif callable(loss_fn):
        loss = trace(loss_fn, _spec_tree(params), *batch_specs)
    else:
        raise IrgradError(f"compile_step: loss_fn must be a Python function or a traced Function, "
                          f"got {type(loss_fn).__name__}")
    fn = training_step(loss, optimizer)
    own = _own_params(params)
    state = _own_params(optimizer.init(own))
    leaves = flatten(own)[0] + flatten(state)[0]
    exe = be.compile_step(fn.ir, leaves, pipeline, **options)
    return TrainingStep(fn, be, exe, own, state, pipeline)


__all__ = ["training_step", "compile_step"]
