#!/usr/bin/env bash
# Builds fastconv's CUDA wheel on this machine (no GPU needed), imports it, and prints every
# kernel's registers, shared and local memory.
#
#   scripts/build_cuda_wheel.sh            (or: make cuda-wheel)
#
# Environment:
#   FASTCONV_CUDA_VENV   the build venv (default .venv-cuda); created with torch==2.14.1, the CUDA
#                        13.0 build (about 5.5 GB, installed from the local disk where pip has it)
#   CUDA_HOME            the toolkit (default /usr/local/cuda; nvcc 13.0)
#   TORCH_CUDA_ARCH_LIST architectures (default "8.0;8.6;9.0", setup.py's default)
#   MAX_JOBS             parallel compile jobs (default 2)
#   FASTCONV_CUDA_REUSE=1  skip the build when dist/ already holds a wheel (re-run the checks)
# The wheel lands in dist/. ptxas runs with --warn-on-spills,--warn-on-local-memory-usage and
# --warning-as-error, so a kernel that spills fails this build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FASTCONV_CUDA_VENV:-.venv-cuda}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export MAX_JOBS=${MAX_JOBS:-2}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[cuda-wheel] creating $VENV with torch 2.14.1 (CUDA 13.0 build)" >&2
  python3 -m venv "$VENV"
fi
PY="$(cd "$VENV" && pwd)/bin/python"
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.__version__.startswith("2.14.1") and torch.version.cuda else 1)' 2>/dev/null; then
  "$PY" -m pip install -q torch==2.14.1
fi
"$PY" -m pip install -q setuptools wheel ninja numpy 'nvidia-cuda-cuobjdump>=13'

# Build from a copy of the tree: the CUDA build's objects (another torch, nvcc) must not mix
# with the ones of the CPU development install in ./build.
ROOT=$(pwd)
SRC=$(mktemp -d /tmp/fastconv-cuda-src.XXXXXX)
trap 'rm -rf "$SRC"' EXIT
tar --exclude=./build --exclude=./build-cmake --exclude=./build-sanitize --exclude=./build-cuda-check \
    --exclude=./.git --exclude="./$VENV" --exclude=./dist --exclude='*.so' -cf - . | tar -xf - -C "$SRC"
if [ "${FASTCONV_CUDA_REUSE:-0}" != 1 ] || ! ls dist/fastconv-*.whl >/dev/null 2>&1; then
  rm -f dist/fastconv-*.whl
  mkdir -p dist
  (cd "$SRC" && FASTCONV_CUDA=1 FASTCONV_SIMT=0 "$PY" -m pip wheel --no-build-isolation --no-deps -w "$ROOT/dist" .) \
    2>&1 | tee "$ROOT/dist/cuda-wheel-build.log"
fi
WHEEL=$(ls dist/fastconv-*.whl | head -n1)
echo "[cuda-wheel] built $WHEEL ($(du -h "$WHEEL" | cut -f1))" >&2

"$PY" -m pip install -q --force-reinstall --no-deps "$WHEEL"
# Import from outside the source tree so the installed wheel, not ./fastconv, is what loads.
(cd /tmp && "$PY" - <<'PY'
import torch, fastconv
info = fastconv.build_info()
print("imported", fastconv.__file__)
print("build_info:", info)
assert info["cuda"], "the wheel was built without its CUDA kernels"
print("torch", torch.__version__, "cuda", torch.version.cuda, "| GPU available:", torch.cuda.is_available())
ops = sorted({s.name.split("::", 1)[1] for s in torch._C._jit_get_all_schemas() if s.name.startswith("fastconv::")})
missing = [n for n in ops if not torch._C._dispatch_has_kernel_for_dispatch_key(f"fastconv::{n}", "CUDA")]
print(f"{len(ops) - len(missing)} of {len(ops)} ops have a CUDA kernel registered", "missing: " + ", ".join(missing) if missing else "")
assert not missing
PY
)
SO=$(cd /tmp && "$PY" -c 'import fastconv._C as c; print(c.__file__)')
# nvidia-cuda-cuobjdump puts the tool under site-packages/nvidia/cu13/bin.
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
CUOBJDUMP=$(ls "$SITE"/nvidia/cu*/bin/cuobjdump 2>/dev/null | head -n1)
[ -x "$CUOBJDUMP" ] || { echo "cuobjdump not found under $SITE/nvidia (pip install nvidia-cuda-cuobjdump)" >&2; exit 1; }
echo "[cuda-wheel] per-kernel resources ($CUOBJDUMP --dump-resource-usage, demangled):" >&2
"$CUOBJDUMP" --dump-resource-usage "$SO" | c++filt | "$PY" scripts/cuda_resources.py
