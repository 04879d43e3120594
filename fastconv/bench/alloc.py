"""Neutralise glibc allocator effects before benchmarking.

Why this exists
---------------
Benchmark tensors here are often larger than 32 MB (VGG's first pooling input
is ~100 MB). By default glibc serves such requests with a fresh ``mmap`` and
returns them to the kernel with ``munmap`` on free. Every timed call then
page-faults its whole output (and, for backward, its whole grad_input) back in,
which costs as much as the operator itself and hides real kernel differences.
Both sides (fastconv and torch) suffer, but not equally: the side that
allocates more or larger temporaries is penalised more.

The obvious fix, raising ``M_MMAP_THRESHOLD``, does not work: glibc silently
rejects thresholds above ``HEAP_MAX_SIZE / 2`` (32 MB on 64-bit), so tensors
over 32 MB would still be mmapped. Instead we:

* set ``M_MMAP_MAX`` (param -4) to 0, so the main arena never uses mmap for
  allocations and serves them from the brk heap, and
* set ``M_TRIM_THRESHOLD`` (param -1) very high, so freed memory at the top of
  the heap is kept rather than returned to the kernel and re-faulted.

The equivalent environment variables, read by glibc at process start, are
``MALLOC_MMAP_MAX_=0`` and ``MALLOC_TRIM_THRESHOLD_=<bytes>``. (Setting
``MALLOC_MMAP_THRESHOLD_`` above 32 MB is ignored by glibc for the reason
above.) If the user already exported any of them we honour their value and do
not override it; we also export our values into ``os.environ`` so child
processes (e.g. a benchmark re-run in a subprocess) get the same behaviour.

Limitation: ``M_MMAP_MAX`` only governs the main arena; allocations made on
non-main threads may still be mmapped. Torch allocates operator outputs and
runs CPU autograd on the calling (main) thread, so this covers the benchmark.

On non-glibc platforms (macOS, musl) this is a no-op that reports why.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from typing import Any, Dict, Optional

# mallopt() parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4

# mallopt's value argument is a C int, so this is the largest trim threshold we
# can set through it (2 GiB - 1). That is far above what any single benchmark
# frees at once. Users needing more can export MALLOC_TRIM_THRESHOLD_, which
# glibc parses as size_t.
TRIM_THRESHOLD_BYTES = 2**31 - 1

ENV_MMAP_MAX = "MALLOC_MMAP_MAX_"
ENV_TRIM = "MALLOC_TRIM_THRESHOLD_"
ENV_MMAP_THRESHOLD = "MALLOC_MMAP_THRESHOLD_"

_state: Optional[Dict[str, Any]] = None


def _load_glibc() -> Optional[Any]:
    """Return a ctypes handle to glibc, or None when not running on glibc."""
    libc_name, _version = platform.libc_ver()
    if libc_name != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def neutralise_allocator(libc: Any = None, environ: Optional[Dict[str, str]] = None,
                         force: bool = False) -> Dict[str, Any]:
    """Configure glibc malloc so large tensors are not re-faulted each call.

    Must run before the first benchmark tensor is created: it affects only
    allocations made after it. Idempotent; the first call's report is cached
    and returned by later calls (unless ``force``).

    Args:
        libc: object with a ``mallopt(param, value)`` method; tests inject a
            fake. Defaults to the real glibc (or none when not on glibc).
        environ: mapping used for the environment variables (default
            ``os.environ``); injectable for tests.
        force: re-apply even if already applied in this process.

    Returns:
        A JSON-serialisable dict describing what was done, recorded in the
        benchmark's JSON output.
    """
    global _state
    if _state is not None and not force and libc is None:
        return _state
    env = os.environ if environ is None else environ
    lib = _load_glibc() if libc is None else libc
    report: Dict[str, Any] = {"applied": False, "settings": {}, "note": ""}
    if lib is None:
        report["note"] = "not glibc: allocator left as is"
        if libc is None:
            _state = report
        return report

    # Honour values the user exported: glibc has already applied them at
    # start-up, and overriding them here would be surprising.
    if ENV_MMAP_MAX in env:
        report["settings"]["M_MMAP_MAX"] = f"env {ENV_MMAP_MAX}={env[ENV_MMAP_MAX]}"
    else:
        ok = lib.mallopt(M_MMAP_MAX, 0)
        report["settings"]["M_MMAP_MAX"] = 0 if ok else "mallopt failed"
        if ok:
            env[ENV_MMAP_MAX] = "0"
    if ENV_TRIM in env:
        report["settings"]["M_TRIM_THRESHOLD"] = f"env {ENV_TRIM}={env[ENV_TRIM]}"
    else:
        ok = lib.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
        report["settings"]["M_TRIM_THRESHOLD"] = TRIM_THRESHOLD_BYTES if ok else "mallopt failed"
        if ok:
            env[ENV_TRIM] = str(TRIM_THRESHOLD_BYTES)
    if ENV_MMAP_THRESHOLD in env:
        # Recorded only: values above 32 MB are ignored by glibc, which is why
        # M_MMAP_MAX=0 is used instead.
        report["settings"]["M_MMAP_THRESHOLD"] = f"env {ENV_MMAP_THRESHOLD}={env[ENV_MMAP_THRESHOLD]}"
    report["applied"] = all(v != "mallopt failed" for v in report["settings"].values())
    report["note"] = "glibc: mmap disabled for main arena, trimming effectively off"
    if libc is None:
        _state = report
    return report


def allocator_state() -> Dict[str, Any]:
    """Return what :func:`neutralise_allocator` did, or a 'not applied' note."""
    if _state is None:
        return {"applied": False, "settings": {}, "note": "not requested (--no-mallopt)"}
    return _state
