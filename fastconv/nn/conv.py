"""Convolution module: ``torch.nn.Conv2d`` (construction, defaults, initialisation, ``repr``,
state_dict keys) running fastconv's kernels."""
import torch
import torch.nn.functional as F

from .. import ops


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` on fastconv kernels. input ``(N, C, H, W)`` or ``(C, H, W)``;
    weight ``(out_channels, in_channels / groups, kH, kW)``. Padding modes other than
    ``'zeros'`` pad first (``F.pad``), then convolve unpadded, as torch does."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            return ops.conv2d(F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                              weight, bias, self.stride, 0, self.dilation, self.groups)
        return ops.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    @classmethod
    def from_conv(cls, conv: torch.nn.Conv2d) -> "Conv2d":
        """A fastconv ``Conv2d`` sharing ``conv``'s parameters (the same ``Parameter``
        objects, so optimisers and state_dicts see one set of weights)."""
        if isinstance(conv, cls):
            return conv
        if not isinstance(conv, torch.nn.Conv2d):
            raise TypeError(f"Conv2d.from_conv: conv must be a torch.nn.Conv2d, got {type(conv).__name__}")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                  conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, device="meta")
        new.weight = conv.weight
        new.bias = conv.bias
        new.train(conv.training)
        return new
