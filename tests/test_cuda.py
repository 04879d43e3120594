"""The CUDA kernels on a real GPU: every op, forward and backward, CUDA against the CPU op on the
same values, plus gradcheck and opcheck on CUDA tensors.

Skipped where torch.cuda.is_available() is false (as on the machine fastconv is developed on,
where the same kernels are verified through the SIMT emulator instead: tests/test_simt.py).
On a machine with a GPU and a CUDA build of fastconv, `pytest tests/test_cuda.py` runs them.
"""
import pytest
import torch
import torch.nn.functional as F

import fastconv

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

OPS = torch.ops.fastconv
DEV = "cuda"


@pytest.fixture(autouse=True, scope="module")
def _needs_cuda_build():
    if not fastconv.build_info()["cuda"]:
        pytest.fail("a GPU is present but fastconv was built without CUDA (FASTCONV_CUDA=1 pip install ...)")


def close(got, want, tol):
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu().double(), want.double(), rtol=tol, atol=tol, equal_nan=True)


def grads_match(fn, inputs, tol):
    """fn on CUDA copies vs fn on the CPU tensors: outputs and every input gradient."""
    cpu = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    gpu = [t.detach().to(DEV).requires_grad_(t.is_floating_point()) for t in inputs]
    y_cpu, y_gpu = fn(*cpu), fn(*gpu)
    close(y_gpu, y_cpu, tol)
    g = torch.randn_like(y_cpu)
    y_cpu.backward(g)
    y_gpu.backward(g.to(DEV))
    for a, b in zip(gpu, cpu):
        if b.grad is not None:
            close(a.grad, b.grad, tol)


CONV = [  # (N, C, H, W, OC, K, stride, padding, dilation, groups)
    (2, 3, 17, 13, 5, 3, 1, 1, 1, 1), (1, 8, 9, 9, 65, 1, 1, 0, 1, 1), (2, 3, 35, 35, 8, 11, 4, 2, 1, 1),
    (2, 6, 10, 9, 6, 3, 1, 1, 1, 6), (1, 4, 13, 11, 3, 3, 1, 2, 2, 1), (2, 2, 9, 9, 3, 2, 3, 0, 1, 1),
    (4, 64, 28, 28, 96, 3, 1, 1, 1, 1), (0, 3, 8, 8, 4, 3, 1, 1, 1, 1),
]


@pytest.mark.parametrize("case", CONV)
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv2d_cuda_matches_cpu(case, channels_last):
    n, c, h, w, oc, k, s, p, d, g = case
    x = torch.randn(n, c, h, w)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    wt, b = torch.randn(oc, c // g, k, k), torch.randn(oc)
    grads_match(lambda x, wt, b: fastconv.conv2d(x, wt, b, s, p, d, g), [x, wt, b], 1e-3)


def test_conv2d_fused_cuda_matches_cpu():
    x, w = torch.randn(2, 16, 9, 9), torch.randn(24, 16, 1, 1)
    args = [torch.randn(24), torch.randn(24), torch.randn(24), torch.randn(2, 24, 9, 9)]
    want = OPS.conv2d_fused(x, w, *args, True, [1, 1], [0, 0, 0, 0], [1, 1], 1)
    got = OPS.conv2d_fused(x.to(DEV), w.to(DEV), *[a.to(DEV) for a in args], True, [1, 1], [0, 0, 0, 0], [1, 1], 1)
    close(got, want, 1e-4)


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pooling_cuda_matches_cpu(ceil_mode):
    x = torch.randn(2, 5, 27, 26)
    grads_match(lambda x: fastconv.max_pool2d(x, 3, 2, 1, ceil_mode=ceil_mode), [x], 1e-6)
    grads_match(lambda x: fastconv.avg_pool2d(x, 3, 2, 1, ceil_mode=ceil_mode), [x], 1e-5)
    grads_match(lambda x: fastconv.adaptive_avg_pool2d(x, (5, 7)), [x], 1e-5)
    grads_match(lambda x: fastconv.global_avg_pool2d(x), [x], 1e-5)


def test_lrn_cuda_matches_cpu():
    grads_match(lambda x: fastconv.local_response_norm(x, 5, 1e-4, 0.75, 2.0), [torch.randn(2, 13, 9, 7)], 1e-5)


def test_se_cuda_matches_cpu():
    x, r = torch.randn(2, 32, 7, 6), torch.randn(2, 32, 7, 6)
    w1, b1, w2, b2 = torch.randn(8, 32), torch.randn(8), torch.randn(32, 8), torch.randn(32)
    grads_match(lambda *a: fastconv.squeeze_excitation(*a), [x, w1, b1, w2, b2, r], 1e-4)
    grads_match(lambda x, s: fastconv.channel_scale(x, s), [x, torch.rand(2, 32)], 1e-5)


def test_modules_cuda_match_cpu():
    torch.manual_seed(0)
    for m in [fastconv.nn.Conv2d(8, 16, 3, padding=1), fastconv.nn.ConvBNReLU(8, 16, 1),
              fastconv.nn.SqueezeExcitation(8, 4), fastconv.nn.LocalResponseNorm(3)]:
        m_gpu = __import__("copy").deepcopy(m).to(DEV)
        x = torch.randn(2, 8, 10, 10)
        for train in (True, False):
            m.train(train)
            m_gpu.train(train)
            close(m_gpu(x.to(DEV)), m(x), 1e-4)


def test_gradcheck_cuda():
    kw = dict(dtype=torch.float64, device=DEV, requires_grad=True)
    x, w, b = torch.randn(2, 4, 7, 6, **kw), torch.randn(6, 2, 3, 3, **kw), torch.randn(6, **kw)
    assert torch.autograd.gradcheck(lambda x, w, b: fastconv.conv2d(x, w, b, 2, 1, 1, 2), (x, w, b))
    x = torch.randn(2, 3, 9, 8, **kw)
    assert torch.autograd.gradcheck(lambda x: fastconv.max_pool2d(x, 3, 2, 1), (x,))
    assert torch.autograd.gradcheck(lambda x: fastconv.avg_pool2d(x, 3, 2, 1), (x,))
    assert torch.autograd.gradcheck(lambda x: fastconv.adaptive_avg_pool2d(x, (4, 3)), (x,))
    assert torch.autograd.gradcheck(lambda x: fastconv.local_response_norm(x, 3, 1e-2, 0.75, 1.0), (x,))
    s = torch.rand(2, 3, **kw)
    assert torch.autograd.gradcheck(lambda x, s: fastconv.channel_scale(x, s), (x, s))


def test_opcheck_cuda():
    x, w = torch.randn(2, 4, 7, 6, device=DEV), torch.randn(6, 4, 3, 3, device=DEV)
    torch.library.opcheck(OPS.conv2d, (x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], 1))
    gy = torch.randn(2, 6, 7, 6, device=DEV)
    torch.library.opcheck(OPS.conv2d_backward, (gy, x, w, [1, 1], [1, 1, 1, 1], [1, 1], 1, [True, True, True]))
    torch.library.opcheck(OPS.max_pool2d_with_argmax, (x, [3, 3], [2, 2], [1, 1], [1, 1], False))
    torch.library.opcheck(OPS.avg_pool2d, (x, [3, 3], [2, 2], [1, 1], False, True, None))
    torch.library.opcheck(OPS.adaptive_avg_pool2d, (x, [1, 1]))
    torch.library.opcheck(OPS.local_response_norm, (x, 5, 1e-4, 0.75, 1.0))
    torch.library.opcheck(OPS.channel_scale, (x, torch.rand(2, 4, device=DEV), None, False))


def test_matches_torch_cudnn():
    x, w = torch.randn(4, 16, 20, 20, device=DEV), torch.randn(32, 16, 3, 3, device=DEV)
    close(fastconv.conv2d(x, w, None, 1, 1), F.conv2d(x, w, None, 1, 1).cpu(), 1e-3)
