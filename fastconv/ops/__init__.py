"""Public functional API. Each op family lives in its own module with its fake kernel and
autograd registration next to it."""
from .bn import BatchNormActFunction, batch_norm_act  # noqa: F401
from .conv import Conv2dFunction, conv2d, conv2d_fused, conv_algo, conv_padding, set_conv_algo  # noqa: F401
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
from .se import ChannelScaleFunction, SqueezeExcitationFunction, channel_scale, squeeze_excitation  # noqa: F401

__all__ = [
    "conv2d",
    "conv2d_fused",
    "conv_padding",
    "Conv2dFunction",
    "set_conv_algo",
    "conv_algo",
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "global_avg_pool2d",
    "MaxPool2dFunction",
    "AvgPool2dFunction",
    "AdaptiveAvgPool2dFunction",
    "local_response_norm",
    "LocalResponseNormFunction",
    "channel_scale",
    "squeeze_excitation",
    "ChannelScaleFunction",
    "SqueezeExcitationFunction",
    "batch_norm_act",
    "BatchNormActFunction",
]
