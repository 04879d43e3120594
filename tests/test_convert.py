"""fastconv.convert: swaps torch.nn layers for fastconv's (sharing parameters, the original
untouched), keeps outputs and gradients; fuse=True folds Conv -> BatchNorm -> ReLU."""
import copy

import pytest
import torch

import fastconv
import fastconv.nn as fnn
from fastconv.bench.model_twins import TorchBasicBlock, TorchBottleneck, twin


def _randomize_bn(model):
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def _types(model):
    return [type(m) for m in model.modules()]


class UserNet(torch.nn.Module):
    """A user's own model: custom forward, a Sequential, layers as attributes, an LRN, and a
    Conv2d subclass and an unknown module that must be left alone."""

    class MyConv(torch.nn.Conv2d):
        pass

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                        torch.nn.ReLU(inplace=True), torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True))
        self.lrn = torch.nn.LocalResponseNorm(3, 1e-3, 0.75, 1.5)
        self.mine = UserNet.MyConv(8, 8, 1)
        self.gelu = torch.nn.GELU()
        self.conv = torch.nn.Conv2d(8, 16, 3, stride=2, dilation=2, padding=2, bias=False)
        self.pool = torch.nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d((2, 3)), torch.nn.Flatten(),
                                        torch.nn.Linear(96, 5))

    def forward(self, x):
        x = self.gelu(self.mine(self.lrn(self.stem(x))))
        return self.head(self.pool(torch.relu(self.conv(x))))


@pytest.mark.parametrize("train", [False, True])
def test_user_model_swapped_and_equal(train):
    model = _randomize_bn(UserNet()).train(train)
    before = copy.deepcopy(model.state_dict())
    types_before = _types(model)
    conv = fastconv.convert(model)
    assert _types(model) == types_before  # the caller's model is not modified
    kinds = {type(m) for m in conv.modules()}
    assert {fnn.Conv2d, fnn.MaxPool2d, fnn.AvgPool2d, fnn.AdaptiveAvgPool2d, fnn.LocalResponseNorm} <= kinds
    assert torch.nn.Conv2d not in kinds and UserNet.MyConv in kinds and torch.nn.GELU in kinds
    assert conv.state_dict().keys() == model.state_dict().keys()
    assert conv.conv.weight is model.conv.weight  # shared, not copied
    x = torch.randn(2, 3, 19, 23, requires_grad=True)
    torch.manual_seed(0)
    y0 = model(x)
    g0 = torch.autograd.grad(y0.sum(), [x] + list(model.parameters()))
    if train:  # batch statistics were updated once by the reference pass: restore them
        model.load_state_dict(before)
    y1 = conv(x)
    g1 = torch.autograd.grad(y1.sum(), [x] + list(conv.parameters()))
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "alexnet", "vgg11_bn", "googlenet", "densenet121"])
@pytest.mark.parametrize("fuse", [False, True])
def test_twins_converted(name, fuse):
    model = _randomize_bn(twin(name, num_classes=5)).eval()
    x = torch.randn(2, 3, 64, 64)
    conv = fastconv.convert(model, fuse=fuse)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), model(x), rtol=1e-4, atol=1e-5)
        xc = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(conv.to(memory_format=torch.channels_last)(xc), model(x), rtol=1e-4, atol=1e-5)
    if not fuse:
        assert conv.state_dict().keys() == model.state_dict().keys()


def test_fuse_sequential_folds_and_keys():
    seq = _randomize_bn(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                            torch.nn.Conv2d(8, 4, 1), torch.nn.BatchNorm2d(4))).eval()
    fused = fastconv.convert(seq, fuse=True)
    assert isinstance(fused[0], fnn.ConvBNReLU) and fused[0].relu
    assert isinstance(fused[3], fnn.ConvBNReLU) and not fused[3].relu
    assert all(isinstance(fused[i], torch.nn.Identity) for i in (1, 2, 4))
    assert set(fused.state_dict()) == {f"{i}.{k}" for i in (0, 3) for k in (
        "conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
        "bn.num_batches_tracked")}
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), seq(x), rtol=1e-5, atol=1e-5)
    # training through the fused modules updates the shared running statistics as torch does
    fused.train(), seq.train()
    ref = copy.deepcopy(seq)
    fused(x)
    ref(x)
    torch.testing.assert_close(seq[1].running_mean, ref[1].running_mean)


def _as_torchvision(cls):
    return type(cls.__name__.replace("Torch", ""), (cls,), {"__module__": "torchvision.models.resnet"})


@pytest.mark.parametrize("block", [TorchBasicBlock, TorchBottleneck])
def test_fuse_torchvision_resnet_blocks(block):
    tv = _as_torchvision(block)
    cin, planes = 64, 32
    ds = torch.nn.Sequential(torch.nn.Conv2d(cin, planes * block.expansion, 1, 2, bias=False),
                             torch.nn.BatchNorm2d(planes * block.expansion))
    model = _randomize_bn(torch.nn.Sequential(tv(cin, planes, 2, ds))).eval()
    fused = fastconv.convert(model, fuse=True)
    assert type(fused[0]).__module__.startswith("fastconv")
    assert fused.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(2, cin, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)
    assert type(model[0]) is tv


def test_bad_input():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fastconv.convert(lambda x: x)
    with pytest.raises(TypeError, match="fuse must be a bool"):
        fastconv.convert(torch.nn.Conv2d(1, 1, 1), fuse="yes")


def _reference(seq, x):
    for m in seq:
        x = m(x)
    return x


def test_fold_cache_sees_bn_recalibration_and_optimizer_steps():
    from fastconv.models._common import FusedSequential

    seq = FusedSequential(fnn.Conv2d(3, 4, 3, bias=False), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        seq(x)  # fold cached
        seq.train()
        seq(torch.randn(8, 3, 8, 8) * 3 + 1)  # running statistics move (no version bump)
        seq.eval()
        torch.testing.assert_close(seq(x), torch.relu(seq[1](seq[0](x))))
    try:
        opt = torch.optim.Adam(seq.parameters(), lr=0.5, fused=True)
    except (RuntimeError, ValueError):  # no fused Adam on this build
        opt = torch.optim.Adam(seq.parameters(), lr=0.5)
    seq[0].weight.grad = torch.ones_like(seq[0].weight)
    opt.step()
    with torch.no_grad():
        torch.testing.assert_close(seq(x), torch.relu(seq[1](seq[0](x))))


def test_hooks_see_the_modules_run():
    from fastconv.models._common import FusedSequential

    seq = FusedSequential(fnn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()
    seen = []
    seq[0].register_forward_hook(lambda m, i, o: seen.append("conv"))
    seq[2].register_forward_hook(lambda m, i, o: seen.append("relu"))
    with torch.no_grad():
        seq(torch.randn(1, 3, 8, 8))
    assert seen == ["conv", "relu"]
    block = fastconv.models.resnet18().eval()
    calls = []
    block.layer1[0].conv2.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    with torch.no_grad():
        block(torch.randn(1, 3, 64, 64))
    assert calls == [torch.Size([1, 64, 16, 16])]


def test_convert_shares_no_tables_with_the_original():
    m = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)), torch.nn.BatchNorm2d(4))
    c = fastconv.convert(m)
    c[1].register_forward_hook(lambda *a: None)
    c[0].add_module("extra", torch.nn.Identity())
    assert not m[1]._forward_hooks and "extra" not in m[0]._modules


def test_fuse_torchvision_basic_conv2d_leaves_original_untouched():
    class BasicConv2d(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, bias=False)
            self.bn = torch.nn.BatchNorm2d(4, eps=0.001)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x)))

    BasicConv2d.__module__ = "torchvision.models.googlenet"
    model = _randomize_bn(torch.nn.Sequential(BasicConv2d())).train()
    fused = fastconv.convert(model, fuse=True)
    assert isinstance(fused[0], fnn.ConvBNReLU) and fused.state_dict().keys() == model.state_dict().keys()
    fused.eval()
    assert model[0].bn.training and model[0].conv.training  # the caller's modes are its own
    model.eval()
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)


def test_fuse_skips_sequential_subclasses_and_conv_subclasses():
    class Res(torch.nn.Sequential):
        def forward(self, x):
            return self[2](self[1](self[0](x))) + x

    class MyConv(torch.nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    model = _randomize_bn(torch.nn.Sequential(
        Res(torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.ReLU()),
        MyConv(4, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.ReLU())).eval()
    fused = fastconv.convert(model, fuse=True)
    assert type(fused[1]) is MyConv and not isinstance(fused[0][0], fnn.ConvBNReLU)
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)
