"""``fastconv.convert``: put fastconv kernels under an existing model."""
import copy
from typing import Callable, Dict, Optional

import torch

from . import nn as fnn
from .models.resnet import BasicBlock
from .models._common import FusedSequential
from .nn.fused import Bottleneck, _FoldCache


def _pool_args(m, names):
    return {n: getattr(m, n) for n in names}


_SWAPS: Dict[type, Callable[[torch.nn.Module], torch.nn.Module]] = {
    torch.nn.Conv2d: fnn.Conv2d.from_conv,
    torch.nn.MaxPool2d: lambda m: fnn.MaxPool2d(**_pool_args(
        m, ("kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode"))),
    torch.nn.AvgPool2d: lambda m: fnn.AvgPool2d(**_pool_args(
        m, ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"))),
    torch.nn.AdaptiveAvgPool2d: lambda m: fnn.AdaptiveAvgPool2d(m.output_size),
    torch.nn.LocalResponseNorm: lambda m: fnn.LocalResponseNorm(m.size, m.alpha, m.beta, m.k),
}


def _shell(m: torch.nn.Module) -> torch.nn.Module:
    """A copy of m's object that shares its parameters, buffers and attributes but owns its
    module / parameter / buffer tables and hook tables, so swapping a child or registering a
    hook on the copy leaves m untouched."""
    new = copy.copy(m)
    for name, value in m.__dict__.items():
        if isinstance(value, (dict, set)) and name.startswith("_"):
            setattr(new, name, copy.copy(value))
    return new


_TORCHVISION_BLOCKS = {("torchvision.models.resnet", "Bottleneck"): (Bottleneck, 4),
                       ("torchvision.models.resnet", "BasicBlock"): (BasicBlock, 3)}
_TORCHVISION_BASIC_CONV = {("torchvision.models.googlenet", "BasicConv2d"),
                           ("torchvision.models.inception", "BasicConv2d")}


def _tv_key(m):
    return type(m).__module__, type(m).__name__


def _fused_block(m: torch.nn.Module) -> Optional[torch.nn.Module]:
    """torchvision's ResNet blocks become fastconv's (the same submodules, so the same keys),
    whose eval forward folds every BatchNorm and puts the residual add + ReLU in the epilogue."""
    found = _TORCHVISION_BLOCKS.get(_tv_key(m))
    if found is None:
        return None
    cls, n_folds = found
    new = _shell(m)
    new.__class__ = cls
    new._folds = [_FoldCache() for _ in range(n_folds)]
    return new


def _fuse_sequential(seq: torch.nn.Sequential) -> None:
    """Conv2d -> BatchNorm2d [-> ReLU] runs inside seq become one ConvBNReLU at the conv's
    index (keys ``<i>.conv.*``, ``<i>.bn.*``) and Identity at the others."""
    if type(seq).forward not in (torch.nn.Sequential.forward, FusedSequential.forward):
        return  # a subclass with its own forward may not run its children in order
    keys = list(seq._modules)
    i = 0
    while i < len(keys):
        conv = seq._modules[keys[i]]
        bn = seq._modules[keys[i + 1]] if i + 1 < len(keys) else None
        if (type(conv) in (torch.nn.Conv2d, fnn.Conv2d) and type(bn) is torch.nn.BatchNorm2d
                and bn.num_features == conv.out_channels):
            relu = i + 2 < len(keys) and type(seq._modules[keys[i + 2]]) is torch.nn.ReLU
            seq._modules[keys[i]] = fnn.ConvBNReLU.from_modules(conv, bn, relu=relu)
            for k in keys[i + 1:i + (3 if relu else 2)]:
                seq._modules[k] = torch.nn.Identity()
            i += 3 if relu else 2
        else:
            i += 1


def _convert(m: torch.nn.Module, fuse: bool) -> torch.nn.Module:
    swap = _SWAPS.get(type(m))
    if swap is not None:
        return swap(m)
    if (fuse and _tv_key(m) in _TORCHVISION_BASIC_CONV and type(getattr(m, "conv", None)) is torch.nn.Conv2d
            and type(getattr(m, "bn", None)) is torch.nn.BatchNorm2d):
        return fnn.ConvBNReLU.from_modules(_convert(m.conv, False), _shell(m.bn))
    block = _fused_block(m) if fuse else None
    new = block or _shell(m)
    for name, child in m._modules.items():
        if child is not None:
            # A block's projection shortcut is folded by the block itself: keep its keys.
            new._modules[name] = _convert(child, fuse and not (block is not None and name == "downsample"))
    if fuse and isinstance(new, torch.nn.Sequential):
        _fuse_sequential(new)
    return new


def convert(model: torch.nn.Module, fuse: bool = False) -> torch.nn.Module:
    """A model like ``model`` with fastconv modules in place of ``torch.nn.Conv2d``,
    ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d`` and ``LocalResponseNorm`` (exact types;
    subclasses and unknown modules are kept as they are).

    Parameters and buffers are shared, not copied: an optimiser or ``load_state_dict`` on
    either model changes both. ``model`` itself is not modified (its containers are shallow-
    copied; attributes other than submodules, parameters and buffers are shared references).
    state_dict keys are unchanged with ``fuse=False``.

    ``fuse=True`` also fuses: in every ``Sequential``, ``Conv2d -> BatchNorm2d [-> ReLU]`` becomes
    a :class:`fastconv.nn.ConvBNReLU` at the conv's index (keys ``<i>.conv.*`` / ``<i>.bn.*``;
    the BatchNorm and ReLU positions become ``Identity``); torchvision's ``BasicConv2d`` becomes
    a ``ConvBNReLU`` with the same keys; torchvision's ResNet ``BasicBlock`` / ``Bottleneck``
    become fastconv's (same keys). In eval mode the BatchNorms fold into the convolutions and
    ReLU / residual adds run in their epilogues; in training these are exact BatchNorm.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"convert: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(fuse, bool):
        raise TypeError(f"convert: fuse must be a bool, got {fuse!r}")
    return _convert(model, fuse)
