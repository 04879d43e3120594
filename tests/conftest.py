"""Shared fixtures: every op test runs on every SIMD path this CPU supports."""
import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import fastconv

# Randomised grids: bounded for CI time, with FASTCONV_FUZZ_EXAMPLES raising the count for
# long runs (the hardening issue's long mode).
settings.register_profile(
    "fastconv",
    max_examples=int(os.environ.get("FASTCONV_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=os.environ.get("CI") == "true",
)
settings.load_profile("fastconv")

CAPABILITIES = fastconv.supported_cpu_capabilities()


@pytest.fixture(params=CAPABILITIES)
def cpu_capability(request):
    """Runs the test body with the given SIMD path forced, then restores the previous one."""
    previous = fastconv.cpu_capability()
    fastconv.set_cpu_capability(request.param)
    yield request.param
    fastconv.set_cpu_capability(previous)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
