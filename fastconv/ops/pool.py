"""Pooling: max, average, adaptive average and global average pooling.

Each op is a ``torch.ops.fastconv`` custom op with our own CPU kernels (csrc/ops/pool), a fake
kernel (shapes and memory format, for ``torch.compile`` / ``torch.export``) and an autograd
formula whose backward is again one of our ops (with its own double backward).

Shapes: ``input`` is ``(N, C, H, W)`` or unbatched ``(C, H, W)``; outputs keep the rank and
follow torch's memory format rule (channels_last in, channels_last out).
"""
from typing import Optional, Sequence, Tuple, Union

import torch
from ._args import IntOrPair, check_tensor, pair
from ._common import below_autograd, call_forward, empty_in_format

_ops = torch.ops.fastconv

__all__ = [
    "max_pool2d",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "global_avg_pool2d",
    "MaxPool2dFunction",
    "AvgPool2dFunction",
    "AdaptiveAvgPool2dFunction",
]


# ----------------------------------------------------------------------------- shape rules
# The same rules as csrc/common/shape.h and csrc/ops/pool/pool_shape_checks.h; the fake
# kernels need them in Python so that compiled graphs see the shapes (and errors) eager sees.

def _output_size(size, kernel, pad, stride, dilation, ceil_mode):
    numerator = size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _check_input(op, input):
    if input.dim() not in (3, 4):
        raise ValueError(f"{op}: input must be 3-D (C, H, W) or 4-D (N, C, H, W), got a tensor of "
                         f"shape {list(input.shape)}")
    if any(s == 0 for s in input.shape[-3:]):
        raise ValueError(f"{op}: input must have non-zero C, H and W (only N may be 0), got shape "
                         f"{list(input.shape)}")
    if input.dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        raise ValueError(f"{op}: input must be float32, float64, bfloat16 or float16, got {input.dtype}")


def _window_shape(op, input, kernel_size, stride, padding, dilation, ceil_mode):
    for name, v in (("kernel_size", kernel_size), ("stride", stride), ("padding", padding),
                    ("dilation", dilation)):
        if len(v) != 2:
            raise ValueError(f"{op}: {name} must have 2 elements (height, width), got {len(v)}")
    for i in range(2):
        if kernel_size[i] <= 0:
            raise ValueError(f"{op}: kernel_size must be positive, got {list(kernel_size)}")
        if stride[i] <= 0:
            raise ValueError(f"{op}: stride must be positive, got {list(stride)}")
        if dilation[i] <= 0:
            raise ValueError(f"{op}: dilation must be positive, got {list(dilation)}")
        if padding[i] < 0:
            raise ValueError(f"{op}: padding must be non-negative, got {list(padding)}")
        if padding[i] > kernel_size[i] // 2:
            raise ValueError(f"{op}: padding must be at most half of kernel_size, got "
                             f"padding={list(padding)}, kernel_size={list(kernel_size)}")
    _check_input(op, input)
    h, w = input.shape[-2:]
    oh = _output_size(h, kernel_size[0], padding[0], stride[0], dilation[0], ceil_mode)
    ow = _output_size(w, kernel_size[1], padding[1], stride[1], dilation[1], ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(f"{op}: output size is too small: input {h}x{w} with this kernel_size, "
                         f"stride, padding and dilation gives {oh}x{ow}")
    return (*input.shape[:-2], oh, ow)


# ----------------------------------------------------------------------------- fake kernels

@torch.library.register_fake("fastconv::max_pool2d")
def _max_pool2d_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    shape = _window_shape("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode)
    return empty_in_format(input, shape)


@torch.library.register_fake("fastconv::max_pool2d_with_indices")
def _max_pool2d_with_indices_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    shape = _window_shape("max_pool2d_with_indices", input, kernel_size, stride, padding, dilation,
                          ceil_mode)
    return empty_in_format(input, shape), empty_in_format(input, shape, torch.int64)


@torch.library.register_fake("fastconv::max_pool2d_with_argmax")
def _max_pool2d_with_argmax_fake(input, kernel_size, stride, padding, dilation, ceil_mode):
    shape = _window_shape("max_pool2d_with_argmax", input, kernel_size, stride, padding, dilation,
                          ceil_mode)
    compact = input.shape[-2] * input.shape[-1] <= 2**31 - 1
    return empty_in_format(input, shape), empty_in_format(input, shape,
                                                           torch.int32 if compact else torch.int64)


@torch.library.register_fake("fastconv::max_pool2d_backward")
def _max_pool2d_backward_fake(grad_output, input, indices, kernel_size, stride, padding, dilation,
                              ceil_mode):
    _window_shape("max_pool2d_backward", input, kernel_size, stride, padding, dilation, ceil_mode)
    return empty_in_format(input, input.shape)


@torch.library.register_fake("fastconv::avg_pool2d")
def _avg_pool2d_fake(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override):
    shape = _window_shape("avg_pool2d", input, kernel_size, stride, padding, (1, 1), ceil_mode)
    if divisor_override is not None and divisor_override == 0:
        raise ValueError("avg_pool2d: divisor_override must be non-zero (or None)")
    return empty_in_format(input, shape)


@torch.library.register_fake("fastconv::avg_pool2d_backward")
def _avg_pool2d_backward_fake(grad_output, input, kernel_size, stride, padding, ceil_mode,
                              count_include_pad, divisor_override):
    _window_shape("avg_pool2d_backward", input, kernel_size, stride, padding, (1, 1), ceil_mode)
    return empty_in_format(input, input.shape)


@torch.library.register_fake("fastconv::adaptive_avg_pool2d")
def _adaptive_avg_pool2d_fake(input, output_size):
    _check_input("adaptive_avg_pool2d", input)
    if len(output_size) != 2 or output_size[0] < 0 or output_size[1] < 0:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be two non-negative ints, got "
                         f"{list(output_size)}")
    return empty_in_format(input, (*input.shape[:-2], *output_size))


@torch.library.register_fake("fastconv::adaptive_avg_pool2d_backward")
def _adaptive_avg_pool2d_backward_fake(grad_output, input):
    _check_input("adaptive_avg_pool2d_backward", input)
    return empty_in_format(input, input.shape)


# ----------------------------------------------------------------------------- autograd
# Formulas are written once here and shared by the custom-op registrations (used by the
# functional API and torch.compile) and the user-facing torch.autograd.Function classes.

def _max_pool_grad(grad_output, input, indices, params):
    return below_autograd(_ops.max_pool2d_backward.default, grad_output, input, indices, *params)


def _avg_pool_grad(grad_output, input, params):
    return below_autograd(_ops.avg_pool2d_backward.default, grad_output, input, *params)


def _adaptive_avg_pool_grad(grad_output, input):
    return below_autograd(_ops.adaptive_avg_pool2d_backward.default, grad_output, input)


def _setup_max_pool_with_indices(ctx, inputs, output):
    input, *params = inputs
    ctx.save_for_backward(input, output[1])
    ctx.params = tuple(params)


def _backward_max_pool_with_indices(ctx, grad_output, _grad_indices):
    input, indices = ctx.saved_tensors
    return _max_pool_grad(grad_output, input, indices, ctx.params), None, None, None, None, None


def _setup_max_pool(ctx, inputs, output):
    input, *params = inputs
    ctx.save_for_backward(input)
    ctx.params = tuple(params)


def _backward_max_pool(ctx, grad_output):
    # The inference op keeps no argmax; a backward through it (rare: the public function picks
    # the indexed op when grad is needed) recomputes it.
    (input,) = ctx.saved_tensors
    _, indices = _ops.max_pool2d_with_argmax.default(input.detach(), *ctx.params)
    return _max_pool_grad(grad_output, input, indices, ctx.params), None, None, None, None, None


def _setup_max_pool_backward(ctx, inputs, output):
    _grad_output, input, indices, *params = inputs
    ctx.save_for_backward(indices)
    ctx.out_shape = _grad_output.shape


def _backward_max_pool_backward(ctx, grad_grad_input):
    # max_pool2d_backward scatters grad_output to the argmax cells; its adjoint gathers them.
    # (An argmax past the plane, from a window wholly in the padding, received nothing.)
    (indices,) = ctx.saved_tensors
    plane = grad_grad_input.shape[-2] * grad_grad_input.shape[-1]
    idx = indices.flatten(-2).long()
    inside = idx < plane
    flat = grad_grad_input.flatten(-2).gather(-1, torch.where(inside, idx, 0)) * inside
    return flat.view(ctx.out_shape), None, None, None, None, None, None, None


def _setup_avg_pool(ctx, inputs, output):
    input, *params = inputs
    ctx.save_for_backward(input)
    ctx.params = tuple(params)


def _backward_avg_pool(ctx, grad_output):
    (input,) = ctx.saved_tensors
    return _avg_pool_grad(grad_output, input, ctx.params), None, None, None, None, None, None


def _setup_avg_pool_backward(ctx, inputs, output):
    _grad_output, _input, *params = inputs
    ctx.params = tuple(params)


def _backward_avg_pool_backward(ctx, grad_grad_input):
    # avg_pool2d_backward is the adjoint of avg_pool2d, so its own adjoint is avg_pool2d.
    return (_ops.avg_pool2d.default(grad_grad_input, *ctx.params), None, None, None, None, None, None, None)


def _setup_adaptive(ctx, inputs, output):
    input, output_size = inputs
    ctx.save_for_backward(input)


def _backward_adaptive(ctx, grad_output):
    (input,) = ctx.saved_tensors
    return _adaptive_avg_pool_grad(grad_output, input), None


def _setup_adaptive_backward(ctx, inputs, output):
    grad_output, _input = inputs
    ctx.out_size = tuple(grad_output.shape[-2:])


def _backward_adaptive_backward(ctx, grad_grad_input):
    return _ops.adaptive_avg_pool2d.default(grad_grad_input, ctx.out_size), None


torch.library.register_autograd("fastconv::max_pool2d_with_indices", _backward_max_pool_with_indices,
                                setup_context=_setup_max_pool_with_indices)
torch.library.register_autograd("fastconv::max_pool2d_with_argmax", _backward_max_pool_with_indices,
                                setup_context=_setup_max_pool_with_indices)
torch.library.register_autograd("fastconv::max_pool2d", _backward_max_pool, setup_context=_setup_max_pool)
torch.library.register_autograd("fastconv::max_pool2d_backward", _backward_max_pool_backward,
                                setup_context=_setup_max_pool_backward)
torch.library.register_autograd("fastconv::avg_pool2d", _backward_avg_pool, setup_context=_setup_avg_pool)
torch.library.register_autograd("fastconv::avg_pool2d_backward", _backward_avg_pool_backward,
                                setup_context=_setup_avg_pool_backward)
torch.library.register_autograd("fastconv::adaptive_avg_pool2d", _backward_adaptive,
                                setup_context=_setup_adaptive)
torch.library.register_autograd("fastconv::adaptive_avg_pool2d_backward", _backward_adaptive_backward,
                                setup_context=_setup_adaptive_backward)


# ----------------------------------------------------------------------------- argument parsing

def _max_args(kernel_size, stride, padding, dilation, op):
    k = pair(kernel_size, "kernel_size", op)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) \
        else pair(stride, "stride", op)
    return k, s, pair(padding, "padding", op), pair(dilation, "dilation", op)


def _adaptive_size(input, output_size, op):
    if isinstance(output_size, (tuple, list, torch.Size)) and len(output_size) == 2:
        h, w = output_size
        h = input.shape[-2] if h is None else h
        w = input.shape[-1] if w is None else w
        return pair((h, w), "output_size", op)
    return pair(output_size, "output_size", op)


# ----------------------------------------------------------------------------- public API

def max_pool2d(input: torch.Tensor, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
               padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
               return_indices: bool = False):
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    input: ``(N, C, H, W)`` or ``(C, H, W)``, float32 or float64 (bfloat16 / float16 are
    computed in float32 and rounded back, as torch does), NCHW or channels_last.
    Returns ``(N, C, H_out, W_out)`` (and int64 indices into each ``H*W`` plane of the same
    shape when ``return_indices``). NaN propagates; ties keep the first maximum in row-major
    order, so indices equal torch's.
    """
    check_tensor(input, "max_pool2d")
    k, s, p, d = _max_args(kernel_size, stride, padding, dilation, "max_pool2d")
    ceil_mode = bool(ceil_mode)
    if return_indices:
        return call_forward(_ops.max_pool2d_with_indices.default, input, k, s, p, d, ceil_mode)
    if input.requires_grad and torch.is_grad_enabled():
        # Training: keep a compact (int32) argmax for backward rather than torch's int64.
        return _ops.max_pool2d_with_argmax.default(input, k, s, p, d, ceil_mode)[0]
    return call_forward(_ops.max_pool2d.default, input, k, s, p, d, ceil_mode)


def avg_pool2d(input: torch.Tensor, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
               padding: IntOrPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: Optional[int] = None) -> torch.Tensor:
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    input: ``(N, C, H, W)`` or ``(C, H, W)``; returns ``(N, C, H_out, W_out)``.
    """
    check_tensor(input, "avg_pool2d")
    k, s, p, _ = _max_args(kernel_size, stride, padding, 1, "avg_pool2d")
    if divisor_override is not None and (not isinstance(divisor_override, int) or isinstance(divisor_override, bool)):
        raise TypeError(f"avg_pool2d: divisor_override must be an int or None, got {divisor_override!r}")
    return call_forward(_ops.avg_pool2d.default, input, k, s, p, bool(ceil_mode), bool(count_include_pad),
                        divisor_override)


def adaptive_avg_pool2d(input: torch.Tensor,
                        output_size: Union[int, None, Sequence[Optional[int]]]) -> torch.Tensor:
    """Adaptive average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    input: ``(N, C, H, W)`` or ``(C, H, W)``; output_size: ``int`` or ``(H_out, W_out)``
    where ``None`` keeps that input size. Returns ``(N, C, H_out, W_out)``.
    """
    check_tensor(input, "adaptive_avg_pool2d")
    return call_forward(_ops.adaptive_avg_pool2d.default, input,
                        _adaptive_size(input, output_size, "adaptive_avg_pool2d"))


def global_avg_pool2d(input: torch.Tensor, keepdim: bool = True) -> torch.Tensor:
    """Mean over H and W: ``(N, C, H, W) -> (N, C, 1, 1)``, or ``(N, C)`` with ``keepdim=False``.

    Equal to ``F.adaptive_avg_pool2d(input, 1)``; runs the global-pool fast path.
    """
    check_tensor(input, "global_avg_pool2d")
    out = call_forward(_ops.adaptive_avg_pool2d.default, input, (1, 1))
    return out if keepdim else out.flatten(-3)


# ----------------------------------------------------------------------------- autograd.Function

class MaxPool2dFunction(torch.autograd.Function):
    """``MaxPool2dFunction.apply(input, kernel_size, stride, padding, dilation, ceil_mode)``
    with every window argument a pair of ints; returns ``(output, indices)``."""

    @staticmethod
    def forward(input, kernel_size, stride, padding, dilation, ceil_mode):
        return _ops.max_pool2d_with_indices.default(input, kernel_size, stride, padding, dilation, ceil_mode)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _setup_max_pool_with_indices(ctx, inputs, output)
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx, grad_output, grad_indices):
        return _backward_max_pool_with_indices(ctx, grad_output, grad_indices)


class AvgPool2dFunction(torch.autograd.Function):
    """``AvgPool2dFunction.apply(input, kernel_size, stride, padding, ceil_mode,
    count_include_pad, divisor_override)``, window arguments as pairs of ints."""

    @staticmethod
    def forward(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        return _ops.avg_pool2d.default(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                               divisor_override)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _setup_avg_pool(ctx, inputs, output)

    @staticmethod
    def backward(ctx, grad_output):
        return _backward_avg_pool(ctx, grad_output)


class AdaptiveAvgPool2dFunction(torch.autograd.Function):
    """``AdaptiveAvgPool2dFunction.apply(input, (H_out, W_out))``."""

    @staticmethod
    def forward(input, output_size):
        return _ops.adaptive_avg_pool2d.default(input, output_size)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _setup_adaptive(ctx, inputs, output)

    @staticmethod
    def backward(ctx, grad_output):
        return _backward_adaptive(ctx, grad_output)
