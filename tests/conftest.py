"""Shared pytest setup: hypothesis profiles and a few helpers used by several test files.

Profiles (pick one with HYPOTHESIS_PROFILE=name; "default" when unset):
- default: hypothesis' usual random search, no deadline (tracing and parsing small
  programs takes milliseconds, and a loaded CI box should not turn that into flakes);
- ci: derandomized (the same examples on every run, so a red CI build is reproducible),
  no deadline, a moderate number of examples.
"""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import HealthCheck, settings

# tests/ is not a package: make `import strategies` work from every test file, and
# `import workloads` (the benchmark workloads live in benchmarks/).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "benchmarks"))

settings.register_profile(
    "default", deadline=None, max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=60, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    """Compiled code (native libraries, emulator builds, cubins) goes to a fresh cache for
    the module, a CI machine's state: `pytestmark = pytest.mark.usefixtures("private_cache")`."""
    old = os.environ.get("IRGRAD_CACHE_DIR")
    os.environ["IRGRAD_CACHE_DIR"] = str(tmp_path_factory.mktemp("irgrad-cache"))
    yield
    if old is None:
        os.environ.pop("IRGRAD_CACHE_DIR", None)
    else:
        os.environ["IRGRAD_CACHE_DIR"] = old
