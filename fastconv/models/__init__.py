"""Reference architectures on fastconv ops.

Every builder takes ``weights=`` (None, a local state_dict path or a state_dict; nothing is
ever downloaded) and the keyword arguments of its torchvision namesake; module names and
state_dict keys are torchvision's wherever torchvision has the model, so its state_dicts load
with ``strict=True``::

    model = fastconv.models.resnet50(num_classes=10)
    model = fastconv.models.resnet50(weights="resnet50-0676ba61.pth")   # a local file

``get_model(name, **kwargs)`` builds by name; ``list_models()`` lists the names.
"""
from typing import Callable, Dict, List

import torch

from .alexnet import AlexNet, alexnet
from .densenet import DenseNet, densenet121, densenet161, densenet169, densenet201
from .googlenet import GoogLeNet, GoogLeNetOutputs, Inception, InceptionAux, googlenet
from .lenet import LeNet5, lenet5
from .resnet import (BasicBlock, ResNet, SEBottleneck, resnet18, resnet34, resnet50, resnet101, resnet152,
                     resnext50_32x4d, se_resnet50, se_resnet101, wide_resnet50_2)
from .vgg import VGG, vgg11, vgg11_bn, vgg11_lrn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn

_BUILDERS: Dict[str, Callable[..., torch.nn.Module]] = {f.__name__: f for f in (
    lenet5, alexnet, vgg11, vgg11_bn, vgg11_lrn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn, googlenet,
    resnet18, resnet34, resnet50, resnet101, resnet152, resnext50_32x4d, wide_resnet50_2, densenet121, densenet161,
    densenet169, densenet201, se_resnet50, se_resnet101)}


def list_models() -> List[str]:
    """Names :func:`get_model` accepts."""
    return sorted(_BUILDERS)


def get_model(name: str, **kwargs) -> torch.nn.Module:
    """``get_model("resnet50", num_classes=10)`` is ``resnet50(num_classes=10)``."""
    if name not in _BUILDERS:
        raise ValueError(f"get_model: name must be one of {list_models()}, got {name!r}")
    return _BUILDERS[name](**kwargs)


__all__ = ["list_models", "get_model", "AlexNet", "DenseNet", "GoogLeNet", "GoogLeNetOutputs", "Inception",
           "InceptionAux", "LeNet5", "ResNet", "BasicBlock", "SEBottleneck", "VGG"] + list(_BUILDERS)
