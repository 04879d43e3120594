"""Training-mode BatchNorm with the residual add and ReLU that follow it in a ResNet block:
``relu?(batch_norm(input) + residual)`` on the batch statistics, as one op.

torch runs BatchNorm (a statistics pass and a normalising pass), the add and the ReLU as
separate ops, five passes over the map forward and seven backward; here each direction is a
reduction pass and an elementwise pass (formulas in ``csrc/ops/bn/bn_math.h``).

Shapes: input / residual ``(N, C, H, W)`` (NCHW or channels_last; the output takes input's
memory format); weight, bias, running_mean, running_var ``(C,)``.
"""
from typing import Optional

import torch

from ._args import check_tensor
from ._common import autocast_promote, below_autograd, call_forward, empty_in_format, no_setup, register_autocast
from ._common import unsupported_backward

_ops = torch.ops.fastconv

__all__ = ["batch_norm_act", "BatchNormActFunction"]

_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _check(op, input, weight, bias, residual, eps):
    if input.dim() != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got {input.dim()}-D (shape {list(input.shape)})")
    if input.dtype not in _DTYPES:
        raise ValueError(f"{op}: input must be float32, float64, bfloat16 or float16, got {input.dtype}")
    n, c, h, w = input.shape
    if n * h * w == 1:
        raise ValueError(f"{op}: batch statistics need more than 1 value per channel (N * H * W > 1, or an empty "
                         f"batch), got input of shape {list(input.shape)}")
    mixed_ok = torch.is_autocast_enabled(input.device.type)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if t.dim() != 1 or t.shape[0] != c:
            raise ValueError(f"{op}: {name} must have shape (C,) = ({c},), got {list(t.shape)}")
        if (t.dtype != input.dtype and not mixed_ok) or t.device != input.device:
            raise ValueError(f"{op}: {name} must have input's dtype and device ({input.dtype}, {input.device}), "
                             f"got ({t.dtype}, {t.device})")
    if residual is not None:
        if residual.shape != input.shape:
            raise ValueError(f"{op}: residual must have the shape of input {list(input.shape)}, "
                             f"got {list(residual.shape)}")
        if (residual.dtype != input.dtype and not mixed_ok) or residual.device != input.device:
            raise ValueError(f"{op}: residual must have input's dtype and device ({input.dtype}, {input.device}), "
                             f"got ({residual.dtype}, {residual.device})")
    if not (eps >= 0 and eps != float("inf")):
        raise ValueError(f"{op}: eps must be finite and >= 0, got {eps}")


@torch.library.register_fake("fastconv::batch_norm_act")
def _bn_act_fake(input, weight, bias, residual, relu, eps):
    _check("batch_norm_act", input, weight, bias, residual, eps)
    c = input.shape[1]
    return empty_in_format(input, input.shape), input.new_empty((c,)), input.new_empty((c,))


@torch.library.register_fake("fastconv::batch_norm_act_backward")
def _bn_act_backward_fake(grad_output, input, weight, mean, var, output, eps, residual_grad):
    _check("batch_norm_act_backward", input, weight, None, output, eps)
    if grad_output.shape != input.shape:
        raise ValueError(f"batch_norm_act_backward: grad_output must have the shape of input {list(input.shape)}, "
                         f"got {list(grad_output.shape)}")
    c = input.shape[1]
    gr = empty_in_format(input, input.shape) if residual_grad and output is not None else input.new_empty((0,))
    return empty_in_format(input, input.shape), input.new_empty((c,)), input.new_empty((c,)), gr


def _setup(ctx, inputs, output):
    input, weight, bias, residual, relu, eps = inputs
    out, mean, var = output
    ctx.eps = eps
    ctx.has_residual = residual is not None
    ctx.save_for_backward(input, weight, mean, var, out if relu else None)
    ctx.mark_non_differentiable(mean, var)


def _grads(ctx, grad_output):
    """Gradients of (input, weight, bias, residual, relu, eps)."""
    input, weight, mean, var, out = ctx.saved_tensors
    need = ctx.needs_input_grad
    need_r = bool(need[3] and ctx.has_residual)
    gi, gw, gb, gr = below_autograd(_ops.batch_norm_act_backward.default, grad_output, input, weight, mean, var, out,
                                    ctx.eps, need_r)
    if need_r and out is None:
        gr = grad_output
    return (gi if need[0] else None, gw if need[1] else None, gb if need[2] else None, gr if need_r else None,
            None, None)


def _backward(ctx, grad_output, *unused):
    return _grads(ctx, grad_output)


torch.library.register_autograd("fastconv::batch_norm_act", _backward, setup_context=_setup)
torch.library.register_autograd("fastconv::batch_norm_act_backward", unsupported_backward(
    "fastconv.batch_norm_act: double backward (a gradient of its gradient) is not implemented; use "
    "torch.nn.functional.batch_norm where you need it"), setup_context=no_setup)
# BatchNorm runs in its input's dtype under autocast; the parameters and residual follow it.
register_autocast("batch_norm_act", autocast_promote(0, 1, 2, 3))


class BatchNormActFunction(torch.autograd.Function):
    """``apply(input, weight, bias, residual, relu, eps) -> (output, mean, var)``; see
    ``batch_norm_act`` (which also updates the running statistics)."""

    @staticmethod
    def forward(input, weight, bias, residual, relu, eps):
        return _ops.batch_norm_act.default(input, weight, bias, residual, relu, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _setup(ctx, inputs, output)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output, *unused):
        return _grads(ctx, grad_output)


def batch_norm_act(input: torch.Tensor, running_mean: Optional[torch.Tensor] = None,
                   running_var: Optional[torch.Tensor] = None, weight: Optional[torch.Tensor] = None,
                   bias: Optional[torch.Tensor] = None, residual: Optional[torch.Tensor] = None, relu: bool = True,
                   momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """``relu?(F.batch_norm(input, running_mean, running_var, weight, bias, training=True,
    momentum=momentum, eps=eps) + residual)``: normalised with the batch's statistics; the
    running statistics, when given, are updated in place as torch's are (mean, and the
    unbiased variance, by ``momentum``).

    input ``(N, C, H, W)``; running_mean / running_var / weight / bias ``(C,)`` or None;
    residual like input or None. Returns ``(N, C, H, W)`` in input's memory format.
    """
    op = "batch_norm_act"
    check_tensor(input, op)
    for name, t in (("weight", weight), ("bias", bias), ("residual", residual), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if t is not None:
            check_tensor(t, op, name)
    _check(op, input, weight, bias, residual, eps)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: running_mean and running_var must be given together")
    c = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and (t.dim() != 1 or t.shape[0] != c):
            raise ValueError(f"{op}: {name} must have shape (C,) = ({c},), got {list(t.shape)}")
    out, mean, var = call_forward(_ops.batch_norm_act.default, input, weight, bias, residual, bool(relu), float(eps))
    if running_mean is not None and input.numel() > 0:  # torch leaves them as they are for an empty batch
        m = input.numel() // c
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
            running_var.mul_(1 - momentum).add_(var.to(running_var.dtype), alpha=momentum * m / (m - 1))
    return out
