"""The CUDA kernels, run by the SIMT emulator, against the CPU ops.

fastconv._simt is every csrc/ops/<op>/<op>_cuda.cu kernel and its glue compiled by g++ with
csrc/common/simt.h (threads as fibers, blocks one at a time) and registered as
torch.ops.fastconv_simt.<op> on CPU tensors with the same schemas as torch.ops.fastconv. Each
test calls both on the same arguments and compares values, dtype, shape and strides: small
and awkward shapes (partial tiles and warps, N = 0, odd sizes, channels_last, groups).
"""
import collections
import contextlib
import math
import warnings

import pytest
import torch

import fastconv
from fastconv import _simt  # noqa: F401  (registers torch.ops.fastconv_simt)

CPU = torch.ops.fastconv
EMU = torch.ops.fastconv_simt

TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2}


def assert_same(got, want, dtype=None, tol=None, what=""):
    """Same shape, dtype and strides; values within the dtype's tolerance (NaN where NaN)."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} vs {want.dtype}"
    if got.numel() > 1:  # the stride of a size-1 dimension means nothing
        strides = [(a, b) for a, b, n in zip(got.stride(), want.stride(), got.shape) if n > 1]
        assert all(a == b for a, b in strides), f"{what}: strides {got.stride()} vs {want.stride()}"
    if tol is None:
        tol = TOL.get(dtype or got.dtype, 0.0)
    if got.is_floating_point():
        scale = max(1.0, want.double().abs().nan_to_num(0, 0, 0).max().item()) if want.numel() else 1.0
        torch.testing.assert_close(got.double(), want.double(), rtol=tol, atol=tol * scale, equal_nan=True,
                                   msg=lambda m: f"{what}: {m}")
    else:
        assert torch.equal(got, want), what


def test_emulator_backend():
    assert _simt.backend == "fibers"


# ----------------------------------------------------------------------------------- conv2d

# (N, C, H, W, OC, (KH, KW), stride, padding (t, b, l, r), dilation, groups)
CONV_CASES = [
    (2, 3, 17, 13, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),       # partial tiles everywhere
    (1, 8, 9, 9, 65, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),        # 1x1 as GEMM, 65 columns
    (3, 20, 7, 6, 16, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 2),       # grouped 1x1, k not a multiple of 16
    (2, 6, 11, 10, 4, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),       # strided 1x1: not the GEMM path
    (1, 3, 23, 23, 8, (11, 11), (4, 4), (2, 2, 2, 2), (1, 1), 1),     # AlexNet conv1's shape family
    (2, 4, 12, 12, 6, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 2),
    (2, 6, 10, 9, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6),        # depthwise
    (1, 4, 13, 11, 3, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),       # dilation
    (2, 2, 9, 9, 3, (2, 2), (3, 3), (0, 0, 0, 0), (1, 1), 1),         # stride > kernel
    (1, 3, 8, 7, 4, (4, 2), (1, 1), (1, 2, 0, 1), (1, 1), 1),         # 'same' with even kernels
    (1, 5, 6, 6, 7, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),         # stem-like 7x7/2
    (0, 3, 8, 8, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),         # N = 0
    (2, 3, 40, 36, 70, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),      # weight grad split over k
]


def conv_args(case, dtype, channels_last=False, seed=0):
    n, c, h, w, oc, (kh, kw), stride, pad, dil, groups = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64).to(dtype)
    wt = torch.randn(oc, c // groups, kh, kw, generator=g, dtype=torch.float64).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, wt, list(stride), list(pad), list(dil), groups


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"c{i}" for i in range(len(CONV_CASES))])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conv2d_forward(case, dtype):
    x, w, stride, pad, dil, groups = conv_args(case, dtype)
    b = torch.randn(w.shape[0], dtype=dtype)
    assert_same(EMU.conv2d(x, w, b, stride, pad, dil, groups), CPU.conv2d(x, w, b, stride, pad, dil, groups),
                what="conv2d")
    assert_same(EMU.conv2d(x, w, None, stride, pad, dil, groups), CPU.conv2d(x, w, None, stride, pad, dil, groups),
                what="conv2d without bias")


@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (0, 1, 4, 6)], ids=["c0", "c1", "c4", "c6"])
def test_conv2d_channels_last_and_noncontiguous(case):
    x, w, stride, pad, dil, groups = conv_args(case, torch.float32, channels_last=True)
    assert_same(EMU.conv2d(x, w, None, stride, pad, dil, groups), CPU.conv2d(x, w, None, stride, pad, dil, groups),
                what="channels_last")
    xt = x.contiguous().transpose(2, 3).contiguous().transpose(2, 3)  # same values, odd strides
    assert_same(EMU.conv2d(xt, w, None, stride, pad, dil, groups), CPU.conv2d(xt, w, None, stride, pad, dil, groups),
                what="non-contiguous")


@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (0, 1, 2, 5)], ids=["c0", "c1", "c2", "c5"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conv2d_fused_epilogue(case, dtype):
    x, w, stride, pad, dil, groups = conv_args(case, dtype)
    oc = w.shape[0]
    y = CPU.conv2d(x, w, None, stride, pad, dil, groups)
    bias, scale, shift = (torch.randn(oc, dtype=dtype) for _ in range(3))
    res = torch.randn(y.shape, dtype=dtype)
    for args in [(bias, scale, shift, res, True), (None, scale, None, None, True), (bias, None, shift, res, False),
                 (None, None, None, res, True)]:
        assert_same(EMU.conv2d_fused(x, w, *args, stride, pad, dil, groups),
                    CPU.conv2d_fused(x, w, *args, stride, pad, dil, groups), what=f"conv2d_fused {args[-1]}")


def test_conv2d_fused_relu_keeps_signed_zero_as_cpu():
    x, w = torch.zeros(1, 3, 5, 5), torch.randn(4, 3, 3, 3)
    scale = -torch.ones(4)  # 0 * -1 = -0.0: kept without ReLU, +0.0 after it (max with +0), as on the CPU
    for relu in (False, True):
        args = (None, scale, None, None, relu, [1, 1], [1, 1, 1, 1], [1, 1], 1)
        got, want = EMU.conv2d_fused(x, w, *args), CPU.conv2d_fused(x, w, *args)
        assert torch.equal(got, want) and torch.equal(got.signbit(), want.signbit())


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"c{i}" for i in range(len(CONV_CASES))])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conv2d_backward(case, dtype):
    x, w, stride, pad, dil, groups = conv_args(case, dtype, seed=1)
    y = CPU.conv2d(x, w, None, stride, pad, dil, groups)
    gy = torch.randn(y.shape, dtype=torch.float64).to(dtype)
    for mask in ([True, True, True], [True, False, False], [False, True, True]):
        got = EMU.conv2d_backward(gy, x, w, stride, pad, dil, groups, mask)
        want = CPU.conv2d_backward(gy, x, w, stride, pad, dil, groups, mask)
        tol = TOL[dtype] * (20 if dtype == torch.float32 else 1)  # long k sums in float32
        for name, a, b in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
            assert_same(a, b, tol=tol, what=f"{name} mask={mask}")


def test_conv2d_backward_channels_last():
    x, w, stride, pad, dil, groups = conv_args(CONV_CASES[0], torch.float64, channels_last=True)
    gy = torch.randn(CPU.conv2d(x, w, None, stride, pad, dil, groups).shape, dtype=torch.float64)
    gy = gy.contiguous(memory_format=torch.channels_last)
    for a, b in zip(EMU.conv2d_backward(gy, x, w, stride, pad, dil, groups, [True, True, True]),
                    CPU.conv2d_backward(gy, x, w, stride, pad, dil, groups, [True, True, True])):
        assert_same(a, b)


def test_conv2d_reduced_precision_goes_through_float32():
    x, w, stride, pad, dil, groups = conv_args(CONV_CASES[0], torch.bfloat16)
    assert_same(EMU.conv2d(x, w, None, stride, pad, dil, groups), CPU.conv2d(x, w, None, stride, pad, dil, groups))


def test_conv2d_bad_input_same_errors():
    x = torch.randn(1, 4, 8, 8)
    for w, groups in [(torch.randn(4, 3, 3, 3), 1), (torch.randn(6, 2, 3, 3), 3), (torch.randn(4, 4, 9, 9), 1)]:
        with pytest.raises(ValueError) as cpu_err:
            CPU.conv2d(x, w, None, [1, 1], [0, 0, 0, 0], [1, 1], groups)
        with pytest.raises(ValueError) as emu_err:
            EMU.conv2d(x, w, None, [1, 1], [0, 0, 0, 0], [1, 1], groups)
        assert str(emu_err.value).split("\n")[0] == str(cpu_err.value).split("\n")[0]


# ----------------------------------------------------------------------------------- pooling

def pool_input(shape, dtype, channels_last=False, specials=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    x[torch.rand(shape, generator=g) < 0.2] = 0.5  # ties: the argmax must pick the same tap
    if specials:
        r = torch.rand(shape, generator=g)
        x[r < 0.05] = -math.inf
        x[(r >= 0.05) & (r < 0.07)] = math.nan
        x[(r >= 0.07) & (r < 0.08)] = math.inf
    x = x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


# (shape, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = [
    ((2, 3, 13, 11), [3, 3], [2, 2], [1, 1], [1, 1], False),   # AlexNet's overlapping 3x3/2
    ((2, 3, 13, 11), [3, 3], [2, 2], [1, 1], [1, 1], True),
    ((1, 2, 9, 10), [2, 3], [3, 1], [1, 1], [2, 2], True),     # dilation, stride > kernel
    ((3, 9, 8), [2, 2], [2, 2], [0, 0], [1, 1], False),        # 3-D input
    ((0, 4, 6, 6), [2, 2], [2, 2], [0, 0], [1, 1], False),     # N = 0
    ((1, 1, 1, 1), [1, 1], [1, 1], [0, 0], [1, 1], False),
    ((2, 5, 33, 70), [3, 3], [1, 1], [1, 1], [1, 1], False),   # more than one block of threads
    ((1, 2, 5, 5), [2, 2], [1, 1], [1, 1], [3, 3], False),     # windows with no in-bounds tap
]


@pytest.mark.parametrize("case", MAX_CASES, ids=[f"m{i}" for i in range(len(MAX_CASES))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool2d(case, dtype, channels_last):
    shape, *args = case
    x = pool_input(shape, dtype, channels_last, specials=True)
    assert_same(EMU.max_pool2d(x, *args), CPU.max_pool2d(x, *args), tol=0, what="max_pool2d")
    for op in ("max_pool2d_with_indices", "max_pool2d_with_argmax"):
        (y1, i1), (y2, i2) = getattr(EMU, op)(x, *args), getattr(CPU, op)(x, *args)
        assert_same(y1, y2, tol=0, what=op)
        assert_same(i1, i2, what=op + " indices")
    y, idx = CPU.max_pool2d_with_argmax(x, *args)
    g = torch.randn(y.shape, dtype=torch.float64).to(dtype)
    assert_same(EMU.max_pool2d_backward(g, x, idx, *args), CPU.max_pool2d_backward(g, x, idx, *args), tol=0,
                what="max_pool2d_backward")


# (shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CASES = [
    ((2, 3, 13, 11), [3, 3], [2, 2], [1, 1], False, True, None),
    ((2, 3, 13, 11), [3, 3], [2, 2], [1, 1], True, False, None),
    ((1, 2, 10, 9), [2, 4], [3, 2], [1, 2], True, True, 5),
    ((3, 9, 8), [2, 2], [2, 2], [0, 0], False, True, None),
    ((0, 4, 6, 6), [2, 2], [2, 2], [0, 0], False, True, None),
    ((2, 5, 33, 70), [5, 5], [1, 1], [2, 2], False, False, None),
]


@pytest.mark.parametrize("case", AVG_CASES, ids=[f"a{i}" for i in range(len(AVG_CASES))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_avg_pool2d(case, dtype, channels_last):
    shape, *args = case
    x = pool_input(shape, dtype, channels_last)
    y = CPU.avg_pool2d(x, *args)
    assert_same(EMU.avg_pool2d(x, *args), y, what="avg_pool2d")
    g = torch.randn(y.shape, dtype=torch.float64).to(dtype)
    assert_same(EMU.avg_pool2d_backward(g, x, *args), CPU.avg_pool2d_backward(g, x, *args),
                what="avg_pool2d_backward")


@pytest.mark.parametrize("shape,out", [((2, 3, 13, 11), [5, 7]), ((2, 3, 13, 11), [1, 1]), ((1, 2, 4, 5), [9, 3]),
                                       ((3, 7, 6), [2, 2]), ((0, 2, 4, 4), [2, 2]), ((2, 70, 7, 7), [1, 1])])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_adaptive_avg_pool2d(shape, out, dtype, channels_last):
    x = pool_input(shape, dtype, channels_last)
    y = CPU.adaptive_avg_pool2d(x, out)
    assert_same(EMU.adaptive_avg_pool2d(x, out), y, what="adaptive_avg_pool2d")
    g = torch.randn(y.shape, dtype=torch.float64).to(dtype)
    assert_same(EMU.adaptive_avg_pool2d_backward(g, x), CPU.adaptive_avg_pool2d_backward(g, x),
                what="adaptive_avg_pool2d_backward")


def test_pool_bad_input_same_errors():
    x = torch.randn(1, 2, 4, 4)
    for args in ([[5, 5], [1, 1], [0, 0], [1, 1], False], [[2, 2], [0, 1], [0, 0], [1, 1], False],
                 [[2, 2], [1, 1], [2, 2], [1, 1], False]):
        with pytest.raises((ValueError, RuntimeError)) as cpu_err:
            CPU.max_pool2d(x, *args)
        with pytest.raises(type(cpu_err.value)) as emu_err:
            EMU.max_pool2d(x, *args)
        assert str(emu_err.value).split("\n")[0] == str(cpu_err.value).split("\n")[0]


# ----------------------------------------------------------------------------------- LRN

@pytest.mark.parametrize("shape,size", [((2, 13, 9, 7), 5), ((2, 3, 4, 4), 5), ((1, 1, 5, 5), 3), ((2, 6, 5), 4),
                                        ((1, 7, 3, 2, 4), 2), ((0, 4, 3, 3), 3), ((2, 9, 20, 17), 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_local_response_norm(shape, size, dtype, channels_last):
    x = pool_input(shape, dtype, channels_last) * 3
    args = (size, 1e-2, 0.75, 2.0)
    y = CPU.local_response_norm(x, *args)
    assert_same(EMU.local_response_norm(x, *args), y, what="local_response_norm")
    g = torch.randn(y.shape, dtype=torch.float64).to(dtype)
    assert_same(EMU.local_response_norm_backward(g, x, *args), CPU.local_response_norm_backward(g, x, *args),
                what="local_response_norm_backward")


def test_local_response_norm_inf_as_torch():
    # An Inf makes its neighbours' denominators infinite: 0 there, NaN at the Inf itself.
    x = torch.randn(1, 6, 3, 3)
    x[0, 2, 1, 1] = math.inf
    assert_same(EMU.local_response_norm(x, 3, 1e-4, 0.75, 1.0),
                torch.nn.functional.local_response_norm(x, 3, 1e-4, 0.75, 1.0))


# ----------------------------------------------------------------------------------- SE

SE_SHAPES = [(2, 32, 7, 6), (1, 3, 1, 1), (3, 70, 5, 9), (0, 8, 4, 4), (2, 16, 33, 33)]


@pytest.mark.parametrize("shape", SE_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_channel_scale(shape, dtype, channels_last):
    x = pool_input(shape, dtype, channels_last)
    s = torch.rand(shape[:2], dtype=dtype)
    r = pool_input(shape, dtype, channels_last, seed=3)
    for res, relu in ((None, False), (r, True), (r, False)):
        y = CPU.channel_scale(x, s, res, relu)
        assert_same(EMU.channel_scale(x, s, res, relu), y, what="channel_scale")
        g = torch.randn(y.shape, dtype=torch.float64).to(dtype)
        out = y if relu else None
        for residual_grad in (False, True):
            for a, b in zip(EMU.channel_scale_grad_scale(g, x, out, residual_grad),
                            CPU.channel_scale_grad_scale(g, x, out, residual_grad)):
                assert_same(a, b, what="channel_scale_grad_scale")
        shift = torch.randn(shape[:2], dtype=dtype)
        for sh in (None, shift):
            assert_same(EMU.channel_scale_grad_input(g, s, sh, out), CPU.channel_scale_grad_input(g, s, sh, out),
                        what="channel_scale_grad_input")


@pytest.mark.parametrize("shape", SE_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_squeeze_excitation(shape, dtype, channels_last):
    n, c = shape[:2]
    hidden = max(1, c // 4)
    x = pool_input(shape, dtype, channels_last)
    r = pool_input(shape, dtype, channels_last, seed=5)
    w1, b1 = torch.randn(hidden, c, dtype=dtype) / c ** 0.5, torch.randn(hidden, dtype=dtype)
    w2, b2 = torch.randn(c, hidden, dtype=dtype) / hidden ** 0.5, torch.randn(c, dtype=dtype)
    for bias1, bias2, res in ((b1, b2, None), (None, b2, r), (b1, None, r)):
        want = CPU.squeeze_excitation(x, w1, bias1, w2, bias2, res)
        got = EMU.squeeze_excitation(x, w1, bias1, w2, bias2, res)
        for a, b, name in zip(got, want, ("output", "pooled", "hidden", "scale")):
            assert_same(a, b, what=f"squeeze_excitation {name}")
        out, _, hid, scale = want
        g = torch.randn(out.shape, dtype=torch.float64).to(dtype)
        for mask in ([True, True], [True, False], [False, True]):
            o = out if res is not None else None
            for a, b, name in zip(EMU.squeeze_excitation_backward(g, x, w1, w2, hid, scale, o, mask),
                                  CPU.squeeze_excitation_backward(g, x, w1, w2, hid, scale, o, mask),
                                  ("grad_input", "grad_residual", "dz1", "dz2")):
                assert_same(a, b, what=f"squeeze_excitation_backward {name} mask={mask}")


BN_SHAPES = [(2, 32, 7, 6), (4, 3, 1, 1), (3, 70, 5, 9), (2, 16, 33, 33), (1, 5, 1, 2), (0, 8, 4, 4)]


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_norm_act(shape, dtype, channels_last):
    c = shape[1]
    x = pool_input(shape, dtype, channels_last) * 3 + 2
    r = pool_input(shape, dtype, channels_last, seed=5)
    w, b = torch.randn(c, dtype=dtype), torch.randn(c, dtype=dtype)
    for weight, bias, res, relu in ((w, b, None, True), (None, None, r, True), (w, None, r, False), (w, b, r, True)):
        want = CPU.batch_norm_act(x, weight, bias, res, relu, 1e-5)
        got = EMU.batch_norm_act(x, weight, bias, res, relu, 1e-5)
        for a, bb, name in zip(got, want, ("output", "mean", "var")):
            assert_same(a, bb, what=f"batch_norm_act {name}")
        out, mean, var = want
        g = torch.randn(out.shape, dtype=torch.float64).to(dtype)
        o = out if relu else None
        for residual_grad in (False, True):
            for a, bb, name in zip(EMU.batch_norm_act_backward(g, x, weight, mean, var, o, 1e-5, residual_grad),
                                   CPU.batch_norm_act_backward(g, x, weight, mean, var, o, 1e-5, residual_grad),
                                   ("grad_input", "grad_weight", "grad_bias", "grad_residual")):
                assert_same(a, bb, what=f"batch_norm_act_backward {name}")


def test_batch_norm_act_bad_input_same_errors():
    x = torch.randn(2, 4, 3, 3)
    for args in ((torch.randn(1, 4, 1, 1), None, None, None, True, 1e-5),
                 (x, torch.randn(3), None, None, True, 1e-5),
                 (x, None, None, torch.randn(2, 4, 3, 2), True, 1e-5),
                 (x, None, None, None, True, -1.0)):
        messages = []
        for ops in (CPU, EMU):
            with pytest.raises(ValueError) as e:
                ops.batch_norm_act(*args)
            messages.append(str(e.value).split("\n")[0])
        assert messages[0] == messages[1]


# ----------------------------------------------------------------------------------- coverage

def test_every_op_has_an_emulated_cuda_kernel():
    names = sorted({s.name.split("::", 1)[1] for s in torch._C._jit_get_all_schemas()
                    if s.name.startswith("fastconv::")})
    missing = [n for n in names
               if not torch._C._dispatch_has_kernel_for_dispatch_key(f"fastconv_simt::{n}", "CPU")]
    assert len(names) >= 17 and not missing, f"ops without a CUDA kernel in the emulator build: {missing}"


# ----------------------------------------------------------------------------------- whole models

@contextlib.contextmanager
def cuda_kernels_on_cpu():
    """Route every torch.ops.fastconv op on CPU tensors to its emulated CUDA kernel and glue for
    the duration: the Python layers (autograd, fused blocks, models) then run exactly the code
    path a CUDA tensor takes, below the dispatcher."""
    names = sorted({s.name.split("::", 1)[1] for s in torch._C._jit_get_all_schemas()
                    if s.name.startswith("fastconv::")})
    calls = collections.Counter()

    def emulated(name):
        def run(*args):
            calls[name] += 1
            return getattr(EMU, name)(*args)
        return run

    lib = torch.library.Library("fastconv", "IMPL")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
        for name in names:
            lib.impl(name, emulated(name), "CPU")
    try:
        yield calls
    finally:
        lib._destroy()


def run_model(model, x, train):
    model.train(train)
    x = x.clone().requires_grad_(train)
    torch.manual_seed(5)  # the same dropout masks on both runs
    y = model(x)
    if not train:
        return [y.detach()]
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype))
    grads = [x.grad] + [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return [y.detach()] + grads


@pytest.mark.parametrize("name,size", [("resnet18", 48), ("se_resnet50", 40), ("alexnet_lrn", 67),
                                       ("googlenet", 48), ("densenet121", 40)])
def test_models_through_emulated_cuda_kernels(name, size):
    torch.manual_seed(0)
    model = (fastconv.models.alexnet(lrn=True) if name == "alexnet_lrn"
             else fastconv.models.get_model(name, **({"aux_logits": False} if name == "googlenet" else {})))
    model = model.double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    for train in (False, True):
        want = run_model(model, x, train)
        with cuda_kernels_on_cpu() as calls:
            got = run_model(model, x, train)
        assert calls["conv2d_fused"] + calls["conv2d"] > 0 and (not train or calls["conv2d_backward"] > 0)
        assert len(got) == len(want)
        # Training-mode BatchNorm over 2 images at 1x1 or 2x2 (the late blocks of these small
        # inputs) amplifies float64 rounding by orders of magnitude; a wrong kernel is off by O(1).
        for i, (a, b) in enumerate(zip(got, want)):
            assert_same(a, b, tol=1e-7 if train else 1e-9, what=f"{name} train={train} tensor {i}")


def test_emulated_override_is_removed_afterwards():
    x = torch.randn(1, 2, 5, 5)
    with cuda_kernels_on_cpu() as calls:
        fastconv.max_pool2d(x, 2)
        assert calls["max_pool2d"] == 1
    fastconv.max_pool2d(x, 2)
    assert calls["max_pool2d"] == 1, "the emulated kernel still answers after the context"
    torch.testing.assert_close(fastconv.max_pool2d(x, 2), torch.nn.functional.max_pool2d(x, 2))
