"""Shared fixtures: every op test runs on every SIMD path this CPU supports."""
import contextlib
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

# Long mode (`make hardening`): FASTCONV_LONG=1 runs the tests marked slow (more than 2^31
# elements, every model through compile / export); without it they are skipped.
LONG = os.environ.get("FASTCONV_LONG") == "1"


def pytest_collection_modifyitems(config, items):
    if LONG:
        return
    skip = pytest.mark.skip(reason="long mode only: set FASTCONV_LONG=1 (make hardening)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


CONV_ALGOS = ["auto", "direct", "gemm1x1", "winograd", "winograd4", "nchw"]


@contextlib.contextmanager
def forced(get, set_, value):
    """A global switch (SIMD path, conv algorithm) set for a block, then restored."""
    previous = get()
    set_(value)
    try:
        yield value
    finally:
        set_(previous)


@pytest.fixture(params=CAPABILITIES)
def cpu_capability(request):
    """Runs the test body with the given SIMD path forced."""
    with forced(fastconv.cpu_capability, fastconv.set_cpu_capability, request.param) as value:
        yield value


@pytest.fixture(params=CONV_ALGOS)
def conv_algo(request):
    """Runs the test body with the given conv2d algorithm forced."""
    with forced(fastconv.conv_algo, fastconv.set_conv_algo, request.param) as value:
        yield value


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
