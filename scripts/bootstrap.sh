#!/usr/bin/env bash
# Sets up a fresh machine for fastconv: the CPU torch build, build and test tools, then
# builds and installs the extension in place. Safe to re-run (pip skips what is there).
#
#   FASTCONV_TORCH   torch requirement (default torch==2.13.0, the local CPU wheel; a CUDA
#                    build such as torch==2.14.1 works too and then CUDA kernels are built).
#   PYTHON           interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_REQ=${FASTCONV_TORCH:-torch==2.13.0}

echo "[bootstrap] installing $TORCH_REQ and tools" >&2
$PY -m pip install -q --disable-pip-version-check "$TORCH_REQ" ninja numpy \
    pytest hypothesis pytest-benchmark expecttest tqdm matplotlib scikit-learn scikit-image
echo "[bootstrap] building fastconv (pip install --no-build-isolation -e .)" >&2
# --no-build-isolation: an isolated build environment would download a multi-GB CUDA torch.
$PY -m pip install -q --disable-pip-version-check --no-build-isolation -e .
$PY -c "import fastconv; print('[bootstrap] fastconv', fastconv.__version__, 'SIMD path:', fastconv.cpu_capability())" >&2
