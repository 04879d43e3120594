"""Reference architectures against their torch.nn twins (fastconv.bench.model_twins): the same
state_dict loads strict both ways, outputs agree in eval and train, every parameter gradient and
every running statistic agrees after a training step; module names and state_dict keys equal
torchvision's (a fixture recorded from torchvision 0.29.1); weights= loading; bad input."""
import copy
import gzip
import json
import os
import pathlib

import pytest
import torch

import fastconv.models as M
from fastconv.bench.model_twins import twin

DATA = pathlib.Path(__file__).parent / "data" / "torchvision_models.json.gz"
ALL = M.list_models()
# Small inputs keep CI time modest; every architecture's adaptive head makes them valid.
SIZE = {"lenet5": 28, "alexnet": 64, **{n: 32 for n in M.list_models() if n.startswith("vgg")}}
BIG = {"resnet101", "resnet152", "densenet161", "densenet169", "densenet201", "se_resnet101", "vgg13", "vgg13_bn",
       "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "wide_resnet50_2"}


def _build(name, dtype=torch.float32, **kw):
    kw = dict(kw)
    if name != "lenet5":
        kw.setdefault("num_classes", 7)
    if name in ("alexnet", "vgg11", "vgg11_bn", "vgg11_lrn", "googlenet"):
        kw.setdefault("dropout", 0.0)
    ours = M.get_model(name, **kw)
    if name.startswith("vgg"):
        kw.pop("dropout", None)
        ref = twin(name, dropout=0.0, **kw)
    else:
        ref = twin(name, **kw)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # random BatchNorm state: eval must not be a near-identity
        for m in ours.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    ours.to(dtype)
    ref.to(dtype)
    ref.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def _input(name, batch=2, dtype=torch.float32):
    s = SIZE.get(name, 64)
    c = 1 if name == "lenet5" else 3
    return torch.randn(batch, c, s, s, generator=torch.Generator().manual_seed(1), dtype=dtype)


def _close(a, b, rtol, scale=None):
    scale = max(b.abs().max().item(), scale or 0.0) + 1e-30
    assert (a - b).abs().max().item() <= rtol * scale, ((a - b).abs().max().item(), scale)


@pytest.mark.parametrize("name", [n for n in ALL if n not in BIG] + ["alexnet_lrn"])
def test_eval_and_train_step_match_twin_float64(name):
    kw = {}
    if name == "alexnet_lrn":
        name, kw = "alexnet", {"lrn": True}
    ours, ref = _build(name, torch.float64, **kw)
    if name.startswith("vgg"):
        # VGG's classifier is torch's Linear on 100 M weights (slow in float64): the float64
        # check covers the convolutional part; test_float32_train_and_eval the whole net.
        ours, ref = ours.features, ref.features
    x = _input(name, dtype=torch.float64)
    ours.eval(), ref.eval()
    with torch.no_grad():
        _close(ours(x), ref(x), 1e-10)
    ours.train(), ref.train()
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    outs = []
    for model, xi in zip((ours, ref), xs):
        torch.manual_seed(3)
        out = model(xi)
        logits = out if isinstance(out, torch.Tensor) else out[0] + 0.3 * out[1] + 0.2 * out[2]
        outs.append(logits)
        logits.backward(torch.linspace(-1, 1, logits.numel(), dtype=logits.dtype).reshape(logits.shape))
    _close(outs[0], outs[1], 1e-10)
    _close(xs[0].grad, xs[1].grad, 1e-9)
    ref_params = dict(ref.named_parameters())
    # A conv bias before a training-mode BatchNorm has a zero gradient up to rounding: measure
    # every gradient's error against the largest gradient of the model.
    gscale = max(p.grad.abs().max().item() for p in ref.parameters())
    for pname, p in ours.named_parameters():
        _close(p.grad, ref_params[pname].grad, 1e-9, gscale * 1e-3)
    ref_buffers = dict(ref.named_buffers())
    for bname, b in ours.named_buffers():
        assert torch.equal(b, ref_buffers[bname]) or (b - ref_buffers[bname]).abs().max() < 1e-10, bname


@pytest.mark.parametrize("name", sorted(BIG))
def test_big_models_eval_match_twin(name):
    ours, ref = _build(name)
    x = _input(name, batch=1)
    ours.eval(), ref.eval()
    with torch.no_grad():
        _close(ours(x), ref(x), 1e-4)


@pytest.mark.parametrize("name", ["resnet50", "googlenet", "densenet121", "se_resnet50", "vgg11_bn", "alexnet"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_float32_train_and_eval(name, layout):
    ours, ref = _build(name)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    ours.to(memory_format=fmt)
    x = _input(name).contiguous(memory_format=fmt)
    ours.eval(), ref.eval()
    with torch.no_grad():
        y = ours(x)
        _close(y, ref(x), 1e-4)
    ours.train(), ref.train()
    grads = []
    for model in (ours, ref):
        model.zero_grad()
        out = model(x)
        (out if isinstance(out, torch.Tensor) else out[0]).square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    top = max(v.norm() for v in grads[1].values() if v is not None)
    for n, g in grads[0].items():
        r = grads[1][n]
        if r is None:  # unused (GoogLeNet's auxiliary heads with the main loss only)
            assert g is None or not g.any(), n
            continue
        # float32 through dozens of training-mode BatchNorms over 8 values a channel (2 images of
        # 2x2 at the end) amplifies rounding to ~1% in the deep layers' gradients: a loose bound
        # that still catches any wrong gradient; the float64 test above is the tight one.
        assert (g - r).norm() <= 5e-2 * r.norm() + 1e-6 * top, n


def test_keys_and_module_names_are_torchvisions():
    with gzip.open(DATA, "rt") as f:
        tv = json.load(f)
    assert tv["models"], "empty fixture"
    for name, entry in tv["models"].items():
        kw = {"aux_logits": False} if name == "googlenet_noaux" else {}
        with torch.device("meta"):  # shapes and names only: skip the initialisation work
            model = M.get_model(name.replace("_noaux", ""), **kw)
        ours = [[k, list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()]
        assert ours == entry["state_dict"], name
        assert [n for n, _ in model.named_modules()] == [n for n, _ in entry["modules"]], name
        assert sum(p.numel() for p in model.parameters()) == entry["num_params"], name


def test_weights_path_loads_strict(tmp_path):
    a = M.resnet18(num_classes=3)
    path = tmp_path / "r18.pth"
    torch.save(a.state_dict(), path)
    b = M.resnet18(num_classes=3, weights=str(path))
    c = M.resnet18(num_classes=3, weights=path)
    d = M.resnet18(num_classes=3, weights={"state_dict": a.state_dict()})
    for m in (b, c, d):
        assert all(torch.equal(v, m.state_dict()[k]) for k, v in a.state_dict().items())
    with pytest.raises(RuntimeError, match="size mismatch"):
        M.resnet18(num_classes=4, weights=path)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        M.resnet18(weights=str(tmp_path / "missing.pth"))
    with pytest.raises(TypeError, match="weights must be"):
        M.resnet18(weights=42)


def test_googlenet_weights_like_torchvision(tmp_path):
    full = M.googlenet(num_classes=5)
    path = tmp_path / "g.pth"
    torch.save(full.state_dict(), path)
    g = M.googlenet(num_classes=5, weights=path)
    assert g.aux1 is None and g.aux2 is None and not g.aux_logits and g.transform_input
    g2 = M.googlenet(num_classes=5, weights=path, aux_logits=True, transform_input=False)
    assert g2.aux1 is not None and not g2.transform_input
    torch.save(M.googlenet(num_classes=5, aux_logits=False).state_dict(), path)
    assert M.googlenet(num_classes=5, weights=path).aux1 is None


def test_googlenet_train_outputs_and_transform_input():
    ours, ref = _build("googlenet", transform_input=True)
    ref.transform_input = True
    x = _input("googlenet")
    ours.eval(), ref.eval()
    with torch.no_grad():
        _close(ours(x), ref(x), 1e-4)
    ours.train()
    out = ours(x)
    assert isinstance(out, M.GoogLeNetOutputs) and out.aux_logits1.shape == out.logits.shape == (2, 7)


@pytest.mark.parametrize("size", [(32, 32), (80, 48), (97, 131)])
def test_other_input_sizes(size):
    for name in ("resnet18", "densenet121", "googlenet", "vgg11"):
        ours, ref = _build(name)
        ours.eval(), ref.eval()
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            _close(ours(x), ref(x), 1e-4)


def test_state_survives_copy_and_eval_cache_refreshes():
    m, ref = _build("resnet18")
    m.eval(), ref.eval()
    x = _input("resnet18")
    with torch.no_grad():
        y0 = m(x)
        m.bn1.running_var.mul_(2.0)  # the folded stem must refold
        ref.bn1.running_var.mul_(2.0)
        _close(m(x), ref(x), 1e-4)
        assert not torch.allclose(m(x), y0)
        c = copy.deepcopy(m)
        _close(c(x), ref(x), 1e-4)


def test_zero_init_residual_and_resnext():
    m = M.resnet50(zero_init_residual=True)
    assert all(not b.bn3.weight.any() for layer in (m.layer1, m.layer4) for b in layer)
    m = M.resnet18(zero_init_residual=True)
    assert not m.layer1[0].bn2.weight.any()


@pytest.mark.parametrize("bad, err, match", [
    (lambda: M.resnet18(bogus=1), TypeError, "unexpected keyword"),
    (lambda: M.get_model("resnet19"), ValueError, "name must be one of"),
    (lambda: M.lenet5(activation="gelu"), ValueError, "activation"),
    (lambda: M.resnet18()(torch.randn(3, 64, 64)), ValueError, "4-D"),
    (lambda: M.resnet18()(torch.randn(1, 4, 64, 64)), ValueError, "3 channels"),
    (lambda: M.lenet5()(torch.randn(1, 1, 32, 32)), ValueError, "28, 28"),
    (lambda: M.se_resnet50(reduction=3), ValueError, "divisible"),
])
def test_bad_input(bad, err, match):
    with pytest.raises(err, match=match):
        bad()


def test_input_not_modified_and_compile():
    m = M.resnet18(num_classes=4).eval()
    x = torch.randn(1, 3, 64, 64)
    x0 = x.clone()
    with torch.no_grad():
        y = m(x)
        assert torch.equal(x, x0)
        if os.environ.get("FASTCONV_SKIP_COMPILE") != "1":
            yc = torch.compile(m, fullgraph=True)(x)
            _close(yc, y, 1e-5)


def test_densenet_loads_torchvisions_old_key_names(tmp_path):
    import re

    a = M.densenet121(num_classes=3)
    old = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v for k, v in a.state_dict().items()}
    assert any(".norm.1." in k for k in old)
    b = M.densenet121(num_classes=3, weights=old)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_densenet_layer_fold_follows_running_stats_and_hooks():
    # Eval folds norm2 into conv1 (cached); a training forward changes norm2's running
    # statistics, and the next eval must use the new ones. A hooked relu2 runs as a module.
    ours, ref = _build("densenet121", torch.float64)
    x = _input("densenet121", dtype=torch.float64)
    layer, ref_layer = ours.features.denseblock1.denselayer1, ref.features.denseblock1.denselayer1
    feats = [torch.randn(2, layer.norm1.num_features, 8, 8, dtype=torch.float64)]
    for train in (False, True, False):
        ours.train(train), ref.train(train)
        with torch.no_grad():
            _close(layer(feats), ref_layer(feats), 1e-10)
            _close(ours(x), ref(x), 1e-10)
    assert not torch.equal(layer.norm2.running_mean, torch.zeros_like(layer.norm2.running_mean))
    with torch.no_grad():
        layer.norm2.weight.mul_(1.5)
        ref_layer.norm2.weight.mul_(1.5)
        _close(layer(feats), ref_layer(feats), 1e-10)
    seen = []
    layer.relu2.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        _close(layer(feats), ref_layer(feats), 1e-10)
    assert seen == [torch.Size([2, layer.conv1.out_channels, 8, 8])]
