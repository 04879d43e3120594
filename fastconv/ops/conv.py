"""2-D convolution, as ``torch.nn.functional.conv2d``, on our own kernels (csrc/ops/conv).

``torch.ops.fastconv.conv2d`` takes four-sided padding ``(top, bottom, left, right)`` so that
``padding='same'`` with an even kernel (torch puts the extra row / column at the bottom /
right) needs no padded copy. ``conv2d_fused`` applies ``relu?((conv + bias) * scale + shift
+ residual)`` while the output tile is in registers (inference; folded BatchNorm, residual
blocks). ``conv2d_backward`` computes the input, weight and bias gradients.

Shapes: ``input (N, C, H, W)`` or unbatched ``(C, H, W)``; ``weight (OC, C / groups, kH,
kW)``; ``bias (OC,)``; output ``(N, OC, OH, OW)`` with
``OH = (H + pad_top + pad_bottom - dilation * (kH - 1) - 1) // stride + 1``. The output is
channels_last when the input or the weight is (torch's rule).
"""
from typing import Optional, Tuple, Union

import torch
from torch._prims_common import suggest_memory_format

from ._args import IntOrPair, check_tensor, pair
from ._common import (autocast_lower_precision, below_autograd, call_forward, no_setup, register_autocast,
                      unsupported_backward)

_ops = torch.ops.fastconv

__all__ = ["conv2d", "conv2d_fused", "conv_padding", "Conv2dFunction", "set_conv_algo", "conv_algo"]

_FLOATS = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def conv_padding(padding, kernel_size, stride, dilation, op="conv2d") -> Tuple[int, int, int, int]:
    """torch's padding argument (int, pair, ``'same'``, ``'valid'``) as (top, bottom, left,
    right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"{op}: padding='same' is not supported for strided convolutions "
                                 f"(stride={tuple(stride)})")
            out = []
            for k, d in zip(kernel_size, dilation):
                total = d * (k - 1)
                out += [total // 2, total - total // 2]
            return tuple(out)
        raise ValueError(f"{op}: padding must be an int, a tuple of ints, 'same' or 'valid', got "
                         f"{padding!r}")
    ph, pw = pair(padding, "padding", op)
    return (ph, ph, pw, pw)


def _out_size(size, lo, hi, k, s, d):
    span = size + lo + hi - d * (k - 1) - 1
    return -1 if span < 0 else span // s + 1


def _check(op, input, weight, stride, padding, dilation, groups):
    """The C++ checks (conv_cpu.cpp), for fake kernels: same rules, same messages."""
    if input.dim() != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got {input.dim()}-D (shape "
                         f"{list(input.shape)})")
    if weight.dim() != 4:
        raise ValueError(f"{op}: weight must be 4-D (out_channels, in_channels / groups, kH, kW), "
                         f"got {weight.dim()}-D (shape {list(weight.shape)})")
    if input.dtype not in _FLOATS:
        raise ValueError(f"{op}: input must be float32, float64, bfloat16 or float16, got {input.dtype}")
    if weight.dtype != input.dtype:
        raise ValueError(f"{op}: weight must have the dtype of input ({input.dtype}), got {weight.dtype}")
    if min(stride) < 1:
        raise ValueError(f"{op}: stride must be >= 1, got {list(stride)}")
    if min(dilation) < 1:
        raise ValueError(f"{op}: dilation must be >= 1, got {list(dilation)}")
    if min(padding) < 0:
        raise ValueError(f"{op}: padding must be >= 0, got {list(padding)}")
    if groups < 1:
        raise ValueError(f"{op}: groups must be >= 1, got {groups}")
    n, c, h, w = input.shape
    oc, icg, kh, kw = weight.shape
    if c % groups:
        raise ValueError(f"{op}: groups ({groups}) must divide the input channels ({c})")
    if oc % groups:
        raise ValueError(f"{op}: groups ({groups}) must divide the output channels ({oc}, weight.size(0))")
    if icg != c // groups:
        raise ValueError(f"{op}: weight.size(1) must be in_channels / groups = {c} / {groups} = "
                         f"{c // groups}, got weight of shape {list(weight.shape)}")
    if kh < 1 or kw < 1:
        raise ValueError(f"{op}: weight's kernel size must be >= 1, got {list(weight.shape)}")
    oh = _out_size(h, padding[0], padding[1], kh, stride[0], dilation[0])
    ow = _out_size(w, padding[2], padding[3], kw, stride[1], dilation[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"{op}: the (dilated) kernel {(kh - 1) * dilation[0] + 1}x"
                         f"{(kw - 1) * dilation[1] + 1} is larger than the padded input "
                         f"{h + padding[0] + padding[1]}x{w + padding[2] + padding[3]}")
    return (n, oc, oh, ow)


def _out_format(input, weight):
    cl = torch.channels_last
    if suggest_memory_format(input) == cl or suggest_memory_format(weight) == cl:
        return cl
    return torch.contiguous_format


def _check_vec(op, name, t, input, oc):
    if t is None:
        return
    if t.dtype != input.dtype:
        raise ValueError(f"{op}: {name} must have the dtype of input ({input.dtype}), got {t.dtype}")
    if t.dim() != 1 or t.shape[0] != oc:
        raise ValueError(f"{op}: {name} must have shape (out_channels,) = ({oc},), got {list(t.shape)}")


# ----------------------------------------------------------------------------- fake kernels

@torch.library.register_fake("fastconv::conv2d")
def _conv2d_fake(input, weight, bias, stride, padding, dilation, groups):
    shape = _check("conv2d", input, weight, stride, padding, dilation, groups)
    _check_vec("conv2d", "bias", bias, input, shape[1])
    return torch.empty(shape, dtype=input.dtype, device=input.device,
                       memory_format=_out_format(input, weight))


@torch.library.register_fake("fastconv::conv2d_fused")
def _conv2d_fused_fake(input, weight, bias, scale, shift, residual, relu, stride, padding, dilation, groups):
    shape = _check("conv2d", input, weight, stride, padding, dilation, groups)
    for name, t in (("bias", bias), ("scale", scale), ("shift", shift)):
        _check_vec("conv2d", name, t, input, shape[1])
    if residual is not None and tuple(residual.shape) != tuple(shape):
        raise ValueError(f"conv2d: residual must have the output's shape {tuple(shape)}, got "
                         f"{tuple(residual.shape)}")
    return torch.empty(shape, dtype=input.dtype, device=input.device,
                       memory_format=_out_format(input, weight))


@torch.library.register_fake("fastconv::conv2d_backward")
def _conv2d_backward_fake(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    shape = _check("conv2d_backward", input, weight, stride, padding, dilation, groups)
    if tuple(grad_output.shape) != tuple(shape):
        raise ValueError(f"conv2d_backward: grad_output must have the output's shape {tuple(shape)}, "
                         f"got {tuple(grad_output.shape)}")
    fmt = _out_format(input, weight)

    def empty():
        return input.new_empty((0,))
    gx = torch.empty(input.shape, dtype=input.dtype, device=input.device, memory_format=fmt) \
        if output_mask[0] else empty()
    gw = torch.empty(weight.shape, dtype=input.dtype, device=input.device,
                     memory_format=suggest_memory_format(weight)) if output_mask[1] else empty()
    gb = input.new_empty((weight.shape[0],)) if output_mask[2] else empty()
    return gx, gw, gb


# ----------------------------------------------------------------------------- autograd

def _setup(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(input, weight)
    ctx.params = (stride, padding, dilation, groups)
    ctx.has_bias = bias is not None


def _backward(ctx, grad_output):
    input, weight = ctx.saved_tensors
    need = ctx.needs_input_grad
    mask = [bool(need[0]), bool(need[1]), bool(need[2]) and ctx.has_bias]
    gx, gw, gb = below_autograd(_ops.conv2d_backward.default, grad_output, input, weight, *ctx.params, mask)
    return (gx if mask[0] else None, gw if mask[1] else None, gb if mask[2] else None,
            None, None, None, None)


torch.library.register_autograd("fastconv::conv2d", _backward, setup_context=_setup)
# Inside torch.autocast, conv2d runs in the region's dtype as torch's conv2d does (input,
# weight, bias cast); the fused inference op casts its epilogue tensors along with them.
register_autocast("conv2d", autocast_lower_precision(0, 1, 2))
register_autocast("conv2d_fused", autocast_lower_precision(0, 1, 2, 3, 4, 5))
torch.library.register_autograd("fastconv::conv2d_fused", unsupported_backward(
    "fastconv.conv2d_fused is an inference op (its epilogue is folded into the output tile); "
    "train with fastconv.conv2d followed by the separate ops"), setup_context=no_setup)
torch.library.register_autograd("fastconv::conv2d_backward", unsupported_backward(
    "fastconv.conv2d: double backward (a gradient of its gradient) is not implemented; use "
    "torch.nn.functional.conv2d where you need it"), setup_context=no_setup)


# ----------------------------------------------------------------------------- public API

def _normalise(op, input, weight, stride, padding, dilation):
    check_tensor(input, op)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{op}: weight must be a torch.Tensor, got {type(weight).__name__}")
    if input.dim() not in (3, 4):
        raise ValueError(f"{op}: input must be 3-D (C, H, W) or 4-D (N, C, H, W), got "
                         f"{input.dim()}-D (shape {list(input.shape)})")
    if weight.dim() != 4:
        raise ValueError(f"{op}: weight must be 4-D (out_channels, in_channels / groups, kH, kW), "
                         f"got {weight.dim()}-D (shape {list(weight.shape)})")
    stride = pair(stride, "stride", op)
    dilation = pair(dilation, "dilation", op)
    pads = conv_padding(padding, tuple(weight.shape[2:]), stride, dilation, op)
    if input.device != weight.device:
        raise ValueError(f"{op}: weight must be on input's device ({input.device}), got {weight.device}")
    return list(stride), list(pads), list(dilation)


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           stride: IntOrPair = 1, padding: Union[IntOrPair, str] = 0, dilation: IntOrPair = 1,
           groups: int = 1) -> torch.Tensor:
    """2-D convolution, as ``torch.nn.functional.conv2d`` (same arguments, result and gradients).

    input ``(N, C, H, W)`` or ``(C, H, W)``; weight ``(OC, C / groups, kH, kW)``; bias ``(OC,)``;
    padding an int, a pair, ``'same'`` (stride 1 only) or ``'valid'``.
    """
    stride, pads, dilation = _normalise("conv2d", input, weight, stride, padding, dilation)
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"conv2d: groups must be an int, got {groups!r}")
    if input.dim() == 3:
        return call_forward(_ops.conv2d.default, input.unsqueeze(0), weight, bias, stride, pads, dilation,
                            groups).squeeze(0)
    return call_forward(_ops.conv2d.default, input, weight, bias, stride, pads, dilation, groups)


def conv2d_fused(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                 scale: Optional[torch.Tensor] = None, shift: Optional[torch.Tensor] = None,
                 residual: Optional[torch.Tensor] = None, relu: bool = False, stride: IntOrPair = 1,
                 padding: Union[IntOrPair, str] = 0, dilation: IntOrPair = 1, groups: int = 1) -> torch.Tensor:
    """``relu?((conv2d(input, weight) + bias) * scale + shift + residual)`` in one pass
    (inference only). scale, shift ``(OC,)``; residual the output's shape ``(N, OC, OH, OW)``."""
    stride, pads, dilation = _normalise("conv2d_fused", input, weight, stride, padding, dilation)
    if input.dim() != 4:
        raise ValueError(f"conv2d_fused: input must be 4-D (N, C, H, W), got {input.dim()}-D")
    return call_forward(_ops.conv2d_fused.default, input, weight, bias, scale, shift, residual, bool(relu),
                        stride, pads, dilation, groups)


class Conv2dFunction(torch.autograd.Function):
    """``Conv2dFunction.apply(input, weight, bias, stride, padding4, dilation, groups)`` with
    ``padding4 = (top, bottom, left, right)`` (see ``conv_padding``)."""

    @staticmethod
    def forward(input, weight, bias, stride, padding, dilation, groups):
        return _ops.conv2d.default(input, weight, bias, list(stride), list(padding), list(dilation), groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _setup(ctx, inputs, output)

    @staticmethod
    def backward(ctx, grad_output):
        return _backward(ctx, grad_output)


def set_conv_algo(name: str) -> None:
    """Force the conv2d algorithm for later calls (``FASTCONV_CONV_ALGO`` sets the initial
    choice). ``'auto'`` is the heuristic: ``gemm1x1`` for unpadded 1x1 stride-1 layers
    (NCHW or channels_last), ``winograd`` (F(2x2, 3x3)) for 3x3 stride-1 single-group layers with >= 16 input and
    output channels and >= 32 2x2 output tiles (and 5x5 ones with >= 64 input channels, as four 3x3 pieces) unless
    the output is 7 wide on AVX-512 (the direct kernel's tile then holds two rows) or, on AVX-512, a 3x3 layer has
    fewer than 64 tiles (batch 1 at 14x14) or a 5x5 one fewer than 256, ``nchw`` (pixels in the SIMD
    lanes) for NCHW layers with <= 4 input channels per group and stride 1 along W, ``direct`` otherwise. ``'winograd4'``
    (F(4x4, 3x3), about 10x the float32 error of direct; 3x3 only) is never chosen automatically.
    A forced algorithm that does not apply to a layer falls back to ``direct``."""
    from .. import _C
    _C.set_conv_algo(name)


def conv_algo() -> str:
    """The forced conv2d algorithm (``'auto'`` when the heuristic decides)."""
    from .. import _C
    return _C.conv_algo()
