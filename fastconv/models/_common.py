"""What every architecture shares: loading local weights, torchvision's initialisations, and a
``Sequential`` that fuses ``Conv2d [-> BatchNorm2d] [-> ReLU]`` runs at inference time without
changing the module tree (so state_dict keys stay torchvision's ``features.0.weight`` ...)."""
import os
from collections.abc import Mapping
from typing import Any, Dict, Optional

import torch

from ..nn.conv import Conv2d
from ..nn.fused import _check_4d, _FoldCache, _foldable, _has_hooks, _records_grad, batch_stats, bn_act, conv_bn_act

_CONVS = (torch.nn.Conv2d, Conv2d)


def read_state(weights: Any, name: str) -> Mapping:
    """The state_dict in ``weights``: a path to a local ``torch.save``-d state_dict (or a
    checkpoint dict with a ``state_dict`` entry), or a mapping."""
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{name}: weights must be a local file (fastconv never downloads); "
                                    f"no such file: {path!r}")
        state = torch.load(path, map_location="cpu", weights_only=True)
    elif isinstance(weights, Mapping):
        state = weights
    else:
        raise TypeError(f"{name}: weights must be None, a path to a local state_dict file or a state_dict "
                        f"mapping, got {type(weights).__name__} (torchvision's weight enums need a download, "
                        "which fastconv never does: save the state_dict where you have it and pass the path)")
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise TypeError(f"{name}: weights file must hold a state_dict mapping, got {type(state).__name__}")
    return state


def load_weights(model: torch.nn.Module, weights: Any, name: str) -> torch.nn.Module:
    """Load ``weights`` (None, or anything :func:`read_state` takes) into model, strict."""
    if weights is not None:
        model.load_state_dict(read_state(weights, name), strict=True)
    return model


def check_kwargs(name: str, kwargs: Dict[str, Any]) -> None:
    """torchvision's builders take ``progress``; anything else unknown is a mistake."""
    kwargs.pop("progress", None)
    if kwargs:
        raise TypeError(f"{name}: unexpected keyword argument(s) {sorted(kwargs)}")


def check_input(name: str, x: Any, channels: Optional[int] = None) -> None:
    _check_4d(name, x)
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: input must have {channels} channels (dim 1), got shape {list(x.shape)}")


def check_positive_int(name: str, arg: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name}: {arg} must be a positive int, got {v!r}")


def kaiming_init(model: torch.nn.Module, conv_mode: str = "fan_out", linear_std: Optional[float] = None,
                 linear_bias_zero: bool = True) -> None:
    """torchvision's initialisations: convs He-normal (``conv_mode`` fan_out for ResNet / VGG,
    fan_in for DenseNet) with bias 0, BatchNorm weight 1 bias 0, Linear N(0, linear_std)
    (None: torch's default) with bias 0 unless ``linear_bias_zero`` is False (ResNet)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode=conv_mode, nonlinearity="relu")
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)):
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.Linear):
            if linear_std is not None:
                torch.nn.init.normal_(m.weight, 0, linear_std)
            if m.bias is not None and linear_bias_zero:
                torch.nn.init.zeros_(m.bias)


def _is_relu(m) -> bool:
    return type(m) is torch.nn.ReLU and not _has_hooks(m)


class FusedSequential(torch.nn.Sequential):
    """``torch.nn.Sequential`` (same indices, keys, repr) that, with no gradient to record,
    runs each ``Conv2d [-> BatchNorm2d in eval] [-> ReLU]`` as one fused convolution (BatchNorm
    folded and cached, ReLU in the epilogue). Otherwise, and for modules with hooks or of
    other types (Conv2d subclasses included), module by module, as torch does, but with each
    training-mode ``BatchNorm2d [-> ReLU]`` as one op (``fastconv.nn.fused.bn_act``)."""

    def __init__(self, *args):
        super().__init__(*args)
        self._folds: Dict[int, _FoldCache] = {}

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("_folds", {})

    def forward(self, x):
        mods = list(self._modules.values())
        if _records_grad((x,), mods):
            return self._forward_recorded(x, mods)
        i = 0
        while i < len(mods):
            m = mods[i]
            if type(m) in _CONVS and not _has_hooks(m):
                j = i + 1
                bn = mods[j] if j < len(mods) else None
                if (type(bn) is torch.nn.BatchNorm2d and _foldable(bn) and bn.num_features == m.out_channels
                        and not _has_hooks(bn)):
                    j += 1
                else:
                    bn = None
                relu = j < len(mods) and _is_relu(mods[j])
                cache = self._folds.get(i)
                if cache is None:
                    cache = self._folds[i] = _FoldCache()
                x = conv_bn_act(x, m, bn, relu, cache)
                i = j + (1 if relu else 0)
                continue
            x = m(x)
            i += 1
        return x

    @staticmethod
    def _forward_recorded(x, mods):
        """Module by module, except that a ``BatchNorm2d [-> ReLU]`` normalising with batch
        statistics (training) runs as one op (``bn_act``)."""
        i = 0
        while i < len(mods):
            m = mods[i]
            if type(m) is torch.nn.BatchNorm2d and batch_stats(m, x):
                relu = i + 1 < len(mods) and _is_relu(mods[i + 1])
                x = bn_act(x, m, None, relu)
                i += 2 if relu else 1
                continue
            x = m(x)
            i += 1
        return x
