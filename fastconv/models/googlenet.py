"""GoogLeNet / Inception v1 (Szegedy et al., 2015) on fastconv ops, torchvision's layout and
keys. The 1x1 convolutions of an Inception module that read its input run as one GEMM in
eval (:class:`fastconv.nn.Conv1x1Group`)."""
from collections import namedtuple
from typing import Optional

import torch

from .. import nn as fnn
from .. import ops
from ..nn.fused import _records_grad
from ._common import check_input, check_kwargs, load_weights, read_state

GoogLeNetOutputs = namedtuple("GoogLeNetOutputs", ["logits", "aux_logits2", "aux_logits1"])


def BasicConv2d(in_channels: int, out_channels: int, **kwargs) -> fnn.ConvBNReLU:
    """torchvision's BasicConv2d (conv without bias, BatchNorm eps 1e-3, ReLU): keys conv.*, bn.*."""
    return fnn.ConvBNReLU(in_channels, out_channels, eps=0.001, **kwargs)


class Inception(torch.nn.Module):
    """Four branches concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> "5x5"; 3x3 max pool ->
    1x1. input ``(N, in_channels, H, W)``; output ``(N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)``.
    The "5x5" branch is a 3x3 conv, as in torchvision (its weights were trained so)."""

    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = torch.nn.Sequential(BasicConv2d(in_channels, ch3x3red, kernel_size=1),
                                           BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        self.branch3 = torch.nn.Sequential(BasicConv2d(in_channels, ch5x5red, kernel_size=1),
                                           BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = torch.nn.Sequential(fnn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                           BasicConv2d(in_channels, pool_proj, kernel_size=1))
        self._group: Optional[fnn.Conv1x1Group] = None

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("_group", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heads = (self.branch1, self.branch2[0], self.branch3[0])
        if self.training or _records_grad((x,), heads):
            b1, r2, r3 = (h(x) for h in heads)
        else:
            group = self._group
            if group is None or any(a is not b for a, b in zip(group.branches, heads)):
                group = self._group = fnn.Conv1x1Group(heads)
            b1, r2, r3 = group(x)
        return torch.cat([b1, self.branch2[1](r2), self.branch3[1](r3), self.branch4(x)], 1)


class InceptionAux(torch.nn.Module):
    """Auxiliary classifier: 4x4 adaptive average pool -> 1x1 conv 128 -> fc 2048->1024 ->
    ReLU -> dropout -> fc. input ``(N, in_channels, H, W)``; output ``(N, num_classes)``."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7):
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = torch.nn.Linear(2048, 1024)
        self.fc2 = torch.nn.Linear(1024, num_classes)
        self.dropout = torch.nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(ops.adaptive_avg_pool2d(x, (4, 4))), 1)
        return self.fc2(self.dropout(torch.relu(self.fc1(x))))


class GoogLeNet(torch.nn.Module):
    """torchvision's ``GoogLeNet(num_classes=1000, aux_logits=True, transform_input=False,
    init_weights=None, dropout=0.2, dropout_aux=0.7)``.

    input ``(N, 3, H, W)`` (any H, W >= 15); output ``(N, num_classes)`` logits, or in training
    with ``aux_logits`` the namedtuple ``GoogLeNetOutputs(logits, aux_logits2, aux_logits1)``.
    ``transform_input`` maps ImageNet-normalised input to the [-1, 1] scaling of the original
    weights. Global average pooling before the classifier.
    """

    def __init__(self, num_classes: int = 1000, aux_logits: bool = True, transform_input: bool = False,
                 init_weights: Optional[bool] = None, dropout: float = 0.2, dropout_aux: float = 0.7):
        super().__init__()
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = fnn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = fnn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = fnn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = fnn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, dropout=dropout_aux)
            self.aux2 = InceptionAux(528, num_classes, dropout=dropout_aux)
        else:
            self.aux1 = None
            self.aux2 = None
        self.avgpool = fnn.AdaptiveAvgPool2d((1, 1))
        self.dropout = torch.nn.Dropout(p=dropout)
        self.fc = torch.nn.Linear(1024, num_classes)
        if init_weights is None or init_weights:
            for m in self.modules():
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                    torch.nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
                elif isinstance(m, torch.nn.BatchNorm2d):
                    torch.nn.init.constant_(m.weight, 1)
                    torch.nn.init.constant_(m.bias, 0)

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        if not self.transform_input:
            return x
        ch = [x[:, i:i + 1] * (s / 0.5) + (m - 0.5) / 0.5
              for i, (m, s) in enumerate(((0.485, 0.229), (0.456, 0.224), (0.406, 0.225)))]
        return torch.cat(ch, 1)

    def _trunk(self, x: torch.Tensor):
        check_input("GoogLeNet", x, 3)
        x = self._transform_input(x)
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        train_aux = self.training and self.aux1 is not None
        aux1 = self.aux1(x) if train_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if train_aux and self.aux2 is not None else None
        x = self.maxpool4(self.inception4e(x))
        return self.inception5b(self.inception5a(x)), aux1, aux2

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map ``(N, 1024, H / 32, W / 32)``, before the pool."""
        return self._trunk(x)[0]

    def forward(self, x: torch.Tensor):
        x, aux1, aux2 = self._trunk(x)
        x = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if self.training and self.aux_logits:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x


def googlenet(*, weights=None, **kwargs) -> GoogLeNet:
    """GoogLeNet. kwargs: GoogLeNet's (num_classes, aux_logits, transform_input, init_weights,
    dropout, dropout_aux). With weights, as torchvision: ``transform_input`` defaults to True,
    the auxiliary classifiers are loaded when the state_dict has them and then dropped unless
    ``aux_logits=True`` was asked for."""
    known = {k: kwargs.pop(k) for k in ("num_classes", "aux_logits", "transform_input", "init_weights", "dropout",
                                        "dropout_aux") if k in kwargs}
    check_kwargs("googlenet", kwargs)
    if weights is None:
        return GoogLeNet(**known)
    state = read_state(weights, "googlenet")
    known.setdefault("transform_input", True)
    keep_aux = known.pop("aux_logits", False)
    known["init_weights"] = False
    has_aux = any(k.startswith("aux1.") for k in state)
    model = load_weights(GoogLeNet(aux_logits=has_aux, **known), state, "googlenet")
    if not keep_aux:
        model.aux_logits = False
        model.aux1 = None
        model.aux2 = None
    return model
