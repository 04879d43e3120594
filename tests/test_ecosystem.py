"""fastconv where torch.nn works: torch.compile(fullgraph=True) and torch.export of every model,
state_dict save / load, copy.deepcopy and pickling of every module and model, and
torch.autocast("cpu", dtype=torch.bfloat16) giving what torch gives with the same layers.

CI runs a subset of the models; FASTCONV_LONG=1 (``make hardening``) runs all of them."""
import copy
import io
import os
import pickle

import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv.bench.twins import TorchSqueezeExcitation
from reference import squeeze_excitation_ref
from test_models import ALL, _build, _input

LONG = os.environ.get("FASTCONV_LONG") == "1"
# A subset of the families, for compile time on 2 cores (GoogLeNet and DenseNet-121 take 45 and
# 75 s to compile here); the long mode takes all 25 models.
CI_MODELS = ["lenet5", "alexnet", "vgg11_lrn", "resnet18", "se_resnet50"]
MODELS = ALL if LONG else CI_MODELS


def _logits(out):
    return out if isinstance(out, torch.Tensor) else out[0]


def _rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _model(name):
    ours, _ = _build(name)
    return ours.eval()


# ----------------------------------------------------------------------------- compile / export

@pytest.mark.parametrize("name", MODELS)
def test_model_compiles_fullgraph_and_exports(name):
    torch._dynamo.reset()
    m = _model(name)
    x = _input(name, batch=1)
    with torch.no_grad():
        y = _logits(m(x))
        y_compiled = _logits(torch.compile(m, fullgraph=True)(x))
        torch.testing.assert_close(y_compiled, y, rtol=1e-4, atol=1e-4)
        ep = torch.export.export(m, (x,))
        torch.testing.assert_close(_logits(ep.module()(x)), y, rtol=1e-4, atol=1e-4)
    # The exported graph calls our ops, not a decomposition into torch's.
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert any(t.startswith("fastconv.") for t in targets), sorted(targets)[:20]


def test_training_step_compiles_fullgraph():
    torch._dynamo.reset()
    m, ref = _build("resnet18")
    m.train(), ref.train()
    x = _input("resnet18")
    step = torch.compile(lambda model, t: model(t).square().mean(), fullgraph=True)
    step(m, x).backward()
    ref(x).square().mean().backward()
    ref_grads = dict(ref.named_parameters())
    for pname, p in m.named_parameters():
        assert _rel_err(p.grad, ref_grads[pname].grad) < 1e-3, pname


# ----------------------------------------------------------------------------- state_dict / copies

def _modules():
    """(module, input channels)."""
    return [
        (fastconv.nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2, bias=True), 4),
        (fastconv.nn.Conv2d(4, 4, 5, padding="same", padding_mode="reflect", bias=False), 4),
        (fastconv.nn.ConvBNReLU(4, 8, 3, padding=1), 4),
        (fastconv.nn.Bottleneck(8, 2), 8),
        (fastconv.nn.SqueezeExcitation(8, 4), 8),
        (fastconv.nn.LocalResponseNorm(3, 1e-3, 0.75, 2.0), 5),
        (fastconv.nn.MaxPool2d(3, 2, 1, ceil_mode=True), 3),
        (fastconv.nn.AvgPool2d(3, 2, 1, count_include_pad=False), 3),
        (fastconv.nn.AdaptiveAvgPool2d((2, 3)), 3),
        (fastconv.nn.GlobalAvgPool2d(), 3),
    ]


def _check_copies(m, x):
    m.eval()
    with torch.no_grad():
        y = _logits(m(x))
        buf = io.BytesIO()
        torch.save(m.state_dict(), buf)
        buf.seek(0)
        fresh = copy.deepcopy(m)
        for p in fresh.parameters():
            p.data.normal_()
        fresh.load_state_dict(torch.load(buf, weights_only=True), strict=True)
        for clone in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m), fresh):
            assert type(clone) is type(m) and repr(clone) == repr(m)
            assert clone.state_dict().keys() == m.state_dict().keys()
            assert torch.equal(_logits(clone(x)), y)
        # A whole-module torch.save / torch.load round trip, as users checkpoint.
        buf = io.BytesIO()
        torch.save(m, buf)
        buf.seek(0)
        assert torch.equal(_logits(torch.load(buf, weights_only=False)(x)), y)


@pytest.mark.parametrize("module, channels", _modules(), ids=lambda m: type(m).__name__ if isinstance(m, torch.nn.Module) else "")
def test_module_state_dict_pickle_deepcopy(module, channels):
    _check_copies(module, torch.randn(2, channels, 9, 9, generator=torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("name", ALL if LONG else CI_MODELS + ["googlenet", "densenet121"])
def test_model_state_dict_pickle_deepcopy(name):
    _check_copies(_model(name), _input(name, batch=1))


# ----------------------------------------------------------------------------- autocast

def _autocast(fn, *args):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return fn(*args)


def test_autocast_ops_follow_torch_dtypes():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 10, 10, generator=g)
    w = torch.randn(6, 8, 3, 3, generator=g) * 0.1
    b = torch.randn(6, generator=g)
    pairs = [
        (lambda: fastconv.conv2d(x, w, b, padding=1), lambda: F.conv2d(x, w, b, padding=1)),
        (lambda: fastconv.conv2d(x.bfloat16(), w, b, padding=1), lambda: F.conv2d(x.bfloat16(), w, b, padding=1)),
        (lambda: fastconv.local_response_norm(x, 5, 1e-2, 0.75, 2.0),
         lambda: F.local_response_norm(x, 5, 1e-2, 0.75, 2.0)),
        (lambda: fastconv.local_response_norm(x.bfloat16(), 5, 1e-2, 0.75, 2.0),
         lambda: F.local_response_norm(x.bfloat16(), 5, 1e-2, 0.75, 2.0)),
        (lambda: fastconv.max_pool2d(x.bfloat16(), 3, 2, 1), lambda: F.max_pool2d(x.bfloat16(), 3, 2, 1)),
        (lambda: fastconv.avg_pool2d(x, 3, 2, 1), lambda: F.avg_pool2d(x, 3, 2, 1)),
        (lambda: fastconv.channel_scale(x, torch.rand(2, 8).bfloat16()),
         lambda: x * torch.rand(2, 8).bfloat16()[:, :, None, None]),
    ]
    for i, (ours, theirs) in enumerate(pairs):
        a, e = _autocast(ours), _autocast(theirs)
        assert a.dtype == e.dtype, (i, a.dtype, e.dtype)
        if i != len(pairs) - 1:  # the last pair draws different random scales
            assert _rel_err(a, e) < 1e-2, i


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_autocast_squeeze_excitation_like_its_torch_layers(dtype):
    ours = fastconv.nn.SqueezeExcitation(32, 4)
    ref = TorchSqueezeExcitation(32, 4)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 32, 6, 6, dtype=dtype)
    a, e = _autocast(ours, x), _autocast(ref, x)
    assert a.dtype == e.dtype == dtype
    assert _rel_err(a, e) < 2e-2
    # The SE-ResNet tail with a residual, against the same torch layers.
    w1, w2 = torch.randn(8, 32) / 6, torch.randn(32, 8) / 3
    r = torch.randn(2, 32, 6, 6, dtype=dtype)
    a = _autocast(fastconv.squeeze_excitation, x, w1, None, w2, None, r)
    e = _autocast(squeeze_excitation_ref, x, w1, None, w2, None, r)
    assert a.dtype == e.dtype == dtype
    assert _rel_err(a, e) < 2e-2


@pytest.mark.parametrize("name", ["lenet5", "alexnet", "resnet18", "googlenet", "se_resnet50"] if not LONG else ALL)
def test_autocast_models_like_their_twins(name):
    ours, ref = _build(name)
    ours.eval(), ref.eval()
    x = _input(name)
    with torch.no_grad():
        a, e = _logits(_autocast(ours, x)), _logits(_autocast(ref, x))
    assert a.dtype == e.dtype, (a.dtype, e.dtype)
    # bfloat16 keeps 8 bits: a few per cent over a deep network.
    assert _rel_err(a, e) < 5e-2
    # A training step under autocast: gradients reach the float32 parameters in float32, and
    # are as far from the float32 step's as torch's own bfloat16 gradients are.
    ours.train(), ref.train()
    exact = copy.deepcopy(ref)
    for model, region in ((ours, True), (ref, True), (exact, False)):
        out = _autocast(model, x) if region else model(x)
        _logits(out).float().square().mean().backward()
    params = [dict(m.named_parameters()) for m in (ours, ref, exact)]
    for pname, p in params[0].items():
        assert (p.grad is None) == (params[2][pname].grad is None), pname
        if p.grad is not None:
            assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), pname
    big = max((kv for kv in params[2].items() if kv[1].grad is not None), key=lambda kv: kv[1].numel())[0]
    ours_err = _rel_err(params[0][big].grad, params[2][big].grad)
    torch_err = _rel_err(params[1][big].grad, params[2][big].grad)
    assert ours_err < 2 * torch_err + 0.02, (big, ours_err, torch_err)
