"""DenseNet (Huang et al., 2017) on fastconv ops, torchvision's layout and keys."""
import re
from collections import OrderedDict
from typing import List, Tuple

import torch
import torch.utils.checkpoint as cp

from .. import nn as fnn
from .. import ops
from ..nn.fused import _FoldCache, _has_hooks, conv_bn_act, norm_relu
from ._common import FusedSequential, check_input, check_kwargs, kaiming_init, load_weights, read_state


class _DenseLayer(torch.nn.Module):
    """BN -> ReLU -> 1x1 conv (bn_size * growth_rate) -> BN -> ReLU -> 3x3 conv (growth_rate)
    on the concatenation of every earlier feature map of the block. input: a list of
    ``(N, C_i, H, W)``; output ``(N, growth_rate, H, W)``."""

    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int, drop_rate: float,
                 memory_efficient: bool = False):
        super().__init__()
        self.norm1 = torch.nn.BatchNorm2d(num_input_features)
        self.relu1 = torch.nn.ReLU(inplace=True)
        self.conv1 = fnn.Conv2d(num_input_features, bn_size * growth_rate, 1, bias=False)
        self.norm2 = torch.nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = torch.nn.ReLU(inplace=True)
        self.conv2 = fnn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = float(drop_rate)
        self.memory_efficient = memory_efficient
        self._fold = _FoldCache()

    def bn_function(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        return self.conv1(norm_relu(self.norm1, self.relu1, torch.cat(inputs, 1)))

    def _bottleneck_act(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        """relu2(norm2(bn_function(inputs))): conv1, norm2 and relu2 as one fused convolution
        (in eval mode BatchNorm folded into conv1 and ReLU in its epilogue; in training our
        conv, then one BatchNorm + ReLU op), saving two passes over the bottleneck. Modules a
        user replaced or hooked run as modules."""
        plain = (type(self.relu2) is torch.nn.ReLU and not _has_hooks(self.relu2)
                 and type(self.norm2) is torch.nn.BatchNorm2d and isinstance(self.conv1, fnn.Conv2d))
        if not plain:
            return norm_relu(self.norm2, self.relu2, self.bn_function(inputs))
        x = norm_relu(self.norm1, self.relu1, torch.cat(inputs, 1))
        return conv_bn_act(x, self.conv1, self.norm2, True, self._fold)

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        if isinstance(inputs, torch.Tensor):
            inputs = [inputs]
        if self.memory_efficient and torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            # Recompute the concatenation and the bottleneck in backward instead of storing them.
            bottleneck = cp.checkpoint(lambda *xs: self.bn_function(list(xs)), *inputs, use_reentrant=False)
            out = self.conv2(norm_relu(self.norm2, self.relu2, bottleneck))
        else:
            out = self.conv2(self._bottleneck_act(inputs))
        if self.drop_rate > 0:
            out = torch.nn.functional.dropout(out, p=self.drop_rate, training=self.training)
        return out


class _DenseBlock(torch.nn.ModuleDict):
    """``num_layers`` dense layers; output: input and every layer's output concatenated,
    ``(N, C + num_layers * growth_rate, H, W)``."""

    def __init__(self, num_layers: int, num_input_features: int, bn_size: int, growth_rate: int, drop_rate: float,
                 memory_efficient: bool = False):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(num_input_features + i * growth_rate, growth_rate,
                                                              bn_size, drop_rate, memory_efficient))

    def forward(self, init_features: torch.Tensor) -> torch.Tensor:
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(torch.nn.Sequential):
    """BN -> ReLU -> 1x1 conv -> 2x2 average pool, halving channels and resolution."""

    def __init__(self, num_input_features: int, num_output_features: int):
        super().__init__()
        self.norm = torch.nn.BatchNorm2d(num_input_features)
        self.relu = torch.nn.ReLU(inplace=True)
        self.conv = fnn.Conv2d(num_input_features, num_output_features, 1, bias=False)
        self.pool = fnn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A 1x1 conv (stride 1, no padding) and a 2x2 average pool are both linear per pixel
        # and commute exactly (up to rounding); pooling first gives the conv a quarter of the
        # pixels.
        return self.conv(self.pool(norm_relu(self.norm, self.relu, x)))


class DenseNet(torch.nn.Module):
    """torchvision's ``DenseNet(growth_rate=32, block_config=(6, 12, 24, 16),
    num_init_features=64, bn_size=4, drop_rate=0, num_classes=1000, memory_efficient=False)``.

    input ``(N, 3, H, W)`` (any H, W >= 32); output ``(N, num_classes)``. Keys:
    ``features.{conv0,norm0,denseblockK.denselayerJ.*,transitionK.*,norm5}``, ``classifier``.
    """

    def __init__(self, growth_rate: int = 32, block_config: Tuple[int, ...] = (6, 12, 24, 16),
                 num_init_features: int = 64, bn_size: int = 4, drop_rate: float = 0, num_classes: int = 1000,
                 memory_efficient: bool = False):
        super().__init__()
        self.features = FusedSequential(OrderedDict([
            ("conv0", fnn.Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False)),
            ("norm0", torch.nn.BatchNorm2d(num_init_features)),
            ("relu0", torch.nn.ReLU(inplace=True)),
            ("pool0", fnn.MaxPool2d(3, 2, 1)),
        ]))
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(num_layers, num_features, bn_size, growth_rate,
                                                                       drop_rate, memory_efficient))
            num_features += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(num_features, num_features // 2))
                num_features //= 2
        self.features.add_module("norm5", torch.nn.BatchNorm2d(num_features))
        self.classifier = torch.nn.Linear(num_features, num_classes)
        kaiming_init(self, conv_mode="fan_in")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map after the final ReLU, ``(N, num_features, H / 32, W / 32)``."""
        check_input("DenseNet", x, 3)
        return torch.relu(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(ops.global_avg_pool2d(self.forward_features(x), keepdim=False))


# torchvision's published DenseNet files predate its module names ("denselayer1.norm.1.weight"
# for "denselayer1.norm1.weight"); torchvision renames on load, and so do we.
_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def _rename_old_keys(state):
    return {(_OLD_KEY.sub(lambda m: m.group(1) + m.group(2), k)): v for k, v in state.items()}


def _densenet(name, growth_rate, block_config, num_init_features, weights, kwargs) -> DenseNet:
    known = {k: kwargs.pop(k) for k in ("bn_size", "drop_rate", "num_classes", "memory_efficient") if k in kwargs}
    check_kwargs(name, kwargs)
    model = DenseNet(growth_rate, block_config, num_init_features, **known)
    if weights is not None:
        weights = _rename_old_keys(read_state(weights, name))
    return load_weights(model, weights, name)


def densenet121(*, weights=None, **kwargs) -> DenseNet:
    """DenseNet-121 (growth 32, blocks 6-12-24-16)."""
    return _densenet("densenet121", 32, (6, 12, 24, 16), 64, weights, kwargs)


def densenet161(*, weights=None, **kwargs) -> DenseNet:
    """DenseNet-161 (growth 48, blocks 6-12-36-24, 96 initial features)."""
    return _densenet("densenet161", 48, (6, 12, 36, 24), 96, weights, kwargs)


def densenet169(*, weights=None, **kwargs) -> DenseNet:
    """DenseNet-169 (growth 32, blocks 6-12-32-32)."""
    return _densenet("densenet169", 32, (6, 12, 32, 32), 64, weights, kwargs)


def densenet201(*, weights=None, **kwargs) -> DenseNet:
    """DenseNet-201 (growth 32, blocks 6-12-48-32)."""
    return _densenet("densenet201", 32, (6, 12, 48, 32), 64, weights, kwargs)
