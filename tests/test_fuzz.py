"""Differential fuzzing: one hypothesis test per op that draws the shape, the parameters, the
dtype, the memory layout, the SIMD path, the conv algorithm and the thread count, runs the
forward and every gradient through fastconv and through torch, and compares.

The example count per test is FASTCONV_FUZZ_EXAMPLES (conftest's profile; the default keeps CI
short). The long mode is ``make fuzz``: 10,000 cases per op with fresh random draws. Every
failure found is pinned below as an ``@example`` so it is replayed on every run."""
import contextlib

import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st

import fastconv
from conftest import CAPABILITIES, CONV_ALGOS, forced
from reference import squeeze_excitation_ref, to_layout
from test_pool import window_cases

LAYOUTS = ["nchw", "channels_last", "strided"]
DTYPES = [torch.float32, torch.float64]
SPECIALS = [float("nan"), float("inf"), -float("inf")]


@contextlib.contextmanager
def machine(env):
    """The SIMD path, conv algorithm, thread count and conv row-band budget (None: the
    library's default; or small enough to cut every layer into many bands) a case drew,
    restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(env["threads"])
    band = fastconv._C.set_conv_band_bytes(env["band"]) if env.get("band") else None
    try:
        with forced(fastconv.cpu_capability, fastconv.set_cpu_capability, env["cap"]), \
                forced(fastconv.conv_algo, fastconv.set_conv_algo, env["algo"]):
            yield
    finally:
        torch.set_num_threads(threads)
        if band is not None:
            fastconv._C.set_conv_band_bytes(band)


envs = st.fixed_dictionaries({"cap": st.sampled_from(CAPABILITIES), "algo": st.sampled_from(CONV_ALGOS),
                              "threads": st.sampled_from([1, 2]), "band": st.sampled_from([None, 1, 3000])})


def _tol(dtype):
    # float32: sums of up to a few hundred products in another order; F(4x4, 3x3) (the
    # 'winograd4' algorithm a case may force) amplifies rounding further.
    return dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=3e-3, atol=3e-3)


def _randn(shape, dtype, seed, specials=0.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    if specials and x.numel():
        pick = torch.rand(shape, generator=gen) < specials
        values = torch.tensor(SPECIALS, dtype=dtype)[torch.randint(0, 3, shape, generator=gen)]
        x = torch.where(pick, values, x)
    return x


def _compare(fn_ours, fn_ref, tensors, tol, seed, ref64=False):
    """Forward and the gradient of every tensor that requires one, ours against torch, with
    one random upstream gradient; the caller's tensors must come back unmodified. ``ref64``:
    torch computes in float64 and its results are rounded to the tensors' dtype."""
    before = [t.clone() if t is not None else None for t in tensors]

    def run(fn, dtype=None):
        leaves = [t.detach().clone() if t is not None else None for t in tensors]
        # clone() keeps the layout of channels_last tensors, not of strided views; re-stride.
        leaves = [_like(l, t) for l, t in zip(leaves, tensors)]
        if dtype is not None:
            leaves = [l.to(dtype) if l is not None else None for l in leaves]
        leaves = [l.requires_grad_(l.is_floating_point()) if l is not None else None for l in leaves]
        y = fn(*leaves)
        grad_inputs = [l for l in leaves if l is not None and l.requires_grad]
        g = _randn(y.shape, tensors[0].dtype, seed + 1).to(y.dtype)  # the same values for both sides
        grads = torch.autograd.grad(y, grad_inputs, g, allow_unused=True) if y.requires_grad else []
        return y.detach(), grads

    y, grads = run(fn_ours)
    if ref64:
        y_ref, grads_ref = run(fn_ref, torch.float64)
        y_ref = y_ref.to(y.dtype)
        grads_ref = [g.to(y.dtype) if g is not None else None for g in grads_ref]
    else:
        y_ref, grads_ref = run(fn_ref)
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    torch.testing.assert_close(y, y_ref, equal_nan=True, **tol)
    for i, (a, b) in enumerate(zip(grads, grads_ref)):
        if b is None:
            assert a is None or not a.any(), i
        else:
            torch.testing.assert_close(a, b, equal_nan=True, **tol, msg=lambda m: f"gradient {i}: {m}")
    for t, t0 in zip(tensors, before):
        assert t is None or torch.equal(t.nan_to_num(), t0.nan_to_num()), "an input was modified"
    return y


def _like(leaf, original):
    if leaf is None or original.is_contiguous() or original.is_contiguous(memory_format=torch.channels_last):
        return leaf
    return to_layout(leaf.detach(), "strided").requires_grad_(leaf.requires_grad)


# ----------------------------------------------------------------------------- conv2d

@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 1, 2, 3, 4]))
    depthwise = draw(st.booleans()) and groups > 1
    cin = groups * (1 if depthwise else draw(st.integers(1, 6)))
    cout = groups * draw(st.integers(1, 2 if depthwise else 7))
    kh, kw = draw(st.sampled_from([(1, 1), (3, 3), (3, 3), (5, 5), (7, 7), (11, 11)]) | st.tuples(
        st.integers(1, 5), st.integers(1, 5)))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.tuples(st.integers(0, 4), st.integers(0, 4)) | st.sampled_from(["same", "valid"]))
    sh, sw = (1, 1) if padding == "same" else (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    pads = (0, 0) if padding == "same" else (0, 0) if padding == "valid" else padding
    # The smallest input the window fits ('same' fits any), then up to a dozen more.
    lo_h = 1 if padding == "same" else max(1, (kh - 1) * dh + 1 - 2 * pads[0])
    lo_w = 1 if padding == "same" else max(1, (kw - 1) * dw + 1 - 2 * pads[1])
    h, w = draw(st.integers(lo_h, lo_h + 12)), draw(st.integers(lo_w, lo_w + 12))
    return dict(n=draw(st.sampled_from([0, 1, 2, 3])), cin=cin, cout=cout, h=h, w=w, k=(kh, kw),
                stride=(sh, sw), padding=padding, dilation=(dh, dw), groups=groups, bias=draw(st.booleans()),
                dtype=draw(st.sampled_from(DTYPES)), layout=draw(st.sampled_from(LAYOUTS)),
                unbatched=draw(st.booleans()), specials=draw(st.sampled_from([0.0, 0.0, 0.0, 0.02])),
                seed=draw(st.integers(0, 2**16)))


def _conv_tensors(c):
    shape = (c["n"], c["cin"], c["h"], c["w"])
    if c["unbatched"] and c["n"] == 1:
        shape = shape[1:]
    x = to_layout(_randn(shape, c["dtype"], c["seed"], c["specials"]), c["layout"])
    w = _randn((c["cout"], c["cin"] // c["groups"], *c["k"]), c["dtype"], c["seed"] + 2)
    w = to_layout(w / w[0].numel() ** 0.5, c["layout"])
    b = _randn((c["cout"],), c["dtype"], c["seed"] + 3) if c["bias"] else None
    return x, w, b


def _conv_args(c):
    return dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])


# torch's reference convolutions run in float64: torch 2.13's float32 CPU backward of a strided
# 1x1 convolution on channels_last tensors corrupts the heap (e.g. x (2, 5, 8, 6) channels_last,
# w (6, 5, 1, 1), stride 2: glibc aborts with "double free or corruption"); it crashed this
# suite's long mode twice before it was traced. float64 takes torch's own kernels, not oneDNN.
@given(case=conv_cases(), env=envs)
@example(  # Inf / NaN through Winograd used to turn whole tiles NaN (found while writing this suite)
    case=dict(n=1, cin=16, cout=16, h=12, w=12, k=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1,
              bias=True, dtype=torch.float32, layout="nchw", unbatched=False, specials=0.02, seed=3),
    env=dict(cap=CAPABILITIES[0], algo="winograd", threads=2))
def test_fuzz_conv2d(case, env):
    """Forward, input, weight and bias gradients."""
    x, w, b = _conv_tensors(case)
    with machine(env):
        _compare(lambda x, w, b: fastconv.conv2d(x, w, b, **_conv_args(case)),
                 lambda x, w, b: F.conv2d(x, w, b, **_conv_args(case)), [x, w, b], _tol(case["dtype"]),
                 case["seed"], ref64=True)


@given(case=conv_cases(), env=envs, bn=st.booleans(), residual=st.booleans(), relu=st.booleans())
def test_fuzz_conv2d_fused(case, env, bn, residual, relu):
    """The inference epilogue: (conv + bias) * scale + shift + residual, ReLU."""
    case = dict(case, unbatched=False)
    x, w, b = _conv_tensors(case)
    ref = F.conv2d(x.double(), w.double(), b.double() if b is not None else None, **_conv_args(case)).to(x.dtype)
    oc = case["cout"]
    scale = _randn((oc,), case["dtype"], case["seed"] + 4).abs() + 0.5 if bn else None
    shift = _randn((oc,), case["dtype"], case["seed"] + 5) if bn else None
    r = to_layout(_randn(ref.shape, case["dtype"], case["seed"] + 6), case["layout"]) if residual else None
    if bn:
        ref = ref * scale[:, None, None] + shift[:, None, None]
    if residual:
        ref = ref + r
    if relu:
        ref = torch.relu(ref)
    with machine(env), torch.no_grad():
        y = fastconv.conv2d_fused(x, w, b, scale, shift, r, relu, **_conv_args(case))
    torch.testing.assert_close(y, ref, equal_nan=True, **_tol(case["dtype"]))


# ----------------------------------------------------------------------------- pooling

@st.composite
def pool_cases(draw, dilation=True):
    """test_pool's window cases (they include parameter sets torch rejects: we must reject them
    too) plus what the fuzz draws on top: dtype, layout, NaN / Inf, seed."""
    case = draw(window_cases(dilation=dilation))
    shape = case.pop("shape")
    if case.pop("unbatched"):
        shape = shape[1:]
    return dict(case, shape=shape, dtype=draw(st.sampled_from(DTYPES)), layout=draw(st.sampled_from(LAYOUTS)),
                specials=draw(st.sampled_from([0.0, 0.0, 0.05])), seed=draw(st.integers(0, 2**16)))


def _rejected_alike(ours, theirs):
    """Runs torch first: if torch rejects the arguments, ours must reject them with a clear
    Python exception (not a crash); returns True when the case was a rejection."""
    try:
        theirs()
    except (RuntimeError, ValueError, IndexError):
        try:
            ours()
        except (ValueError, TypeError, RuntimeError) as e:
            assert str(e), "an exception without a message"
            return True
        raise AssertionError("torch rejects these arguments and fastconv accepted them")
    return False


@given(case=pool_cases(), env=envs, with_indices=st.booleans())
@example(  # a window wholly in the padding (found by this test): see below
    case=dict(shape=(1, 2, 1, 1), kernel_size=(1, 2), stride=(1, 1), padding=(0, 1), dilation=(1, 2),
              ceil_mode=False, dtype=torch.float32, layout="nchw", specials=0.0, seed=0),
    env=dict(cap=CAPABILITIES[-1], algo="auto", threads=1), with_indices=False).via("discovered failure")
def test_fuzz_max_pool2d(case, env, with_indices):
    x = to_layout(_randn(case["shape"], case["dtype"], case["seed"], case["specials"]), case["layout"])
    args = (case["kernel_size"], case["stride"], case["padding"], case["dilation"], case["ceil_mode"])
    with machine(env):
        if _rejected_alike(lambda: fastconv.max_pool2d(x, *args), lambda: F.max_pool2d(x, *args)):
            return
        y_ref, i_ref = F.max_pool2d(x, *args, return_indices=True)
        if with_indices:
            y, i = fastconv.max_pool2d(x, *args, return_indices=True)
            torch.testing.assert_close(y, y_ref, rtol=0, atol=0, equal_nan=True)
            assert torch.equal(i, i_ref)
        plane = x.shape[-2] * x.shape[-1]
        if not (i_ref >= plane).any():
            _compare(lambda t: fastconv.max_pool2d(t, *args), lambda t: F.max_pool2d(t, *args), [x],
                     dict(rtol=0, atol=0), case["seed"])
            return
        # A window wholly in the padding (dilation > 1 lets it miss the input): its output is
        # -inf and torch's index is one past its last position, which torch's backward follows
        # out of the plane (into the next channel, or past the tensor). Same output and index
        # here; the gradient of such a window goes nowhere.
        ours = x.detach().clone().requires_grad_(True)
        y = fastconv.max_pool2d(ours, *args)
        torch.testing.assert_close(y.detach(), y_ref, rtol=0, atol=0, equal_nan=True)
        g = _randn(y.shape, y.dtype, case["seed"] + 1)
        y.backward(g)
        idx, valid = i_ref.flatten(-2), (i_ref < plane).flatten(-2)
        expected = torch.zeros(*x.shape[:-2], plane, dtype=x.dtype).scatter_add_(
            -1, idx.clamp(max=plane - 1), torch.where(valid, g.flatten(-2), torch.zeros((), dtype=x.dtype)))
        torch.testing.assert_close(ours.grad, expected.view(x.shape), rtol=0, atol=0)


@given(case=pool_cases(dilation=False), env=envs, count_include_pad=st.booleans(),
       divisor_override=st.sampled_from([None, None, 1, 3, -2]))
def test_fuzz_avg_pool2d(case, env, count_include_pad, divisor_override):
    x = to_layout(_randn(case["shape"], case["dtype"], case["seed"], case["specials"]), case["layout"])
    args = (case["kernel_size"], case["stride"], case["padding"], case["ceil_mode"], count_include_pad,
            divisor_override)
    with machine(env):
        if _rejected_alike(lambda: fastconv.avg_pool2d(x, *args), lambda: F.avg_pool2d(x, *args)):
            return
        _compare(lambda t: fastconv.avg_pool2d(t, *args), lambda t: F.avg_pool2d(t, *args), [x],
                 _tol(case["dtype"]), case["seed"])


@given(case=pool_cases(dilation=False), env=envs,
       out=st.tuples(st.integers(1, 9) | st.none(), st.integers(1, 9) | st.none()), square=st.booleans())
def test_fuzz_adaptive_avg_pool2d(case, env, out, square):
    x = to_layout(_randn(case["shape"], case["dtype"], case["seed"], case["specials"]), case["layout"])
    size = (out[0] or 1) if square else out
    with machine(env):
        _compare(lambda t: fastconv.adaptive_avg_pool2d(t, size), lambda t: F.adaptive_avg_pool2d(t, size), [x],
                 _tol(case["dtype"]), case["seed"])


@given(case=pool_cases(dilation=False), env=envs, keepdim=st.booleans())
def test_fuzz_global_avg_pool2d(case, env, keepdim):
    x = to_layout(_randn(case["shape"], case["dtype"], case["seed"], case["specials"]), case["layout"])

    def ref(t):
        y = F.adaptive_avg_pool2d(t, 1)
        return y if keepdim else y.flatten(-3)

    with machine(env):
        _compare(lambda t: fastconv.global_avg_pool2d(t, keepdim), ref, [x], _tol(case["dtype"]), case["seed"])


# ----------------------------------------------------------------------------- LRN

@given(shape=st.lists(st.integers(0, 9), min_size=3, max_size=5).map(tuple) | st.tuples(
           st.integers(1, 3), st.integers(1, 40), st.integers(1, 13), st.integers(1, 13)),
       size=st.integers(1, 12), alpha=st.sampled_from([1e-4, 1e-2, 0.5, 3.0]),
       beta=st.sampled_from([0.75, 0.5, 1.0, 0.3, 2.0, 0.0]), k=st.sampled_from([1.0, 2.0, 0.5]),
       dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS), specials=st.sampled_from([0.0, 0.0, 0.05]),
       seed=st.integers(0, 2**16), env=envs)
@example(  # an Inf in the window with beta > 1: torch's gradient is NaN around it (found here)
    shape=(1, 2, 3), size=2, alpha=1e-4, beta=2.0, k=1.0, dtype=torch.float32, layout="nchw", specials=0.05,
    seed=0, env=dict(cap=CAPABILITIES[-1], algo="auto", threads=1)).via("discovered failure")
@example(  # beta = 0 next to an Inf: torch's pow backward is zero, the neighbours' gradient stays finite
    shape=(1, 2, 3), size=2, alpha=1e-4, beta=0.0, k=1.0, dtype=torch.float64, layout="nchw", specials=0.05,
    seed=0, env=dict(cap=CAPABILITIES[0], algo="auto", threads=1))
def test_fuzz_local_response_norm(shape, size, alpha, beta, k, dtype, layout, specials, seed, env):
    x = to_layout(_randn(shape, dtype, seed, specials), layout if len(shape) == 4 else "nchw")
    with machine(env):
        if _rejected_alike(lambda: fastconv.local_response_norm(x, size, alpha, beta, k),
                           lambda: F.local_response_norm(x, size, alpha, beta, k)):
            return
        _compare(lambda t: fastconv.local_response_norm(t, size, alpha, beta, k),
                 lambda t: F.local_response_norm(t, size, alpha, beta, k), [x], _tol(dtype), seed)


# ----------------------------------------------------------------------------- SE

@given(n=st.sampled_from([0, 1, 2, 3]), c=st.integers(1, 80), h=st.integers(1, 11), w=st.integers(1, 11),
       residual=st.booleans(), relu=st.booleans(), scale4d=st.booleans(), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), specials=st.sampled_from([0.0, 0.0, 0.05]), seed=st.integers(0, 2**16),
       env=envs)
def test_fuzz_channel_scale(n, c, h, w, residual, relu, scale4d, dtype, layout, specials, seed, env):
    x = to_layout(_randn((n, c, h, w), dtype, seed, specials), layout)
    s = _randn((n, c, 1, 1) if scale4d else (n, c), dtype, seed + 7, specials)
    r = to_layout(_randn((n, c, h, w), dtype, seed + 8), layout) if residual else None

    def ref(x, s, r):
        y = x * s.reshape(n, c, 1, 1) + (r if r is not None else 0)
        return torch.relu(y) if relu else y

    with machine(env):
        _compare(lambda x, s, r: fastconv.channel_scale(x, s, r, relu), ref, [x, s, r], _tol(dtype), seed)


@given(n=st.sampled_from([0, 1, 2, 3]), c=st.integers(1, 72), r=st.sampled_from([1, 2, 4, 8, 16]),
       h=st.integers(1, 9), w=st.integers(1, 9), bias=st.booleans(), residual=st.booleans(),
       conv_weights=st.booleans(), dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS),
       specials=st.sampled_from([0.0, 0.0, 0.0, 0.02]), seed=st.integers(0, 2**16), env=envs)
@example(  # a NaN in the input: the hidden ReLU used to turn the NaN mean into 0 (found here)
    n=1, c=1, r=1, h=3, w=6, bias=False, residual=False, conv_weights=False, dtype=torch.float64, layout="nchw",
    specials=0.02, seed=0, env=dict(cap=CAPABILITIES[0], algo="auto", threads=1)).via("discovered failure")
def test_fuzz_squeeze_excitation(n, c, r, h, w, bias, residual, conv_weights, dtype, layout, specials, seed, env):
    cr = max(1, c // r)
    x = to_layout(_randn((n, c, h, w), dtype, seed, specials), layout)
    w1 = _randn((cr, c), dtype, seed + 1) / c ** 0.5
    w2 = _randn((c, cr), dtype, seed + 2) / cr ** 0.5
    b1 = _randn((cr,), dtype, seed + 3) * 0.1 if bias else None
    b2 = _randn((c,), dtype, seed + 4) * 0.1 if bias else None
    idt = to_layout(_randn((n, c, h, w), dtype, seed + 5), layout) if residual else None
    shape = (lambda t: t[:, :, None, None]) if conv_weights else (lambda t: t)

    def ours(x, w1, b1, w2, b2, idt):
        return fastconv.squeeze_excitation(x, shape(w1), b1, shape(w2), b2, idt)

    # float32 parameter gradients sum N*H*W products in another order.
    tol = _tol(dtype) if dtype == torch.float64 else dict(rtol=1e-3, atol=1e-4 * (1 + n * h * w) ** 0.5)
    with machine(env):
        _compare(ours, squeeze_excitation_ref, [x, w1, b1, w2, b2, idt], tol, seed)


# ----------------------------------------------------------------------------- BatchNorm + ReLU

@given(n=st.sampled_from([0, 1, 2, 3]), c=st.integers(1, 72), h=st.integers(1, 11), w=st.integers(1, 11),
       affine=st.booleans(), residual=st.booleans(), relu=st.booleans(), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), specials=st.sampled_from([0.0, 0.0, 0.0, 0.02]), seed=st.integers(0, 2**16),
       env=envs)
def test_fuzz_batch_norm_act(n, c, h, w, affine, residual, relu, dtype, layout, specials, seed, env):
    x = to_layout(_randn((n, c, h, w), dtype, seed, specials) * 2 + 1, layout)
    wt = _randn((c,), dtype, seed + 1).abs() + 0.5 if affine else None
    bs = _randn((c,), dtype, seed + 2) if affine else None
    idt = to_layout(_randn((n, c, h, w), dtype, seed + 3), layout) if residual else None

    def ours(x, wt, bs, idt):
        return fastconv.ops.batch_norm_act(x, None, None, wt, bs, idt, relu)

    def ref(x, wt, bs, idt):
        y = F.batch_norm(x, None, None, wt, bs, True, 0.1, 1e-5) + (idt if idt is not None else 0)
        return torch.relu(y) if relu else y

    # float32 statistics and parameter gradients sum N*H*W values in another order, and the
    # input gradient is a difference of such sums scaled by 1 / std.
    tol = _tol(dtype) if dtype == torch.float64 else dict(rtol=2e-3, atol=2e-4 * (1 + n * h * w) ** 0.5)
    with machine(env):
        if _rejected_alike(lambda: ours(x, wt, bs, idt), lambda: ref(x, wt, bs, idt)):
            return
        _compare(ours, ref, [x, wt, bs, idt], tol, seed)
