"""Whole training steps: `training_step` builds the IR, `compile_step` makes it runnable.

`training_step(loss, optimizer)` builds one `Function`
`(params, opt_state, *batch) -> (loss, new_params, new_opt_state)`: the forward pass, the
loss, the backward pass (by `reverse-ad`) and the optimizer update, all in one IR
function that can be printed, optimized, benchmarked and compiled like any other.
"""

from __future__ import annotations

import contextlib
import inspect

import numpy as np

from ..api import as_function, compile as compile_function
from ..backends import get_backend
from ..errors import ArgumentError, IrgradError
from ..frontend.function import Function, trace
from ..frontend.specs import TensorSpec
from ..ir.interpreter import check_argument
from ..pytree import LiveTree, flatten, leaf_paths, tree_map, unflatten
from .autodiff import value_and_grad
from ..frontend import random


def _spec_tree(tree):
    leaves, td = flatten(tree)
    return unflatten(td, [TensorSpec.of(x) for x in leaves])


def training_step(loss, optimizer, name: str | None = None, state: bool = False,
                  key: bool = False) -> Function:
    """The IR of one step of `optimizer` on `loss` (a traced Function whose first argument
    is the params pytree).

    With `state`, loss's second argument is the model state (batch-norm statistics) and it
    returns `(loss, new_state)`; with `key`, the next argument is a random key (i32[2]).
    The step is then `(params, opt_state, [state], [key], *batch) -> (loss, new_params,
    new_opt_state, [new_state], [next_key])`: each step splits its key in two, uses one
    half and carries the other to the next step, all inside the one function."""
    loss = as_function(loss)
    if (not state and loss.out_tree.num_leaves != 1) or (state and len(loss.out_tree.children) != 2):
        raise IrgradError(f"training_step: {loss.name} must return one scalar loss"
                          + (" and the new state, as (loss, new_state)" if state else ""))
    specs = loss.arg_specs
    n_extra = int(state) + int(key)
    param_specs, extra_specs, batch_specs = specs[0], specs[1:1 + n_extra], specs[1 + n_extra:]
    fake_params = _zeros_tree(param_specs)
    opt_specs = _spec_tree(optimizer.init(fake_params))
    vg = value_and_grad(loss, argnums=0, has_aux=state)

    def step(params, opt_state, *rest):
        extra, batch = list(rest[:n_extra]), rest[n_extra:]
        next_key = None
        if key:
            keys = random.split(extra[-1], 2)
            next_key, extra[-1] = keys[0], keys[1]
        out, grads = vg(params, *extra, *batch)
        value, new_state = out if state else (out, None)
        if state:
            _check_same_structure(new_state, extra_specs[0], loss.name)
        new_params, new_opt = optimizer.update(params, grads, opt_state)
        return (value, new_params, new_opt) + ((new_state,) if state else ()) + \
            ((next_key,) if key else ())

    fn = trace(step, param_specs, opt_specs, *extra_specs, *batch_specs,
               name=name or f"step_{loss.name}")
    # the updated parameters, optimizer state, model state and key may be written over
    # the old ones
    n_state = sum(len(flatten(t)[0]) for t in (param_specs, opt_specs, *extra_specs))
    fn.ir.attrs["donate"] = (-1,) + tuple(range(n_state))
    return fn


def _check_same_structure(new_state, state_specs, name: str) -> None:
    """The state a loss returns must have the structure of the state it was given: the
    step writes each new leaf over the old one in flattened order."""
    got, want = flatten(new_state)[1], flatten(state_specs)[1]
    if got != want:
        raise IrgradError(f"training_step: {name} returns a new state of structure {got}, but its "
                          f"state has structure {want}; return every entry of the state, under the "
                          f"same keys (the step writes each over the old one)")
    for path, a, b in zip(leaf_paths(want, "state"), flatten(new_state)[0], flatten(state_specs)[0]):
        if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
            raise IrgradError(f"training_step: {name} returns {path} as {a.type}, but the state "
                              f"holds {b.dtype}{list(b.shape)}")


def _zeros_tree(spec_tree):
    leaves, td = flatten(spec_tree)
    return unflatten(td, [np.zeros(s.shape, s.dtype.np) for s in leaves])


class TrainingStep:
    """`ig.compile_step(...)`: `step(*batch)` checks the batch (count, shape, dtype), runs one
    step on the backend's executable and returns the loss as a float. The parameters,
    optimizer state, model state and random key are the step's own arrays, updated in
    place: `step.params`, `step.opt_state`, `step.state` and `step.key` show their current
    values (a device backend copies them back first), and assigning an entry
    (`step.params["fc0"]["W"] = array`, or a sub-dict) checks and copies it in (and up to
    the device). `step(*batch, train=False)` evaluates the loss in evaluation mode (batch
    norm on its running statistics, no dropout) without updating anything; that function
    is compiled on first use, once, next to the training step. Calls serialize.
    Backend-specific facts (`native`, `ir`, `llvm_ir`, ...) are the executable's
    attributes, reachable here."""

    def __init__(self, fn: Function, backend, executable, params, opt_state, pipeline: str,
                 state=None, key=None, make_eval=None):
        self.fn = fn
        self.backend = backend.name
        self.executable = executable
        self.pipeline = pipeline
        self._backend, self._make_eval, self._eval = backend, make_eval, None
        trees = {}
        n_state = 0
        for name, tree in (("params", params), ("opt_state", opt_state), ("state", state),
                           ("key", key)):
            if tree is None:
                trees[name] = None
                continue
            leaves, td = flatten(tree)
            trees[name] = LiveTree.of(tree, td, leaves, on_write=executable.upload)
            n_state += len(leaves)
        self._trees = trees
        batch = fn.ir.params[n_state:]
        self._batch = [(p.type, p.name) for p in batch]
        self.n_batch = len(batch)

    def _tree(self, name):
        self.executable.sync()
        return self._trees[name]

    @property
    def params(self):
        return self._tree("params")

    @property
    def opt_state(self):
        return self._tree("opt_state")

    @property
    def state(self):
        """The model state the step carries (batch-norm statistics), or None."""
        return self._tree("state")

    @property
    def key(self):
        """The random key the next step will split, or None. Assigning one (an i32[2], e.g.
        from ig.random.key) copies it into the step's own buffer, on every backend."""
        return self._tree("key")

    @key.setter
    def key(self, value):
        buf = self._trees["key"]
        if buf is None:
            raise ArgumentError("this step carries no random key (compile it with key=...)")
        new = random._check_key(value)
        self.executable.sync()
        np.copyto(buf, new)
        self.executable.upload(buf)

    def _check_batch(self, batch, what):
        if len(batch) != self.n_batch:
            raise ArgumentError(f"{what}() takes {self.n_batch} batch argument(s), got {len(batch)}")
        return [check_argument(t, f"%{n}", a, what) for (t, n), a in zip(self._batch, batch)]

    def __call__(self, *batch, train: bool = True) -> float:
        if not train:
            return self.evaluate(*batch)
        return self.executable.run(self._check_batch(batch, "step"))

    def evaluate(self, *batch) -> float:
        """The loss in evaluation mode on the current parameters and state (nothing changes)."""
        checked = self._check_batch(batch, "step")
        if self._eval is None:
            if self._make_eval is None:
                raise IrgradError("this step was compiled from a traced Function: evaluation mode "
                                  "needs the Python loss function (pass it to compile_step)")
            self._eval = self._make_eval()
        self.executable.sync()
        # a snapshot taken under the step's lock, so a concurrent step() cannot change the
        # buffers while they are read (sync takes the lock itself: it comes first)
        with getattr(self.executable, "_lock", None) or contextlib.nullcontext():
            live = [tree_map(np.array, self._trees[n]) for n in ("params", "state", "key")
                    if self._trees[n] is not None]
        out = self._eval(*live, *checked)
        return float(np.asarray(out[0] if isinstance(out, (tuple, list)) else out))

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["executable"], name)


def _check_params(params, what: str = "params") -> None:
    """Every leaf of the parameter (or state) tree is a numpy array (or number) irgrad has
    a dtype for."""
    leaves, td = flatten(params)
    if not leaves:
        raise IrgradError(f"compile_step: {what} holds no arrays")
    for path, x in zip(leaf_paths(td, what), leaves):
        if isinstance(x, (np.ndarray, np.generic)) and x.dtype.kind in "fiub":
            try:
                TensorSpec.of(x)
            except IrgradError as e:
                raise IrgradError(f"compile_step: {path}: {e}") from None
            continue
        kind = "a list (of arrays' values?)" if isinstance(x, list) else type(x).__name__
        raise IrgradError(f"compile_step: {path} is {kind} {x!r:.60}; every leaf of {what} must be a "
                          f"numpy array (np.asarray(...))")


def _own_params(params):
    """Copies of the caller's arrays as C-contiguous, writable buffers the step owns."""
    leaves, td = flatten(params)
    return unflatten(td, [np.array(x, copy=True, order="C") for x in leaves])


def compile_step(loss_fn, params, optimizer, batch_specs=(), backend: str = "cpu",
                 pipeline: str = "O2", state=None, key=None, **options):
    """Compile one whole training step; `step(*batch)` runs it and returns the loss.

    `loss_fn(params, *batch)` is a Python function (traced here from `params` and
    `batch_specs`) or a traced Function. Parameters are copied into buffers the step owns
    and updated in place; `step.params` is the dict of current parameters.

    A model with state or randomness passes `state=` (its initial state, e.g.
    `model.init_state()`) and/or `key=` (an `ig.random.key`); `loss_fn` is then called as
    `loss_fn(params, *batch, state=state, key=key, train=train)` (only the keywords given,
    `train` if it takes one) and returns `(loss, new_state)` when it has state. The step
    carries both, advancing the key inside the native call.
    """
    be = get_backend(backend)
    be.check_options(options, step=True)
    _check_params(params)
    if isinstance(batch_specs, (list, tuple)):
        batch_specs = tuple(batch_specs)
    else:
        raise IrgradError(f"compile_step: batch_specs must be a tuple of TensorSpecs, like "
                          f"(f32[32, 64], i32[32]), got {type(batch_specs).__name__} {batch_specs!r}")
    has_state, has_key = state is not None, key is not None
    if has_state:
        _check_params(state, "state")
    if has_key:
        key = np.array(random._check_key(key), copy=True)
    extra = ([_spec_tree(state)] if has_state else []) + ([TensorSpec.of(key)] if has_key else [])
    make_eval = None
    if isinstance(loss_fn, Function):
        loss = loss_fn
    elif callable(loss_fn):
        wrapped = _with_state(loss_fn, has_state, has_key, True) if (has_state or has_key) else loss_fn
        loss = trace(wrapped, _spec_tree(params), *extra, *batch_specs,
                     name=getattr(loss_fn, "__name__", None))
        # evaluation mode: the loss traced with train=False, compiled on first use
        def make_eval():
            if not _takes_train(loss_fn):
                raise IrgradError(
                    f"step(..., train=False): {getattr(loss_fn, '__name__', 'the loss')} takes no "
                    f"`train` argument, so evaluation mode would run the training-mode model "
                    f"(batch statistics, dropout); add `train=True` to its parameters and pass it "
                    f"to the model")
            ev = _with_state(loss_fn, has_state, has_key, False)
            f = trace(ev, _spec_tree(params), *extra, *batch_specs,
                      name=f"eval_{getattr(loss_fn, '__name__', 'loss')}")
            return compile_function(f, backend, pipeline, **options)
    else:
        raise IrgradError(f"compile_step: loss_fn must be a Python function or a traced Function, "
                          f"got {type(loss_fn).__name__}")
    fn = training_step(loss, optimizer, state=has_state, key=has_key)
    own = _own_params(params)
    opt = _own_params(optimizer.init(own))
    own_state = _own_params(state) if has_state else None
    leaves = flatten(own)[0] + flatten(opt)[0] + (flatten(own_state)[0] if has_state else []) + \
        ([key] if has_key else [])
    exe = be.compile_step(fn.ir, leaves, pipeline, **options)
    return TrainingStep(fn, be, exe, own, opt, pipeline, own_state, key if has_key else None, make_eval)


def _takes_train(loss_fn) -> bool:
    try:
        sig = inspect.signature(loss_fn)
    except (TypeError, ValueError):
        return False
    return "train" in sig.parameters or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def _with_state(loss_fn, has_state: bool, has_key: bool, train: bool):
    """loss_fn with the state and key as positional arguments after params (what
    training_step expects), called with keywords; `train` passed if loss_fn takes it."""
    takes_train = _takes_train(loss_fn)

    def wrapped(params, *rest):
        kw = {}
        i = 0
        if has_state:
            kw["state"] = rest[i]
            i += 1
        if has_key:
            kw["key"] = rest[i]
            i += 1
        if takes_train:
            kw["train"] = train
        out = loss_fn(params, *rest[i:], **kw)
        if not train and has_state:
            out = out[0] if isinstance(out, tuple) else out  # evaluation: the loss alone
        return out

    wrapped.__name__ = getattr(loss_fn, "__name__", "loss")
    return wrapped


__all__ = ["training_step", "compile_step"]
