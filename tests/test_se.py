"""Squeeze-and-Excitation: channel_scale (the scale and the SE-ResNet tail) and the whole SE
block against plain torch (forward, input / residual / every parameter gradient), gradcheck,
opcheck, compile, the module's torch.nn twin, layouts, reduced precision and bad input."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fastconv
from fastconv.bench.twins import TorchSqueezeExcitation
from reference import assert_same_result, squeeze_excitation_ref, to_layout

LAYOUTS = ["nchw", "channels_last", "strided"]


def _params(c, cr, dtype=torch.float32):
    return (torch.randn(cr, c, dtype=dtype) / c ** 0.5, torch.randn(cr, dtype=dtype) * 0.1,
            torch.randn(c, cr, dtype=dtype) / cr ** 0.5, torch.randn(c, dtype=dtype) * 0.1)


def _grads(fn, tensors, seed=1):
    tensors = [t.detach().clone().requires_grad_(True) if t is not None else None for t in tensors]
    y = fn(*tensors)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    y.backward(g)
    return y.detach(), [t.grad if t is not None else None for t in tensors]


@given(n=st.sampled_from([0, 1, 3]), c=st.integers(1, 70), h=st.integers(1, 9), w=st.integers(1, 9),
       residual=st.booleans(), relu=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]),
       layout=st.sampled_from(LAYOUTS))
def test_channel_scale_matches_torch(cpu_capability, n, c, h, w, residual, relu, dtype, layout):
    x = to_layout(torch.randn(n, c, h, w, dtype=dtype), layout)
    s = torch.rand(n, c, dtype=dtype) * 2 - 0.5
    r = to_layout(torch.randn(n, c, h, w, dtype=dtype), layout) if residual else None
    before = [t.clone() for t in (x, s, r) if t is not None]

    def ref(x, s, r):
        y = x * s[:, :, None, None] + (r if r is not None else 0)
        return torch.relu(y) if relu else y

    def ours(x, s, r):
        return fastconv.channel_scale(x, s, r, relu)

    y_ref, g_ref = _grads(ref, [x, s, r])
    y, g = _grads(ours, [x, s, r])
    torch.testing.assert_close(y, y_ref)
    if layout == "channels_last" and y.numel() > 0:
        assert y.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(g, g_ref):
        if b is not None:
            torch.testing.assert_close(a, b)
    assert all(torch.equal(t, u) for t, u in zip([t for t in (x, s, r) if t is not None], before))


@given(n=st.sampled_from([1, 2, 4]), c=st.sampled_from([4, 16, 48, 136, 256]), r=st.sampled_from([1, 4, 16]),
       hw=st.sampled_from([(1, 1), (3, 5), (7, 7), (14, 14)]), residual=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]), layout=st.sampled_from(LAYOUTS))
def test_squeeze_excitation_matches_torch(cpu_capability, n, c, r, hw, residual, dtype, layout):
    if c % r:
        r = 1
    x = to_layout(torch.randn(n, c, *hw, dtype=dtype), layout)
    idt = to_layout(torch.randn(n, c, *hw, dtype=dtype), layout) if residual else None
    params = list(_params(c, c // r, dtype))
    y_ref, g_ref = _grads(squeeze_excitation_ref, [x, *params, idt])
    y, g = _grads(fastconv.squeeze_excitation, [x, *params, idt])
    # float32: the parameter gradients are sums over N H W products, summed in another order.
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    torch.testing.assert_close(y, y_ref, **tol)
    for name, a, b in zip(["input", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias", "residual"], g, g_ref):
        if b is not None:
            torch.testing.assert_close(a, b, **tol, msg=lambda m: f"grad of {name}: {m}")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_se_gradcheck(layout):
    x = to_layout(torch.randn(2, 8, 3, 4, dtype=torch.float64), layout).requires_grad_(True)
    idt = to_layout(torch.randn(2, 8, 3, 4, dtype=torch.float64), layout).requires_grad_(True)
    params = [p.requires_grad_(True) for p in _params(8, 2, torch.float64)]
    assert torch.autograd.gradcheck(fastconv.squeeze_excitation, (x, *params))
    assert torch.autograd.gradcheck(lambda *a: fastconv.squeeze_excitation(*a[:5], residual=a[5]), (x, *params, idt))
    assert torch.autograd.gradcheck(fastconv.SqueezeExcitationFunction.apply, (x, *params, idt))
    assert torch.autograd.gradcheck(lambda *a: fastconv.SqueezeExcitationFunction.apply(*a, None), (x, *params))
    s = torch.rand(2, 8, dtype=torch.float64, requires_grad=True)
    for relu in (False, True):
        assert torch.autograd.gradcheck(lambda x, s, r: fastconv.channel_scale(x, s, r, relu), (x, s, idt))
        assert torch.autograd.gradcheck(lambda x, s: fastconv.ChannelScaleFunction.apply(x, s, None, relu), (x, s))


def test_se_double_backward_is_an_explicit_error():
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    s = torch.rand(1, 4, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(fastconv.channel_scale(x, s).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        g.sum().backward()
    params = [p.requires_grad_(True) for p in _params(4, 2, torch.float64)]
    (g,) = torch.autograd.grad(fastconv.squeeze_excitation(x, *params).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        g.sum().backward()


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
def test_se_opcheck(fmt):
    x = torch.randn(2, 5, 4, 3).contiguous(memory_format=fmt).requires_grad_(True)
    s = torch.rand(2, 5, requires_grad=True)
    r = torch.randn(2, 5, 4, 3).contiguous(memory_format=fmt).requires_grad_(True)
    ops = torch.ops.fastconv
    torch.library.opcheck(ops.channel_scale, (x, s, None, False))
    torch.library.opcheck(ops.channel_scale, (x, s, r, True))
    y = ops.channel_scale(x.detach(), s.detach(), r.detach(), True)
    g = torch.randn_like(y)
    torch.library.opcheck(ops.channel_scale_grad_scale, (g, x.detach(), y, True))
    torch.library.opcheck(ops.channel_scale_grad_scale, (g, x.detach(), None, False))
    torch.library.opcheck(ops.channel_scale_grad_input, (g, s.detach(), torch.randn(2, 5), y))
    torch.library.opcheck(ops.channel_scale_grad_input, (g, s.detach(), None, None))
    w1, b1, w2, b2 = [t.requires_grad_(True) for t in _params(5, 2)]
    torch.library.opcheck(ops.squeeze_excitation, (x, w1, b1, w2, b2, None))
    torch.library.opcheck(ops.squeeze_excitation, (x, w1, None, w2, b2, r))
    out, pooled, hidden, scale = ops.squeeze_excitation(x.detach(), w1.detach(), b1.detach(), w2.detach(),
                                                        b2.detach(), r.detach())
    for mask, o in (([True, True], out), ([True, False], None), ([False, True], out)):
        torch.library.opcheck(ops.squeeze_excitation_backward,
                              (g, x.detach(), w1.detach(), w2.detach(), hidden, scale, o, mask))


def test_se_module_matches_torch_twin_and_compiles():
    torch._dynamo.reset()
    m = fastconv.nn.SqueezeExcitation(32, reduction=8)
    twin = TorchSqueezeExcitation(32, reduction=8)
    assert list(m.state_dict().keys()) == list(twin.state_dict().keys())
    twin.load_state_dict(m.state_dict(), strict=True)

    def twin_fn(x, identity=None):
        return twin(x) if identity is None else torch.relu(twin(x) + identity)

    x = torch.randn(2, 32, 5, 6, requires_grad=True)
    idt = torch.randn(2, 32, 5, 6, requires_grad=True)
    torch.testing.assert_close(m(x), twin_fn(x))
    torch.testing.assert_close(m.residual_relu(x, idt), twin_fn(x, idt))
    m.residual_relu(x, idt).square().sum().backward()
    twin_grads = torch.autograd.grad(twin_fn(x, idt).square().sum(), [x, idt, *twin.parameters()])
    for a, b in zip([x.grad, idt.grad] + [p.grad for p in m.parameters()], twin_grads):
        torch.testing.assert_close(a, b)
    compiled = torch.compile(m, fullgraph=True)
    xc = x.detach().requires_grad_(True)
    out = compiled(xc)
    torch.testing.assert_close(out, twin_fn(x))
    out.sum().backward()
    (g_ref,) = torch.autograd.grad(twin_fn(x).sum(), x)
    torch.testing.assert_close(xc.grad, g_ref)
    assert "channels=32, reduction=8" in repr(m)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_se_reduced_precision(dtype):
    x = torch.randn(2, 16, 6, 6)
    s = torch.rand(2, 16)
    r = torch.randn(2, 16, 6, 6)
    ref = torch.relu(x.double() * s.double()[:, :, None, None] + r.double())
    ours = fastconv.channel_scale(x.to(dtype), s.to(dtype), r.to(dtype), True)
    theirs = torch.relu(x.to(dtype) * s.to(dtype)[:, :, None, None] + r.to(dtype))
    assert ours.dtype == dtype
    assert (ours.double() - ref).abs().max() <= 2 * (theirs.double() - ref).abs().max() + 1e-6


def test_se_nan_and_inf_propagate_as_torch():
    x = torch.randn(1, 4, 3, 3)
    x[0, 1, 1, 1] = float("nan")
    x[0, 2, 0, 0] = float("inf")
    s = torch.rand(1, 4)
    y = fastconv.channel_scale(x, s, torch.zeros_like(x), True)
    ref = torch.relu(x * s[:, :, None, None])
    torch.testing.assert_close(y, ref, equal_nan=True)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
def test_se_thread_count_independent(n, fmt):
    # batch 1 with 2 threads runs phase by phase, batch 3 image by image: the same bits.
    x = torch.randn(n, 200, 9, 9).contiguous(memory_format=fmt)
    params = _params(200, 25)
    outs = []
    for threads in (1, 2):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            _, g = _grads(fastconv.squeeze_excitation, [x, *params])
            outs.append(g)
        finally:
            torch.set_num_threads(old)
    for a, b in zip(*outs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: fastconv.nn.SqueezeExcitation(30, 16), ValueError, "divisible by reduction"),
    (lambda: fastconv.nn.SqueezeExcitation(0), ValueError, "channels must be > 0"),
    (lambda: fastconv.nn.SqueezeExcitation(16, 0), ValueError, "reduction must be > 0"),
    (lambda: fastconv.nn.SqueezeExcitation(16.0), TypeError, "channels must be an int"),
    (lambda: fastconv.nn.SqueezeExcitation(16, 4)(torch.randn(2, 8, 3, 3)), ValueError, r"\(N, 16, H, W\)"),
    (lambda: fastconv.nn.SqueezeExcitation(16, 4)(torch.randn(16, 3, 3)), ValueError, r"\(N, 16, H, W\)"),
    (lambda: fastconv.channel_scale(torch.randn(2, 3, 4), torch.rand(2, 3)), ValueError, "input must be 4-D"),
    (lambda: fastconv.channel_scale(torch.randn(2, 3, 4, 4), torch.rand(3, 2)), ValueError, r"scale must have shape \(N, C\)"),
    (lambda: fastconv.channel_scale(torch.randn(2, 3, 4, 4), torch.rand(2, 3, dtype=torch.float64)), ValueError,
     "scale must have the dtype"),
    (lambda: fastconv.channel_scale(torch.randn(2, 3, 4, 4), torch.rand(2, 3), torch.randn(2, 3, 4, 5)), ValueError,
     "residual must have the shape"),
    (lambda: fastconv.channel_scale(torch.randn(2, 3, 4, 4).int(), torch.rand(2, 3).int()), ValueError,
     "input must be float32"),
    (lambda: fastconv.channel_scale([1.0], torch.rand(2, 3)), TypeError, "input must be a torch.Tensor"),
    (lambda: fastconv.squeeze_excitation(torch.randn(2, 8, 0, 3), *_params(8, 2)), ValueError, "H \\* W > 0"),
    (lambda: fastconv.squeeze_excitation(torch.randn(2, 8, 3, 3), *_params(6, 2)), ValueError,
     r"fc1_weight must have shape \(C/r, C\)"),
    (lambda: fastconv.squeeze_excitation(torch.randn(2, 8, 3, 3), *_params(8, 2, torch.float64)), ValueError,
     "fc1_weight must have input's dtype"),
    (lambda: torch.ops.fastconv.channel_scale(torch.randn(2, 3, 4, 4), torch.rand(2, 4), None, False), ValueError,
     r"scale must have shape \(N, C\)"),
    (lambda: fastconv.squeeze_excitation(torch.randn(2, 16, 3, 3), *_params(16, 4)[:2], _params(16, 4)[2].t(),
                                         _params(16, 4)[3]), ValueError, r"fc2_weight must have shape \(C, C/r\)"),
    (lambda: fastconv.squeeze_excitation(torch.randn(2, 16, 3, 3), *_params(16, 4), residual=torch.randn(1, 16, 3, 3)),
     ValueError, "residual must have the shape of input"),
    (lambda: torch.ops.fastconv.squeeze_excitation(torch.randn(2, 16, 3, 3), torch.randn(4, 16), None,
                                                   torch.randn(8, 4), None, None), ValueError,
     r"fc2_weight must have shape \(C, C/r\) = \(16, 4\)"),
    (lambda: torch.ops.fastconv.squeeze_excitation(torch.randn(2, 16, 0, 3), torch.randn(4, 16), None,
                                                   torch.randn(16, 4), None, None), ValueError, "H \\* W > 0"),
])
def test_se_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
