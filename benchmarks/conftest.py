"""pytest-benchmark set-up for the fastconv benchmark cases.

Run with ``pytest benchmarks/ --benchmark-only``. The cases, inputs and the
per-call work (no_grad forward, or forward+backward with grads reset) are the
same objects the ``python -m fastconv bench`` command uses, so both report
the same thing; this flavour adds pytest-benchmark's statistics, storage and
``--benchmark-compare``.

Environment:
  FASTCONV_BENCH_THREADS=1,2   torch thread counts to parametrise over.
  FASTCONV_BENCH=1             run (as plain tests) even without --benchmark-only.
"""

import os

import pytest

from fastconv.bench.alloc import neutralise_allocator

# Before any test creates a tensor: only later allocations are affected.
# Same glibc set-up as the CLI (see fastconv/bench/alloc.py for why).
neutralise_allocator()


def pytest_collection_modifyitems(config, items):
    # The cases use full-size shapes (up to ~100 MB inputs). Never let a plain
    # `pytest` run (which would execute each once without timing) pay for that.
    if config.getoption("benchmark_only", default=False) or os.environ.get("FASTCONV_BENCH") == "1":
        return
    skip = pytest.mark.skip(reason="benchmarks run with --benchmark-only (or FASTCONV_BENCH=1)")
    for item in items:
        if "benchmark" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)
