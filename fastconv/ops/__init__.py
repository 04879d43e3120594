"""Public functional API. Each op family lives in its own module with its fake kernel and
autograd registration next to it."""
from .lrn import LocalResponseNormFunction, local_response_norm  # noqa: F401
from .pool import (  # noqa: F401
    AdaptiveAvgPool2dFunction,
    AvgPool2dFunction,
    MaxPool2dFunction,
    adaptive_avg_pool2d,
    avg_pool2d,
    global_avg_pool2d,
    max_pool2d,
)

__all__ = [
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "global_avg_pool2d",
    "MaxPool2dFunction",
    "AvgPool2dFunction",
    "AdaptiveAvgPool2dFunction",
    "local_response_norm",
    "LocalResponseNormFunction",
]
