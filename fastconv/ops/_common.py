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


# Parameters count as plain: a module's weights are Parameters (same dispatch, no
# __torch_function__), and without them every nn layer's call took the slow path.
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def call_forward(op, input, *args):
    """Calls a forward op. The ops' autograd layer is a Python kernel (register_autograd) that
    the dispatcher enters on every call, recording or not; when nothing can be recorded (no
    grad needed, a plain tensor, no compile or forward-AD tracing) skip it, which halves the
    per-call cost of a small op (7 us -> 3.5 us here)."""
    forward_ad = torch.autograd.forward_ad._current_level >= 0
    tensors = [input] + [a for a in args if isinstance(a, torch.Tensor)]
    if (all(type(t) in _PLAIN for t in tensors)
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


# Autocast rules of the custom ops, one kernel per autocast dispatch key (CPU and CUDA). The
# library object must outlive the registrations.
_autocast_lib = torch.library.Library("fastconv", "IMPL")
_AUTOCAST_DEVICES = ("cpu", "cuda")


def _cast_floating(t, dtype):
    return t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != dtype else t


def register_autocast(name, cast):
    """Registers what ``fastconv::name`` does inside ``torch.autocast``, mirroring what torch
    does with the layers the op replaces. ``cast(args, dtype)`` returns the arguments to run
    the op with, given the region's lower-precision dtype; the op then runs with autocast off
    for that device, as torch's own autocast kernels do (the casts are recorded by autograd,
    so gradients reach the caller's tensors in their own dtype)."""
    op = getattr(torch.ops.fastconv, name).default
    for device in _AUTOCAST_DEVICES:
        if not torch._C._is_autocast_available(device):
            continue
        key_name = "Autocast" + torch._C._dispatch_key_for_device(device)
        keyset = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key_name))

        def kernel(_keyset, *args, device=device, keyset=keyset):
            with torch._C._ExcludeDispatchKeyGuard(keyset):
                return op(*cast(list(args), torch.get_autocast_dtype(device)))

        _autocast_lib.impl(name, kernel, key_name, with_keyset=True)
        # The Python dispatcher (torch.compile's tracing) looks for a Python kernel first.
        dispatch_key = getattr(torch._C.DispatchKey, key_name)
        op.py_kernels.pop(dispatch_key, None)
        op.py_impl(dispatch_key)(lambda *args, kernel=kernel: kernel(None, *args))


def autocast_to(dtype_out, *positions):
    """The floating-point tensors at ``positions`` cast to ``dtype_out`` (torch's float32 list),
    or with ``dtype_out=None`` to the region's dtype (torch's lower-precision ops: conv2d)."""

    def cast(args, dtype):
        for i in positions:
            args[i] = _cast_floating(args[i], dtype_out or dtype)
        return args

    return cast


def autocast_lower_precision(*positions):
    return autocast_to(None, *positions)


def autocast_promote(*positions):
    """Elementwise ops: the tensors at ``positions`` are promoted to their common dtype, as
    torch's type promotion does for ``x * s + r`` in any region."""

    def cast(args, _dtype):
        tensors = [args[i] for i in positions if isinstance(args[i], torch.Tensor)]
        common = tensors[0].dtype
        for t in tensors[1:]:
            common = torch.promote_types(common, t.dtype)
        for i in positions:
            args[i] = _cast_floating(args[i], common)
        return args

    return cast
