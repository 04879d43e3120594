"""Pooling under the conditions real training puts it in: several Python threads at once,
repeated calls (determinism, memory), pickling and copying of modules, autocast."""
import copy
import os
import pickle
import threading

import pytest
import torch
import torch.nn.functional as F

import fastconv
from reference import to_layout

CALLS = [
    lambda x: fastconv.max_pool2d(x, 3, 2, 1),
    lambda x: fastconv.max_pool2d(x, 2, 2, return_indices=True)[1].float(),
    lambda x: fastconv.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
    lambda x: fastconv.adaptive_avg_pool2d(x, (5, 3)),
    fastconv.global_avg_pool2d,
    lambda x: fastconv.local_response_norm(x, 5, 1e-2, 0.75, 2.0),
]


def _fwd_bwd(call, x):
    x = x.detach().clone().requires_grad_(True)
    y = call(x)
    if y.requires_grad:
        y.backward(torch.ones_like(y) * 0.5)
        return y.detach(), x.grad
    return y, None


def _inputs():
    gen = torch.Generator().manual_seed(3)
    return [to_layout(torch.randn(3, 20, 33, 29, generator=gen), layout)
            for layout in ("nchw", "channels_last")]


def test_threads_give_the_serial_results():
    inputs = _inputs()
    serial = [[_fwd_bwd(call, x) for call in CALLS] for x in inputs]
    errors = []

    def worker(k):
        try:
            for _ in range(5):
                for i, x in enumerate(inputs):
                    for j, call in enumerate(CALLS):
                        y, g = _fwd_bwd(call, x)
                        y_ref, g_ref = serial[i][j]
                        assert torch.equal(y, y_ref), (k, i, j)
                        assert (g is None and g_ref is None) or torch.equal(g, g_ref), (k, i, j)
        except BaseException as e:  # surfaced in the main thread below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_bitwise_deterministic_across_runs_and_thread_counts():
    # Every kernel gives each output element (and each input gradient) a single writer, so
    # results do not depend on how the work is split.
    inputs = _inputs()
    previous = torch.get_num_threads()
    try:
        results = {}
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            got = [_fwd_bwd(call, x) for x in inputs for call in CALLS]
            if threads in results:
                pairs = zip(got, results[threads])
            else:
                results[threads] = got
                pairs = zip(got, results[min(results)])
            for (y, g), (y_ref, g_ref) in pairs:
                assert torch.equal(y, y_ref)
                assert (g is None and g_ref is None) or torch.equal(g, g_ref)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("module", [
    fastconv.nn.MaxPool2d(3, 2, 1, ceil_mode=True),
    fastconv.nn.AvgPool2d(3, 2, 1, count_include_pad=False, divisor_override=5),
    fastconv.nn.AdaptiveAvgPool2d((4, None)),
    fastconv.nn.GlobalAvgPool2d(flatten=True),
    fastconv.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0),
], ids=lambda m: type(m).__name__)
def test_modules_pickle_and_copy(module):
    x = torch.randn(2, 3, 9, 8)
    for clone in (pickle.loads(pickle.dumps(module)), copy.deepcopy(module)):
        assert type(clone) is type(module) and repr(clone) == repr(module)
        assert torch.equal(clone(x), module(x))
    seq = torch.nn.Sequential(module)
    loaded = torch.nn.Sequential(copy.deepcopy(module))
    loaded.load_state_dict(seq.state_dict(), strict=True)


def test_autocast_behaves_like_torch():
    # Pooling is not on autocast's lists: inside a bfloat16 region torch keeps the input's
    # dtype, and so do we.
    x = torch.randn(2, 4, 12, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for ours, theirs in [(fastconv.max_pool2d(x, 2), F.max_pool2d(x, 2)),
                             (fastconv.avg_pool2d(x, 3, 1, 1), F.avg_pool2d(x, 3, 1, 1)),
                             (fastconv.global_avg_pool2d(x), F.adaptive_avg_pool2d(x, 1))]:
            assert ours.dtype == theirs.dtype
            torch.testing.assert_close(ours, theirs)


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_no_memory_growth_over_repeated_training_steps():
    x = torch.randn(4, 16, 32, 32).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    y = torch.randn(4, 16, 32, 32, requires_grad=True)

    def step():
        for t in (x, y):
            out = fastconv.global_avg_pool2d(fastconv.avg_pool2d(fastconv.max_pool2d(t, 3, 2, 1), 2))
            out.sum().backward()
            t.grad = None

    for _ in range(50):
        step()
    before = _rss_bytes()
    for _ in range(int(os.environ.get("FASTCONV_LEAK_ITERS", "300"))):
        step()
    grown = _rss_bytes() - before
    assert grown < 8 << 20, f"resident memory grew by {grown / 2**20:.1f} MiB"


def test_forward_mode_ad_is_an_explicit_error():
    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level():
        dual = fwAD.make_dual(torch.randn(1, 2, 6, 6), torch.randn(1, 2, 6, 6))
        for call in (lambda t: fastconv.max_pool2d(t, 2), lambda t: fastconv.avg_pool2d(t, 2),
                     fastconv.global_avg_pool2d, lambda t: fastconv.local_response_norm(t, 3)):
            with pytest.raises(NotImplementedError, match="forward-mode AD"):
                call(dual)
        plain = torch.randn(1, 2, 6, 6)  # no tangent: works as usual inside a dual level
        assert torch.equal(fastconv.max_pool2d(plain, 2), F.max_pool2d(plain, 2))
