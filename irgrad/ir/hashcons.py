"""Hash-consed expression nodes: structurally equal nodes are one object.

The index algebra (ir/indexing.py) and the kernel form's scalar expressions
(codegen/kernel_ir.py) build expression DAGs that can be as deep as the user's program
(a concatenation of 500 pieces is a chain of 500 selects). Dataclasses would hash and
compare them recursively: slow, and a RecursionError on deep ones. A `Node` is instead
looked up in a table when it is made, by its class and its fields (child nodes by
identity), so making a node that exists returns that node: equality is identity and
hashing is O(1), whatever the depth, and memo tables keyed by nodes share every common
subexpression.

Subclasses list their fields in `FIELDS` (also their `__slots__`), with `DEFAULTS` for the
optional ones, and are immutable. `digest` is a structural fingerprint that is the same
in every process (for deterministic orderings and names), computed on first use,
iteratively.
"""

from __future__ import annotations

import hashlib
import numbers
import struct
import threading
import weakref
from typing import ClassVar

_TABLE: "weakref.WeakValueDictionary[tuple, Node]" = weakref.WeakValueDictionary()
_LOCK = threading.Lock()


def _key(v):
    """A hashable key for a field value: nodes by identity, floats by their bits (so that
    0.0 and -0.0, or two NaNs, stay apart), bools apart from ints, tuples element-wise."""
    t = type(v)
    if t is int or t is str or v is None or isinstance(v, Node):
        return v
    if t is tuple:
        return ("t",) + tuple(map(_key, v))
    if t is bool:
        return ("b", v)
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return ("f", struct.pack("<d", float(v)))
    return v  # dtypes, buffers: hashable values of their own


class Node:
    __slots__ = ("__weakref__", "_digest")
    FIELDS: ClassVar[tuple] = ()
    DEFAULTS: ClassVar[dict] = {}

    def __new__(cls, *args, **kwargs):
        fields = cls.FIELDS
        if len(args) > len(fields):
            raise TypeError(f"{cls.__name__} takes {len(fields)} fields, got {len(args)}")
        vals = list(args)
        for f in fields[len(args):]:
            if f in kwargs:
                vals.append(kwargs.pop(f))
            elif f in cls.DEFAULTS:
                vals.append(cls.DEFAULTS[f])
            else:
                raise TypeError(f"{cls.__name__} needs '{f}'")
        if kwargs:
            raise TypeError(f"{cls.__name__} has no field {', '.join(kwargs)}")
        key = (cls,) + tuple(_key(v) for v in vals)
        with _LOCK:
            node = _TABLE.get(key)
            if node is None:
                node = object.__new__(cls)
                for f, v in zip(fields, vals):
                    object.__setattr__(node, f, v)
                object.__setattr__(node, "_digest", None)
                _TABLE[key] = node
        return node

    def __init__(self, *args, **kwargs):
        pass  # everything happened in __new__

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self):
        return (type(self), tuple(getattr(self, f) for f in self.FIELDS))

    @property
    def digest(self) -> str:
        """A structural fingerprint, stable across processes (hex)."""
        if self._digest is None:
            _compute_digests(self)
        return self._digest

    def __repr__(self) -> str:
        return f"{type(self).__name__}#{self.digest[:12]}"


def _children(v, out: list) -> None:
    if isinstance(v, Node):
        out.append(v)
    elif isinstance(v, tuple):
        for x in v:
            _children(x, out)  # tuples in fields are shallow (index terms)


def _describe(v) -> str:
    if isinstance(v, Node):
        return v._digest
    if isinstance(v, float):
        return "f" + struct.pack("<d", v).hex()
    if isinstance(v, tuple):
        return "(" + ",".join(_describe(x) for x in v) + ")"
    return f"{type(v).__name__}:{v!r}"


def _compute_digests(root: Node) -> None:
    stack = [(root, False)]
    while stack:
        node, ready = stack.pop()
        if node._digest is not None:
            continue
        kids: list = []
        for f in node.FIELDS:
            _children(getattr(node, f), kids)
        if not ready and any(k._digest is None for k in kids):
            stack.append((node, True))
            stack.extend((k, False) for k in kids if k._digest is None)
            continue
        text = type(node).__name__ + "|" + "|".join(_describe(getattr(node, f)) for f in node.FIELDS)
        object.__setattr__(node, "_digest", hashlib.blake2b(text.encode(), digest_size=12).hexdigest())
