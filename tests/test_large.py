"""64-bit indexing: ops on an input of more than 2^31 elements (8.6 GB of float32) give torch's
answer. Slow and memory-hungry (about 12 GB resident): runs in the long mode only
(FASTCONV_LONG=1, `make hardening`). It found that global average pooling lost digits on huge
planes; the CI-sized regression test for that is below."""
import pytest
import torch

import fastconv

# 2 x 32768 x 32769 = 2^31 + 65536 elements: the second plane starts below 2^31 and ends above.
SHAPE = (1, 2, 32768, 32769)
ROWS = 16  # output rows checked at each end


@pytest.mark.slow
def test_ops_past_two_to_the_31_elements():
    assert torch.Size(SHAPE).numel() > 2**31
    g = torch.Generator().manual_seed(0)
    x = torch.empty(SHAPE)
    # Drawing 2^31 normals takes a while; a random 64-row block tiled down the planes, shifted
    # per tile, gives every window distinct values (a misplaced read shows).
    block = torch.randn(2, 64, SHAPE[3], generator=g)
    for i in range(0, SHAPE[2], 64):
        x[0, :, i:i + 64] = block + (i // 64) * 1e-3
    w = torch.randn(3, 2, 3, 3, generator=g)

    for name, op, k, s in [("max_pool2d", lambda t: fastconv.max_pool2d(t, 2, 2), 2, 2),
                           ("avg_pool2d", lambda t: fastconv.avg_pool2d(t, 3, 2), 3, 2),
                           ("conv2d", lambda t: fastconv.conv2d(t, w, stride=2), 3, 2)]:
        out = op(x)
        oh = (SHAPE[2] - k) // s + 1
        assert out.shape[2] == oh, name
        # Output rows [a, a + ROWS) read input rows [a s, (a + ROWS - 1) s + k): the first rows,
        # and the last ones, whose second-plane reads lie past element 2^31.
        for a in (0, oh - ROWS):
            ref = op(x[:, :, a * s:(a + ROWS - 1) * s + k])
            torch.testing.assert_close(out[:, :, a:a + ROWS], ref, rtol=1e-5, atol=1e-5, msg=name)
        del out

    # The global mean reads every element; the reference sums in float64, a slab at a time.
    ref = torch.zeros(2, dtype=torch.float64)
    for i in range(0, SHAPE[2], 2048):
        ref += x[0, :, i:i + 2048].double().sum((1, 2))
    ref /= SHAPE[2] * SHAPE[3]
    torch.testing.assert_close(fastconv.global_avg_pool2d(x).double().flatten(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_global_mean_of_a_large_plane_keeps_its_digits(layout):
    # The accuracy bug the 2^31 test found, at a size CI can afford (2 x 2^24 elements): one
    # running float32 sum per lane drifted ~1e-4 from the mean; blocks summed into a double do not.
    x = (torch.rand(1, 3, 4096, 4096, generator=torch.Generator().manual_seed(1)) + 0.5).contiguous(
        memory_format=layout)
    ref = x.double().mean((2, 3), keepdim=True)
    torch.testing.assert_close(fastconv.global_avg_pool2d(x).double(), ref, rtol=2e-6, atol=0)
