"""Imports every pass module so that each registers itself with the pass manager."""

from . import manager  # noqa: F401
from . import cleanup, expand, fold, forward_ad, fuse, memory, reverse_ad, simplify  # noqa: F401,E402
