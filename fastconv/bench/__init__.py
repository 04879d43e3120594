"""Benchmark harness for fastconv: ``python -m fastconv bench``.

Modules:

* :mod:`fastconv.bench.alloc`   -- glibc ``mallopt`` set-up (call first).
* :mod:`fastconv.bench.cases`   -- the declarative case table (append here).
* :mod:`fastconv.bench.harness` -- probes, runners, interleaved timing.
* :mod:`fastconv.bench.report`  -- tables, JSON, ``--compare``, plot.
* :mod:`fastconv.bench.cli`     -- argument parsing and the ``main`` entry.

This package imports nothing heavy at import time, so ``fastconv.__main__``
can configure the allocator before any tensor exists.
"""

__all__ = ["main"]


def main(argv=None) -> int:
    """Run the ``bench`` command with ``argv`` (without the ``bench`` word)."""
    from .cli import main as _main

    return _main(argv)
