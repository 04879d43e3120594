"""Helpers shared by the op families' Python layers (autograd plumbing, fake-kernel outputs)."""
import torch
from torch._prims_common import suggest_memory_format


def below_autograd(op, *args):
    """Calls a backward op. The backward ops carry autograd formulas of their own (for double
    backward); in a plain backward pass (grad mode off) that layer has nothing to record, yet
    going through it costs more than the kernel of a small op, so dispatch straight to the
    backend then."""
    if torch.is_grad_enabled():
        return op(*args)
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args)


def call_forward(op, input, *args):
    """Calls a forward op. The ops' autograd layer is a Python kernel (register_autograd) that
    the dispatcher enters on every call, recording or not; when nothing can be recorded (no
    grad needed, a plain tensor, no compile or forward-AD tracing) skip it, which halves the
    per-call cost of a small op (7 us -> 3.5 us here)."""
    forward_ad = torch.autograd.forward_ad._current_level >= 0
    tensors = [input] + [a for a in args if isinstance(a, torch.Tensor)]
    if (all(type(t) is torch.Tensor for t in tensors)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
            and not torch.compiler.is_compiling()
            and not forward_ad):
        with torch._C._AutoDispatchBelowAutograd():
            return op(input, *args)
    if forward_ad and any(torch.autograd.forward_ad.unpack_dual(t).tangent is not None for t in tensors):
        # The custom ops have backward formulas only; without this the tangent would be
        # dropped silently.
        raise NotImplementedError(
            f"fastconv: forward-mode AD (dual tensors) is not supported by {op}; use "
            "reverse mode (backward) or the torch.nn.functional op")
    return op(input, *args)


def empty_in_format(input, shape, dtype=None):
    """An empty output shaped ``shape`` in the memory format the CPU kernels give for
    ``input``: channels_last for a 4-D channels_last input (torch's rule), else contiguous."""
    fmt = suggest_memory_format(input) if input.dim() == 4 else torch.contiguous_format
    return torch.empty(shape, dtype=dtype or input.dtype, device=input.device, memory_format=fmt)


def no_setup(ctx, inputs, output):
    """``setup_context`` of an op whose backward needs nothing saved."""


def unsupported_backward(message):
    """A backward formula that raises ``NotImplementedError(message)``: for gradients we do
    not compute (double backward, inference-only ops), so autograd never drops them silently."""

    def backward(ctx, *grads):
        raise NotImplementedError(message)

    return backward
