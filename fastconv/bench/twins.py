"""``torch.nn`` twins of fastconv's fused blocks: the same structure, parameter names and
parameter creation order, so the same seed gives both sides the same weights. Used by the
benchmark cases (the torch side) and by the tests (the reference)."""
from typing import Tuple

import torch


class TorchSqueezeExcitation(torch.nn.Module):
    """``fastconv.nn.SqueezeExcitation`` from torch ops: ``x * sigmoid(fc2(relu(fc1(mean))))``."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = torch.nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = torch.nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class TorchBatchNormAddReLU(torch.nn.Module):
    """``relu(bn(x) + x)``: a BatchNorm2d, the residual add and the ReLU of a ResNet block."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(x) + x)


class BatchNormAddReLU(TorchBatchNormAddReLU):
    """fastconv's counterpart: the same module through ``fastconv.nn.fused.bn_act`` (one
    ``batch_norm_act`` on batch statistics; torch's BatchNorm in eval mode)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..nn.fused import batch_stats, bn_act
        if batch_stats(self.bn, x):
            return bn_act(x, self.bn, x, True)
        return super().forward(x)


class TorchConvBNReLU(torch.nn.Module):
    """``fastconv.nn.ConvBNReLU`` unfused: ``conv``, ``bn``, optional ReLU (torchvision's
    ``BasicConv2d`` shape)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=1, stride=1, padding=0,
                 eps: float = 1e-5, relu: bool = True):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = torch.nn.BatchNorm2d(out_channels, eps=eps)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return torch.relu(y) if self.relu else y


class TorchBottleneck(torch.nn.Module):
    """torchvision's ResNet ``Bottleneck`` (stride on the 3x3), written from torch.nn."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(planes)
        self.conv2 = torch.nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(planes)
        self.conv3 = torch.nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = torch.nn.BatchNorm2d(planes * 4)
        self.relu = torch.nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = torch.nn.Sequential(torch.nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                                  torch.nn.BatchNorm2d(planes * 4))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class TorchInception1x1(torch.nn.Module):
    """The 1x1 convolutions of an Inception module that read the block input (1x1 branch,
    3x3 reduce, 5x5 reduce), each ``conv`` + ``bn`` (eps 1e-3) + ReLU, run one after another."""

    def __init__(self, in_channels: int, out_channels: Tuple[int, ...]):
        super().__init__()
        self.branches = torch.nn.ModuleList(TorchConvBNReLU(in_channels, oc, eps=1e-3) for oc in out_channels)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(b(x) for b in self.branches)


class Inception1x1(torch.nn.Module):
    """fastconv's counterpart of ``TorchInception1x1``: the branches as ``ConvBNReLU`` and one
    ``Conv1x1Group`` running them as one GEMM."""

    def __init__(self, in_channels: int, out_channels: Tuple[int, ...]):
        super().__init__()
        from ..nn import Conv1x1Group, ConvBNReLU
        self.branches = torch.nn.ModuleList(ConvBNReLU(in_channels, oc, 1, eps=1e-3) for oc in out_channels)
        self.group = Conv1x1Group(list(self.branches))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return self.group(x)
