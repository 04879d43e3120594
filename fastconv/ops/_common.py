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


def empty_in_format(input, shape, dtype=None):
    """An empty output shaped ``shape`` in the memory format the CPU kernels give for
    ``input``: channels_last for a 4-D channels_last input (torch's rule), else contiguous."""
    fmt = suggest_memory_format(input) if input.dim() == 4 else torch.contiguous_format
    return torch.empty(shape, dtype=dtype or input.dtype, device=input.device, memory_format=fmt)
