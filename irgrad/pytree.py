"""Pytrees: nested dicts, lists and tuples with tensors at the leaves.

Dict keys are visited in sorted order (as in JAX), so a tree's leaf order does not depend
on how the dict was built. A `TreeDef` records the structure to rebuild a tree.
"""

from __future__ import annotations

import re

import numpy as np

from .errors import ArgumentError
from .ir.hashcons import Node
from .ir.interpreter import check_argument
from .ir.types import DType, TensorType


class TreeDef(Node):
    """The structure of a pytree: kind "leaf" "dict" "list" "tuple" or "none", the dict
    keys (sorted), the children. Hash-consed (ir/hashcons.py), so comparing two
    structures is O(1) however deep they are."""

    FIELDS = ("kind", "keys", "children")
    __slots__ = FIELDS + ("_num",)
    DEFAULTS = {"keys": (), "children": ()}

    @property
    def num_leaves(self) -> int:
        try:
            return self._num
        except AttributeError:
            pass
        for node in _postorder(self):
            n = 1 if node.kind == "leaf" else sum(c._num for c in node.children)
            object.__setattr__(node, "_num", n)
        return self._num

    def __str__(self) -> str:
        text: dict = {}
        for node in _postorder(self):
            if node.kind == "leaf":
                t = "*"
            elif node.kind == "none":
                t = "None"
            elif node.kind == "dict":
                t = "{" + ", ".join(f"{k!r}: {text[c]}" for k, c in zip(node.keys, node.children)) + "}"
            else:
                inner = ", ".join(text[c] for c in node.children)
                t = f"[{inner}]" if node.kind == "list" else f"({inner}{',' if len(node.children) == 1 else ''})"
            text[node] = t
        return text[self]

    __repr__ = __str__


def _postorder(td: TreeDef):
    """Every distinct node under td, children before parents (iterative)."""
    out, done, stack = [], set(), [(td, False)]
    while stack:
        node, ready = stack.pop()
        if node in done:
            continue
        if not ready and node.children:
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(node.children) if c not in done)
            continue
        done.add(node)
        out.append(node)
    return out


LEAF = TreeDef("leaf")
NONE = TreeDef("none")


def flatten(tree, is_leaf=None) -> tuple[list, TreeDef]:
    """(leaves left to right, structure). Dicts by sorted keys; iterative, so trees of any
    depth work (a tree that contains itself is refused)."""
    leaves: list = []
    built: list = []
    open_ids: set = set()
    stack: list = [(tree, None)]
    while stack:
        node, info = stack.pop()
        if info is not None:  # a container whose children are built
            kind, keys, n, ident = info
            kids = tuple(built[len(built) - n:]) if n else ()
            del built[len(built) - n:]
            built.append(TreeDef(kind, keys, kids))
            open_ids.discard(ident)
            continue
        if is_leaf is not None and is_leaf(node):
            leaves.append(node)
            built.append(LEAF)
            continue
        if isinstance(node, dict):
            keys = tuple(sorted(node, key=_key_order))
            children, kind = [node[k] for k in keys], "dict"
        elif isinstance(node, (list, tuple)) and not hasattr(node, "_fields"):
            keys, children = (), list(node)
            kind = "list" if isinstance(node, list) else "tuple"
        elif node is None:
            built.append(NONE)
            continue
        else:
            leaves.append(node)
            built.append(LEAF)
            continue
        if id(node) in open_ids:
            raise ArgumentError(f"a pytree contains itself (a {type(node).__name__} inside itself)")
        open_ids.add(id(node))
        stack.append((None, (kind, keys, len(children), id(node))))
        stack.extend((c, None) for c in reversed(children))
    return leaves, built[0]


def _key_order(k):
    return (type(k).__name__, k)


def _build(td: TreeDef, leaves, make_dict=dict):
    """The tree of structure td with these leaves (iterative); returns (tree, leaves used)."""
    it = iter(leaves)
    used = 0
    built: list = []
    stack = [(td, False)]
    while stack:
        node, ready = stack.pop()
        if node.kind == "leaf":
            try:
                built.append(next(it))
            except StopIteration:
                raise ValueError("too few leaves for the tree structure") from None
            used += 1
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
            built.append(make_dict(zip(node.keys, kids)))
        else:
            built.append(list(kids) if node.kind == "list" else tuple(kids))
    if next(it, _END) is not _END:
        raise ValueError("too many leaves for the tree structure")
    return built[0]


def unflatten(treedef: TreeDef, leaves):
    return _build(treedef, leaves)


_END = object()


def leaf_paths(treedef: TreeDef, prefix: str) -> list[str]:
    """A dotted name per leaf (`params.fc1.W`), usable as an IR value name."""
    out: list[str] = []
    stack = [(treedef, prefix)]
    while stack:
        td, pre = stack.pop()
        if td.kind == "leaf":
            out.append(pre)
        elif td.kind == "dict":
            stack.extend((c, f"{pre}.{sanitize(str(k))}" if pre else sanitize(str(k)))
                         for k, c in reversed(list(zip(td.keys, td.children))))
        elif td.kind in ("list", "tuple"):
            stack.extend((c, f"{pre}.{i}" if pre else str(i))
                         for i, c in reversed(list(enumerate(td.children))))
    return out


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
        live = _build(treedef, leaves, lambda items: cls(items, on_write))
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
