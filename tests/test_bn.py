"""Training-mode BatchNorm + residual + ReLU (fastconv.ops.batch_norm_act) against torch's
BatchNorm, add and ReLU: output, batch statistics, running statistics, every gradient;
gradcheck, opcheck, compile, layouts, every SIMD path, thread-count independence, the blocks
that use it in training, and bad input."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv.bench.twins import TorchBottleneck
from fastconv.ops import batch_norm_act
from reference import assert_same_result, to_layout

LAYOUTS = ["nchw", "channels_last", "strided"]


def _ref(x, rm, rv, w, b, r, relu, momentum=0.1, eps=1e-5):
    y = F.batch_norm(x, rm, rv, w, b, True, momentum, eps)
    if r is not None:
        y = y + r
    return torch.relu(y) if relu else y


def _run(fn, x, w, b, r, seed=1):
    """fn's output and the gradients of x, w, b, r under a fixed random upstream gradient."""
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (x, w, b, r)]
    y = fn(*leaves)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    y.backward(g)
    return y.detach(), [t.grad if t is not None else None for t in leaves]


@settings(deadline=None, max_examples=40)
@given(n=st.integers(1, 3), c=st.integers(1, 40), h=st.integers(1, 9), w=st.integers(1, 9),
       affine=st.booleans(), residual=st.booleans(), relu=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]), layout=st.sampled_from(LAYOUTS))
def test_matches_torch(cpu_capability, n, c, h, w, affine, residual, relu, dtype, layout):
    if n * h * w < 2:
        return
    x = to_layout(torch.randn(n, c, h, w, dtype=dtype) * 2 + 1, layout)
    wt = torch.rand(c, dtype=dtype) + 0.5 if affine else None
    bs = torch.randn(c, dtype=dtype) if affine else None
    r = to_layout(torch.randn(n, c, h, w, dtype=dtype), layout) if residual else None
    before = [t.clone() for t in (x, wt, bs, r) if t is not None]
    rm, rv = torch.randn(c, dtype=dtype), torch.rand(c, dtype=dtype) + 0.5
    rm2, rv2 = rm.clone(), rv.clone()
    ours, og = _run(lambda x, w, b, r: batch_norm_act(x, rm, rv, w, b, r, relu), x, wt, bs, r)
    want, tg = _run(lambda x, w, b, r: _ref(x, rm2, rv2, w, b, r, relu), x, wt, bs, r)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    # Same values and memory format as torch's (a strided input gives a contiguous output).
    torch.testing.assert_close(ours, want, **tol)
    assert [st for st, k in zip(ours.stride(), ours.shape) if k > 1] == \
        [st for st, k in zip(want.stride(), want.shape) if k > 1], (ours.stride(), want.stride())
    for a, b in zip(og, tg):
        if b is not None:
            torch.testing.assert_close(a, b, **tol)
    torch.testing.assert_close(rm, rm2, **tol)
    torch.testing.assert_close(rv, rv2, **tol)
    for t, old in zip([t for t in (x, wt, bs, r) if t is not None], before):
        assert torch.equal(t, old), "an input was modified"


@pytest.mark.parametrize("shape", [(4, 64, 128, 128), (2, 60, 183, 191)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_large_tensors_stream_as_torch(cpu_capability, shape, layout):
    # 16 MB and more: the outputs and gradients are written with streaming stores (planes of
    # whole cache lines, and planes that start mid-line).
    torch.manual_seed(0)
    c = shape[1]
    x = to_layout(torch.randn(shape) * 2 + 1, layout)
    r = to_layout(torch.randn(shape), layout)
    wt, bs = torch.rand(c) + 0.5, torch.randn(c)
    ours, og = _run(lambda x, w, b, r: batch_norm_act(x, None, None, w, b, r, True), x, wt, bs, r)
    # Among 4M outputs a few lie within rounding of 0, where torch's ReLU and ours may decide
    # differently: the reference applies our decisions (a fixed mask) to torch's values.
    mask = ours > 0
    want, tg = _run(lambda x, w, b, r: _ref(x, None, None, w, b, r, False) * mask, x, wt, bs, r)
    torch.testing.assert_close(ours, want, rtol=1e-4, atol=1e-4)
    for a, b in zip(og, tg):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_gradcheck(residual, relu, layout):
    x = to_layout(torch.randn(3, 4, 3, 5, dtype=torch.float64), layout).requires_grad_(True)
    w = (torch.rand(4, dtype=torch.float64) + 0.5).requires_grad_(True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    r = to_layout(torch.randn(3, 4, 3, 5, dtype=torch.float64), layout).requires_grad_(True) if residual else None
    inputs = (x, w, b, r) if residual else (x, w, b)
    assert torch.autograd.gradcheck(
        lambda x, w, b, r=None: batch_norm_act(x, None, None, w, b, r, relu), inputs)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_opcheck(fmt):
    ops = torch.ops.fastconv
    x = torch.randn(2, 6, 4, 5).contiguous(memory_format=fmt).requires_grad_(True)
    w, b = torch.rand(6) + 0.5, torch.randn(6)
    r = torch.randn(2, 6, 4, 5).contiguous(memory_format=fmt)
    torch.library.opcheck(ops.batch_norm_act, (x, w, b, r, True, 1e-5))
    torch.library.opcheck(ops.batch_norm_act, (x, None, None, None, False, 1e-3))
    y, mean, var = ops.batch_norm_act(x.detach(), w, b, r, True, 1e-5)
    g = torch.randn_like(y)
    torch.library.opcheck(ops.batch_norm_act_backward, (g, x.detach(), w, mean, var, y, 1e-5, True))
    torch.library.opcheck(ops.batch_norm_act_backward, (g, x.detach(), None, mean, var, None, 1e-5, False))


def test_compile():
    x = torch.randn(2, 8, 6, 6)
    r = torch.randn(2, 8, 6, 6)
    w, b = torch.rand(8) + 0.5, torch.randn(8)

    def f(x, r):
        return batch_norm_act(x, None, None, w, b, r, True)

    torch._dynamo.reset()
    got = torch.compile(f, fullgraph=True)(x, r)
    assert_same_result(got, f(x, r))


def test_same_bits_on_any_thread_count():
    """The channel sums run in a fixed order (channels_last: fixed row items added in order)."""
    threads = torch.get_num_threads()
    results = []
    for layout in ("nchw", "channels_last"):
        x = to_layout(torch.randn(4, 37, 30, 30) * 3 + 1, layout)
        r = to_layout(torch.randn(4, 37, 30, 30), layout)
        w, b = torch.rand(37) + 0.5, torch.randn(37)
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            try:
                out = _run(lambda x, w, b, r: batch_norm_act(x, None, None, w, b, r, True), x, w, b, r)
            finally:
                torch.set_num_threads(threads)
            results.append((layout, out))
    for layout in ("nchw", "channels_last"):
        runs = [o for lay, o in results if lay == layout]
        for y, grads in runs[1:]:
            assert torch.equal(y, runs[0][0])
            for a, b in zip(grads, runs[0][1]):
                assert torch.equal(a, b)


def test_statistics_about_a_large_mean():
    """Sums about the channel's first value: a mean far from 0 loses nothing to cancellation
    (summed as x and x^2 in float32 runs, the variance of this input comes out ~1e-2 off)."""
    x = (torch.randn(4, 3, 32, 32, dtype=torch.float64) + 3e3).float()
    y, mean, var = torch.ops.fastconv.batch_norm_act(x, None, None, None, False, 1e-5)
    xd = x.double()
    torch.testing.assert_close(mean.double(), xd.mean((0, 2, 3)), rtol=1e-7, atol=0)
    torch.testing.assert_close(var.double(), xd.var((0, 2, 3), unbiased=False), rtol=1e-5, atol=0)
    want = _ref(xd, None, None, None, None, None, False)
    torch.testing.assert_close(y.double(), want, rtol=0, atol=2e-3)


def test_empty_batch_as_torch():
    """No values: an empty output and gradients, running statistics untouched (torch's rule)."""
    x = torch.randn(0, 3, 4, 4, requires_grad=True)
    w = torch.ones(3, requires_grad=True)
    rm, rv = torch.zeros(3), torch.ones(3)
    y = batch_norm_act(x, rm, rv, w, None, None, True)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros(3))
    assert torch.equal(rm, torch.zeros(3)) and torch.equal(rv, torch.ones(3))


def test_relu_mask_keeps_nan_as_torch():
    x = torch.randn(2, 3, 4, 4)
    r = torch.randn(2, 3, 4, 4)
    r[0, 1, 2, 2] = float("nan")
    ours, og = _run(lambda x, w, b, r: batch_norm_act(x, None, None, w, b, r, True), x, None, None, r)
    want, tg = _run(lambda x, w, b, r: _ref(x, None, None, w, b, r, True), x, None, None, r)
    torch.testing.assert_close(ours, want, equal_nan=True)
    torch.testing.assert_close(og[3], tg[3], equal_nan=True)


def test_reduced_precision_goes_through_float32():
    x = torch.randn(2, 5, 6, 6).bfloat16()
    w, b = torch.rand(5).bfloat16() + 0.5, torch.randn(5).bfloat16()
    y = batch_norm_act(x, None, None, w, b, None, True)
    assert y.dtype == torch.bfloat16
    want = _ref(x.float(), None, None, w.float(), b.float(), None, True).bfloat16()
    torch.testing.assert_close(y, want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_convbnrelu_trains_as_torch(layout, momentum):
    """ConvBNReLU in training runs the fused op; outputs, gradients, running statistics and
    num_batches_tracked follow torch's Conv2d -> BatchNorm2d -> ReLU over several steps."""
    torch.manual_seed(0)
    ours = fastconv.nn.ConvBNReLU(6, 10, 3, padding=1, momentum=momentum).train()
    conv = torch.nn.Conv2d(6, 10, 3, padding=1, bias=False)
    bn = torch.nn.BatchNorm2d(10, momentum=momentum)
    conv.load_state_dict({"weight": ours.conv.weight.detach().clone()})
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    calls = []
    real = torch.ops.fastconv.batch_norm_act.default
    for step in range(3):
        x = torch.randn(3, 6, 7, 7).contiguous(memory_format=fmt)
        with torch.profiler.profile() as prof:
            y = ours(x)
        calls.append(any(e.name == "fastconv::batch_norm_act" for e in prof.events()))
        want = torch.relu(bn(conv(x)))
        torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-4)
        g = torch.randn_like(y)
        y.backward(g)
        want.backward(g)
        torch.testing.assert_close(ours.conv.weight.grad, conv.weight.grad, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours.bn.weight.grad, bn.weight.grad, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours.bn.bias.grad, bn.bias.grad, rtol=1e-4, atol=1e-4)
        for p in (*ours.parameters(), *conv.parameters(), *bn.parameters()):
            p.grad = None
    assert all(calls) and real is torch.ops.fastconv.batch_norm_act.default
    torch.testing.assert_close(ours.bn.running_mean, bn.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.bn.running_var, bn.running_var, rtol=1e-5, atol=1e-6)
    assert ours.bn.num_batches_tracked.item() == bn.num_batches_tracked.item() == 3


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_bottleneck_training_step_as_torch(layout):
    torch.manual_seed(0)
    ours = fastconv.nn.Bottleneck(32, 8).train()
    torch.manual_seed(0)
    twin = TorchBottleneck(32, 8).train()
    twin.load_state_dict(ours.state_dict())
    x = torch.randn(2, 32, 9, 9)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    out, ig = _run(lambda x, *_: ours(x), x, None, None, None)
    want, tg = _run(lambda x, *_: twin(x), x, None, None, None)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ig[0], tg[0], rtol=1e-4, atol=1e-4)
    for (name, p), q in zip(ours.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-4, msg=name)
    for (name, a), b in zip(ours.named_buffers(), twin.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_bn_with_hooks_or_eval_stats_is_torchs():
    """A hooked BatchNorm must see its own forward; eval mode folds (no batch statistics)."""
    m = fastconv.nn.ConvBNReLU(3, 4, 1).train()
    seen = []
    m.bn.register_forward_hook(lambda mod, i, o: seen.append(o.shape))
    m(torch.randn(2, 3, 4, 4))
    assert seen == [torch.Size([2, 4, 4, 4])]
    m = fastconv.nn.ConvBNReLU(3, 4, 1).eval()
    with torch.profiler.profile() as prof:
        m(torch.randn(2, 3, 4, 4))
    assert not any(e.name == "fastconv::batch_norm_act" for e in prof.events())


@pytest.mark.parametrize("args,match", [
    (((1, 4, 1, 1),), "more than 1 value per channel"),
    (((2, 4, 3),), "input must be 4-D"),
])
def test_bad_input_shape(args, match):
    with pytest.raises(ValueError, match=match):
        batch_norm_act(torch.randn(*args[0]))


def test_bad_arguments_name_the_argument():
    x = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match="weight must have shape"):
        batch_norm_act(x, weight=torch.randn(3))
    with pytest.raises(ValueError, match="bias must have input's dtype"):
        batch_norm_act(x, bias=torch.randn(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="residual must have the shape"):
        batch_norm_act(x, residual=torch.randn(2, 4, 3, 2))
    with pytest.raises(ValueError, match="eps must be finite"):
        batch_norm_act(x, eps=-1.0)
    with pytest.raises(ValueError, match="running_mean and running_var must be given together"):
        batch_norm_act(x, running_mean=torch.zeros(4))
    with pytest.raises(ValueError, match="running_var must have shape"):
        batch_norm_act(x, running_mean=torch.zeros(4), running_var=torch.ones(5))
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        batch_norm_act([1.0])
    # The ops themselves check too (the same rules, from C++).
    with pytest.raises(ValueError, match="grad_output must have the shape of input"):
        torch.ops.fastconv.batch_norm_act_backward(torch.randn(2, 4, 3, 2), x, None, torch.zeros(4), torch.ones(4),
                                                   None, 1e-5, False)
    with pytest.raises(ValueError, match="mean must have shape"):
        torch.ops.fastconv.batch_norm_act_backward(x, x, None, torch.zeros(5), torch.ones(4), None, 1e-5, False)


def test_double_backward_is_refused():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    y = batch_norm_act(x, None, None, None, None, None, True)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        g.sum().backward()
