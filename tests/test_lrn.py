"""Local response normalisation: against torch.nn.functional on a randomised grid (3-D to 5-D,
NCHW / channels_last / strided, every SIMD path), gradients, gradcheck, opcheck, compile,
bad input, the module and reduced precision."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import fastconv
from reference import assert_same_result, grad_of, to_layout


@given(rank=st.sampled_from([3, 4, 4, 5]), n=st.sampled_from([0, 1, 2]), c=st.integers(1, 23),
       spatial=st.integers(1, 9), size=st.integers(1, 8),
       alpha=st.sampled_from([1e-4, 1e-2, 0.5]), beta=st.sampled_from([0.75, 0.75, 0.5, 1.0, 0.3]),
       k=st.sampled_from([1.0, 2.0, 0.5]), dtype=st.sampled_from([torch.float32, torch.float64]),
       layout=st.sampled_from(["nchw", "channels_last", "strided"]))
def test_lrn_matches_torch(cpu_capability, rank, n, c, spatial, size, alpha, beta, k, dtype, layout):
    shape = (n, c) + tuple(spatial + i for i in range(rank - 2))
    x = to_layout(torch.randn(shape, dtype=dtype) * 3, layout)
    args = (size, alpha, beta, k)
    x_before = x.clone()
    y = fastconv.local_response_norm(x, *args)
    ref = F.local_response_norm(x, *args)
    if ref.numel() == 0:
        assert y.shape == ref.shape and y.dtype == ref.dtype
        return
    assert_same_result(y, ref)
    assert torch.equal(x, x_before), "input was modified"
    _, g_ref = grad_of(lambda t: F.local_response_norm(t, *args), x)
    _, g = grad_of(lambda t: fastconv.local_response_norm(t, *args), x)
    assert_same_result(g, g_ref)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape", [(2, 96, 13, 13), (1, 256, 7, 9)])
def test_lrn_alexnet_parameters(cpu_capability, shape, layout):
    x = to_layout(torch.randn(shape) * 10, layout)
    args = (5, 1e-4, 0.75, 2.0)
    assert_same_result(fastconv.local_response_norm(x, *args), F.local_response_norm(x, *args))
    _, g_ref = grad_of(lambda t: F.local_response_norm(t, *args), x)
    _, g = grad_of(lambda t: fastconv.local_response_norm(t, *args), x)
    assert_same_result(g, g_ref)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("beta", [0.75, 0.5, 1.0, 0.3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lrn_inf_and_nan_as_torch(cpu_capability, layout, beta, dtype):
    # An Inf makes every denominator whose window holds it infinite: torch gives 0 there (and
    # NaN at the Inf itself); a NaN spreads NaN over its windows.
    x = torch.randn(2, 7, 3, 20, dtype=dtype)
    x[0, 2, 1, 3] = float("inf")
    x[0, 5, 2, 17] = float("-inf")
    x[1, 3, 0, 9] = float("nan")
    x = to_layout(x, layout)
    args = (3, 1e-4, beta, 1.0)
    torch.testing.assert_close(fastconv.local_response_norm(x, *args), F.local_response_norm(x, *args),
                               equal_nan=True)


@pytest.mark.parametrize("shape,layout", [((2, 6, 4, 5), "nchw"), ((2, 7, 3, 4), "channels_last"),
                                          ((3, 5, 6), "nchw"), ((1, 4, 2, 3, 2), "nchw")])
def test_lrn_gradcheck(cpu_capability, shape, layout):
    x = to_layout(torch.randn(shape, dtype=torch.float64), layout).requires_grad_(True)
    for args in [(3, 0.1, 0.75, 1.0), (4, 0.5, 0.3, 2.0), (1, 1.0, 1.0, 1.0)]:
        assert torch.autograd.gradcheck(lambda t: fastconv.local_response_norm(t, *args), (x,))
        assert torch.autograd.gradcheck(lambda t: fastconv.LocalResponseNormFunction.apply(t, *args), (x,))


def test_lrn_double_backward_is_an_explicit_error():
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    y = fastconv.local_response_norm(x, 3)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        g.sum().backward()


@pytest.mark.parametrize("x", [torch.randn(2, 5, 4, 3), torch.randn(2, 5, 4, 3).contiguous(memory_format=torch.channels_last),
                               torch.randn(3, 6, 7, dtype=torch.float64)], ids=["nchw", "channels_last", "3d64"])
def test_lrn_opcheck(x):
    x = x.clone().requires_grad_(True)
    torch.library.opcheck(torch.ops.fastconv.local_response_norm, (x, 3, 1e-2, 0.75, 2.0))
    torch.library.opcheck(torch.ops.fastconv.local_response_norm_backward,
                          (torch.randn_like(x), x.detach(), 4, 1e-2, 0.6, 1.0))


def test_lrn_compile_and_module():
    torch._dynamo.reset()
    m, t = fastconv.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    assert repr(m) == repr(t) and isinstance(m, torch.nn.LocalResponseNorm)
    assert m.state_dict().keys() == t.state_dict().keys()
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    compiled = torch.compile(m, fullgraph=True)
    torch.testing.assert_close(compiled(x), t(x))
    assert repr(fastconv.nn.LocalResponseNorm(3)) == repr(torch.nn.LocalResponseNorm(3))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_lrn_reduced_precision(dtype):
    # torch's CPU LRN has no bfloat16 / float16 kernel (its avg_pool3d lacks them), so the
    # reference is float64: computing in float32 and rounding once stays within one ulp.
    x = (torch.randn(2, 9, 5, 4) * 4).to(dtype)
    y = fastconv.local_response_norm(x, 5, 1e-2, 0.75, 2.0)
    exact = F.local_response_norm(x.double(), 5, 1e-2, 0.75, 2.0)
    assert y.dtype == dtype
    ulp = torch.finfo(dtype).eps * exact.abs()
    assert ((y.double() - exact).abs() <= ulp + 1e-30).all()
    up = torch.randn(x.shape).to(dtype)
    xs = x.clone().requires_grad_(True)
    fastconv.local_response_norm(xs, 5, 1e-2, 0.75, 2.0).backward(up)
    xd = x.double().requires_grad_(True)
    F.local_response_norm(xd, 5, 1e-2, 0.75, 2.0).backward(up.double())
    assert xs.grad.dtype == dtype
    scale = xd.grad.abs() + torch.finfo(dtype).eps * xd.grad.abs().max()
    assert ((xs.grad.double() - xd.grad).abs() <= torch.finfo(dtype).eps * scale).all()


BAD = [
    ("3 or more dimensions", lambda x: fastconv.local_response_norm(x[0, 0], 3)),
    ("size must be >= 1", lambda x: fastconv.local_response_norm(x, 0)),
    ("size must be an int", lambda x: fastconv.local_response_norm(x, 2.5)),
    ("float32, float64", lambda x: fastconv.local_response_norm(x.long(), 3)),
    ("input must be a torch.Tensor", lambda x: fastconv.local_response_norm(x.numpy(), 3)),
    ("grad_output must have shape", lambda x: torch.ops.fastconv.local_response_norm_backward(
        x[:1], x, 3, 1e-4, 0.75, 1.0)),
]


@pytest.mark.parametrize("needle,call", BAD, ids=[b[0] for b in BAD])
def test_lrn_bad_input(needle, call):
    with pytest.raises((ValueError, TypeError), match=needle):
        call(torch.randn(2, 5, 4, 4))
