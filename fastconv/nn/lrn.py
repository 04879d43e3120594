"""``LocalResponseNorm``: subclasses torch.nn.LocalResponseNorm (same arguments, defaults,
``repr``, empty state_dict) and runs fastconv's kernel."""
import torch

from .. import ops


class LocalResponseNorm(torch.nn.LocalResponseNorm):
    """``torch.nn.LocalResponseNorm`` on fastconv kernels. input ``(N, C, *)``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return ops.local_response_norm(input, self.size, self.alpha, self.beta, self.k)
