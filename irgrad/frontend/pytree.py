"""Pytrees: nested dicts, lists and tuples with tensors at the leaves.

Dict keys are visited in sorted order (as in JAX), so a tree's leaf order does not depend
on how the dict was built. A `TreeDef` records the structure to rebuild a tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import ArgumentError
from ..ir.interpreter import check_argument
from ..ir.types import DType, TensorType


@dataclass(frozen=True)
class TreeDef:
    kind: str  # "leaf" "dict" "list" "tuple" "none"
    keys: tuple = ()  # dict keys (sorted)
    children: tuple = ()

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(c.num_leaves for c in self.children)

    def __str__(self) -> str:
        if self.kind == "leaf":
            return "*"
        if self.kind == "none":
            return "None"
        if self.kind == "dict":
            return "{" + ", ".join(f"{k!r}: {c}" for k, c in zip(self.keys, self.children)) + "}"
        inner = ", ".join(str(c) for c in self.children)
        return f"[{inner}]" if self.kind == "list" else f"({inner}{',' if len(self.children) == 1 else ''})"


LEAF = TreeDef("leaf")


def flatten(tree, is_leaf=None) -> tuple[list, TreeDef]:
    leaves: list = []
    return leaves, _flatten(tree, leaves, is_leaf)


def _flatten(tree, leaves, is_leaf):
    if is_leaf is not None and is_leaf(tree):
        leaves.append(tree)
        return LEAF
    if isinstance(tree, dict):
        keys = tuple(sorted(tree, key=_key_order))
        return TreeDef("dict", keys, tuple(_flatten(tree[k], leaves, is_leaf) for k in keys))
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        kind = "list" if isinstance(tree, list) else "tuple"
        return TreeDef(kind, (), tuple(_flatten(c, leaves, is_leaf) for c in tree))
    if tree is None:
        return TreeDef("none")
    leaves.append(tree)
    return LEAF


def _key_order(k):
    return (type(k).__name__, k)


def unflatten(treedef: TreeDef, leaves):
    it = iter(leaves)
    out = _build(treedef, it)
    rest = next(it, _END)
    if rest is not _END:
        raise ValueError("too many leaves for the tree structure")
    return out


_END = object()


def _build(td: TreeDef, it):
    if td.kind == "leaf":
        return next(it)
    if td.kind == "none":
        return None
    kids = [_build(c, it) for c in td.children]
    if td.kind == "dict":
        return dict(zip(td.keys, kids))
    return kids if td.kind == "list" else tuple(kids)


def leaf_paths(treedef: TreeDef, prefix: str) -> list[str]:
    """A dotted name per leaf (`params.fc1.W`), usable as an IR value name."""
    out: list[str] = []
    _paths(treedef, prefix, out)
    return out


def _paths(td, prefix, out):
    if td.kind == "leaf":
        out.append(prefix)
    elif td.kind == "dict":
        for k, c in zip(td.keys, td.children):
            _paths(c, f"{prefix}.{sanitize(str(k))}" if prefix else sanitize(str(k)), out)
    elif td.kind in ("list", "tuple"):
        for i, c in enumerate(td.children):
            _paths(c, f"{prefix}.{i}" if prefix else str(i), out)


def sanitize(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.]", "_", name)
    return s or "_"


def tree_map(fn, tree, *rest, is_leaf=None):
    leaves, td = flatten(tree, is_leaf)
    others = [flatten(r, is_leaf)[0] for r in rest]
    return unflatten(td, [fn(x, *ys) for x, *ys in zip(leaves, *others)])


class LiveTree(dict):
    """A dict of a compiled training step's state (its parameters or optimizer state)
    whose leaves are the step's own buffers: reading shows the current values, and
    assigning (`step.params["W"] = array`, or a whole sub-dict) copies the new values into
    those buffers, so the next step uses them, on every backend. The structure is fixed
    when the step is compiled: new keys, deletions and changes of shape or dtype raise.

    `on_write(buffer)` is called after a buffer changed (the CUDA step uploads it).
    """

    def __init__(self, items, on_write=None):
        super().__init__(items)
        self._on_write = on_write

    @classmethod
    def of(cls, tree, treedef: TreeDef | None = None, leaves=None, on_write=None):
        """The live form of `tree` (dicts become LiveTrees, all the way down)."""
        if treedef is None:
            leaves, treedef = flatten(tree)
        live = _rebuild_live(treedef, leaves, on_write)
        return live if isinstance(live, LiveTree) else tree

    def __setitem__(self, key, value):
        if key not in self:
            raise ArgumentError(f"the step's state has no entry {key!r} (its structure is fixed "
                                f"when the step is compiled; entries: {', '.join(map(repr, self))})")
        old_leaves, old_td = flatten(dict.__getitem__(self, key))
        new_leaves, new_td = flatten(value)
        if new_td != old_td:
            raise ArgumentError(f"state entry {key!r} has structure {old_td}; cannot assign {new_td}")
        checked = []
        for old, new in zip(old_leaves, new_leaves):
            t = TensorType(DType.from_numpy(old.dtype), old.shape)
            checked.append(check_argument(t, f"state entry {key!r}", new, "step"))
        for old, new in zip(old_leaves, checked):  # all checked before anything changes
            np.copyto(old, new)
            if self._on_write is not None:
                self._on_write(old)

    def __delitem__(self, key):
        raise self._fixed("delete")

    def pop(self, *args):
        raise self._fixed("pop")

    def popitem(self):
        raise self._fixed("pop")

    def clear(self):
        raise self._fixed("clear")

    def setdefault(self, key, default=None):
        if key not in self:
            raise self._fixed("add")
        return self[key]

    def update(self, *args, **kwargs):
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def __ior__(self, other):
        self.update(other)
        return self

    def _fixed(self, what: str):
        return ArgumentError(f"cannot {what} entries of a compiled step's state: its structure "
                             f"is fixed when the step is compiled")

    def __reduce__(self):  # pickles and deep-copies as a plain dict
        return (dict, (dict(self),))


def _rebuild_live(td: TreeDef, leaves, on_write):
    """Like unflatten, with LiveTrees for dicts (iterative)."""
    it = iter(leaves)
    # post-order over the treedef with an explicit stack
    stack = [(td, False)]
    built: list = []
    while stack:
        node, ready = stack.pop()
        if node.kind == "leaf":
            built.append(next(it))
            continue
        if node.kind == "none":
            built.append(None)
            continue
        if not ready:
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(node.children))
            continue
        n = len(node.children)
        kids = built[len(built) - n:] if n else []
        del built[len(built) - n:]
        if node.kind == "dict":
            built.append(LiveTree(zip(node.keys, kids), on_write))
        else:
            built.append(list(kids) if node.kind == "list" else tuple(kids))
    return built[0]
