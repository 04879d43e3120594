#!/usr/bin/env bash
# Runs a command (a Python interpreter) on the ASan + UBSan build of fastconv in build-asan/lib
# (`make sanitize-ops` builds it): libasan preloaded so it owns malloc from the first
# allocation, the sanitized package first on the path, and any sanitizer report fatal.
set -euo pipefail
cd "$(dirname "$0")/.."
lib="$PWD/build-asan/lib"
ls "$lib"/fastconv/_C*.so > /dev/null
asan=$(${CXX:-g++} -print-file-name=libasan.so)
ubsan=$(${CXX:-g++} -print-file-name=libubsan.so)
export LD_PRELOAD="$asan $ubsan${LD_PRELOAD:+ $LD_PRELOAD}"
# detect_leaks=0: CPython and torch keep allocations alive until exit by design.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:print_summary=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export PYTHONPATH="$lib${PYTHONPATH:+:$PYTHONPATH}"
# The sanitized package must be the one imported (not the in-place build via the cwd or an
# editable install): -P keeps the cwd off sys.path, and this check makes sure.
"$1" -P -c "import fastconv, sys; assert fastconv.__file__.startswith('$lib'), fastconv.__file__; \
print('sanitized fastconv:', fastconv.__file__, file=sys.stderr)"
first=$1
shift
exec "$first" -P "$@"
