"""AlexNet (Krizhevsky et al., 2012) on fastconv ops: torchvision's single-tower layout, and
the paper's with Local Response Normalization and overlapping pooling."""
import torch

from .. import nn as fnn
from ._common import FusedSequential, check_input, check_kwargs, load_weights


def _lrn():
    # The paper's size, beta and k with alpha = 1e-4 in Caffe's (and torch's) convention, which
    # divides alpha by size; the paper's formula without the division would be alpha = 5e-4.
    return fnn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)


class AlexNet(torch.nn.Module):
    """torchvision's ``AlexNet(num_classes=1000, dropout=0.5)``; ``lrn=True`` builds the
    paper's network instead: 96-256-384-384-256 channels, LRN after the first two ReLUs, every
    pool 3x3 stride 2 (overlapping).

    input ``(N, 3, H, W)`` (any H, W >= 63; the adaptive 6x6 pool feeds the classifier);
    output ``(N, num_classes)``. Keys: ``features.<i>.*``, ``classifier.{1,4,6}.*`` (torchvision's
    for ``lrn=False``; with LRN the conv indices shift by the two LRN layers: 0, 4, 8, 10, 12).
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, lrn: bool = False):
        super().__init__()
        relu = lambda: torch.nn.ReLU(inplace=True)  # noqa: E731
        pool = lambda: fnn.MaxPool2d(3, 2)  # noqa: E731
        if lrn:
            layers = [fnn.Conv2d(3, 96, 11, 4, 2), relu(), _lrn(), pool(),
                      fnn.Conv2d(96, 256, 5, padding=2), relu(), _lrn(), pool(),
                      fnn.Conv2d(256, 384, 3, padding=1), relu(),
                      fnn.Conv2d(384, 384, 3, padding=1), relu(),
                      fnn.Conv2d(384, 256, 3, padding=1), relu(), pool()]
        else:
            layers = [fnn.Conv2d(3, 64, 11, 4, 2), relu(), pool(),
                      fnn.Conv2d(64, 192, 5, padding=2), relu(), pool(),
                      fnn.Conv2d(192, 384, 3, padding=1), relu(),
                      fnn.Conv2d(384, 256, 3, padding=1), relu(),
                      fnn.Conv2d(256, 256, 3, padding=1), relu(), pool()]
        self.lrn = bool(lrn)
        self.features = FusedSequential(*layers)
        self.avgpool = fnn.AdaptiveAvgPool2d((6, 6))
        self.classifier = torch.nn.Sequential(
            torch.nn.Dropout(p=dropout), torch.nn.Linear(256 * 6 * 6, 4096), torch.nn.ReLU(inplace=True),
            torch.nn.Dropout(p=dropout), torch.nn.Linear(4096, 4096), torch.nn.ReLU(inplace=True),
            torch.nn.Linear(4096, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input("AlexNet", x, 3)
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def alexnet(*, weights=None, lrn: bool = False, **kwargs) -> AlexNet:
    """AlexNet; ``lrn=True`` for the paper's variant. kwargs: num_classes, dropout."""
    known = {k: kwargs.pop(k) for k in ("num_classes", "dropout") if k in kwargs}
    check_kwargs("alexnet", kwargs)
    return load_weights(AlexNet(lrn=lrn, **known), weights, "alexnet")
