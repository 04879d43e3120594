"""Local response normalisation across channels (AlexNet), as
``torch.nn.functional.local_response_norm``: one pass with a window of squares over the
channels instead of torch's eight-op composite, and a backward kernel of our own.

    d_c = k + alpha / size * sum_{j = c - size//2}^{c + (size-1)//2} x_j^2   (zeros past the ends)
    y_c = x_c / d_c^beta

Shapes: ``input`` is ``(N, C, *)`` with at least one trailing dimension (3-D to 5-D and
beyond, as torch accepts); the output has the input's shape and memory format.
"""
import torch
from ._args import check_tensor
from ._common import autocast_to, below_autograd, call_forward, empty_in_format, no_setup, register_autocast, unsupported_backward

_ops = torch.ops.fastconv

__all__ = ["local_response_norm", "LocalResponseNormFunction"]


def _check(op, input, size):
    if input.dim() < 3:
        raise ValueError(f"{op}: input must have 3 or more dimensions (N, C, ...), got {input.dim()} "
                         f"(shape {list(input.shape)})")
    if size < 1:
        raise ValueError(f"{op}: size must be >= 1, got {size}")
    if input.dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        raise ValueError(f"{op}: input must be float32, float64, bfloat16 or float16, got {input.dtype}")


@torch.library.register_fake("fastconv::local_response_norm")
def _lrn_fake(input, size, alpha, beta, k):
    _check("local_response_norm", input, size)
    return empty_in_format(input, input.shape)


@torch.library.register_fake("fastconv::local_response_norm_backward")
def _lrn_backward_fake(grad_output, input, size, alpha, beta, k):
    _check("local_response_norm_backward", input, size)
    return empty_in_format(input, input.shape)


def _setup(ctx, inputs, output):
    input, size, alpha, beta, k = inputs
    ctx.save_for_backward(input)
    ctx.params = (size, alpha, beta, k)


def _backward(ctx, grad_output):
    (input,) = ctx.saved_tensors
    grad = below_autograd(_ops.local_response_norm_backward.default, grad_output, input, *ctx.params)
    return grad, None, None, None, None


torch.library.register_autograd("fastconv::local_response_norm", _backward, setup_context=_setup)
# torch's F.local_response_norm goes through avg_pool3d, which autocast runs in float32: in a
# lower-precision region its result is float32 whatever the input's dtype. Same here.
register_autocast("local_response_norm", autocast_to(torch.float32, 0))
torch.library.register_autograd("fastconv::local_response_norm_backward", unsupported_backward(
    "fastconv.local_response_norm: double backward (a gradient of its gradient) is not "
    "implemented; use torch.nn.functional.local_response_norm where you need it"), setup_context=no_setup)


def local_response_norm(input: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> torch.Tensor:
    """Local response normalisation over channels, as ``F.local_response_norm``.

    input: ``(N, C, *)``; returns a tensor of the same shape (and memory format). float32 and
    float64 run our kernels; bfloat16 / float16 are computed in float32 and rounded back.
    """
    check_tensor(input, "local_response_norm")
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"local_response_norm: size must be an int, got {size!r}")
    return call_forward(_ops.local_response_norm.default, input, size, float(alpha), float(beta), float(k))


class LocalResponseNormFunction(torch.autograd.Function):
    """``LocalResponseNormFunction.apply(input, size, alpha, beta, k)``."""

    @staticmethod
    def forward(input, size, alpha, beta, k):
        return _ops.local_response_norm.default(input, size, alpha, beta, k)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _setup(ctx, inputs, output)

    @staticmethod
    def backward(ctx, grad_output):
        return _backward(ctx, grad_output)
