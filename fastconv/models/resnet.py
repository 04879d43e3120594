"""ResNet (He et al., 2016; torchvision's v1.5 layout), ResNeXt / wide variants and SE-ResNet
(Hu et al., 2018) on fastconv ops. Module names and state_dict keys are torchvision's."""
from typing import List, Optional, Type, Union

import torch

from .. import nn as fnn
from ..nn.fused import Bottleneck, _check_4d, _FoldCache, conv_bn_act, shortcut
from ._common import check_input, check_kwargs, kaiming_init, load_weights


def _conv3x3(cin, cout, stride=1, groups=1, dilation=1):
    return fnn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, groups=groups, bias=False, dilation=dilation)


class BasicBlock(torch.nn.Module):
    """ResNet-18/34 block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    input ``(N, inplanes, H, W)``; output ``(N, planes, H / stride, W / stride)``.
    torchvision's constructor and names (conv1, bn1, relu, conv2, bn2, downsample, stride).
    Eval: BatchNorm folded, the ReLU and the residual add in the convolutions' epilogues.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[torch.nn.Module] = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1, norm_layer=None):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock: only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("BasicBlock: dilation > 1 is not supported (as in torchvision)")
        norm_layer = norm_layer or torch.nn.BatchNorm2d
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = torch.nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride
        self._folds = [_FoldCache() for _ in range(3)]

    def _shortcut(self, x):
        return shortcut(self.downsample, x, self._folds[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_4d("BasicBlock", x)
        out = conv_bn_act(x, self.conv1, self.bn1, True, self._folds[0])
        return conv_bn_act(out, self.conv2, self.bn2, True, self._folds[1], residual=self._shortcut(x))


class SEBottleneck(Bottleneck):
    """SE-ResNet block: the ResNet-50 bottleneck with Squeeze-and-Excitation on the residual
    branch before the add, ``relu(se(bn3(conv3(...))) + shortcut(x))``.

    input ``(N, inplanes, H, W)``; output ``(N, planes * 4, H / stride, W / stride)``. Names:
    :class:`fastconv.nn.Bottleneck`'s plus ``se`` (:class:`fastconv.nn.SqueezeExcitation`,
    ``se.fc1`` / ``se.fc2``). The SE scale, the residual add and the ReLU are one pass.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[torch.nn.Module] = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1, norm_layer=None, reduction: int = 16):
        super().__init__(inplanes, planes, stride, downsample, groups, base_width, dilation, norm_layer)
        self.se = fnn.SqueezeExcitation(planes * self.expansion, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_4d("SEBottleneck", x)
        out = conv_bn_act(x, self.conv1, self.bn1, True, self._folds[0])
        out = conv_bn_act(out, self.conv2, self.bn2, True, self._folds[1])
        out = conv_bn_act(out, self.conv3, self.bn3, False, self._folds[2])
        return self.se.residual_relu(out, self._shortcut(x))


Block = Union[Type[BasicBlock], Type[Bottleneck]]


class ResNet(torch.nn.Module):
    """torchvision's ``ResNet(block, layers, num_classes=1000, zero_init_residual=False,
    groups=1, width_per_group=64, replace_stride_with_dilation=None, norm_layer=None)``.

    input ``(N, 3, H, W)`` (any H, W >= 32: the head is a global average pool); output
    ``(N, num_classes)``. Names: conv1, bn1, relu, maxpool, layer1..layer4, avgpool, fc.
    """

    def __init__(self, block: Block, layers: List[int], num_classes: int = 1000, zero_init_residual: bool = False,
                 groups: int = 1, width_per_group: int = 64, replace_stride_with_dilation=None, norm_layer=None,
                 **block_kwargs):
        super().__init__()
        if len(layers) != 4 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in layers):
            raise ValueError(f"ResNet: layers must be 4 positive ints, got {layers!r}")
        self._norm_layer = norm_layer = norm_layer or torch.nn.BatchNorm2d
        self.inplanes = 64
        self.dilation = 1
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError("ResNet: replace_stride_with_dilation must be None or a 3-element tuple, got "
                             f"{replace_stride_with_dilation!r}")
        self.groups = groups
        self.base_width = width_per_group
        self._block_kwargs = block_kwargs
        self.conv1 = fnn.Conv2d(3, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = torch.nn.ReLU(inplace=True)
        self.maxpool = fnn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2, replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], 2, replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], 2, replace_stride_with_dilation[2])
        self.avgpool = fnn.AdaptiveAvgPool2d((1, 1))
        self.fc = torch.nn.Linear(512 * block.expansion, num_classes)
        self._stem_fold = _FoldCache()
        kaiming_init(self, linear_bias_zero=False)
        # SE blocks keep torch's default FC init (the SE paper's); only the trunk is He-normal.
        for m in self.modules():
            if isinstance(m, fnn.SqueezeExcitation):
                m.fc1.reset_parameters()
                m.fc2.reset_parameters()
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck) and m.bn3.weight is not None:
                    torch.nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock) and m.bn2.weight is not None:
                    torch.nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int = 1, dilate: bool = False):
        norm_layer = self._norm_layer
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = torch.nn.Sequential(
                fnn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                norm_layer(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width, previous_dilation,
                        norm_layer, **self._block_kwargs)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups, base_width=self.base_width,
                                dilation=self.dilation, norm_layer=norm_layer, **self._block_kwargs))
        return torch.nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map ``(N, 512 * expansion, H / 32, W / 32)`` (before the pool)."""
        check_input(type(self).__name__, x, 3)
        x = self.maxpool(conv_bn_act(x, self.conv1, self.bn1, True, self._stem_fold))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x))
        return self.fc(torch.flatten(x, 1))


def _resnet(name, block, layers, weights, kwargs, **defaults):
    kwargs.pop("progress", None)
    allowed = {"num_classes", "zero_init_residual", "groups", "width_per_group", "replace_stride_with_dilation",
               "norm_layer"} | set(defaults)
    unknown = set(kwargs) - allowed
    if unknown:
        check_kwargs(name, {k: kwargs[k] for k in unknown})
    model = ResNet(block, layers, **{**defaults, **kwargs})
    return load_weights(model, weights, name)


def resnet18(*, weights=None, **kwargs) -> ResNet:
    """ResNet-18 (torchvision keys). kwargs: ResNet's (num_classes, zero_init_residual, ...)."""
    return _resnet("resnet18", BasicBlock, [2, 2, 2, 2], weights, kwargs)


def resnet34(*, weights=None, **kwargs) -> ResNet:
    """ResNet-34 (torchvision keys)."""
    return _resnet("resnet34", BasicBlock, [3, 4, 6, 3], weights, kwargs)


def resnet50(*, weights=None, **kwargs) -> ResNet:
    """ResNet-50 (torchvision keys; v1.5, stride on the 3x3)."""
    return _resnet("resnet50", Bottleneck, [3, 4, 6, 3], weights, kwargs)


def resnet101(*, weights=None, **kwargs) -> ResNet:
    """ResNet-101 (torchvision keys)."""
    return _resnet("resnet101", Bottleneck, [3, 4, 23, 3], weights, kwargs)


def resnet152(*, weights=None, **kwargs) -> ResNet:
    """ResNet-152 (torchvision keys)."""
    return _resnet("resnet152", Bottleneck, [3, 8, 36, 3], weights, kwargs)


def resnext50_32x4d(*, weights=None, **kwargs) -> ResNet:
    """ResNeXt-50 32x4d (torchvision keys)."""
    return _resnet("resnext50_32x4d", Bottleneck, [3, 4, 6, 3], weights, kwargs, groups=32, width_per_group=4)


def wide_resnet50_2(*, weights=None, **kwargs) -> ResNet:
    """Wide ResNet-50-2 (torchvision keys)."""
    return _resnet("wide_resnet50_2", Bottleneck, [3, 4, 6, 3], weights, kwargs, width_per_group=128)


def se_resnet50(*, weights=None, reduction: int = 16, **kwargs) -> ResNet:
    """SE-ResNet-50: ResNet-50 with an SE block (reduction 16) in every bottleneck. Keys:
    resnet50's plus ``layerK.J.se.fc1.*`` / ``se.fc2.*`` (torchvision has no SE-ResNet)."""
    return _resnet("se_resnet50", SEBottleneck, [3, 4, 6, 3], weights, kwargs, reduction=reduction)


def se_resnet101(*, weights=None, reduction: int = 16, **kwargs) -> ResNet:
    """SE-ResNet-101 (see :func:`se_resnet50`)."""
    return _resnet("se_resnet101", SEBottleneck, [3, 4, 23, 3], weights, kwargs, reduction=reduction)
