"""Pooling ops: differential against torch.nn.functional on randomised grids, gradients,
gradcheck, opcheck, torch.compile, layouts, and rejection of bad input."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st

import fastconv
from reference import assert_same_result, grad_of, to_layout

LAYOUTS = ["nchw", "channels_last", "strided"]
DTYPES = [torch.float32, torch.float64]


# ----------------------------------------------------------------------------- strategies

@st.composite
def window_cases(draw, dilation=True):
    """Pool parameters and an input shape; deliberately includes shapes torch rejects
    (those must be rejected by us too)."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) if dilation else (1, 1)
    ph = draw(st.integers(0, ((kh - 1) * dh + 1) // 2))
    pw = draw(st.integers(0, ((kw - 1) * dw + 1) // 2))
    n = draw(st.sampled_from([0, 1, 2, 3]))
    c = draw(st.integers(1, 19))
    h, w = draw(st.integers(1, 23)), draw(st.integers(1, 40))
    return dict(shape=(n, c, h, w), kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw),
                dilation=(dh, dw), ceil_mode=draw(st.booleans()),
                unbatched=draw(st.booleans()) and n == 1)


def make_input(case, dtype, layout, specials=False):
    shape = case["shape"][1:] if case["unbatched"] else case["shape"]
    x = torch.randn(shape, dtype=dtype)
    if specials and x.numel() > 0:
        flat = x.view(-1)
        idx = torch.randint(0, flat.numel(), (max(1, flat.numel() // 10),))
        flat[idx] = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=dtype).repeat(
            idx.numel())[: idx.numel()]
        # Ties: quantise part of the values so windows hold equal maxima.
        x = torch.where(torch.rand(shape) < 0.3, x.round(), x)
    return to_layout(x, layout)


def torch_or_error(fn):
    try:
        return fn(), None
    except (RuntimeError, ValueError, IndexError) as e:
        return None, e


# ----------------------------------------------------------------------------- max pooling

@given(case=window_cases(), dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS),
       specials=st.booleans())
def test_max_pool2d_matches_torch(cpu_capability, case, dtype, layout, specials):
    x = make_input(case, dtype, layout, specials)
    args = (case["kernel_size"], case["stride"], case["padding"], case["dilation"], case["ceil_mode"])
    ref, err = torch_or_error(lambda: F.max_pool2d(x, *args, return_indices=True))
    if err is not None:
        with pytest.raises((RuntimeError, ValueError)):
            fastconv.max_pool2d(x, *args, return_indices=True)
        return
    x_before = x.clone()
    out, idx = fastconv.max_pool2d(x, *args, return_indices=True)
    assert_same_result(out, ref[0], rtol=0, atol=0)
    assert torch.equal(idx, ref[1]), "argmax indices differ from torch"
    assert idx.stride() == ref[1].stride() or idx.numel() <= 1
    assert_same_result(fastconv.max_pool2d(x, *args), ref[0], rtol=0, atol=0)
    assert torch.equal(x, x_before) or specials  # NaN != NaN; checked bitwise below
    assert torch.equal(x.nan_to_num(), x_before.nan_to_num()), "input was modified"


@given(case=window_cases(), dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS))
def test_max_pool2d_grad_matches_torch(cpu_capability, case, dtype, layout):
    x = make_input(case, dtype, layout)
    args = (case["kernel_size"], case["stride"], case["padding"], case["dilation"], case["ceil_mode"])
    ref, err = torch_or_error(lambda: F.max_pool2d(x, *args, return_indices=True))
    assume(err is None)
    # torch's own backward writes through an argmax past the plane (a window wholly in the
    # padding) unchecked; keep the reference away from that case (tested separately below).
    assume(ref[1].numel() == 0 or int(ref[1].max()) < x.shape[-2] * x.shape[-1])
    y_ref, g_ref = grad_of(lambda t: F.max_pool2d(t, *args), x)
    y, g = grad_of(lambda t: fastconv.max_pool2d(t, *args), x)
    assert_same_result(y, y_ref, rtol=0, atol=0)
    assert_same_result(g, g_ref)


# ----------------------------------------------------------------------------- average pooling

@given(case=window_cases(dilation=False), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), count_include_pad=st.booleans(),
       divisor_override=st.sampled_from([None, None, 1, 3, -2]))
def test_avg_pool2d_matches_torch(cpu_capability, case, dtype, layout, count_include_pad,
                                  divisor_override):
    x = make_input(case, dtype, layout)
    args = (case["kernel_size"], case["stride"], case["padding"], case["ceil_mode"],
            count_include_pad, divisor_override)
    ref, err = torch_or_error(lambda: F.avg_pool2d(x, *args))
    if err is not None:
        with pytest.raises((RuntimeError, ValueError)):
            fastconv.avg_pool2d(x, *args)
        return
    assert_same_result(fastconv.avg_pool2d(x, *args), ref)
    y_ref, g_ref = grad_of(lambda t: F.avg_pool2d(t, *args), x)
    y, g = grad_of(lambda t: fastconv.avg_pool2d(t, *args), x)
    assert_same_result(g, g_ref)


# ----------------------------------------------------------------------------- adaptive / global

@given(n=st.sampled_from([0, 1, 2]), c=st.integers(1, 20), h=st.integers(1, 17),
       w=st.integers(1, 17), oh=st.integers(1, 9), ow=st.integers(1, 9),
       dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS))
def test_adaptive_avg_pool2d_matches_torch(cpu_capability, n, c, h, w, oh, ow, dtype, layout):
    x = to_layout(torch.randn(n, c, h, w, dtype=dtype), layout)
    assert_same_result(fastconv.adaptive_avg_pool2d(x, (oh, ow)), F.adaptive_avg_pool2d(x, (oh, ow)))
    _, g_ref = grad_of(lambda t: F.adaptive_avg_pool2d(t, (oh, ow)), x)
    _, g = grad_of(lambda t: fastconv.adaptive_avg_pool2d(t, (oh, ow)), x)
    assert_same_result(g, g_ref)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(8, 2048, 7, 7), (2, 17, 1, 1), (3, 5, 13, 9), (0, 4, 3, 3), (6, 5, 5)])
def test_global_avg_pool2d(cpu_capability, shape, layout):
    x = to_layout(torch.randn(shape), layout)
    assert_same_result(fastconv.global_avg_pool2d(x), F.adaptive_avg_pool2d(x, 1))
    assert_same_result(fastconv.global_avg_pool2d(x, keepdim=False),
                       F.adaptive_avg_pool2d(x, 1).flatten(-3))
    _, g_ref = grad_of(lambda t: F.adaptive_avg_pool2d(t, 1), x)
    _, g = grad_of(fastconv.global_avg_pool2d, x)
    assert_same_result(g, g_ref)


def test_adaptive_output_size_forms():
    x = torch.randn(2, 3, 10, 7)
    for size in [4, (4, 3), (None, 3), (4, None), [2, 2]]:
        assert_same_result(fastconv.adaptive_avg_pool2d(x, size), F.adaptive_avg_pool2d(x, size))


# ----------------------------------------------------------------------------- fixed shapes

NETWORK_SHAPES = [  # (shape, kernel, stride, padding): the benchmark layers, scaled down in N
    ((2, 96, 55, 55), 3, 2, 0),     # AlexNet overlapping pool
    ((1, 64, 224, 224), 2, 2, 0),   # VGG
    ((2, 64, 112, 112), 3, 2, 1),   # ResNet stem
    ((2, 192, 28, 28), 3, 1, 1),    # GoogLeNet
    ((4, 64, 224, 224), 2, 2, 0),   # outputs over 16 MB: the non-temporal store path
]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape,k,s,p", NETWORK_SHAPES)
def test_network_shapes(cpu_capability, shape, k, s, p, layout):
    x = to_layout(torch.randn(shape), layout)
    out, idx = fastconv.max_pool2d(x, k, s, p, return_indices=True)
    ref, ref_idx = F.max_pool2d(x, k, s, p, return_indices=True)
    assert_same_result(out, ref, rtol=0, atol=0)
    assert torch.equal(idx, ref_idx)
    assert_same_result(fastconv.avg_pool2d(x, k, s, p), F.avg_pool2d(x, k, s, p))
    _, g_ref = grad_of(lambda t: F.max_pool2d(t, k, s, p), x)
    _, g = grad_of(lambda t: fastconv.max_pool2d(t, k, s, p), x)
    assert_same_result(g, g_ref)


def test_nan_propagates_like_torch(cpu_capability):
    x = torch.randn(1, 2, 6, 6)
    x[0, 0, 1, 1] = float("nan")
    x[0, 0, 1, 2] = float("nan")  # two NaNs in one window: torch keeps the last index
    x[0, 1] = -float("inf")
    for layout in LAYOUTS:
        xl = to_layout(x, layout)
        out, idx = fastconv.max_pool2d(xl, 3, 2, 1, return_indices=True)
        ref, ref_idx = F.max_pool2d(xl, 3, 2, 1, return_indices=True)
        assert_same_result(out, ref, rtol=0, atol=0)
        assert torch.equal(idx, ref_idx)
        assert torch.isnan(out[0, 0, 0, 0]) and torch.isnan(fastconv.max_pool2d(xl, 3, 2, 1)[0, 0, 0, 0])


def test_empty_batch_backward():
    x = torch.randn(0, 3, 8, 8, requires_grad=True)
    fastconv.max_pool2d(x, 2).sum().backward()
    assert x.grad.shape == x.shape
    y = torch.randn(0, 3, 8, 8, requires_grad=True)
    fastconv.avg_pool2d(y, 3, 2, 1).sum().backward()
    assert y.grad.shape == y.shape


def test_large_plane_uses_int64_indices():
    # A plane with more cells than int32 lanes can index takes the portable int64 path; use
    # a shape whose plane is big but whose tensor stays small by pooling a 1-row strip.
    x = torch.randn(1, 1, 1, 70000)
    out, idx = fastconv.max_pool2d(x, (1, 3), (1, 2), return_indices=True)
    ref, ref_idx = F.max_pool2d(x, (1, 3), (1, 2), return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)


# ----------------------------------------------------------------------------- autograd

GRADCHECK_CASES = [
    dict(shape=(2, 3, 7, 9), layout="nchw"),
    dict(shape=(1, 4, 6, 5), layout="channels_last"),
    dict(shape=(3, 5, 8), layout="nchw"),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=lambda c: f"{c['shape']}-{c['layout']}")
def test_gradcheck(cpu_capability, case):
    # Distinct values so max pooling's argmax is stable under gradcheck's perturbation.
    numel = torch.Size(case["shape"]).numel()
    x = torch.randperm(numel, dtype=torch.float64).view(case["shape"]) / numel
    x = to_layout(x, case["layout"]).requires_grad_(True)
    checks = [
        lambda t: fastconv.max_pool2d(t, 3, 2, 1, ceil_mode=True),
        lambda t: fastconv.max_pool2d(t, (2, 3), (1, 2), (1, 0), dilation=(2, 1)),
        lambda t: fastconv.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False),
        lambda t: fastconv.avg_pool2d(t, 2, 1, 1, divisor_override=3),
        lambda t: fastconv.adaptive_avg_pool2d(t, (3, 2)),
        lambda t: fastconv.global_avg_pool2d(t),
    ]
    for fn in checks:
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))


def test_autograd_functions_match_functional():
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    out, idx = fastconv.MaxPool2dFunction.apply(x, (3, 3), (2, 2), (1, 1), (1, 1), False)
    ref, ref_idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    assert torch.autograd.gradcheck(
        lambda t: fastconv.MaxPool2dFunction.apply(t, (3, 3), (2, 2), (1, 1), (1, 1), False)[0], (x,))
    assert torch.autograd.gradcheck(
        lambda t: fastconv.AvgPool2dFunction.apply(t, (3, 3), (2, 2), (1, 1), True, False, None), (x,))
    assert torch.autograd.gradcheck(
        lambda t: fastconv.AdaptiveAvgPool2dFunction.apply(t, (4, 2)), (x,))


def test_inference_op_backward_recomputes_indices():
    # torch.ops.fastconv.max_pool2d keeps no argmax; its registered backward must still work.
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: torch.ops.fastconv.max_pool2d(t, (3, 3), (2, 2), (1, 1), (1, 1), False), (x,))


# ----------------------------------------------------------------------------- opcheck / compile

OPCHECK_INPUTS = [
    torch.randn(2, 3, 9, 8),
    torch.randn(2, 3, 9, 8).contiguous(memory_format=torch.channels_last),
    torch.randn(3, 7, 6, dtype=torch.float64),
]


@pytest.mark.parametrize("x", OPCHECK_INPUTS, ids=["nchw", "channels_last", "unbatched64"])
def test_opcheck(x):
    ops = torch.ops.fastconv
    x = x.clone().requires_grad_(True)
    win = ([3, 3], [2, 2], [1, 1], [1, 1], True)
    out, idx = ops.max_pool2d_with_indices(x, *win)
    g = torch.randn_like(out)
    cases = [
        (ops.max_pool2d, (x, *win)),
        (ops.max_pool2d_with_indices, (x, *win)),
        (ops.max_pool2d_with_argmax, (x, *win)),
        (ops.max_pool2d_backward, (g, x.detach(), ops.max_pool2d_with_argmax(x, *win)[1], *win)),
        (ops.max_pool2d_backward, (g, x.detach(), idx, *win)),
        (ops.avg_pool2d, (x, [3, 2], [2, 1], [1, 0], False, False, None)),
        (ops.avg_pool2d, (x, [2, 2], [2, 2], [0, 0], True, True, 5)),
        (ops.avg_pool2d_backward, (torch.randn_like(ops.avg_pool2d(x, [3, 3], [2, 2], [1, 1], True, True, None)),
                                   x.detach(), [3, 3], [2, 2], [1, 1], True, True, None)),
        (ops.adaptive_avg_pool2d, (x, [4, 3])),
        (ops.adaptive_avg_pool2d, (x, [1, 1])),
        (ops.adaptive_avg_pool2d_backward, (torch.randn(*x.shape[:-2], 4, 3, dtype=x.dtype), x.detach())),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend):
    torch._dynamo.reset()

    def net(x):
        y = fastconv.max_pool2d(x, 3, 2, 1)
        y = fastconv.avg_pool2d(y, 2, 1, ceil_mode=True, count_include_pad=False)
        return fastconv.global_avg_pool2d(y, keepdim=False)

    def ref(x):
        y = F.max_pool2d(x, 3, 2, 1)
        y = F.avg_pool2d(y, 2, 1, ceil_mode=True, count_include_pad=False)
        return F.adaptive_avg_pool2d(y, 1).flatten(-3)

    compiled = torch.compile(net, fullgraph=True, backend=backend)
    x = torch.randn(2, 4, 15, 13, requires_grad=True)
    y = compiled(x)
    torch.testing.assert_close(y, ref(x))
    y.sum().backward()
    g = x.grad.clone()
    x.grad = None
    ref(x).sum().backward()
    torch.testing.assert_close(g, x.grad)


def test_torch_export():
    model = torch.nn.Sequential(fastconv.nn.MaxPool2d(3, 2, 1), fastconv.nn.AvgPool2d(2),
                                fastconv.nn.AdaptiveAvgPool2d(1))
    x = torch.randn(2, 4, 15, 13)
    ep = torch.export.export(model, (x,))
    assert "torch.ops.fastconv.max_pool2d" in ep.graph_module.code
    torch.testing.assert_close(ep.module()(x), model(x))


# ----------------------------------------------------------------------------- bad input

BAD_CALLS = [
    ("kernel_size", lambda x: fastconv.max_pool2d(x, 0)),
    ("kernel_size", lambda x: fastconv.max_pool2d(x, (2, 2, 2))),
    ("kernel_size", lambda x: fastconv.max_pool2d(x, 2.5)),
    ("stride", lambda x: fastconv.max_pool2d(x, 2, stride=0)),
    ("stride", lambda x: fastconv.avg_pool2d(x, 2, stride=-1)),
    ("padding", lambda x: fastconv.max_pool2d(x, 3, padding=2)),
    ("padding", lambda x: fastconv.max_pool2d(x, 2, padding=-1)),
    ("padding", lambda x: fastconv.avg_pool2d(x, 2, padding=2)),
    ("dilation", lambda x: fastconv.max_pool2d(x, 2, dilation=0)),
    ("divisor_override", lambda x: fastconv.avg_pool2d(x, 2, divisor_override=0)),
    ("output size is too small", lambda x: fastconv.max_pool2d(x, 9)),
    ("output size is too small", lambda x: fastconv.avg_pool2d(x, 9)),
    ("input must be 3-D", lambda x: fastconv.max_pool2d(x[0, 0], 2)),
    ("input must be 3-D", lambda x: fastconv.avg_pool2d(x[None], 2)),
    ("input must be 3-D", lambda x: fastconv.adaptive_avg_pool2d(x[0, 0], 2)),
    ("non-zero", lambda x: fastconv.max_pool2d(x[:, :0], 2)),
    ("non-zero", lambda x: fastconv.adaptive_avg_pool2d(x[:, :, :0], 2)),
    ("float32, float64, bfloat16 or float16", lambda x: fastconv.max_pool2d(x.long(), 2)),
    ("float32, float64, bfloat16 or float16", lambda x: fastconv.avg_pool2d(x.int(), 2)),
    ("float32, float64, bfloat16 or float16", lambda x: fastconv.global_avg_pool2d(x.to(torch.int8))),
    ("output_size", lambda x: fastconv.adaptive_avg_pool2d(x, (-1, 2))),
    ("output_size", lambda x: fastconv.adaptive_avg_pool2d(x, (1, 2, 3))),
    ("input must be a torch.Tensor", lambda x: fastconv.max_pool2d(x.tolist(), 2)),
]


@pytest.mark.parametrize("needle,call", BAD_CALLS, ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD_CALLS)])
def test_bad_input_is_rejected_clearly(needle, call):
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises((ValueError, TypeError, RuntimeError), match=needle):
        call(x)


def test_bad_input_rejected_by_raw_ops():
    # Direct torch.ops calls skip the Python argument parsing; the C++ checks still name the rule.
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="kernel_size must be positive"):
        torch.ops.fastconv.max_pool2d(x, [0, 2], [1, 1], [0, 0], [1, 1], False)
    with pytest.raises(ValueError, match="grad_output must have shape"):
        torch.ops.fastconv.avg_pool2d_backward(torch.randn(2, 3, 3, 3), x, [2, 2], [2, 2], [0, 0],
                                               False, True, None)
    with pytest.raises(ValueError, match="indices must have shape"):
        torch.ops.fastconv.max_pool2d_backward(torch.randn(2, 3, 4, 4), x, torch.zeros(2, 3, 4, 3, dtype=torch.long),
                                               [2, 2], [2, 2], [0, 0], [1, 1], False)


# ----------------------------------------------------------------------------- modules

MODULE_PAIRS = [
    (fastconv.nn.MaxPool2d, torch.nn.MaxPool2d, [(3,), (3, 2), (3, 2, 1)],
     dict(dilation=2, ceil_mode=True)),
    (fastconv.nn.AvgPool2d, torch.nn.AvgPool2d, [(3,), (3, 2), (3, 2, 1)],
     dict(ceil_mode=True, count_include_pad=False, divisor_override=4)),
    (fastconv.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool2d, [(1,), ((3, 2),), ((None, 4),)], {}),
]


@pytest.mark.parametrize("ours,theirs,arg_sets,kwargs", MODULE_PAIRS)
def test_modules_are_drop_in(ours, theirs, arg_sets, kwargs):
    x = torch.randn(2, 3, 11, 10)
    for args in arg_sets:
        for kw in ({}, kwargs):
            a, b = ours(*args, **kw), theirs(*args, **kw)
            assert repr(a) == repr(b)
            assert isinstance(a, theirs)
            assert a.state_dict().keys() == b.state_dict().keys()
            assert_same_result(a(x), b(x))


def test_max_pool_module_return_indices():
    m, t = fastconv.nn.MaxPool2d(3, 2, 1, return_indices=True), torch.nn.MaxPool2d(3, 2, 1, return_indices=True)
    x = torch.randn(1, 2, 9, 9)
    (a, i), (b, j) = m(x), t(x)
    assert torch.equal(a, b) and torch.equal(i, j)


def test_global_avg_pool_module():
    m = fastconv.nn.GlobalAvgPool2d(flatten=True)
    x = torch.randn(2, 5, 4, 3)
    assert_same_result(m(x), x.mean((2, 3)), rtol=1e-6, atol=1e-6)
    assert repr(m) == "GlobalAvgPool2d(flatten=True)"


# ----------------------------------------------------------------------------- SIMD paths

def test_capability_env_var_forces_path():
    for cap in fastconv.supported_cpu_capabilities():
        out = subprocess.run(
            [sys.executable, "-c", "import fastconv; print(fastconv.cpu_capability())"],
            env={**__import__("os").environ, "FASTCONV_CPU_CAPABILITY": cap},
            capture_output=True, text=True, check=True)
        assert out.stdout.strip() == cap


def test_capability_env_var_rejects_unknown():
    out = subprocess.run([sys.executable, "-c", "import fastconv"],
                         env={**__import__("os").environ, "FASTCONV_CPU_CAPABILITY": "sse9"},
                         capture_output=True, text=True)
    assert out.returncode != 0 and "cpu capability must be one of" in out.stderr


def test_set_cpu_capability_rejects_unknown():
    with pytest.raises(ValueError, match="must be one of"):
        fastconv.set_cpu_capability("neon")


def test_build_info():
    info = fastconv.build_info()
    assert info["version"] == fastconv.__version__
    assert info["cpu_paths_compiled"] == ["avx512", "avx2", "default"]
    assert fastconv.cpu_capability() in fastconv.supported_cpu_capabilities()


def test_window_entirely_in_padding(cpu_capability):
    # Found by fuzzing: with dilation, a window can hold no in-bounds tap at all. torch then
    # returns -inf with an argmax index past the plane; that index must match torch's and must
    # not be written through in backward when it lies past the plane (it once corrupted the
    # heap); inside the plane, torch sends the gradient there, and so do we.
    for layout in ("nchw", "channels_last"):
        x = to_layout(torch.randn(2, 5, 5, 1), layout)
        args = ((4, 2), (4, 4), (0, 1), (2, 3), True)
        out, idx = fastconv.max_pool2d(x, *args, return_indices=True)
        ref, ref_idx = F.max_pool2d(x, *args, return_indices=True)
        assert_same_result(out, ref, rtol=0, atol=0)
        assert torch.equal(idx, ref_idx)
        xg = x.clone().requires_grad_(True)
        fastconv.max_pool2d(xg, *args).backward(torch.ones_like(out))
        plane = x.shape[-2] * x.shape[-1]
        valid = ref_idx < plane
        expected = torch.zeros(2, 5, plane).scatter_add_(
            -1, torch.where(valid, ref_idx, 0).flatten(-2), valid.to(x.dtype).flatten(-2)).view_as(x)
        assert_same_result(xg.grad.contiguous(), expected.contiguous())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_reduced_precision_matches_torch(dtype, layout):
    x = to_layout(torch.randn(2, 5, 13, 11).to(dtype), layout)
    x[0, 0, 0, 0] = float("nan")
    out, idx = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    ref, ref_idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert_same_result(out, ref, rtol=0, atol=0)
    assert torch.equal(idx, ref_idx)
    xf = x.nan_to_num()
    assert_same_result(fastconv.avg_pool2d(xf, 3, 2, 1), F.avg_pool2d(xf, 3, 2, 1))
    assert_same_result(fastconv.adaptive_avg_pool2d(xf, (4, 3)), F.adaptive_avg_pool2d(xf, (4, 3)))
    for ours, theirs in [(lambda t: fastconv.max_pool2d(t, 3, 2, 1), lambda t: F.max_pool2d(t, 3, 2, 1)),
                         (lambda t: fastconv.avg_pool2d(t, 3, 2, 1), lambda t: F.avg_pool2d(t, 3, 2, 1)),
                         (fastconv.global_avg_pool2d, lambda t: F.adaptive_avg_pool2d(t, 1))]:
        # torch accumulates overlapping windows' gradients in the low precision; we accumulate
        # in float32 and round once. The house rule: our error against float64 is at most twice
        # torch's own.
        _, g_exact = grad_of(theirs, xf.double())
        _, g_torch = grad_of(theirs, xf)
        _, g = grad_of(ours, xf)
        assert g.dtype == dtype and g.stride() == g_torch.stride()
        err_ours = (g.double() - g_exact).abs().max()
        err_torch = (g_torch.double() - g_exact).abs().max()
        assert err_ours <= 2 * err_torch + 1e-12, (err_ours, err_torch)
