"""fastconv.transfer (heads, stages, freezing, BatchNorm) and fastconv.modelsummary."""
import io

import pytest
import torch

import fastconv
from fastconv import models, transfer
from fastconv.modelsummary import summary


def _trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_resnet18_two_class_head_frozen_features():
    model = models.resnet18()
    assert transfer.replace_head(model, 2) is model
    assert isinstance(model.fc, torch.nn.Linear) and (model.fc.in_features, model.fc.out_features) == (512, 2)
    assert transfer.freeze_features(model) is model
    assert transfer.count_parameters(model, trainable_only=True) == 1026
    assert _trainable_names(model) == {"fc.weight", "fc.bias"}
    assert transfer.count_parameters(model) == 11_689_512 - 513_000 + 1026
    text = summary(model, (3, 64, 64), file=None)
    assert "Trainable params: 1,026\n" in text
    assert "Total params: 11,177,538\n" in text
    assert "Non-trainable params: 11,176,512\n" in text
    # One row per conv and BatchNorm (fused or not), the pools and the head.
    names = [line.split()[0] for line in text.splitlines()[3:-10]]
    assert sum(n.startswith("Conv2d-") for n in names) == 20
    assert sum(n.startswith("BatchNorm2d-") for n in names) == 20
    assert names[-1] == "Linear-43" and "[-1, 2]" in text.splitlines()[-11]


def test_replace_head_keeps_device_dtype_bias_and_aux_heads():
    model = models.resnet18(num_classes=4).double()
    transfer.freeze(model)
    transfer.replace_head(model, 7)
    assert model.fc.weight.dtype == torch.float64 and model.fc.weight.requires_grad
    assert model.eval()(torch.randn(1, 3, 32, 32, dtype=torch.float64)).shape == (1, 7)
    googlenet = models.googlenet(num_classes=5)
    transfer.replace_head(googlenet, 3)
    assert [googlenet.fc.out_features, googlenet.aux1.fc2.out_features, googlenet.aux2.fc2.out_features] == [3, 3, 3]
    vgg_like = models.lenet5()
    transfer.replace_head(vgg_like, 2)
    assert vgg_like.classifier[4].out_features == 2 and vgg_like(torch.randn(1, 1, 28, 28)).shape == (1, 2)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="num_classes must be a positive int"):
            transfer.replace_head(vgg_like, bad)


def test_head_names():
    assert transfer.head(models.resnet18())[0] == "fc"
    assert transfer.head(models.densenet121())[0] == "classifier"
    assert transfer.head(models.lenet5())[0] == "classifier.4"
    assert transfer.head(models.alexnet())[0] == "classifier.6"
    assert transfer.head(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)))[0] == "2"
    with pytest.raises(TypeError, match="no classifier head"):
        transfer.head(torch.nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        transfer.head("resnet18")


@pytest.mark.parametrize("name, expected", [
    ("resnet18", ["stem", "layer1", "layer2", "layer3", "layer4"]),
    ("se_resnet50", ["stem", "layer1", "layer2", "layer3", "layer4"]),
    ("densenet121", ["features.stem", "features.denseblock1", "features.denseblock2", "features.denseblock3",
                     "features.denseblock4"]),
    ("lenet5", ["features.0-2", "features.3-5", "classifier.0-3"]),
    ("alexnet", ["features.0-2", "features.3-5", "features.6-12", "classifier.0-5"]),
    ("googlenet", ["stem", "inception3", "inception4", "inception5"]),
])
def test_stages_cover_the_feature_extractor(name, expected):
    model = models.get_model(name)
    stages = transfer.stages(model)
    assert [n for n, _ in stages] == expected
    covered = {id(p) for _, m in stages for p in m.parameters()} | {id(p) for _, h in transfer._heads(model)
                                                                      for p in h.parameters()}
    left = [n for n, p in model.named_parameters() if id(p) not in covered]
    # Only GoogLeNet's auxiliary classifiers (minus their output layer) are in no stage.
    assert all(n.startswith(("aux1.", "aux2.")) for n in left)
    assert not any(id(p) in covered for _, h in transfer._heads(model) for p in h.parameters()
                   for _, m in stages if any(p is q for q in m.parameters()))


def test_stages_generic_fallback():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Conv2d(1, 2, 3)
            self.act = torch.nn.ReLU()
            self.neck = torch.nn.Conv2d(2, 2, 1)
            self.fc = torch.nn.Linear(2, 3)

    assert [n for n, _ in transfer.stages(Net())] == ["body", "neck"]


def test_unfreeze_last():
    model = models.resnet18(num_classes=2)
    transfer.unfreeze_last(model, 1)
    expected = transfer.count_parameters(model.layer4) + 1026
    assert transfer.count_parameters(model, trainable_only=True) == expected
    assert all(n.startswith(("layer4.", "fc.")) for n in _trainable_names(model))
    transfer.unfreeze_last(model, 5)
    assert transfer.count_parameters(model, True) == transfer.count_parameters(model)
    transfer.unfreeze_last(model, 0)  # sets the trainable set, not adds to it
    assert transfer.count_parameters(model, True) == 1026
    for bad in (6, -1, 1.5, None):
        with pytest.raises(ValueError, match=r"k must be an int in \[0, 5\]"):
            transfer.unfreeze_last(model, bad)


def test_freeze_unfreeze_and_count_shared_once():
    lin = torch.nn.Linear(3, 3)
    net = torch.nn.Sequential(lin, torch.nn.ReLU(), lin)
    assert transfer.count_parameters(net) == 12
    assert transfer.freeze(net) is net and transfer.count_parameters(net, True) == 0
    assert transfer.unfreeze(net) is net and transfer.count_parameters(net, True) == 12
    with pytest.raises(TypeError, match="freeze: module must be a torch.nn.Module"):
        transfer.freeze([lin])


def test_set_bn_eval_keeps_frozen_statistics():
    model = models.resnet18(num_classes=2)
    transfer.unfreeze_last(model, 1)
    model.train()
    transfer.set_bn_eval(model)
    assert not model.bn1.training and not model.layer3[1].bn2.training
    assert model.layer4[0].bn1.training and model.training
    before = model.layer1[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    torch.testing.assert_close(model.layer1[0].bn1.running_mean, before)
    assert model.layer1[0].conv1.weight.grad is None and model.fc.weight.grad is not None
    transfer.set_bn_eval(model, frozen_only=False)
    assert not model.layer4[0].bn1.training


def test_eval_mode_restores_mixed_flags():
    model = models.resnet18()
    model.train()
    model.layer2.eval()
    with transfer.eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and model.layer1.training and not model.layer2[0].bn1.training


# ---- summary ---------------------------------------------------------------------------------

class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool2d(2)
        self.flatten = torch.nn.Flatten()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.relu(self.conv(x)))))


def _rows(text):
    lines = text.splitlines()
    return lines[3:lines.index("=" * 64, 3)]


def test_summary_small_model_exact(capsys):
    model = Small().train()
    text = summary(model, (1, 8, 8))
    assert capsys.readouterr().out == text
    assert model.training
    expected = [
        "            Conv2d-1              [-1, 4, 8, 8]              40",
        "              ReLU-2              [-1, 4, 8, 8]               0",
        "         MaxPool2d-3              [-1, 4, 4, 4]               0",
        "           Flatten-4                   [-1, 64]               0",
        "            Linear-5                   [-1, 10]             650",
    ]
    assert _rows(text) == expected
    lines = text.splitlines()
    assert lines[:3] == ["-" * 64, "        Layer (type)               Output Shape         Param #", "=" * 64]
    assert lines[-10:] == [
        "=" * 64, "Total params: 690", "Trainable params: 690", "Non-trainable params: 0", "-" * 64,
        # 256 input floats; rows 256 + 256 + 64 + 64 + 10 floats, twice; 690 parameters.
        "Input size (MB): 0.00", "Forward/backward pass size (MB): 0.00", "Params size (MB): 0.00",
        "Estimated Total Size (MB): 0.01", "-" * 64]
    # batch_size shows in the shapes and scales the sizes.
    text = summary(model, [1, 8, 8], batch_size=1000, file=None)
    assert "[1000, 4, 8, 8]" in text and "Input size (MB): 0.24" in text
    assert "Forward/backward pass size (MB): 4.96" in text
    assert capsys.readouterr().out == ""


def test_summary_fused_fastconv_layers_show():
    text = summary(models.lenet5(), (1, 28, 28), file=io.StringIO())
    rows = _rows(text)
    assert [r.split()[0] for r in rows] == ["Conv2d-1", "ReLU-2", "MaxPool2d-3", "Conv2d-4", "ReLU-5", "MaxPool2d-6",
                                            "Linear-7", "ReLU-8", "Linear-9", "ReLU-10", "Linear-11"]
    assert "[-1, 16, 10, 10]" in rows[3] and rows[3].endswith("2,416")
    net = torch.nn.Sequential(fastconv.nn.ConvBNReLU(3, 8, 3, stride=2, padding=1), fastconv.nn.GlobalAvgPool2d())
    rows = _rows(summary(net, (3, 16, 16), file=None))
    assert rows == ["            Conv2d-1              [-1, 8, 8, 8]             216",
                    "       BatchNorm2d-2              [-1, 8, 8, 8]              16",
                    "   GlobalAvgPool2d-3              [-1, 8, 1, 1]               0"]
    # BatchNorm without running statistics runs as a module even in eval: still one row each.
    net[0] = fastconv.nn.ConvBNReLU(3, 8, 3, stride=2, padding=1, track_running_stats=False)
    assert [r.split()[0] for r in _rows(summary(net, (3, 16, 16), file=None))] == [
        "Conv2d-1", "BatchNorm2d-2", "GlobalAvgPool2d-3"]


def test_summary_module_used_through_a_method():
    class Tail(torch.nn.Module):  # its child runs as a weight, never as a module
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)
            self.inner = torch.nn.Linear(3, 3)

        def forward(self, x):
            return self.conv(x) * self.inner.weight.sum()

    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tail = Tail()

        def forward(self, x):
            return self.tail(x)

    rows = _rows(summary(Outer(), (3, 4, 4), file=None))
    assert [r.split()[0] for r in rows] == ["Conv2d-1", "Linear-2"]
    assert "fused in parent" in rows[1] and rows[1].endswith("12")


def test_summary_multi_input_and_errors():
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(1, 2, 1)
            self.b = torch.nn.Linear(5, 2)

        def forward(self, x, y):
            return self.a(x).mean((2, 3)) + self.b(y)

    text = summary(Two(), [(1, 4, 4), (5,)], file=None)
    assert [r.split()[:2] for r in _rows(text)] == [["Conv2d-1", "[-1,"], ["Linear-2", "[-1,"]]
    assert "Input size (MB): 0.00" in text
    model = Small()
    with pytest.raises(ValueError, match="input_size must be"):
        summary(model, (1, 0, 8), file=None)
    with pytest.raises(ValueError, match="input_size must be"):
        summary(model, [(1, 8, 8), 3], file=None)
    with pytest.raises(ValueError, match="batch_size must be"):
        summary(model, (1, 8, 8), batch_size=0, file=None)
    with pytest.raises(ValueError, match="dtype must be"):
        summary(model, (1, 8, 8), dtype=torch.int64, file=None)


def test_summary_cleans_up_after_a_failing_forward():
    model = models.resnet18().train()
    with pytest.raises(RuntimeError, match=r"forward pass of ResNet on zeros of shape\(s\) \[\[2, 1, 32, 32\]\]"):
        summary(model, (1, 32, 32), file=None)
    assert model.training and all(m.training for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
