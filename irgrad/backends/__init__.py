"""Backends as plug-ins: numpy (the reference interpreter), cpu (LLVM), cuda. Each module
registers its `Backend` (base.py); this import list is the one place that names them."""

from . import cpu, cuda, numpy  # noqa: F401  (they register)
from .base import Backend, backend_names, emit_kinds, get_backend, register_backend  # noqa: F401
