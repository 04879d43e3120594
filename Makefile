# Developer shortcuts. The Python package is built by setup.py (install, wheel); the C++
# sources can also be built with CMake (cmake: the ops library plus the C++ kernel tests).
#
#   make install      editable install against the torch already installed (no isolated build)
#   make test         Python test suite
#   make cmake        CMake configure + build + ctest into $(BUILD_DIR)
#   make sanitize     the C++ kernel tests under AddressSanitizer + UBSan (build-sanitize/)
#   make fuzz         differential fuzzing, FUZZ_EXAMPLES (10,000) cases per op against torch
#   make sanitize-ops the extension built with ASan + UBSan (build-asan/), the op tests run on it
#   make hardening    long mode: > 2^31 elements, every model compiled / exported, 2,000-step leak check
#   make cuda-check   nvcc on every csrc/ops/*/*_cuda.cu with the wheel's flags (a spill fails)
#   make cuda-wheel   the CUDA wheel, built in a torch 2.14.1 (CUDA 13) venv; see README
#   make bench        full benchmark -> bench.json, bench.png
#   make bench-quick  quick benchmark (about a minute on 2 cores) -> bench.json, bench.png
#   make wheel        wheel into dist/
#   make clean        remove build trees (not the in-place fastconv/_C*.so of `make install`)
#
# Variables: PYTHON (interpreter with torch), BUILD_DIR, BUILD_TYPE, JOBS (parallel compile jobs
# for `make cmake`; setup.py's own parallelism is MAX_JOBS, e.g. `MAX_JOBS=1 make install`).

PYTHON ?= python3
BUILD_DIR ?= build-cmake
BUILD_TYPE ?= Release
# One compile job by default: the machine is shared. Raise it (JOBS=4) when it is yours.
JOBS ?= 1

.PHONY: help install test fuzz sanitize-ops hardening cmake sanitize cuda-check cuda-wheel bench bench-quick wheel clean

help:
	@sed -n '4,16s/^# *//p' $(firstword $(MAKEFILE_LIST))

install:
	$(PYTHON) -m pip install --no-build-isolation -e .

test:
	$(PYTHON) -m pytest -q tests

# The long mode of tests/test_fuzz.py: fresh random draws (not CI's derandomised ones), and
# hypothesis' statistics show how many cases each op ran and passed.
FUZZ_EXAMPLES ?= 10000
fuzz:
	CI= FASTCONV_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTHON) -m pytest -q tests/test_fuzz.py \
	    --hypothesis-show-statistics

# The long forms of tests/test_large.py (marked slow: skipped without FASTCONV_LONG=1),
# test_ecosystem.py (all 25 models) and test_robustness.py (2,000 iterations); docs/hardening.md.
hardening:
	FASTCONV_LONG=1 $(PYTHON) -m pytest -q -rA tests/test_large.py tests/test_ecosystem.py tests/test_robustness.py

# The Python extension itself under AddressSanitizer + UBSan: built by setup.py into build-asan/
# (with a copy of the Python package, so the in-place build is untouched), then the op tests run
# in an interpreter with libasan preloaded. Any report aborts the run (a failing exit status).
# Leak detection is off: the interpreter itself keeps allocations until exit.
SANITIZE_TESTS ?= tests/test_fuzz.py tests/test_pool.py tests/test_lrn.py tests/test_se.py tests/test_conv.py \
	tests/test_fused.py tests/test_robustness.py
SANITIZE_PYTEST ?= -q -x
sanitize-ops:
	rm -rf build-asan/lib && mkdir -p build-asan/lib && cp -r fastconv build-asan/lib/
	rm -f build-asan/lib/fastconv/*.so && rm -rf build-asan/lib/fastconv/*/__pycache__ build-asan/lib/fastconv/__pycache__
	FASTCONV_SANITIZE=1 FASTCONV_SIMT=0 FASTCONV_CUDA=0 $(PYTHON) setup.py -q build_ext \
	    --build-lib build-asan/lib --build-temp build-asan/tmp
	scripts/run_sanitized.sh $(PYTHON) -m pytest $(SANITIZE_PYTEST) -p no:cacheprovider $(SANITIZE_TESTS)

cmake:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	    -DCMAKE_PREFIX_PATH="$$($(PYTHON) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build $(BUILD_DIR) -j$(JOBS)
	ctest --test-dir $(BUILD_DIR) --output-on-failure

sanitize:
	cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=Release -DFASTCONV_SANITIZE=ON \
	    -DCMAKE_PREFIX_PATH="$$($(PYTHON) -c 'import torch; print(torch.utils.cmake_prefix_path)')"
	cmake --build build-sanitize -j$(JOBS) --target fastconv_cpp_tests fastconv_simt_tests
	ctest --test-dir build-sanitize --output-on-failure

# Every kernel file alone, no torch headers (a second each), for each architecture of the wheel.
NVCC ?= nvcc
CUDA_ARCHS ?= 80 86 90
NVCC_FLAGS = -std=c++17 -O3 -Icsrc $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
	-Xptxas=--warn-on-spills,--warn-on-local-memory-usage,--warning-as-error -Werror all-warnings
cuda-check:
	@mkdir -p build-cuda-check
	@for f in csrc/ops/*/*_cuda.cu; do \
	  echo "nvcc $$f"; \
	  $(NVCC) $(NVCC_FLAGS) -c -o build-cuda-check/$$(basename $$f .cu).o $$f || exit 1; \
	done

cuda-wheel:
	scripts/build_cuda_wheel.sh

bench:
	$(PYTHON) -m fastconv bench --json bench.json --plot bench.png

bench-quick:
	$(PYTHON) -m fastconv bench --quick --json bench.json --plot bench.png

wheel:
	$(PYTHON) -m pip wheel --no-build-isolation --no-deps -w dist .

clean:
	rm -rf $(BUILD_DIR) build-sanitize build-asan build-cuda-check build dist *.egg-info .pytest_cache
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
