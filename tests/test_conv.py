"""conv2d: against torch.nn.functional.conv2d on a randomised grid (every SIMD path, every
algorithm, NCHW / channels_last / non-contiguous, groups, dilation, 'same' with even
kernels, stride > kernel, N = 0), gradients, gradcheck, opcheck, compile, nn.Conv2d parity,
the fused epilogue and clear errors."""
import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

import fastconv
from conftest import forced
from reference import to_layout

def _tol(dtype, algo="auto"):
    if dtype == torch.float64:
        return dict(atol=1e-10, rtol=1e-10)
    # F(4x4, 3x3)'s transforms amplify float32 rounding (see test_winograd_error_is_measured).
    return dict(atol=2e-3, rtol=2e-3) if algo == "winograd4" else dict(atol=2e-4, rtol=2e-4)


def _layout(t, layout):
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        # A non-contiguous view: every other column of a wider tensor.
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    return t.contiguous()


@st.composite
def conv_case(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin = groups * draw(st.integers(1, 5))
    cout = groups * draw(st.integers(1, 6))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    padding = draw(st.one_of(st.tuples(st.integers(0, 3), st.integers(0, 3)), st.just("valid"),
                             st.just("same")))
    if padding == "same":
        sh = sw = 1
    h = draw(st.integers((kh - 1) * dh + 1, 12))
    w = draw(st.integers((kw - 1) * dw + 1, 12))
    n = draw(st.integers(0, 3))
    bias = draw(st.booleans())
    return dict(n=n, cin=cin, cout=cout, k=(kh, kw), stride=(sh, sw), dilation=(dh, dw),
                padding=padding, groups=groups, h=h, w=w, bias=bias)


def _make(case, dtype, layout, requires_grad=False):
    x = _layout(torch.randn(case["n"], case["cin"], case["h"], case["w"], dtype=dtype), layout)
    wt = torch.randn(case["cout"], case["cin"] // case["groups"], *case["k"], dtype=dtype)
    b = torch.randn(case["cout"], dtype=dtype) if case["bias"] else None
    if requires_grad:
        x.requires_grad_(True)
        wt.requires_grad_(True)
        if b is not None:
            b.requires_grad_(True)
    return x, wt, b


def _args(case):
    return dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                groups=case["groups"])


@given(case=conv_case(), dtype=st.sampled_from([torch.float32, torch.float64]),
       layout=st.sampled_from(["contiguous", "channels_last", "strided"]))
def test_conv2d_matches_torch(cpu_capability, conv_algo, case, dtype, layout):
    x, w, b = _make(case, dtype, layout)
    x_before = x.clone()
    y = fastconv.conv2d(x, w, b, **_args(case))
    torch.testing.assert_close(y, F.conv2d(x, w, b, **_args(case)), **_tol(dtype, conv_algo))
    torch.testing.assert_close(x, x_before, rtol=0, atol=0)  # the caller's tensor is untouched
    if layout == "channels_last" and case["n"] > 0 and case["cin"] > 1 and case["h"] * case["w"] > 1:
        assert y.is_contiguous(memory_format=torch.channels_last)


@given(case=conv_case(), layout=st.sampled_from(["contiguous", "channels_last", "strided"]))
def test_conv2d_gradients_match_torch(cpu_capability, conv_algo, case, layout):
    x, w, b = _make(case, torch.float64, layout, requires_grad=True)
    y = fastconv.conv2d(x, w, b, **_args(case))
    ref = F.conv2d(x, w, b, **_args(case))
    g = torch.randn_like(ref)
    inputs = (x, w) if b is None else (x, w, b)
    ours = torch.autograd.grad(y, inputs, g)
    theirs = torch.autograd.grad(ref, inputs, g)
    for a, e in zip(ours, theirs):
        torch.testing.assert_close(a, e, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("shape", [
    # (N, C, H, W, OC, k, stride, padding, dilation, groups): each algorithm, tails of the
    # 14 x 32 / 6 x 16 tiles, few-channel first layers, 1x1 and strided 1x1, depthwise.
    (2, 3, 23, 21, 35, 5, 2, 2, 1, 1),
    (1, 40, 9, 17, 33, 1, 1, 0, 1, 1),
    (2, 18, 7, 9, 50, 1, 2, 0, 1, 1),
    (1, 20, 11, 15, 17, 3, 1, 1, 1, 1),
    (1, 8, 10, 10, 8, 3, 1, 1, 1, 8),
    (1, 6, 12, 13, 9, 3, 1, 2, 2, 3),
    (3, 1, 28, 28, 6, 5, 1, 0, 1, 1),
    (2, 19, 13, 11, 21, 3, 1, 1, 1, 1),   # Winograd: partial tiles on both edges
    (1, 32, 8, 8, 48, 3, 1, 0, 1, 1),     # Winograd without padding
    (2, 3, 35, 37, 40, 11, 4, 2, 1, 1),   # AlexNet's first layer: weight gradient with the
                                          # output channels in the lanes, a partial block
    (2, 32, 14, 28, 16, 5, 1, 2, 1, 1),   # 16 output channels: pixels in the lanes, 8 + 8
    (2, 16, 12, 20, 32, 5, 1, 2, 1, 1),   # ... and so the input gradient of 16 -> 32
])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_conv2d_larger_shapes(cpu_capability, conv_algo, shape, layout):
    n, c, h, w, oc, k, s, p, d, g = shape
    x = _layout(torch.randn(n, c, h, w), layout).requires_grad_(True)
    wt = torch.randn(oc, c // g, k, k, requires_grad=True)
    b = torch.randn(oc, requires_grad=True)
    y = fastconv.conv2d(x, wt, b, s, p, d, g)
    ref = F.conv2d(x, wt, b, s, p, d, g)
    scale = 10 if conv_algo == "winograd4" else 1
    torch.testing.assert_close(y, ref, atol=1e-4 * scale, rtol=1e-4 * scale)
    gy = torch.randn_like(ref)
    for a, e in zip(torch.autograd.grad(y, (x, wt, b), gy), torch.autograd.grad(ref, (x, wt, b), gy)):
        torch.testing.assert_close(a, e, atol=1e-3 * scale, rtol=1e-4 * scale)


@pytest.mark.parametrize("args", [
    dict(stride=2, padding=1, dilation=1, groups=2),
    dict(stride=1, padding="same", dilation=2, groups=1),
    dict(stride=(1, 2), padding=(0, 2), dilation=(2, 1), groups=1),
])
def test_conv2d_gradcheck(cpu_capability, args):
    x = torch.randn(2, 4, 7, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4 // args["groups"], 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: fastconv.conv2d(x, w, b, **args), (x, w, b))


def test_conv2d_unbatched_and_empty_batch():
    x = torch.randn(3, 10, 10)
    w = torch.randn(4, 3, 3, 3)
    torch.testing.assert_close(fastconv.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1))
    e = torch.randn(0, 3, 10, 10, requires_grad=True)
    wg = w.clone().requires_grad_(True)
    y = fastconv.conv2d(e, wg, padding=1)
    assert y.shape == (0, 4, 10, 10)
    y.sum().backward()
    assert e.grad.shape == e.shape and torch.equal(wg.grad, torch.zeros_like(w))


def test_conv2d_opcheck():
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.fastconv.conv2d, (x, w, b, [2, 1], [1, 0, 1, 2], [1, 2], 2))
    torch.library.opcheck(torch.ops.fastconv.conv2d, (x.detach().contiguous(memory_format=torch.channels_last),
                                                      w, None, [1, 1], [0, 0, 0, 0], [1, 1], 2))
    go = torch.randn(2, 6, 3, 6, dtype=torch.float64)
    torch.library.opcheck(torch.ops.fastconv.conv2d_backward,
                          (go, x.detach(), w.detach(), [2, 1], [1, 0, 1, 2], [1, 2], 2, [True, True, True]))
    torch.library.opcheck(torch.ops.fastconv.conv2d_fused,
                          (x.detach(), w.detach(), b.detach(), torch.rand(6, dtype=torch.float64),
                           torch.randn(6, dtype=torch.float64), None, True, [1, 1], [1, 1, 1, 1], [1, 1], 2),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


def test_conv2d_compile_and_module():
    torch.manual_seed(0)
    m = fastconv.nn.Conv2d(3, 8, 3, stride=2, padding=1)
    t = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
    t.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 17, 16, requires_grad=True)
    compiled = torch.compile(m, fullgraph=True)
    y = compiled(x)
    torch.testing.assert_close(y, t(x), atol=1e-5, rtol=1e-5)
    y.sum().backward()
    ref_x = x.detach().clone().requires_grad_(True)
    t(ref_x).sum().backward()
    torch.testing.assert_close(x.grad, ref_x.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.weight.grad, t.weight.grad, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=4, out_channels=6, kernel_size=3),
    dict(in_channels=4, out_channels=8, kernel_size=(2, 3), stride=2, padding=(1, 0), dilation=(1, 2),
         groups=2, bias=False),
    dict(in_channels=3, out_channels=5, kernel_size=4, padding="same"),
    dict(in_channels=3, out_channels=5, kernel_size=3, padding=1, padding_mode="reflect"),
    dict(in_channels=3, out_channels=5, kernel_size=3, padding=2, padding_mode="circular"),
])
def test_nn_conv2d_is_a_drop_in(kwargs):
    torch.manual_seed(1)
    ours = fastconv.nn.Conv2d(**kwargs)
    torch.manual_seed(1)
    theirs = torch.nn.Conv2d(**kwargs)
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for k in theirs.state_dict():  # same initialisation from the same seed
        torch.testing.assert_close(ours.state_dict()[k], theirs.state_dict()[k])
    x = torch.randn(2, kwargs["in_channels"], 11, 12)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)
    clone = pickle.loads(pickle.dumps(ours))
    torch.testing.assert_close(clone(x), ours(x))
    torch.testing.assert_close(copy.deepcopy(ours)(x), ours(x))


@pytest.mark.parametrize("k, groups", [(3, 1), (5, 1), (5, 2), (3, 4), (7, 1)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv2d_channels_last_weight(cpu_capability, conv_algo, k, groups, stride, dtype):
    # model.to(memory_format=torch.channels_last) makes every conv weight channels_last; the
    # weight is then read through its own (OHWI) layout for the forward and both gradients
    # (stride 2: the strided input gradient packs it with the channel axes swapped).
    torch.manual_seed(k * 10 + groups)
    x = torch.randn(2, 8, 11, 9, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w0 = torch.randn(12, 8 // groups, k, k, dtype=dtype)
    w = w0.contiguous(memory_format=torch.channels_last)
    assert not w.is_contiguous()
    w_before = w.clone()
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    xf, wf = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = fastconv.conv2d(xf, wf, stride=stride, padding=k // 2, groups=groups)
    yr = F.conv2d(xr, wr, stride=stride, padding=k // 2, groups=groups)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y, yr, **tol)
    g = torch.randn_like(yr)
    y.backward(g)
    yr.backward(g)
    torch.testing.assert_close(xf.grad, xr.grad, **tol)
    torch.testing.assert_close(wf.grad, wr.grad, **tol)
    assert torch.equal(w, w_before)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("k", [1, 3])
def test_conv2d_fused_epilogue(cpu_capability, conv_algo, layout, k):
    x = _layout(torch.randn(2, 24, 9, 10), layout)
    w = torch.randn(20, 24, k, k) * 0.2
    b, scale, shift = torch.randn(20), torch.rand(20) + 0.5, torch.randn(20)
    res = _layout(torch.randn(2, 20, 9, 10), layout)
    conv = F.conv2d(x, w, b, padding=k // 2)
    y = fastconv.conv2d_fused(x, w, b, scale, shift, res, True, padding=k // 2)
    ref = torch.relu(conv * scale[:, None, None] + shift[:, None, None] + res)
    tol = dict(atol=1e-3, rtol=1e-3) if conv_algo == "winograd4" else dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(y, ref, **tol)
    y = fastconv.conv2d_fused(x, w, None, None, shift, None, False, padding=k // 2)
    torch.testing.assert_close(y, F.conv2d(x, w, shift, padding=k // 2), **tol)


@pytest.mark.parametrize("shape", [
    # (N, C, H, W, OC, groups). The 1x1 GEMMs run over the pixels of all images at once, so a
    # tile may span images; above 512 input channels per group the reduction runs in blocks
    # of 256 with the partial sums kept in the output.
    (5, 24, 3, 5, 20, 1),      # 15 pixels per image: every tile spans images
    (3, 600, 7, 7, 40, 1),     # three channel blocks (256, 256, 88); tiles across images
    (2, 1100, 4, 3, 30, 2),    # 550 per group: blocks per group
    (4, 40, 9, 9, 70, 1),
    (3, 21, 5, 7, 30, 1),      # 21 channels: 8-channel transposes of the packed pixels + a tail
    # AVX-512 float, NCHW: 8 output channels x 48 pixels tiles (output channels per group a
    # multiple of 8 that 14-row blocks would leave a short tail of, planes of >= 28 x 28).
    (3, 40, 28, 28, 128, 1),   # 784 = 16 x 48 + 16 pixels an image: tiles span images
    (2, 64, 28, 30, 288, 2),   # 144 per group
    (1, 1040, 28, 28, 256, 1),  # a weight over 1 MB: two chunks pack their own panels
])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv2d_1x1_gemm_spans_images_and_channel_blocks(cpu_capability, shape, layout, dtype):
    n, c, h, w, oc, g = shape
    x = _layout(torch.randn(n, c, h, w, dtype=dtype), layout).requires_grad_(True)
    wt = (torch.randn(oc, c // g, 1, 1, dtype=dtype) * c ** -0.5).requires_grad_(True)
    b, scale, shift = (torch.randn(oc, dtype=dtype) for _ in range(3))
    res = _layout(torch.randn(n, oc, h, w, dtype=dtype), layout)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-10)
    y = fastconv.conv2d_fused(x, wt, b, scale, shift, res, True, groups=g)
    conv = F.conv2d(x, wt, b, groups=g)
    torch.testing.assert_close(y, torch.relu(conv * scale[:, None, None] + shift[:, None, None] + res), **tol)
    y = fastconv.conv2d(x, wt, b, groups=g)
    torch.testing.assert_close(y, conv, **tol)
    gy = torch.randn_like(conv)
    for a, e in zip(torch.autograd.grad(y, (x, wt), gy), torch.autograd.grad(conv, (x, wt), gy)):
        torch.testing.assert_close(a, e, **tol)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1 = fastconv.conv2d(x, wt, b, groups=g)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(y1, y)  # the pixel chunks follow the thread count, the bits do not


@pytest.mark.parametrize("shape", [
    # (N, C, H, W, OC, stride, groups). The 1x1 weight gradient is a GEMM over the output
    # pixels of all images in chunks of 256 (partial sums in the gradient between chunks).
    (5, 24, 3, 5, 20, 1, 1),      # one chunk across five images; 24 = 16 + 8 lanes
    (3, 300, 11, 13, 7, 1, 1),    # 429 pixels: two chunks; 19 slivers: several per task
    (2, 40, 17, 15, 230, 1, 1),   # 230 output channels: several row blocks per chunk
    (4, 36, 9, 11, 50, 2, 1),     # strided (ResNet's downsample): pixels read with a step
    (2, 48, 12, 12, 64, 1, 4),    # groups
    (3, 9, 6, 6, 200, 1, 1),      # one sliver: output channels split over the threads
])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv2d_1x1_weight_grad_gemm(cpu_capability, shape, layout, dtype):
    n, c, h, w, oc, s, g = shape
    if layout == "strided":  # a view: x read with its own strides, nothing copied
        x = torch.randn(n, c, h, 2 * w, dtype=dtype)[..., ::2]
    else:
        x = _layout(torch.randn(n, c, h, w, dtype=dtype), layout)
    wt = torch.randn(oc, c // g, 1, 1, dtype=dtype) * c ** -0.5
    gy = _layout(torch.randn_like(F.conv2d(x, wt, stride=s, groups=g)), layout)
    ref = torch.ops.aten.convolution_backward(gy, x, wt, None, [s, s], [0, 0], [1, 1], False, [0, 0], g,
                                              [False, True, False])[1]
    args = (gy, x, wt, [s, s], [0, 0, 0, 0], [1, 1], g, [False, True, False])
    got = torch.ops.fastconv.conv2d_backward(*args)[1]
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(got, ref, **tol)
    before = fastconv.conv_algo()
    fastconv.set_conv_algo("direct")  # the general weight-gradient kernel
    try:
        torch.testing.assert_close(torch.ops.fastconv.conv2d_backward(*args)[1], got, **tol)
    finally:
        fastconv.set_conv_algo(before)
    old = torch.get_num_threads()
    try:
        for t in (1, 3):
            torch.set_num_threads(t)
            assert torch.equal(torch.ops.fastconv.conv2d_backward(*args)[1], got)  # same bits per thread count
    finally:
        torch.set_num_threads(old)


def test_conv2d_fused_relu_keeps_nan():
    x = torch.randn(1, 4, 5, 5)
    x[0, 0, 2, 2] = float("nan")
    w = torch.randn(3, 4, 1, 1)
    y = fastconv.conv2d_fused(x, w, relu=True)
    assert torch.isnan(y[0, :, 2, 2]).all()
    assert torch.equal(torch.isnan(y), torch.isnan(torch.relu(F.conv2d(x, w))))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_conv2d_reduced_precision(dtype):
    x = torch.randn(2, 8, 9, 9, dtype=dtype)
    w = torch.randn(4, 8, 3, 3, dtype=dtype)
    y = fastconv.conv2d(x, w, padding=1)
    assert y.dtype == dtype
    ref = F.conv2d(x.float(), w.float(), padding=1)
    torch.testing.assert_close(y.float(), ref, atol=0.1, rtol=0.02)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
# (2, 600, 256, 7): a weight past 1 MB (float64), which takes the larger pixel chunks, in
# three reduction blocks (256 + 256 + 88 input channels).
@pytest.mark.parametrize("n,c,oc,hw", [(1, 96, 200, 7), (8, 64, 72, 7), (3, 40, 130, 5), (2, 600, 256, 7)])
def test_gemm1x1_output_channel_parts(layout, n, c, oc, hw):
    """Pixel counts that do not split evenly over the threads give each thread a share of the
    output channels instead: the same bits as one thread, and torch's result in float64, with
    the whole epilogue (scale, shift, residual, ReLU)."""
    gen = torch.Generator().manual_seed(n * 1000 + oc)
    x = to_layout(torch.randn(n, c, hw, hw, generator=gen, dtype=torch.float64), layout)
    w = torch.randn(oc, c, 1, 1, generator=gen, dtype=torch.float64)
    scale, shift = torch.rand(oc, generator=gen, dtype=torch.float64), torch.randn(oc, generator=gen, dtype=torch.float64)
    res = to_layout(torch.randn(n, oc, hw, hw, generator=gen, dtype=torch.float64), layout)
    ref = torch.relu(F.conv2d(x, w) * scale[:, None, None] + shift[:, None, None] + res)
    old = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(fastconv.conv2d_fused(x, w, scale=scale, shift=shift, residual=res, relu=True))
    finally:
        torch.set_num_threads(old)
    torch.testing.assert_close(results[0], ref, rtol=1e-10, atol=1e-10)
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_conv2d_threads_do_not_change_results():
    x = torch.randn(3, 32, 20, 20)
    w = torch.randn(40, 32, 3, 3)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1 = fastconv.conv2d(x, w, padding=1)
        torch.set_num_threads(max(2, old))
        y2 = fastconv.conv2d(x, w, padding=1)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(y1, y2)


def _over_threads_and_bands(algo, fn, settings=((1, None), (2, None), (3, None), (2, 1))):
    """[fn() for each (threads, band bytes) setting] with the conv algorithm forced; band None
    keeps the default. Threads, band size and algorithm are restored afterwards."""
    old = torch.get_num_threads()
    runs = []
    try:
        with forced(fastconv.conv_algo, fastconv.set_conv_algo, algo):
            for threads, band in settings:
                torch.set_num_threads(threads)
                prev = fastconv._C.set_conv_band_bytes(band) if band else None
                try:
                    runs.append(fn())
                finally:
                    if prev is not None:
                        fastconv._C.set_conv_band_bytes(prev)
    finally:
        torch.set_num_threads(old)
    return runs


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("weight_layout", ["oihw", "channels_last"])
def test_winograd_forward_threads_and_bands(layout, k, weight_layout):
    """Winograd's per-thread chunks (small transformed weights, several threads) against
    torch in float64 and bit for bit across thread counts and band sizes: chunk counts that
    do not divide the tiles, tiny bands (and so several weight slices), a residual and ReLU in
    the epilogue, and the input gradient (the weight read transposed). 5x5: the four 3x3
    pieces read the tile row below each chunk's last, across image boundaries."""
    gen = torch.Generator().manual_seed(3)
    p = k // 2
    x = to_layout(torch.randn(3, 24, 23, 19, generator=gen, dtype=torch.float64), layout)
    w = torch.randn(36, 24, k, k, generator=gen, dtype=torch.float64)
    if weight_layout == "channels_last":
        w = w.contiguous(memory_format=torch.channels_last)
    res = to_layout(torch.randn(3, 36, 23, 19, generator=gen, dtype=torch.float64), layout)
    go = torch.randn_like(res)
    ref = torch.relu(F.conv2d(x, w, padding=p) + res)
    ref_gx = torch.ops.aten.convolution_backward(go, x, w, None, [1, 1], [p, p], [1, 1], False, [0, 0], 1,
                                                 [True, False, False])[0]
    runs = _over_threads_and_bands("winograd", lambda: (
        fastconv.conv2d_fused(x, w, padding=p, residual=res, relu=True),
        torch.ops.fastconv.conv2d_backward(go, x, w, [1, 1], [p] * 4, [1, 1], 1, [True, False, False])[0]),
        [(1, None), (2, None), (3, None), (2, 3000), (3, 1)])
    results, grads = [r[0] for r in runs], [r[1] for r in runs]
    torch.testing.assert_close(results[0], ref, rtol=1e-10, atol=1e-10)
    assert all(torch.equal(results[0], r) for r in results[1:])
    torch.testing.assert_close(grads[0], ref_gx, rtol=1e-10, atol=1e-10)
    assert all(torch.equal(grads[0], g) for g in grads[1:])


@pytest.mark.parametrize("size", [(1, 7, 7), (2, 16, 15)])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_gemm1x1_weight_panels(cpu_capability, size, groups, layout):
    """The 1x1 GEMM packs its weight panels where it uses them when the pixels fill one or
    two chunks (batch 1 at 7x7), and packs the whole weight up front otherwise: both against
    torch in float64, with 37 output channels per group (a partial block), a fused residual and
    ReLU, on 1 and 2 threads."""
    n, h, w_ = size
    gen = torch.Generator().manual_seed(h)
    x = to_layout(torch.randn(n, 520 * groups, h, w_, generator=gen, dtype=torch.float64), layout)
    w = torch.randn(37 * groups, 520, 1, 1, generator=gen, dtype=torch.float64)
    res = to_layout(torch.randn(n, 37 * groups, h, w_, generator=gen, dtype=torch.float64), layout)
    ref = torch.relu(F.conv2d(x, w, groups=groups) + res)
    old = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with forced(fastconv.conv_algo, fastconv.set_conv_algo, "gemm1x1"):
                y = fastconv.conv2d_fused(x, w, groups=groups, residual=res, relu=True)
            torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("algo", ["auto", "gemm1x1", "direct"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("shape", [(2, 24, 15, 17, (2, 2), 1), (1, 40, 29, 14, (3, 2), 2), (3, 16, 28, 28, (2, 1), 1)])
def test_strided_1x1_gathers_its_pixels(cpu_capability, algo, layout, shape):
    """A strided 1x1 layer without padding runs as a plain 1x1 GEMM on the pixels it reads,
    gathered into a dense input (auto: NCHW always, channels_last from 14x14 output pixels an
    image): against torch in float64 with bias, a folded BatchNorm, a residual and ReLU, for
    odd sizes, unequal strides, groups and a non-contiguous input, on 1 and 2 threads, and
    without the epilogue through conv2d; the caller's input unchanged."""
    n, c, h, w_, stride, groups = shape
    gen = torch.Generator().manual_seed(c + h)
    x = to_layout(torch.randn(n, c, h, w_, generator=gen, dtype=torch.float64), layout)
    x0 = x.clone()
    w = torch.randn(37 * groups, c // groups, 1, 1, generator=gen, dtype=torch.float64)
    b = torch.randn(37 * groups, generator=gen, dtype=torch.float64)
    scale = torch.rand(37 * groups, generator=gen, dtype=torch.float64) + 0.5
    shift = torch.randn(37 * groups, generator=gen, dtype=torch.float64)
    conv = F.conv2d(x, w, b, stride=stride, groups=groups)
    res = to_layout(torch.randn(conv.shape, generator=gen, dtype=torch.float64), layout)
    ref = torch.relu(conv * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1) + res)
    old = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with forced(fastconv.conv_algo, fastconv.set_conv_algo, algo):
                y = fastconv.conv2d_fused(x, w, b, scale, shift, residual=res, relu=True, stride=stride,
                                          groups=groups)
                out = fastconv.conv2d(x, w, b, stride=stride, groups=groups)
            torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(out, conv, rtol=1e-10, atol=1e-10)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(x, x0)


@pytest.mark.parametrize("layout,size", [("channels_last", 96), ("nchw", 96), ("nchw", 91)])
def test_gemm1x1_streams_large_outputs(layout, size):
    """A 1x1 layer whose output exceeds 16 MB writes it with streaming stores (past the
    caches): the fused epilogue's result against torch, the same bits on 1 and 2 threads, for
    256 and 272 output channels (channels_last pixel rows 1 KB and 1088 bytes apart; NCHW
    planes of whole 64-byte lines at 96x96, not at 91x91, which stores as before)."""
    gen = torch.Generator().manual_seed(11)
    for oc in (256, 272):
        x = to_layout(torch.randn(2, 64, size, size, generator=gen), layout)
        w = torch.randn(oc, 64, 1, 1, generator=gen) * 0.1
        res = to_layout(torch.randn(2, oc, size, size, generator=gen), layout)
        ref = torch.relu(F.conv2d(x.double(), w.double()) + res.double())
        old = torch.get_num_threads()
        outs = []
        try:
            for threads in (1, 2):
                torch.set_num_threads(threads)
                outs.append(fastconv.conv2d_fused(x, w, residual=res, relu=True))
        finally:
            torch.set_num_threads(old)
        assert outs[0].numel() * 4 >= 16 << 20
        torch.testing.assert_close(outs[0].double(), ref, atol=1e-4, rtol=1e-4)
        assert torch.equal(outs[0], outs[1])


def test_gemm1x1_far_input_64_channels(cpu_capability):
    """An NCHW 1x1 layer with 64 output channels reading an input of 16 MB or more (AVX-512
    float: the 8 x 48 tile, whose first block packs its pixels straight from DRAM): torch's
    result in float64 through the fused epilogue, the same bits on 1 and 2 threads."""
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(2, 256, 90, 92, generator=gen)  # 17 MB; 8280 pixels an image
    w = torch.randn(64, 256, 1, 1, generator=gen) / 16
    b = torch.randn(64, generator=gen)
    res = torch.randn(2, 64, 90, 92, generator=gen)
    ref = torch.relu(F.conv2d(x.double(), w.double(), b.double()) + res.double())
    old = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append(fastconv.conv2d_fused(x, w, b, residual=res, relu=True))
    finally:
        torch.set_num_threads(old)
    assert x.numel() * 4 >= 16 << 20
    torch.testing.assert_close(outs[0].double(), ref, atol=1e-4, rtol=1e-4)
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("weight_layout", ["oihw", "channels_last"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_direct_packs_weight_blocks_per_thread(groups, weight_layout, layout):
    """A direct layer whose weights exceed 256 KB and whose input fits one band (small batch
    at 7x7) has each thread pack the weight blocks of its own tasks: torch's result in
    float64, forward and input gradient (the weight packed transposed), the same bits on 1-3
    threads and with the blocks packed up front (tiny bands: one image per band)."""
    gen = torch.Generator().manual_seed(groups)
    x = to_layout(torch.randn(2, 96 * groups, 7, 9, generator=gen, dtype=torch.float64), layout)
    w = torch.randn(100 * groups, 96, 3, 3, generator=gen, dtype=torch.float64)  # 100 = 3 blocks + 4
    if weight_layout == "channels_last":
        w = w.contiguous(memory_format=torch.channels_last)
    go = to_layout(torch.randn(2, 100 * groups, 7, 9, generator=gen, dtype=torch.float64), layout)
    ref = F.conv2d(x, w, padding=1, groups=groups)
    ref_gx = torch.ops.aten.convolution_backward(go, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], groups,
                                                 [True, False, False])[0]
    runs = _over_threads_and_bands("direct", lambda: (
        fastconv.conv2d(x, w, padding=1, groups=groups),
        torch.ops.fastconv.conv2d_backward(go, x, w, [1, 1], [1] * 4, [1, 1], groups, [True, False, False])[0]))
    torch.testing.assert_close(runs[0][0], ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(runs[0][1], ref_gx, rtol=1e-10, atol=1e-10)
    for y, gx in runs[1:]:
        assert torch.equal(y, runs[0][0]) and torch.equal(gx, runs[0][1])


@pytest.mark.parametrize("shape", [
    # (N, C, H, W, OC, k, stride, padding): rows of half a tile's pixels (7 on AVX-512, 3 on
    # AVX2, 2 on the portable path) go two to a tile, the second row's input a padded row on.
    (2, 24, 7, 7, 40, 3, 1, 1),    # 7 rows on AVX-512: three pairs and a single row
    (1, 16, 8, 7, 33, 3, 1, 1),    # pairs only; 33 channels: a lane tail
    (2, 12, 14, 13, 20, 3, 2, 1),  # stride 2 down to 7x7
    (2, 10, 5, 3, 24, 3, 1, 1),    # 3 wide (AVX2), 5 rows
    (3, 6, 4, 4, 8, 3, 2, 1),      # 2 x 2 out (portable), three images
    (1, 8, 9, 9, 16, 3, 1, 2),     # 3 rows of 11: no pairs
])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_direct_pairs_of_short_rows(cpu_capability, shape, layout):
    """The direct kernel's two-row tiles: torch's result in float64 with a residual and ReLU
    in the epilogue, the stride-1 input gradient (a forward convolution), the same bits on
    1-3 threads and in one-image bands."""
    n, c, h, w_, oc, k, s, pad = shape
    gen = torch.Generator().manual_seed(oc)
    x = to_layout(torch.randn(n, c, h, w_, generator=gen, dtype=torch.float64), layout)
    w = torch.randn(oc, c, k, k, generator=gen, dtype=torch.float64)
    b = torch.randn(oc, generator=gen, dtype=torch.float64)
    ref = F.conv2d(x, w, b, s, pad)
    res = to_layout(torch.randn(ref.shape, generator=gen, dtype=torch.float64), layout)
    go = to_layout(torch.randn(ref.shape, generator=gen, dtype=torch.float64), layout)
    ref_gx = torch.ops.aten.convolution_backward(go, x, w, None, [s, s], [pad, pad], [1, 1], False, [0, 0], 1,
                                                 [True, False, False])[0]
    runs = _over_threads_and_bands("direct", lambda: (
        fastconv.conv2d(x, w, b, s, pad),
        fastconv.conv2d_fused(x, w, b, residual=res, relu=True, stride=s, padding=pad),
        torch.ops.fastconv.conv2d_backward(go, x, w, [s, s], [pad] * 4, [1, 1], 1, [True, False, False])[0]))
    torch.testing.assert_close(runs[0][0], ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(runs[0][1], torch.relu(ref + res), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(runs[0][2], ref_gx, rtol=1e-10, atol=1e-10)
    for run in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(run, runs[0]))


def test_auto_keeps_direct_where_it_measured_faster():
    """Under auto, Winograd gives way to the direct kernel on 7-wide outputs (AVX-512: the
    direct tile holds two such rows), on 5x5 layers with fewer than 64 input channels and
    (AVX-512) on 3x3 layers of fewer than 64 2x2 tiles and 5x5 ones of fewer than 256; a
    14-wide 3x3 layer, a 64-channel 5x5 layer and (AVX2) the small ones keep it."""
    gen = torch.Generator().manual_seed(3)

    def runs(x, w, pad):
        out = {}
        for algo in ("auto", "winograd", "direct"):
            with forced(fastconv.conv_algo, fastconv.set_conv_algo, algo):
                out[algo] = fastconv.conv2d(x, w, padding=pad)
        assert not torch.equal(out["winograd"], out["direct"])
        return out

    cases = [((8, 32, 14, 14), (32, 32, 3, 3), 1, "winograd"),
             ((4, 32, 14, 14), (48, 32, 5, 5), 2, "direct"),
             ((2, 64, 24, 24), (32, 64, 5, 5), 2, "winograd")]  # 288 2x2 tiles
    if fastconv.cpu_capability() == "avx512":
        cases += [((8, 32, 7, 7), (32, 32, 3, 3), 1, "direct"),
                  ((1, 32, 13, 14), (32, 32, 3, 3), 1, "direct"),   # 7 x 7 = 49 tiles
                  ((2, 32, 13, 14), (32, 32, 3, 3), 1, "winograd"),  # 98
                  ((2, 64, 14, 14), (32, 64, 5, 5), 2, "direct")]   # 98 (5x5: fewer than 256)
    else:
        cases += [((1, 32, 13, 14), (32, 32, 3, 3), 1, "winograd"),
                  ((2, 64, 14, 14), (32, 64, 5, 5), 2, "winograd")]
    for xs, ws, pad, expect in cases:
        out = runs(torch.randn(xs, generator=gen), torch.randn(ws, generator=gen) / 10, pad)
        assert torch.equal(out["auto"], out[expect]), (xs, ws, expect)


@pytest.mark.parametrize("shape", [
    # (N, C, H, W, OC, k, stride, padding, dilation, groups)
    (3, 20, 13, 11, 37, 3, 1, 1, 1, 1),   # Winograd; 37 output channels: several weight slices
    (2, 6, 15, 9, 10, 5, 2, 2, 1, 1),     # strided: image bands in the input gradient
    (2, 3, 30, 26, 40, 7, 2, 3, 1, 1),    # the stem: weight gradient with channels in the lanes
    (2, 9, 12, 14, 12, 3, 1, 2, 2, 3),    # dilated, grouped
    (3, 16, 7, 8, 24, 1, 1, 0, 1, 1),     # 1x1: read in place when channels_last
])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_conv2d_row_bands_change_nothing(cpu_capability, conv_algo, shape, layout):
    """The padded input and the NCHW output exist a band of rows at a time; any band size
    gives the results of one band, bit for bit (weight gradients included), forward with a
    fused residual + ReLU and backward."""
    n, c, h, w, oc, k, s, p, d, g = shape
    x = _layout(torch.randn(n, c, h, w), layout)
    wt = torch.randn(oc, c // g, k, k)
    b, res = torch.randn(oc), torch.randn(n, oc, (h + 2 * p - d * (k - 1) - 1) // s + 1,
                                          (w + 2 * p - d * (k - 1) - 1) // s + 1)
    res = _layout(res, layout)
    gy = _layout(torch.randn_like(res), layout)

    def run():
        fused = fastconv.conv2d_fused(x, wt, b, None, None, res, True, s, p, d, g)
        xs, ws, bs = (t.detach().clone().requires_grad_(True) for t in (x, wt, b))
        y = fastconv.conv2d(xs, ws, bs, s, p, d, g)
        return (fused, y) + torch.autograd.grad(y, (xs, ws, bs), gy)

    whole = run()
    for band in (1, 700, 5000):
        previous = fastconv._C.set_conv_band_bytes(band)
        try:
            banded = run()
        finally:
            fastconv._C.set_conv_band_bytes(previous)
        for a, e in zip(banded, whole):
            assert torch.equal(a, e), band
    ref = F.conv2d(x, wt, b, s, p, d, g)
    scale = 10 if conv_algo == "winograd4" else 1
    torch.testing.assert_close(whole[1], ref, atol=1e-4 * scale, rtol=1e-4 * scale)
    torch.testing.assert_close(whole[0], torch.relu(ref + res), atol=1e-4 * scale, rtol=1e-4 * scale)


def test_conv_band_budget_is_validated():
    with pytest.raises(ValueError, match="at least 1 byte"):
        fastconv._C.set_conv_band_bytes(0)


def _rel_error(algo, x, w):
    pad = w.shape[-1] // 2
    with forced(fastconv.conv_algo, fastconv.set_conv_algo, algo):
        y = fastconv.conv2d(x, w, padding=pad)
    exact = F.conv2d(x.double(), w.double(), padding=pad)
    return ((y.double() - exact).abs().max() / exact.abs().max()).item()


def test_winograd_error_is_measured():
    """float32 error against a float64 reference, relative to the output's range, on a VGG-like
    layer (256 channels): F(2x2) stays within 2x of the direct path's error; F(4x4) is larger
    (the documented reason it is opt-in) but bounded."""
    x = torch.randn(2, 256, 20, 20)
    w = torch.randn(64, 256, 3, 3) / 48
    direct = _rel_error("direct", x, w)
    f2 = _rel_error("winograd", x, w)
    f4 = _rel_error("winograd4", x, w)
    assert direct < 1e-5
    assert f2 < 2 * direct + 1e-7, (direct, f2)
    assert f4 < 3e-5, (direct, f4)


def test_winograd_5x5_error_and_choice():
    """A 5x5 layer (AlexNet's conv2) runs as four 3x3 pieces through F(2x2, 3x3): its float32
    error stays within 2x of the direct path's; auto picks it, and forcing F(4x4), which has
    no 5x5 form, runs direct."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 64, 27, 27, generator=gen)
    w = torch.randn(96, 64, 5, 5, generator=gen) / 40
    direct = _rel_error("direct", x, w)
    wino = _rel_error("winograd", x, w)
    assert direct < 1e-5
    assert wino < 2 * direct + 1e-7, (direct, wino)
    runs = {}
    for algo in ("auto", "winograd", "winograd4", "direct"):
        with forced(fastconv.conv_algo, fastconv.set_conv_algo, algo):
            runs[algo] = fastconv.conv2d(x, w, padding=2)
    assert torch.equal(runs["auto"], runs["winograd"]) and not torch.equal(runs["auto"], runs["direct"])
    assert torch.equal(runs["winograd4"], runs["direct"])


def _weight_grad(x, w, go, pad):
    return torch.ops.fastconv.conv2d_backward(go, x, w, [1, 1], [pad] * 4, [1, 1], 1, [False, True, False])[1]


def _torch_weight_grad(x, w, go, pad):
    return torch.ops.aten.convolution_backward(go, x, w, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1,
                                               [False, True, False])[1]


@pytest.mark.parametrize("shape", [
    # (N, C, OC, H, W, padding). The Winograd weight gradient sums 2x2 output tiles; odd
    # sizes leave half tiles at the bottom / right, channel counts off the vector width leave
    # lane tails, and 2 x 48 x 48 (1152 tiles) runs in several chunks summed into one buffer.
    (2, 16, 16, 8, 8, 1),
    (3, 33, 17, 11, 13, 1),
    (3, 20, 70, 9, 7, 0),      # auto picks Winograd here (>= 64 output channels, 36 tiles)
    (1, 17, 16, 6, 5, 2),
    (2, 16, 16, 48, 48, 1),
    (1, 300, 150, 8, 8, 1),    # 150 output channels in 4 MB slices of the sum buffer
])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("algo", ["auto", "winograd"])
def test_winograd_weight_gradient(cpu_capability, shape, layout, algo):
    n, c, oc, h, wd, pad = shape
    x = _layout(torch.randn(n, c, h, wd, dtype=torch.float64), layout)
    w = torch.randn(oc, c, 3, 3, dtype=torch.float64)
    go = _layout(torch.randn(n, oc, h + 2 * pad - 2, wd + 2 * pad - 2, dtype=torch.float64), layout)
    x_before, go_before = x.clone(), go.clone()
    with forced(fastconv.conv_algo, fastconv.set_conv_algo, algo):
        gw = _weight_grad(x, w, go, pad)
    torch.testing.assert_close(gw, _torch_weight_grad(x, w, go, pad), atol=1e-10, rtol=1e-10)
    assert torch.equal(x, x_before) and torch.equal(go, go_before)


def test_winograd_weight_gradient_error_and_threads():
    """float32, VGG-like: the Winograd weight gradient's error stays within 2x of the direct
    kernel's (both against float64), and its sums do not depend on the thread count."""
    x = torch.randn(2, 128, 20, 20)
    w = torch.randn(64, 128, 3, 3)
    go = torch.randn(2, 64, 20, 20)
    exact = _torch_weight_grad(x.double(), w.double(), go.double(), 1)

    def rel(algo):
        with forced(fastconv.conv_algo, fastconv.set_conv_algo, algo):
            return ((_weight_grad(x, w, go, 1).double() - exact).abs().max() / exact.abs().max()).item()

    direct, wino = rel("direct"), rel("winograd")
    assert direct < 1e-5
    assert wino < 2 * direct + 1e-7, (direct, wino)
    threads = torch.get_num_threads()
    try:
        results = []
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            results.append(_weight_grad(x, w, go, 1))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_winograd_weight_gradient_keeps_inf():
    """An Inf in the input takes the direct weight gradient, whose sums stay Inf where
    torch's do (the Winograd tile would mix it into NaN)."""
    x = torch.rand(2, 16, 10, 10)
    x[0, 3, 4, 5] = float("inf")
    w = torch.randn(64, 16, 3, 3)
    go = torch.rand(2, 64, 10, 10)
    with forced(fastconv.conv_algo, fastconv.set_conv_algo, "winograd"):
        gw = _weight_grad(x, w, go, 1)
    ref = _torch_weight_grad(x, w, go, 1)
    assert torch.equal(torch.isinf(gw), torch.isinf(ref)) and not torch.isnan(gw).any()
    finite = torch.isfinite(ref)
    torch.testing.assert_close(gw[finite], ref[finite], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("algo", ["winograd", "winograd4", "winograd5x5"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", ["inf_corner", "nan_edge", "inf_weight", "overflow", "relu_nan", "clean"])
def test_winograd_forward_specials(algo, layout, case):
    """Inf / NaN in the input or weight, or finite values whose transform overflows, give the
    direct path's result bit for bit (Inf stays where torch's is, no tile-wide NaN); clean
    inputs stay on Winograd. Odd sizes put the specials in partly cropped tiles."""
    gen = torch.Generator().manual_seed(7)
    k = 5 if algo == "winograd5x5" else 3
    algo = "winograd" if k == 5 else algo
    pad = k // 2
    x = torch.randn(2, 16, 9, 11, generator=gen)
    w = torch.randn(20, 16, k, k, generator=gen) * 0.1
    relu = case == "relu_nan"
    if case == "inf_corner":
        x[1, 4, 8, 10] = float("inf")
        x[0, 0, 0, 0] = -float("inf")
    elif case in ("nan_edge", "relu_nan"):
        x[0, 5, 4, 10] = float("nan")
    elif case == "inf_weight":
        w[3, 2, pad, pad] = float("inf")  # the centre: a padded zero times Inf would be NaN
    elif case == "overflow":
        x[0, :, 5 - pad:7 - pad, 5 - pad:7 - pad] = 3e38  # a tile's d1 + d2 (padded rows and columns 5, 6) overflows
        w = w * 1e-3
    x = to_layout(x, layout)
    before = x.clone()

    def run(a):
        with forced(fastconv.conv_algo, fastconv.set_conv_algo, a):
            return fastconv.conv2d_fused(x, w, padding=pad, relu=relu)

    got, direct = run(algo), run("direct")
    ref = F.conv2d(x, w, padding=pad)
    ref = torch.relu(ref) if relu else ref
    if case == "clean":
        assert torch.isfinite(got).all() and not torch.equal(got, direct)  # Winograd ran
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
        return
    torch.testing.assert_close(got, direct, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(torch.isnan(got), torch.isnan(ref)) and torch.equal(torch.isinf(got), torch.isinf(ref))
    if case == "overflow":
        assert torch.isfinite(got).all()
    torch.testing.assert_close(x, before, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(got[ref.isfinite()], ref[ref.isfinite()], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", [
    # (N, C, OC, H, K, stride, padding, band bytes or None): weights with few tiles; with
    # the input in one band their rows are split into runs summed separately, with several
    # bands (and odd row counts) they are not.
    (16, 1, 6, 28, 5, 1, 0, None),
    (3, 3, 20, 45, 11, 4, 2, None),
    (3, 3, 20, 45, 11, 4, 2, 4000),
    (5, 2, 7, 17, 3, 1, 1, 1),
])
def test_weight_gradient_row_splits(layout, case):
    """The direct weight gradient of a small weight, summed in row runs: torch's result in
    float64, and the same bits on 1, 2 and 3 threads."""
    n, c, oc, h, k, stride, pad, band = case
    gen = torch.Generator().manual_seed(oc)
    x = to_layout(torch.randn(n, c, h, h, generator=gen, dtype=torch.float64), layout)
    w = torch.randn(oc, c, k, k, generator=gen, dtype=torch.float64)
    go = torch.randn_like(F.conv2d(x, w, stride=stride, padding=pad))
    args = (go, x, w, [stride] * 2, [pad] * 4, [1, 1], 1, [False, True, False])
    ref = torch.ops.aten.convolution_backward(go, x, w, None, [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], 1,
                                              [False, True, False])[1]
    prev = fastconv._C.set_conv_band_bytes(band) if band else None
    try:
        _check_weight_grad_on_threads(args, ref, torch.float64)
    finally:
        if prev is not None:
            fastconv._C.set_conv_band_bytes(prev)


def _check_weight_grad_on_threads(args, ref, dtype):
    """conv2d_backward's weight gradient on 1, 2 and 3 threads: close to the float64 reference
    and the same bits on every thread count."""
    old = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(torch.ops.fastconv.conv2d_backward(*args)[1])
    finally:
        torch.set_num_threads(old)
    tol = 1e-10 if dtype == torch.float64 else 1e-3
    torch.testing.assert_close(results[0].double(), ref, rtol=tol, atol=tol)
    assert all(torch.equal(results[0], r) for r in results[1:])


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", [
    (2, 24, 40, 64, 1, 1),   # 8192 pixels: 4 runs
    (1, 40, 24, 70, 1, 2),   # 4900 pixels, groups: 2 runs
    (3, 16, 8, 111, 2, 1),   # strided, 9408 pixels: 4 runs
    (2, 8, 12, 40, 1, 1),    # 3200 pixels: one run
])
def test_weight_gradient_1x1_pixel_runs(layout, dtype, case):
    """The 1x1 weight gradient summed in runs of pixels (partial sums added in order): torch's
    result, and the same bits on 1, 2 and 3 threads."""
    n, c, oc, h, stride, groups = case
    gen = torch.Generator().manual_seed(c + oc)
    x = to_layout(torch.randn(n, c, h, h, generator=gen, dtype=dtype), layout)
    w = torch.randn(oc, c // groups, 1, 1, generator=gen, dtype=dtype)
    go = to_layout(torch.randn_like(F.conv2d(x, w, stride=stride, groups=groups)), layout)
    x_before, go_before = x.clone(), go.clone()
    args = (go, x, w, [stride] * 2, [0] * 4, [1, 1], groups, [False, True, False])
    ref = torch.ops.aten.convolution_backward(go.double(), x.double(), w.double(), None, [stride] * 2, [0, 0],
                                              [1, 1], False, [0, 0], groups, [False, True, False])[1]
    _check_weight_grad_on_threads(args, ref, dtype)
    assert torch.equal(x, x_before) and torch.equal(go, go_before)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", [
    # (N, C, OC, H, W, k, stride, padding, dilation): runs of output rows and output-channel blocks
    (64, 1, 6, 28, 28, 5, 1, 0, 1),     # LeNet conv1: 1536 rows, 8 runs, one whole block
    (9, 3, 8, 20, 37, 5, 1, 2, 1),      # a whole block of 6 and 2 channels one at a time
    (5, 2, 7, 30, 19, (3, 4), (2, 1), 1, (1, 2)),  # stride along H only, dilation, odd width
    (3, 1, 4, 12, 12, 3, 1, 0, 1),      # one run
])
def test_weight_gradient_pixel_lanes(layout, dtype, case):
    """The weight gradient with output pixels in the lanes (few channels): torch's result, and
    the same bits on 1, 2 and 3 threads."""
    n, c, oc, h, w_, k, stride, pad, dil = case
    gen = torch.Generator().manual_seed(oc)
    x = to_layout(torch.randn(n, c, h, w_, generator=gen, dtype=dtype), layout)
    kh, kw = (k, k) if isinstance(k, int) else k
    w = torch.randn(oc, c, kh, kw, generator=gen, dtype=dtype)
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    dh, dw = (dil, dil) if isinstance(dil, int) else dil
    go = to_layout(torch.randn_like(F.conv2d(x, w, stride=(sh, sw), padding=pad, dilation=(dh, dw))), layout)
    x_before, go_before = x.clone(), go.clone()
    args = (go, x, w, [sh, sw], [pad] * 4, [dh, dw], 1, [False, True, False])
    ref = torch.ops.aten.convolution_backward(go.double(), x.double(), w.double(), None, [sh, sw], [pad, pad],
                                              [dh, dw], False, [0, 0], 1, [False, True, False])[1]
    _check_weight_grad_on_threads(args, ref, dtype)
    assert torch.equal(x, x_before) and torch.equal(go, go_before)


def test_conv_algo_switch_is_validated():
    with pytest.raises(ValueError, match="conv algorithm must be one of"):
        fastconv.set_conv_algo("winograd4x4")


X = torch.randn(2, 4, 8, 8)
W = torch.randn(6, 4, 3, 3)


@pytest.mark.parametrize("needle, call", [
    ("weight.size\\(1\\) must be in_channels / groups", lambda: fastconv.conv2d(X, torch.randn(6, 3, 3, 3))),
    ("groups \\(3\\) must divide the input channels", lambda: fastconv.conv2d(X, torch.randn(6, 1, 3, 3), groups=3)),
    ("groups \\(4\\) must divide the output channels", lambda: fastconv.conv2d(X, torch.randn(6, 1, 3, 3), groups=4)),
    ("larger than the padded input", lambda: fastconv.conv2d(X, torch.randn(6, 4, 9, 9))),
    ("padding must be >= 0", lambda: fastconv.conv2d(X, W, padding=-1)),
    ("stride must be >= 1", lambda: fastconv.conv2d(X, W, stride=0)),
    ("dilation must be >= 1", lambda: fastconv.conv2d(X, W, dilation=0)),
    ("groups must be >= 1", lambda: fastconv.conv2d(X, torch.randn(6, 4, 3, 3), groups=0)),
    ("weight must have the dtype of input", lambda: fastconv.conv2d(X, W.double())),
    ("input must be 3-D \\(C, H, W\\) or 4-D", lambda: fastconv.conv2d(X[0, 0], W)),
    ("weight must be 4-D", lambda: fastconv.conv2d(X, W[0])),
    ("bias must have shape \\(out_channels,\\)", lambda: fastconv.conv2d(X, W, torch.randn(5))),
    ("bias must have the dtype of input", lambda: fastconv.conv2d(X, W, torch.randn(6).double())),
    ("padding='same' is not supported for strided", lambda: fastconv.conv2d(X, W, padding="same", stride=2)),
    ("padding must be an int, a tuple of ints, 'same' or 'valid'", lambda: fastconv.conv2d(X, W, padding="full")),
    ("input must be float32, float64, bfloat16 or float16",
     lambda: fastconv.conv2d(X.int(), W.int())),
    ("residual must have the output's shape", lambda: fastconv.conv2d_fused(X, W, residual=torch.randn(2, 6, 5, 5))),
    ("weight must be on input's device", lambda: fastconv.conv2d(X, W.to("meta"))),
    ("input must be 4-D", lambda: torch.ops.fastconv.conv2d(X[0], W, None, [1, 1], [0, 0, 0, 0], [1, 1], 1)),
    ("grad_output must have the output's shape",
     lambda: torch.ops.fastconv.conv2d_backward(torch.randn(2, 6, 5, 5), X, W, [1, 1], [0, 0, 0, 0], [1, 1], 1,
                                                [True, True, True])),
])
def test_conv2d_bad_input(needle, call):
    with pytest.raises(ValueError, match=needle):
        call()


def test_conv2d_double_backward_and_fused_backward_are_explicit_errors():
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(fastconv.conv2d(x, w).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        gx.sum().backward()
    with pytest.raises(NotImplementedError, match="inference op"):
        fastconv.conv2d_fused(x, w, relu=True).sum().backward()


def test_no_grad_call_skips_the_python_autograd_kernel(monkeypatch):
    # Inference through nn layers and models (weights are Parameters) must dispatch straight
    # to the backend; the autograd kernel (register_autograd) redispatches, so count those.
    calls = []
    redispatch = torch._ops.OpOverload.redispatch

    def counting(self, *args, **kwargs):
        calls.append(str(self))
        return redispatch(self, *args, **kwargs)

    monkeypatch.setattr(torch._ops.OpOverload, "redispatch", counting)
    torch.manual_seed(0)
    conv = fastconv.nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        y = conv(x)
        fastconv.models.lenet5().eval()(torch.randn(1, 1, 28, 28))
    assert calls == []
    torch.testing.assert_close(y, F.conv2d(x, conv.weight, conv.bias, padding=1))
    # Recording: the autograd kernel runs and the gradient reaches the Parameter.
    conv(x).sum().backward()
    assert calls and conv.weight.grad is not None


@pytest.mark.parametrize("padding", [(0, 0), (1, 0), (3, 5), (0, 4)])
def test_nchw_direct_gradients_with_padding_beyond_the_kernel(padding):
    # The input gradient pads the output gradient by dilation * (k - 1) - padding, negative
    # (a crop) when the padding exceeds the kernel's reach; the NCHW path's padded copy must crop.
    torch.manual_seed(0)
    x = torch.randn(2, 2, 9, 11, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    with forced(fastconv.conv_algo, fastconv.set_conv_algo, "nchw"):
        y = fastconv.conv2d(x, w, padding=padding)
        g = torch.randn_like(y)
        grads = torch.autograd.grad(y, (x, w), g)
    ref = F.conv2d(x, w, padding=padding)
    torch.testing.assert_close(y, ref)
    for ours, theirs in zip(grads, torch.autograd.grad(ref, (x, w), g)):
        torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("oc", [6, 13, 16])
@pytest.mark.parametrize("hw", [(28, 28), (27, 29)])
def test_single_channel_input_channels_last_output(cpu_capability, oc, hw):
    # One input channel with a channels_last weight (a channels_last LeNet-5's first layer):
    # the NCHW-direct kernel's result is transposed into the channels_last output, channel
    # counts short of whole 8-lane blocks (6, and 13 = 8 + 5) and odd pixel counts included.
    torch.manual_seed(0)
    x = torch.randn(3, 1, *hw).contiguous(memory_format=torch.channels_last)
    w = torch.randn(oc, 1, 5, 5).as_strided((oc, 1, 5, 5), (25, 1, 5, 1))
    b = torch.randn(oc)
    y = fastconv.conv2d(x, w, b, padding=2)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, F.conv2d(x, w, b, padding=2), atol=1e-4, rtol=1e-4)
    y = fastconv.conv2d_fused(x, w, b, None, None, None, True, padding=2)
    torch.testing.assert_close(y, torch.relu(F.conv2d(x, w, b, padding=2)), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("stride", [1, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_direct_tile_rows(cpu_capability, stride, layout):
    """Every tile height of the direct kernel (output rows 1..16 wide: tiles of 1..14 pixels and
    their tails) with a row stride that is no power of two: the microkernel addresses a tile's
    pixels from two bases and four strides (rows 8-13 from the second), in float32 (the SIMD
    paths) on the forward and both gradients."""
    torch.manual_seed(0)
    with forced(fastconv.conv_algo, fastconv.set_conv_algo, "direct"):
        for ow in range(1, 17):
            c, oc, k = 37, 40, 3
            w_in = (ow - 1) * stride + k
            x = _layout(torch.randn(2, c, 5, w_in), layout).requires_grad_(True)
            wt = torch.randn(oc, c, k, k, requires_grad=True)
            y = fastconv.conv2d(x, wt, None, stride)
            ref = F.conv2d(x, wt, None, stride)
            assert y.shape[-1] == ow
            torch.testing.assert_close(y, ref, atol=2e-4, rtol=2e-4)
            gy = torch.randn_like(ref)
            for a, e in zip(torch.autograd.grad(y, (x, wt), gy), torch.autograd.grad(ref, (x, wt), gy)):
                torch.testing.assert_close(a, e, atol=1e-3, rtol=1e-4)
