"""fastconv: C++/CUDA-accelerated PyTorch ops for classic CNNs.

    import fastconv
    y = fastconv.max_pool2d(x, 3, 2)          # same signature and result as F.max_pool2d
    pool = fastconv.nn.MaxPool2d(3, 2)        # drop-in for torch.nn.MaxPool2d

The ops are also registered with the PyTorch dispatcher as ``torch.ops.fastconv.*`` (with
autograd and fake kernels, so they work under ``torch.compile``).
"""
import os as _os

import torch as _torch  # noqa: F401  (loads libtorch before our extension)

try:
    from . import _C  # registers torch.ops.fastconv.* (the schema table lives in the .so)
except ImportError as _e:  # pragma: no cover - only without a build
    raise ImportError(
        "fastconv's native extension (fastconv._C) is not built or does not match this torch: "
        f"{_e}. Build it with `pip install --no-build-isolation -e .` (or scripts/bootstrap.sh) "
        "in the source tree.") from _e

__version__ = _C.build_info()["version"]


def _apply_capability_env():
    # The C++ side falls back silently on a bad value; a user who set the variable wants to
    # know it did nothing, so validate it here, once, loudly.
    name = _os.environ.get("FASTCONV_CPU_CAPABILITY", "")
    if name:
        _C.set_cpu_capability(name)
    algo = _os.environ.get("FASTCONV_CONV_ALGO", "")
    if algo:
        _C.set_conv_algo(algo)


_apply_capability_env()

from . import ops  # noqa: E402
from . import nn  # noqa: E402
from . import models  # noqa: E402
from .conversion import convert  # noqa: E402
from . import cam, transfer  # noqa: E402
from .modelsummary import summary  # noqa: E402
from .ops import *  # noqa: E402,F401,F403
from .ops import __all__ as _ops_all  # noqa: E402

build_info = _C.build_info
cpu_capability = _C.cpu_capability
set_cpu_capability = _C.set_cpu_capability


def supported_cpu_capabilities():
    """SIMD paths this CPU can run, best first (e.g. ``['avx512', 'avx2', 'default']``)."""
    order = ["avx512", "avx2", "default"]
    best = _C.detected_cpu_capability()
    return order[order.index(best):]


__all__ = list(_ops_all) + ["nn", "ops", "models", "convert", "cam", "transfer", "summary", "build_info", "cpu_capability", "set_cpu_capability",
                            "supported_cpu_capabilities"]
