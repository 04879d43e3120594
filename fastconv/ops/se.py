"""Squeeze-and-Excitation (Hu et al., 2018): squeeze (global average pool), excitation
(FC -> ReLU -> FC -> sigmoid), scale (channel-wise multiply), and the SE-ResNet block tail
``relu(x * s + identity)``.

The feature map is the only large tensor, so the kernels are built around the passes over
it, image by image: the forward squeezes an image, runs its excitation (our own small
matrix-vector products) and scales it while it is still in cache, so the map comes from
memory once and the output goes out once; the backward likewise reads an image's output
gradient and input for the excitation's gradient, then writes its input gradient (which
also carries the squeeze's share ``dp / (H W)``) while the gradient is in cache, instead of
torch's separate mean, mul, sum, expand and add passes.

Shapes: ``input`` / ``residual`` ``(N, C, H, W)`` (NCHW or channels_last; the output takes the
input's memory format); ``scale`` ``(N, C)``; excitation weights ``(C/r, C)`` and ``(C, C/r)``.
"""
from typing import Optional

import torch

from ._args import check_tensor
from ._common import (autocast_promote, below_autograd, call_forward, empty_in_format, no_setup, register_autocast,
                      unsupported_backward)

_ops = torch.ops.fastconv

__all__ = ["channel_scale", "squeeze_excitation", "ChannelScaleFunction", "SqueezeExcitationFunction"]

_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _check_input(op, input):
    if input.dim() != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got {input.dim()}-D (shape {list(input.shape)})")
    if input.dtype not in _DTYPES:
        raise ValueError(f"{op}: input must be float32, float64, bfloat16 or float16, got {input.dtype}")


def _dtypes_must_match(input):
    """Outside autocast the tensors must share input's dtype; inside it the autocast rule
    (registered below) reconciles them before the op runs, as torch's type promotion would."""
    return not torch.is_autocast_enabled(input.device.type)


def _check_like(op, name, t, input):
    if t.shape != input.shape:
        raise ValueError(f"{op}: {name} must have the shape of input {list(input.shape)}, got {list(t.shape)}")
    if t.dtype != input.dtype and _dtypes_must_match(input):
        raise ValueError(f"{op}: {name} must have the dtype of input ({input.dtype}), got {t.dtype}")
    if t.device != input.device:
        raise ValueError(f"{op}: {name} must be on the device of input ({input.device}), got {t.device}")


def _check_per_channel(op, name, t, input):
    n, c = input.shape[:2]
    if t.dim() != 2 or tuple(t.shape) != (n, c):
        raise ValueError(f"{op}: {name} must have shape (N, C) = ({n}, {c}), got {list(t.shape)}")
    if t.dtype != input.dtype and _dtypes_must_match(input):
        raise ValueError(f"{op}: {name} must have the dtype of input ({input.dtype}), got {t.dtype}")
    if t.device != input.device:
        raise ValueError(f"{op}: {name} must be on the device of input ({input.device}), got {t.device}")


@torch.library.register_fake("fastconv::channel_scale")
def _channel_scale_fake(input, scale, residual, relu):
    _check_input("channel_scale", input)
    _check_per_channel("channel_scale", "scale", scale, input)
    if residual is not None:
        _check_like("channel_scale", "residual", residual, input)
    return empty_in_format(input, input.shape)


@torch.library.register_fake("fastconv::channel_scale_grad_scale")
def _grad_scale_fake(grad_output, input, output, residual_grad):
    op = "channel_scale_grad_scale"
    _check_input(op, input)
    _check_like(op, "grad_output", grad_output, input)
    if output is not None:
        _check_like(op, "output", output, input)
    gs = input.new_empty(input.shape[:2])
    if residual_grad and output is not None:
        return gs, empty_in_format(input, input.shape)
    return gs, input.new_empty((0,))


@torch.library.register_fake("fastconv::channel_scale_grad_input")
def _grad_input_fake(grad_output, scale, shift, output):
    op = "channel_scale_grad_input"
    _check_input(op, grad_output)
    _check_per_channel(op, "scale", scale, grad_output)
    if shift is not None:
        _check_per_channel(op, "shift", shift, grad_output)
    if output is not None:
        _check_like(op, "output", output, grad_output)
    return empty_in_format(output if output is not None else grad_output, grad_output.shape)


def _scale_setup(ctx, inputs, output):
    input, scale, residual, relu = inputs
    ctx.has_residual = residual is not None
    ctx.save_for_backward(input, scale, output if relu else None)


def _scale_backward(ctx, grad_output):
    input, scale, output = ctx.saved_tensors
    need_x, need_s, need_r = ctx.needs_input_grad[:3]
    need_r = need_r and ctx.has_residual
    grad_x = grad_s = grad_r = None
    if need_s or (need_r and output is not None):
        grad_s, grad_r = below_autograd(_ops.channel_scale_grad_scale.default, grad_output, input, output,
                                        bool(need_r))
    if need_r and output is None:
        grad_r = grad_output
    if need_x:
        grad_x = below_autograd(_ops.channel_scale_grad_input.default, grad_output, scale, None, output)
    return grad_x, grad_s if need_s else None, grad_r if need_r else None, None


torch.library.register_autograd("fastconv::channel_scale", _scale_backward, setup_context=_scale_setup)
# x * s + r: torch's type promotion, in an autocast region as outside it (there a bfloat16
# excitation times a float32 input is float32).
register_autocast("channel_scale", autocast_promote(0, 1, 2))
_NO_DOUBLE = ("fastconv.channel_scale / squeeze_excitation: double backward (a gradient of its gradient) "
              "is not implemented; compose the block from torch ops where you need it")
for _name in ("channel_scale_grad_scale", "channel_scale_grad_input"):
    torch.library.register_autograd(f"fastconv::{_name}", unsupported_backward(_NO_DOUBLE), setup_context=no_setup)


def _as_nc(scale):
    """Accept ``(N, C)`` or ``(N, C, 1, 1)`` (what a 1x1-conv excitation returns)."""
    if scale.dim() == 4 and scale.shape[2:] == (1, 1):
        return scale.flatten(1)
    return scale


def channel_scale(input: torch.Tensor, scale: torch.Tensor, residual: Optional[torch.Tensor] = None,
                  relu: bool = False) -> torch.Tensor:
    """``relu?(input * scale[:, :, None, None] + residual)`` in one pass: the SE scale, and with
    ``residual`` and ``relu=True`` the SE-ResNet block tail.

    input: ``(N, C, H, W)``; scale: ``(N, C)`` or ``(N, C, 1, 1)``; residual: like input.
    Returns ``(N, C, H, W)`` in input's memory format.
    """
    check_tensor(input, "channel_scale")
    check_tensor(scale, "channel_scale", "scale")
    _check_input("channel_scale", input)
    scale = _as_nc(scale)
    _check_per_channel("channel_scale", "scale", scale, input)
    if residual is not None:
        check_tensor(residual, "channel_scale", "residual")
        _check_like("channel_scale", "residual", residual, input)
    return call_forward(_ops.channel_scale.default, input, scale, residual, bool(relu))


class ChannelScaleFunction(torch.autograd.Function):
    """``ChannelScaleFunction.apply(input, scale, residual, relu)``; see ``channel_scale``."""

    @staticmethod
    def forward(input, scale, residual, relu):
        return _ops.channel_scale.default(input, scale, residual, relu)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _scale_setup(ctx, inputs, output)

    @staticmethod
    def backward(ctx, grad_output):
        return _scale_backward(ctx, grad_output)


@torch.library.register_fake("fastconv::squeeze_excitation")
def _se_fake(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual):
    _check_input("squeeze_excitation", input)
    if residual is not None:
        _check_like("squeeze_excitation", "residual", residual, input)
    n, c = input.shape[:2]
    return (empty_in_format(input, input.shape), input.new_empty((n, c)), input.new_empty((n, fc1_weight.shape[0])),
            input.new_empty((n, c)))


@torch.library.register_fake("fastconv::squeeze_excitation_backward")
def _se_backward_fake(grad_output, input, fc1_weight, fc2_weight, hidden, scale, output, output_mask):
    _check_input("squeeze_excitation_backward", input)
    _check_like("squeeze_excitation_backward", "grad_output", grad_output, input)
    n, c = input.shape[:2]
    gi = empty_in_format(input, input.shape) if output_mask[0] else input.new_empty((0,))
    gr = empty_in_format(input, input.shape) if output_mask[1] and output is not None else input.new_empty((0,))
    return gi, gr, input.new_empty((n, fc1_weight.shape[0])), input.new_empty((n, c))


def _se_setup(ctx, inputs, output):
    input, w1, b1, w2, b2, residual = inputs
    out, pooled, hidden, scale = output
    ctx.has_residual = residual is not None
    ctx.save_for_backward(input, w1, w2, pooled, hidden, scale, out if residual is not None else None)
    ctx.mark_non_differentiable(pooled, hidden, scale)


def _se_grads(ctx, grad_output):
    """Gradients of (input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual): the kernel
    gives grad_input and the FC pre-activation gradients dz1 / dz2; the FC weight gradients
    are (N, C/r) x (N, C) products, left to torch."""
    input, w1, w2, pooled, hidden, scale, out = ctx.saved_tensors
    need = ctx.needs_input_grad
    need_r = bool(need[5] and ctx.has_residual)
    gi, gr, dz1, dz2 = below_autograd(_ops.squeeze_excitation_backward.default, grad_output, input, w1, w2, hidden,
                                      scale, out, [bool(need[0]), need_r])
    if need_r and out is None:
        gr = grad_output
    return (gi if need[0] else None,
            dz1.t() @ pooled if need[1] else None,
            dz1.sum(0) if need[2] else None,
            dz2.t() @ hidden if need[3] else None,
            dz2.sum(0) if need[4] else None,
            gr if need_r else None)


def _se_backward(ctx, grad_output, *unused):
    return _se_grads(ctx, grad_output)


torch.library.register_autograd("fastconv::squeeze_excitation", _se_backward, setup_context=_se_setup)


def _se_autocast(args, dtype):
    """The torch layers the SE block replaces, in an autocast region: the two FC layers run in
    the region's dtype (their weights rounded to it), the pooling and the scale in the input's
    dtype, so the result has the input's dtype (promoted with the residual's). Here the FC
    parameters are rounded to the region's dtype and the block runs in the input's dtype."""
    args = autocast_promote(0, 5)(args, dtype)
    for i in (1, 2, 3, 4):
        if isinstance(args[i], torch.Tensor) and args[i].is_floating_point():
            args[i] = args[i].to(dtype).to(args[0].dtype)
    return args


register_autocast("squeeze_excitation", _se_autocast)
torch.library.register_autograd("fastconv::squeeze_excitation_backward", unsupported_backward(_NO_DOUBLE),
                                setup_context=no_setup)


class SqueezeExcitationFunction(torch.autograd.Function):
    """``apply(input, fc1_weight, fc1_bias, fc2_weight, fc2_bias, residual)``: input
    ``(N, C, H, W)``, fc1_weight ``(C/r, C)``, fc1_bias ``(C/r,)`` or None, fc2_weight
    ``(C, C/r)``, fc2_bias ``(C,)`` or None, residual None (returns ``x * s``) or like input
    (returns ``relu(x * s + residual)``). See ``squeeze_excitation``."""

    @staticmethod
    def forward(input, w1, b1, w2, b2, residual):
        return _ops.squeeze_excitation.default(input, w1, b1, w2, b2, residual)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _se_setup(ctx, inputs, output)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output, *unused):
        return _se_grads(ctx, grad_output)


def squeeze_excitation(input: torch.Tensor, fc1_weight: torch.Tensor, fc1_bias: Optional[torch.Tensor],
                       fc2_weight: torch.Tensor, fc2_bias: Optional[torch.Tensor],
                       residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The SE block: ``s = sigmoid(fc2(relu(fc1(mean_hw(input)))))``, returns ``input * s``, or
    with ``residual`` the SE-ResNet tail ``relu(input * s + residual)``.

    input: ``(N, C, H, W)``; fc1_weight: ``(C/r, C)`` or ``(C/r, C, 1, 1)``; fc1_bias ``(C/r,)``;
    fc2_weight: ``(C, C/r)`` or ``(C, C/r, 1, 1)``; fc2_bias ``(C,)``; residual like input.
    """
    op = "squeeze_excitation"
    check_tensor(input, op)
    check_tensor(fc1_weight, op, "fc1_weight")
    check_tensor(fc2_weight, op, "fc2_weight")
    _check_input(op, input)
    if input.shape[2] * input.shape[3] == 0:
        raise ValueError(f"{op}: input must have H * W > 0 to be squeezed, got shape {list(input.shape)}")
    c = input.shape[1]
    w1 = fc1_weight.flatten(1) if fc1_weight.dim() == 4 else fc1_weight
    w2 = fc2_weight.flatten(1) if fc2_weight.dim() == 4 else fc2_weight
    if w1.dim() != 2 or w1.shape[1] != c:
        raise ValueError(f"{op}: fc1_weight must have shape (C/r, C) with C = {c}, got {list(fc1_weight.shape)}")
    cr = w1.shape[0]
    if w2.dim() != 2 or tuple(w2.shape) != (c, cr):
        raise ValueError(f"{op}: fc2_weight must have shape (C, C/r) = ({c}, {cr}), got {list(fc2_weight.shape)}")
    for name, b, n in (("fc1_bias", fc1_bias, cr), ("fc2_bias", fc2_bias, c)):
        if b is not None and (b.dim() != 1 or b.shape[0] != n):
            raise ValueError(f"{op}: {name} must have shape ({n},), got {list(b.shape)}")
    for name, t in (("fc1_weight", w1), ("fc2_weight", w2), ("fc1_bias", fc1_bias), ("fc2_bias", fc2_bias)):
        if t is not None and ((t.dtype != input.dtype and _dtypes_must_match(input)) or t.device != input.device):
            raise ValueError(f"{op}: {name} must have input's dtype and device ({input.dtype}, {input.device}), "
                             f"got ({t.dtype}, {t.device})")
    if residual is not None:
        check_tensor(residual, op, "residual")
        _check_like(op, "residual", residual, input)
    return call_forward(_ops.squeeze_excitation.default, input, w1, fc1_bias, w2, fc2_bias, residual)[0]
