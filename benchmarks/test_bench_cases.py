"""Every case of ``fastconv.bench.cases`` (pooling, LRN, conv2d) as pytest-benchmark tests.

Each case runs once per thread count for fastconv ("ours") and torch, in the
same benchmark group, so pytest-benchmark's table shows them side by side.
Select with ``-k``, e.g. ``-k "vgg and channels_last and ours"`` or ``-k "conv and t1"``.
"""

import os

import pytest
import torch

from fastconv.bench.cases import CASES
from fastconv.bench.harness import build_runner

# Thread counts, like the CLI's --threads (conftest.py documents the variable).
THREADS = [int(t) for t in os.environ.get("FASTCONV_BENCH_THREADS", "1,2").split(",") if t.strip()]
PARAMS = [(case, t, impl) for case in CASES for t in THREADS for impl in ("ours", "torch")]
IDS = [f"{case.name}-t{t}-{impl}" for case, t, impl in PARAMS]

# Parameters are ordered case-major, so keeping only the latest case's inputs
# lets ours and torch (and every thread count) share one input tensor without
# holding every case's ~100 MB inputs at once.
_inputs_cache = {}


def case_inputs(case):
    if case.name not in _inputs_cache:
        _inputs_cache.clear()
        _inputs_cache[case.name] = case.make_inputs()
    return _inputs_cache[case.name]


@pytest.fixture
def num_threads(request):
    """Set torch's intra-op thread count for one test, then restore it."""
    saved = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(saved)


@pytest.mark.parametrize("case,num_threads,impl", PARAMS, ids=IDS, indirect=["num_threads"])
def test_case(benchmark, case, num_threads, impl):
    try:
        fn = case.make_ours() if impl == "ours" else case.make_torch()
    except RuntimeError as exc:  # extension not built
        pytest.skip(str(exc))
    runner = build_runner(case, fn, case_inputs(case))
    runner.run()  # first call (lazy init, page faults) stays out of the stats
    benchmark.group = f"{case.name} t={num_threads}"
    benchmark.extra_info.update(case=case.name, impl=impl, threads=num_threads,
                                nbytes=case.nbytes, flops=case.flops, metric=case.metric)
    benchmark(runner.run)
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    if stats is not None and stats.median > 0:  # None when --benchmark-disable
        benchmark.extra_info["gbps_median"] = case.nbytes / stats.median / 1e9
        benchmark.extra_info["gflops_median"] = case.flops / stats.median / 1e9
