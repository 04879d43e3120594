"""Pooling modules. Each subclasses its torch.nn namesake, so construction, defaults, ``repr``,
``isinstance`` checks and (empty) state_dicts are torch's; only ``forward`` runs fastconv."""
import torch

from .. import ops


class MaxPool2d(torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` on fastconv kernels. input ``(N, C, H, W)`` or ``(C, H, W)``."""

    def forward(self, input: torch.Tensor):
        return ops.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                              ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(torch.nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` on fastconv kernels. input ``(N, C, H, W)`` or ``(C, H, W)``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                              self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d):
    """``torch.nn.AdaptiveAvgPool2d`` on fastconv kernels."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.adaptive_avg_pool2d(input, self.output_size)


class GlobalAvgPool2d(torch.nn.Module):
    """Mean over H and W: ``(N, C, H, W) -> (N, C, 1, 1)`` (or ``(N, C)`` with
    ``flatten=True``, the usual classifier-head input)."""

    def __init__(self, flatten: bool = False) -> None:
        super().__init__()
        self.flatten = flatten

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.global_avg_pool2d(input, keepdim=not self.flatten)

    def extra_repr(self) -> str:
        return f"flatten={self.flatten}"
