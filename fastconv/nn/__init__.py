"""Drop-in modules: same constructor arguments, defaults, ``repr`` and state_dict keys as
their ``torch.nn`` namesakes (they subclass them), running fastconv kernels."""
from .conv import Conv2d  # noqa: F401
from .fused import Bottleneck, Conv1x1Group, ConvBNReLU, fold_conv_bn  # noqa: F401
from .lrn import LocalResponseNorm  # noqa: F401
from .pool import AdaptiveAvgPool2d, AvgPool2d, GlobalAvgPool2d, MaxPool2d  # noqa: F401
from .se import SqueezeExcitation  # noqa: F401

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "GlobalAvgPool2d", "LocalResponseNorm",
           "SqueezeExcitation", "ConvBNReLU", "Bottleneck", "Conv1x1Group", "fold_conv_bn"]
