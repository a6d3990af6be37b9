"""Pytrees: nested dicts, lists and tuples with tensors at the leaves.

Dict keys are visited in sorted order (as in JAX), so a tree's leaf order does not depend
on how the dict was built. A `TreeDef` records the structure to rebuild a tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


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
