"""ConvBNReLU, Bottleneck and the 1x1 group: against torch.nn twins (forward, every gradient,
train and eval, running statistics), BatchNorm folding and its cache, state_dict
interchange, compile, gradcheck and bad input."""
import copy
import pickle

import pytest
import torch

import fastconv
from fastconv.bench.twins import TorchBottleneck
from fastconv.nn import Bottleneck, Conv1x1Group, ConvBNReLU


def _randomize_bn(bn):
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)


def _twin_conv_bn(m):
    """torch.nn twin of a ConvBNReLU with copied state."""
    c = m.conv
    conv = torch.nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.dilation,
                           c.groups, c.bias is not None, c.padding_mode, dtype=c.weight.dtype)
    bn = torch.nn.BatchNorm2d(m.bn.num_features, m.bn.eps, m.bn.momentum, dtype=c.weight.dtype)
    twin = torch.nn.Module()
    twin.conv, twin.bn = conv, bn
    twin.load_state_dict(m.state_dict(), strict=True)
    layers = [conv, bn] + ([torch.nn.ReLU()] if m.relu else [])
    return twin, torch.nn.Sequential(*layers)


def _all_grads(module, x, out, seed=3):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    params = [p for p in module.parameters()]
    return torch.autograd.grad(out, [x] + params, g)


def _assert_matches_twin(m, twin, x):
    """Output, input and every parameter gradient (grad recorded), then the output again with
    no grad recorded (the fused eval path)."""
    x = x.requires_grad_(True)
    y, y_ref = m(x), twin(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    for a, b in zip(_all_grads(m, x, y), _all_grads(twin, x, y_ref)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    with torch.no_grad():
        torch.testing.assert_close(m(x), twin(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel,stride,padding,groups,bias,relu", [
    (1, 1, 0, 1, False, True), (1, 2, 0, 1, True, False), (3, 1, 1, 1, False, True), (3, 2, 1, 2, False, True),
    (5, 1, 2, 1, True, True), (7, 2, 3, 1, False, True)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_conv_bn_relu_matches_torch_train_and_eval(kernel, stride, padding, groups, bias, relu, layout):
    torch.manual_seed(0)
    m = ConvBNReLU(8, 12, kernel, stride, padding, groups=groups, bias=bias, relu=relu)
    _randomize_bn(m.bn)
    holder, twin = _twin_conv_bn(m)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    for mode in ("train", "eval"):
        m.train(mode == "train")
        twin.train(mode == "train")
        for step in range(2):
            _assert_matches_twin(m, twin, torch.randn(3, 8, 11, 10).contiguous(memory_format=fmt))
        for k, v in holder.bn.state_dict().items():
            torch.testing.assert_close(m.bn.state_dict()[k], v)


def test_conv_bn_relu_fold_cache_follows_parameter_and_stat_changes():
    m = ConvBNReLU(6, 5, 1).eval()
    _randomize_bn(m.bn)
    _, twin = _twin_conv_bn(m)
    x = torch.randn(2, 6, 4, 4)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    with torch.no_grad():
        y0 = m(x)
        w0 = m.folded()[0]
        assert m.folded()[0] is w0  # cached
    for change in (lambda: m.bn.running_var.mul_(2.0), lambda: m.bn.running_mean.add_(0.5),
                   lambda: m.conv.weight.data.mul_(0.5), lambda: m.load_state_dict(m.state_dict())):
        with torch.no_grad():
            change()
    m(x).sum().backward()  # eval with grad: folded and recorded
    opt.step()
    twin.load_state_dict({"0." + k[5:] if k.startswith("conv.") else "1." + k[3:]: v
                          for k, v in m.state_dict().items()})
    twin.eval()
    with torch.no_grad():
        y1 = m(x)
        assert not torch.equal(y0, y1)
        torch.testing.assert_close(y1, twin(x), rtol=1e-4, atol=1e-4)


def test_conv_bn_relu_state_dict_from_unfused_pair_and_from_modules():
    conv, bn = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False), torch.nn.BatchNorm2d(6)
    _randomize_bn(bn)
    pair = torch.nn.Module()
    pair.conv, pair.bn = conv, bn
    m = ConvBNReLU(4, 6, 3, padding=1)
    assert list(m.state_dict().keys()) == list(pair.state_dict().keys())
    m.load_state_dict(pair.state_dict(), strict=True)
    wrapped = ConvBNReLU.from_modules(conv, bn)
    assert wrapped.conv.weight is conv.weight and wrapped.bn is bn
    x = torch.randn(2, 4, 5, 5)
    for mod in (m, wrapped):
        mod.eval()
    bn.eval()
    with torch.no_grad():
        ref = torch.relu(bn(conv(x)))
        torch.testing.assert_close(m(x), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(wrapped(x), ref, rtol=1e-5, atol=1e-5)
    m2 = pickle.loads(pickle.dumps(m))
    m3 = copy.deepcopy(m)
    with torch.no_grad():
        torch.testing.assert_close(m2(x), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(m3(x), ref, rtol=1e-5, atol=1e-5)


def test_conv_bn_relu_gradcheck_and_compile():
    torch._dynamo.reset()
    m = ConvBNReLU(3, 4, 3, padding=1, dtype=torch.float64)
    _randomize_bn(m.bn)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    for mode in (True, False):
        m.train(mode)
        # train mode updates running stats each call; gradcheck only looks at outputs
        assert torch.autograd.gradcheck(lambda t, w: fastconv.nn.fused.conv_bn_act(
            t, _with_weight(m.conv, w), m.bn, True, None), (x, m.conv.weight.detach().clone().requires_grad_(True)))
    m = ConvBNReLU(6, 8, 1).eval()
    _randomize_bn(m.bn)
    compiled = torch.compile(m, fullgraph=True)
    x = torch.randn(2, 6, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x))


def _with_weight(conv, w):
    c = copy.copy(conv)
    c._parameters = dict(conv._parameters)
    c._parameters["weight"] = w
    return c


@pytest.mark.parametrize("inplanes,planes,stride", [(16, 4, 1), (16, 8, 2), (32, 8, 1)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_bottleneck_matches_torch_twin(inplanes, planes, stride, layout):
    torch.manual_seed(1)
    m = Bottleneck(inplanes, planes, stride)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            _randomize_bn(mod)
    twin = TorchBottleneck(inplanes, planes, stride)
    assert list(m.state_dict().keys()) == list(twin.state_dict().keys())
    twin.load_state_dict(m.state_dict(), strict=True)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    for mode in (True, False):
        m.train(mode)
        twin.train(mode)
        _assert_matches_twin(m, twin, torch.randn(2, inplanes, 9, 9).contiguous(memory_format=fmt))
    for (k, a), b in zip(m.state_dict().items(), twin.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_bottleneck_compiles():
    torch._dynamo.reset()
    m = Bottleneck(16, 4, 2).eval()
    x = torch.randn(1, 16, 8, 8)
    compiled = torch.compile(m, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x), rtol=1e-5, atol=1e-5)
    m.train()
    xg = x.clone().requires_grad_(True)
    compiled(xg).sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_conv1x1_group_is_one_gemm_with_the_branches_results():
    torch.manual_seed(2)
    branches = [ConvBNReLU(24, oc, 1, eps=1e-3) for oc in (8, 12, 4)]
    for b in branches:
        _randomize_bn(b.bn)
        b.eval()
    group = Conv1x1Group(branches)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 24, 7, 6).contiguous(memory_format=fmt)
        with torch.no_grad():
            outs = group(x)
            for o, b in zip(outs, branches):
                torch.testing.assert_close(o, b(x), rtol=1e-5, atol=1e-5)
        xg = x.clone().requires_grad_(True)
        outs = group(xg)  # grad recorded: branch by branch, still correct
        sum(o.sum() for o in outs).backward()
        assert xg.grad is not None
    for b in branches:
        b.train()
    x = torch.randn(2, 24, 7, 6)
    outs = group(x)
    assert [o.shape[1] for o in outs] == [8, 12, 4]


@pytest.mark.parametrize("call,exc,match", [
    (lambda: Conv1x1Group([]), ValueError, "must not be empty"),
    (lambda: Conv1x1Group([ConvBNReLU(4, 4, 3)]), ValueError, "must be a 1x1 conv"),
    (lambda: Conv1x1Group([ConvBNReLU(4, 4, 1), ConvBNReLU(5, 4, 1)]), ValueError, "in_channels and relu"),
    (lambda: Conv1x1Group([torch.nn.Conv2d(4, 4, 1)]), TypeError, "must be a ConvBNReLU"),
    (lambda: ConvBNReLU(4, 4, 1)(torch.randn(4, 5, 5)), ValueError, "ConvBNReLU: input must be 4-D"),
    (lambda: Bottleneck(16, 4)(torch.randn(16, 5, 5)), ValueError, "Bottleneck: input must be 4-D"),
    (lambda: ConvBNReLU.from_modules(torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(5)), ValueError,
     r"bn.num_features \(5\) must equal conv.out_channels \(4\)"),
    (lambda: ConvBNReLU.from_modules(torch.nn.Linear(4, 4), torch.nn.BatchNorm2d(4)), TypeError,
     "conv must be a torch.nn.Conv2d"),
])
def test_fused_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("strict", [True, False])
def test_blocks_export(strict):
    for m, x in [(fastconv.nn.SqueezeExcitation(32, 8).eval(), torch.randn(2, 32, 6, 6)),
                 (Bottleneck(16, 4, 2).eval(), torch.randn(2, 16, 8, 8)),
                 (ConvBNReLU(8, 6, 3, padding=1).eval(), torch.randn(2, 8, 6, 6))]:
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                _randomize_bn(mod)
        ep = torch.export.export(m, (x,), strict=strict)
        with torch.no_grad():
            torch.testing.assert_close(ep.module()(x), m(x), rtol=1e-5, atol=1e-5)
