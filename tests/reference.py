"""Plain-torch references and helpers shared by the op tests (one place, as the style asks)."""
import torch


def assert_same_result(ours, ref, *, rtol=None, atol=None):
    """Values equal (NaN where torch has NaN), same shape, dtype and memory layout."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    assert ours.dtype == ref.dtype, (ours.dtype, ref.dtype)
    assert ours.stride() == ref.stride() or ours.numel() <= 1, (ours.stride(), ref.stride())
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=atol, equal_nan=True)


def to_layout(x, layout):
    """Returns x in the named layout: 'nchw', 'channels_last' or 'strided' (a non-contiguous
    view with the same values)."""
    if layout == "nchw":
        return x.contiguous()
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
    if layout == "strided":
        # Every other column of a twice-as-wide tensor: not contiguous in any format.
        wide = torch.empty(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    raise ValueError(layout)


def grad_of(fn, x, grad_output_seed=1):
    """d(sum(fn(x) * g))/dx for a fixed random g: the input gradient under a generic upstream
    gradient (ones would hide wrong divisors and index mix-ups)."""
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    gen = torch.Generator().manual_seed(grad_output_seed)
    g = torch.randn(y.shape, generator=gen, dtype=y.dtype)
    y.backward(g)
    return y.detach(), x.grad


def squeeze_excitation_ref(x, w1, b1, w2, b2, residual=None):
    """The SE block from torch ops: squeeze, FC -> ReLU -> FC -> sigmoid, scale (and the
    SE-ResNet tail relu(x * s + residual))."""
    p = x.mean((2, 3))
    s = torch.sigmoid(torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(p, w1, b1)), w2, b2))
    y = x * s[:, :, None, None]
    return y if residual is None else torch.relu(y + residual)
