"""VGG (Simonyan & Zisserman, 2015) on fastconv ops, torchvision's layout and keys, plus
configuration A-LRN."""
from typing import List, Union

import torch

from .. import nn as fnn
from ._common import FusedSequential, check_input, check_kwargs, kaiming_init, load_weights

CFGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_layers(cfg: List[Union[int, str]], batch_norm: bool = False) -> FusedSequential:
    """torchvision's ``make_layers``: 3x3 conv (pad 1) [-> BatchNorm] -> ReLU per int, 2x2
    max pool per "M"; "LRN" adds a Local Response Normalization (size 5, the AlexNet constants,
    as in the paper's A-LRN) after the preceding ReLU."""
    layers: List[torch.nn.Module] = []
    in_channels = 3
    for v in cfg:
        if v == "M":
            layers.append(fnn.MaxPool2d(2, 2))
        elif v == "LRN":
            layers.append(fnn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0))
        else:
            layers.append(fnn.Conv2d(in_channels, v, 3, padding=1))
            if batch_norm:
                layers.append(torch.nn.BatchNorm2d(v))
            layers.append(torch.nn.ReLU(inplace=True))
            in_channels = v
    return FusedSequential(*layers)


class VGG(torch.nn.Module):
    """torchvision's ``VGG(features, num_classes=1000, init_weights=True, dropout=0.5)``.

    input ``(N, 3, H, W)`` (any H, W >= 32; the adaptive 7x7 pool feeds the classifier);
    output ``(N, num_classes)``. Keys: ``features.<i>.*``, ``classifier.{0,3,6}.*``.
    """

    def __init__(self, features: torch.nn.Module, num_classes: int = 1000, init_weights: bool = True,
                 dropout: float = 0.5):
        super().__init__()
        self.features = features
        self.avgpool = fnn.AdaptiveAvgPool2d((7, 7))
        self.classifier = torch.nn.Sequential(
            torch.nn.Linear(512 * 7 * 7, 4096), torch.nn.ReLU(True), torch.nn.Dropout(p=dropout),
            torch.nn.Linear(4096, 4096), torch.nn.ReLU(True), torch.nn.Dropout(p=dropout),
            torch.nn.Linear(4096, num_classes))
        if init_weights:
            kaiming_init(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("VGG", x, 3)
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def _vgg(name: str, cfg: str, batch_norm: bool, weights, kwargs) -> VGG:
    known = {k: kwargs.pop(k) for k in ("num_classes", "init_weights", "dropout") if k in kwargs}
    check_kwargs(name, kwargs)
    if weights is not None:
        known["init_weights"] = False
    return load_weights(VGG(make_layers(CFGS[cfg], batch_norm), **known), weights, name)


def vgg11(*, weights=None, **kwargs) -> VGG:
    """VGG-11 (configuration A)."""
    return _vgg("vgg11", "A", False, weights, kwargs)


def vgg11_bn(*, weights=None, **kwargs) -> VGG:
    """VGG-11 with BatchNorm."""
    return _vgg("vgg11_bn", "A", True, weights, kwargs)


def vgg11_lrn(*, weights=None, **kwargs) -> VGG:
    """Configuration A-LRN: VGG-11 with LRN after the first conv (not in torchvision; its conv
    indices after the LRN shift by one)."""
    return _vgg("vgg11_lrn", "A-LRN", False, weights, kwargs)


def vgg13(*, weights=None, **kwargs) -> VGG:
    """VGG-13 (configuration B)."""
    return _vgg("vgg13", "B", False, weights, kwargs)


def vgg13_bn(*, weights=None, **kwargs) -> VGG:
    """VGG-13 with BatchNorm."""
    return _vgg("vgg13_bn", "B", True, weights, kwargs)


def vgg16(*, weights=None, **kwargs) -> VGG:
    """VGG-16 (configuration D)."""
    return _vgg("vgg16", "D", False, weights, kwargs)


def vgg16_bn(*, weights=None, **kwargs) -> VGG:
    """VGG-16 with BatchNorm."""
    return _vgg("vgg16_bn", "D", True, weights, kwargs)


def vgg19(*, weights=None, **kwargs) -> VGG:
    """VGG-19 (configuration E)."""
    return _vgg("vgg19", "E", False, weights, kwargs)


def vgg19_bn(*, weights=None, **kwargs) -> VGG:
    """VGG-19 with BatchNorm."""
    return _vgg("vgg19_bn", "E", True, weights, kwargs)
