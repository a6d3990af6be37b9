"""What the CUDA tests can run here, shared by the test files that use the CUDA backend
without a GPU: the C++ emulator (needs g++) and NVRTC compile checks (the `nvrtc` extra)."""

from __future__ import annotations

import pytest

from irgrad.backends.cuda import runtime
from irgrad.backends.cuda.emulate import compiler as emu_compiler
from irgrad.errors import BackendUnavailable

try:
    emu_compiler()
    HAVE_CXX = True
except BackendUnavailable:
    HAVE_CXX = False
needs_cxx = pytest.mark.skipif(not HAVE_CXX, reason="the CUDA emulator needs g++")
HAVE_NVRTC = runtime.nvrtc_module() is not None
needs_nvrtc = pytest.mark.skipif(not HAVE_NVRTC, reason="NVRTC not installed (pip install 'irgrad[nvrtc]')")
ARCHS = ("sm_80", "sm_90")
SMEM_LIMIT = 48 * 1024  # static shared memory per block
