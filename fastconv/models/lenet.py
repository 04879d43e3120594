"""LeNet-5 (LeCun et al., 1998) on fastconv ops."""
import torch

from .. import nn as fnn
from ._common import FusedSequential, check_input, check_kwargs, load_weights

_ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}
_POOLS = {"max": fnn.MaxPool2d, "avg": fnn.AvgPool2d}


class LeNet5(torch.nn.Module):
    """conv(1->6, 5x5, pad 2) -> act -> pool 2 -> conv(6->16, 5x5) -> act -> pool 2 ->
    fc 400->120 -> act -> fc 120->84 -> act -> fc 84->num_classes.

    input ``(N, in_channels, 28, 28)`` (the padding makes MNIST-size input give the paper's
    32x32 geometry); output ``(N, num_classes)`` logits. ``activation='tanh', pool='avg'`` is
    the 1998 layout (without its sparse C3 table and RBF output); the default ReLU + max pool
    trains faster. Keys: ``features.{0,3}.*`` (convs), ``classifier.{0,2,4}.*`` (linears).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, activation: str = "relu", pool: str = "max"):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"LeNet5: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if pool not in _POOLS:
            raise ValueError(f"LeNet5: pool must be one of {sorted(_POOLS)}, got {pool!r}")
        act, pool_cls = _ACTIVATIONS[activation], _POOLS[pool]
        self.in_channels = in_channels
        self.features = FusedSequential(
            fnn.Conv2d(in_channels, 6, 5, padding=2), act(), pool_cls(2, 2),
            fnn.Conv2d(6, 16, 5), act(), pool_cls(2, 2))
        self.classifier = torch.nn.Sequential(
            torch.nn.Linear(16 * 5 * 5, 120), act(), torch.nn.Linear(120, 84), act(),
            torch.nn.Linear(84, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("LeNet5", x, self.in_channels)
        if tuple(x.shape[2:]) != (28, 28):
            raise ValueError(f"LeNet5: input must be (N, {self.in_channels}, 28, 28), got {list(x.shape)}")
        return self.classifier(torch.flatten(self.features(x), 1))


def lenet5(*, weights=None, num_classes: int = 10, **kwargs) -> LeNet5:
    """LeNet-5; see :class:`LeNet5` for the keyword arguments. weights: local state_dict path."""
    known = {k: kwargs.pop(k) for k in ("in_channels", "activation", "pool") if k in kwargs}
    check_kwargs("lenet5", kwargs)
    return load_weights(LeNet5(num_classes, **known), weights, "lenet5")
