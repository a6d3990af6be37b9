"""Imports every pass module so that each registers itself with the pass manager."""

from . import manager  # noqa: F401
from . import forward_ad, reverse_ad  # noqa: F401,E402
