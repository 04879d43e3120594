"""Squeeze-and-Excitation module (Hu et al., 2018) on fastconv kernels."""
import torch

from .. import ops


class SqueezeExcitation(torch.nn.Module):
    """``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``, the SE block.

    ``SqueezeExcitation(channels, reduction=16)``: input ``(N, channels, H, W)`` (NCHW or
    channels_last), output the same shape and memory format. ``channels`` must be divisible by
    ``reduction``.

    Parameters (state_dict keys) are those of ``torchvision.ops.SqueezeExcitation(channels,
    channels // reduction)`` and of a ``torch.nn`` twin built as::

        fc1 = torch.nn.Conv2d(channels, channels // reduction, 1)   # fc1.weight, fc1.bias
        fc2 = torch.nn.Conv2d(channels // reduction, channels, 1)   # fc2.weight, fc2.bias
        s = torch.sigmoid(fc2(torch.relu(fc1(x.mean((2, 3), keepdim=True)))))
        y = x * s

    so weights map one to one (1x1 convolutions on a 1x1 map are the two FC layers).
    ``residual_relu(x, identity)`` is the SE-ResNet block tail ``relu(self(x) + identity)`` in
    one pass.
    """

    def __init__(self, channels: int, reduction: int = 16, device=None, dtype=None):
        super().__init__()
        for name, v in (("channels", channels), ("reduction", reduction)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"SqueezeExcitation: {name} must be an int, got {v!r}")
            if v <= 0:
                raise ValueError(f"SqueezeExcitation: {name} must be > 0, got {v}")
        if channels % reduction != 0:
            raise ValueError(f"SqueezeExcitation: channels ({channels}) must be divisible by reduction "
                             f"({reduction})")
        self.channels = channels
        self.reduction = reduction
        squeezed = channels // reduction
        kw = {"device": device, "dtype": dtype}
        self.fc1 = torch.nn.Conv2d(channels, squeezed, 1, **kw)
        self.fc2 = torch.nn.Conv2d(squeezed, channels, 1, **kw)

    def _check(self, input):
        if not isinstance(input, torch.Tensor) or input.dim() != 4 or input.shape[1] != self.channels:
            shape = list(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
            raise ValueError(f"SqueezeExcitation: input must be (N, {self.channels}, H, W), got {shape}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check(input)
        return ops.squeeze_excitation(input, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)

    def residual_relu(self, input: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """``relu(self(input) + identity)`` in one pass over the map (SE-ResNet's block tail).
        identity: like input."""
        self._check(input)
        return ops.squeeze_excitation(input, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias,
                                      residual=identity)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"
