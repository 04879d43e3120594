"""``torch.nn`` twins of the reference architectures: the same structure, module names and
state_dict keys as ``fastconv.models`` (and torchvision), built only from torch.nn layers and
written independently of fastconv's code, so a twin loaded with a fastconv model's state_dict
is the yardstick for its outputs, gradients and speed (tests and benchmarks)."""
import torch
from torch import nn


class TorchLeNet5(nn.Module):
    """Twin of :class:`fastconv.models.LeNet5` (same keyword arguments)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, activation: str = "relu", pool: str = "max"):
        super().__init__()
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        pool_cls = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[pool]
        self.features = nn.Sequential(nn.Conv2d(in_channels, 6, 5, padding=2), act(), pool_cls(2, 2),
                                      nn.Conv2d(6, 16, 5), act(), pool_cls(2, 2))
        self.classifier = nn.Sequential(nn.Linear(400, 120), act(), nn.Linear(120, 84), act(),
                                        nn.Linear(84, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def _relu():
    return nn.ReLU(inplace=True)


def _lrn():
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)


class TorchAlexNet(nn.Module):
    """Twin of :class:`fastconv.models.AlexNet` (``lrn=True``: the paper's variant)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, lrn: bool = False):
        super().__init__()
        c = (96, 256, 384, 384, 256) if lrn else (64, 192, 384, 256, 256)
        norm = [_lrn()] if lrn else []
        self.features = nn.Sequential(
            nn.Conv2d(3, c[0], 11, 4, 2), _relu(), *norm, nn.MaxPool2d(3, 2),
            nn.Conv2d(c[0], c[1], 5, padding=2), _relu(), *([_lrn()] if lrn else []), nn.MaxPool2d(3, 2),
            nn.Conv2d(c[1], c[2], 3, padding=1), _relu(), nn.Conv2d(c[2], c[3], 3, padding=1), _relu(),
            nn.Conv2d(c[3], c[4], 3, padding=1), _relu(), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(9216, 4096), _relu(), nn.Dropout(dropout),
                                        nn.Linear(4096, 4096), _relu(), nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


VGG_CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg11_lrn": [64, "L", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


class TorchVGG(nn.Module):
    """Twin of :class:`fastconv.models.VGG`; ``TorchVGG("vgg16", batch_norm=True)``."""

    def __init__(self, cfg: str = "vgg16", batch_norm: bool = False, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        layers, cin = [], 3
        for v in VGG_CFGS[cfg]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            elif v == "L":
                layers.append(_lrn())
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1)] + ([nn.BatchNorm2d(v)] if batch_norm else []) + [_relu()]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(25088, 4096), _relu(), nn.Dropout(dropout), nn.Linear(4096, 4096),
                                        _relu(), nn.Dropout(dropout), nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class TorchBasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class TorchInception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
        super().__init__()
        self.branch1 = TorchBasicConv2d(cin, c1, kernel_size=1)
        self.branch2 = nn.Sequential(TorchBasicConv2d(cin, c3r, kernel_size=1),
                                     TorchBasicConv2d(c3r, c3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(TorchBasicConv2d(cin, c5r, kernel_size=1),
                                     TorchBasicConv2d(c5r, c5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), TorchBasicConv2d(cin, pp, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class TorchInceptionAux(nn.Module):
    def __init__(self, cin, num_classes, dropout=0.7):
        super().__init__()
        self.conv = TorchBasicConv2d(cin, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = torch.flatten(self.conv(nn.functional.adaptive_avg_pool2d(x, (4, 4))), 1)
        return self.fc2(self.dropout(torch.relu(self.fc1(x))))


class TorchGoogLeNet(nn.Module):
    """Twin of :class:`fastconv.models.GoogLeNet` (training with aux_logits returns the tuple
    (logits, aux2, aux1))."""

    def __init__(self, num_classes=1000, aux_logits=True, transform_input=False, dropout=0.2, dropout_aux=0.7):
        super().__init__()
        self.aux_logits, self.transform_input = aux_logits, transform_input
        self.conv1 = TorchBasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = TorchBasicConv2d(64, 64, kernel_size=1)
        self.conv3 = TorchBasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception3a = TorchInception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = TorchInception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception4a = TorchInception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = TorchInception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = TorchInception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = TorchInception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = TorchInception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.inception5a = TorchInception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = TorchInception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = TorchInceptionAux(512, num_classes, dropout_aux) if aux_logits else None
        self.aux2 = TorchInceptionAux(528, num_classes, dropout_aux) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        if self.transform_input:
            x = torch.cat([x[:, 0:1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5,
                           x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5,
                           x[:, 2:3] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5], 1)
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.inception4a(self.maxpool3(self.inception3b(self.inception3a(x))))
        aux1 = self.aux1(x) if self.training and self.aux1 is not None else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.training and self.aux2 is not None else None
        x = self.inception5b(self.inception5a(self.maxpool4(self.inception4e(x))))
        x = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        return (x, aux2, aux1) if self.training and self.aux_logits else x


class TorchBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None, **_):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = _relu()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class TorchBottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None, groups=1, base_width=64, se_reduction=0):
        super().__init__()
        width = int(planes * base_width / 64) * groups
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = _relu()
        self.downsample = downsample
        self.stride = stride
        if se_reduction:
            c = planes * 4
            self.se = nn.Module()
            self.se.fc1 = nn.Conv2d(c, c // se_reduction, 1)
            self.se.fc2 = nn.Conv2d(c // se_reduction, c, 1)

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if hasattr(self, "se"):
            s = torch.sigmoid(self.se.fc2(torch.relu(self.se.fc1(out.mean((2, 3), keepdim=True)))))
            out = out * s
        return self.relu(out + idt)


class TorchResNet(nn.Module):
    """Twin of :class:`fastconv.models.ResNet`: ``TorchResNet("basic" | "bottleneck", layers,
    num_classes, groups, width_per_group, se_reduction)`` (se_reduction > 0: SE-ResNet)."""

    def __init__(self, block="bottleneck", layers=(3, 4, 6, 3), num_classes=1000, groups=1, width_per_group=64,
                 se_reduction=0):
        super().__init__()
        blk = TorchBasicBlock if block == "basic" else TorchBottleneck
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = _relu()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                ds = None
                if j == 0 and (stride != 1 or cin != planes * blk.expansion):
                    ds = nn.Sequential(nn.Conv2d(cin, planes * blk.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * blk.expansion))
                kw = {} if blk is TorchBasicBlock else {"groups": groups, "base_width": width_per_group,
                                                        "se_reduction": se_reduction}
                blocks.append(blk(cin, planes, stride if j == 0 else 1, ds, **kw))
                cin = planes * blk.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TorchDenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = _relu()
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = _relu()
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, feats):
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(torch.cat(feats, 1)))))))


class TorchDenseBlock(nn.ModuleDict):
    def __init__(self, n, cin, bn_size, growth):
        super().__init__()
        for i in range(n):
            self.add_module(f"denselayer{i + 1}", TorchDenseLayer(cin + i * growth, growth, bn_size))

    def forward(self, x):
        feats = [x]
        for layer in self.values():
            feats.append(layer(feats))
        return torch.cat(feats, 1)


class TorchDenseNet(nn.Module):
    """Twin of :class:`fastconv.models.DenseNet` (growth_rate, block_config, num_init_features,
    bn_size, num_classes)."""

    def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, bn_size=4,
                 num_classes=1000):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, num_init_features, 7, 2, 3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(num_init_features))
        self.features.add_module("relu0", _relu())
        self.features.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        c = num_init_features
        for i, n in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", TorchDenseBlock(n, c, bn_size, growth_rate))
            c += n * growth_rate
            if i != len(block_config) - 1:
                t = nn.Sequential()
                t.add_module("norm", nn.BatchNorm2d(c))
                t.add_module("relu", _relu())
                t.add_module("conv", nn.Conv2d(c, c // 2, 1, bias=False))
                t.add_module("pool", nn.AvgPool2d(2, 2))
                self.features.add_module(f"transition{i + 1}", t)
                c //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(torch.relu(self.features(x)), (1, 1))
        return self.classifier(torch.flatten(x, 1))


_RESNETS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
            "resnet50": ("bottleneck", (3, 4, 6, 3)), "resnet101": ("bottleneck", (3, 4, 23, 3)),
            "resnet152": ("bottleneck", (3, 8, 36, 3))}
_DENSENETS = {"densenet121": (32, (6, 12, 24, 16), 64), "densenet161": (48, (6, 12, 36, 24), 96),
              "densenet169": (32, (6, 12, 32, 32), 64), "densenet201": (32, (6, 12, 48, 32), 64)}


def twin(name: str, **kwargs) -> nn.Module:
    """The torch.nn twin of ``fastconv.models.get_model(name, **kwargs)`` (num_classes and the
    architecture's structural keyword arguments)."""
    if name == "lenet5":
        return TorchLeNet5(**kwargs)
    if name == "alexnet":
        return TorchAlexNet(**kwargs)
    if name.startswith("vgg"):
        bn = name.endswith("_bn")
        return TorchVGG(name[:-3] if bn else name, batch_norm=bn, **kwargs)
    if name == "googlenet":
        return TorchGoogLeNet(**kwargs)
    if name in _RESNETS:
        block, layers = _RESNETS[name]
        return TorchResNet(block, layers, **kwargs)
    if name == "resnext50_32x4d":
        return TorchResNet("bottleneck", (3, 4, 6, 3), groups=32, width_per_group=4, **kwargs)
    if name == "wide_resnet50_2":
        return TorchResNet("bottleneck", (3, 4, 6, 3), width_per_group=128, **kwargs)
    if name.startswith("se_resnet"):
        return TorchResNet("bottleneck", _RESNETS["resnet" + name[len("se_resnet"):]][1],
                           se_reduction=kwargs.pop("reduction", 16), **kwargs)
    if name in _DENSENETS:
        g, blocks, init = _DENSENETS[name]
        return TorchDenseNet(g, blocks, init, **kwargs)
    raise ValueError(f"twin: no torch.nn twin for {name!r}")
