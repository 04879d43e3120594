"""fastconv.cam: class activation maps against hand-computed ones, class_idx forms, the
training flag, PNG overlays, bad input."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import fastconv
from fastconv import models
from fastconv.cam import class_activation_map, save_overlay


class Identity2(torch.nn.Module):
    """forward_features is the input itself: the CAM is then computable by hand."""

    def __init__(self, weight):
        super().__init__()
        self.fc = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            self.fc.bias.zero_()

    def forward_features(self, x):
        return x

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


class Plain(torch.nn.Module):
    """torchvision-style, no forward_features: conv1 -> relu -> avgpool -> fc."""

    def __init__(self, classes=3, channels=5):
        super().__init__()
        self.conv1 = fastconv.nn.Conv2d(3, channels, 3, stride=2, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(channels)
        self.relu = torch.nn.ReLU()
        self.avgpool = torch.nn.AdaptiveAvgPool2d((1, 1))
        self.fc = torch.nn.Linear(channels, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class WithFeatures(Plain):
    def forward_features(self, x):
        return self.relu(self.bn1(self.conv1(x)))


def test_hand_computed_cam():
    # Channel maps x0, x1 and class rows [1, -1], [0, 2]: class 0's map is x0 - x1.
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 2.0]]]])
    model = Identity2(torch.tensor([[1.0, -1.0], [0.0, 2.0]]))
    cam = class_activation_map(model, x, 0)
    # x0 - x1 = [[1, 2], [3, 2]]: min 1, max 3.
    torch.testing.assert_close(cam, torch.tensor([[[0.0, 0.5], [1.0, 0.5]]]))
    # Class 1: 2 * x1 = [[0, 0], [0, 4]].
    torch.testing.assert_close(class_activation_map(model, x, 1), torch.tensor([[[0.0, 0.0], [0.0, 1.0]]]))
    assert cam.dtype == torch.float32


def test_upsampled_like_the_reference():
    torch.manual_seed(1)
    model = WithFeatures().eval()
    images = torch.randn(2, 3, 16, 12)
    cam = class_activation_map(model, images, [2, 0])
    assert cam.shape == (2, 16, 12) and cam.dtype == torch.float32
    with torch.no_grad():
        f = model.forward_features(images)
        raw = torch.stack([(model.fc.weight[c][:, None, None] * f[i]).sum(0) for i, c in enumerate([2, 0])])
        up = F.interpolate(raw[:, None], size=(16, 12), mode="bilinear", align_corners=False)[:, 0]
        lo, hi = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
        torch.testing.assert_close(cam, (up - lo) / (hi - lo))
    assert cam.amin((1, 2)).eq(0).all() and cam.amax((1, 2)).eq(1).all()


def test_hook_path_matches_forward_features():
    torch.manual_seed(2)
    plain = Plain()
    with_ff = WithFeatures()
    with_ff.load_state_dict(plain.state_dict())
    images = torch.randn(3, 3, 10, 10)
    torch.testing.assert_close(class_activation_map(plain, images), class_activation_map(with_ff, images))


def test_class_idx_forms():
    torch.manual_seed(3)
    model = Plain(classes=4)
    images = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        predicted = model.eval()(images).argmax(1)
    per_image = torch.stack([class_activation_map(model, images[i:i + 1], int(c))[0] for i, c in enumerate(predicted)])
    torch.testing.assert_close(class_activation_map(model, images), per_image)
    torch.testing.assert_close(class_activation_map(model, images, predicted), per_image)
    torch.testing.assert_close(class_activation_map(model, images, predicted.tolist()), per_image)
    torch.testing.assert_close(class_activation_map(model, images, np.int64(1)),
                               class_activation_map(model, images, [1, 1, 1]))
    torch.testing.assert_close(class_activation_map(model, images, torch.tensor(2)),
                               class_activation_map(model, images, (2, 2, 2)))


@pytest.mark.parametrize("class_idx, match", [
    (4, r"class_idx .*got 4 \(model has 4 classes\)"),
    (-1, "class_idx"),
    ([0, 1], "class_idx .*got 2 indices for 3 images"),
    (True, "class_idx"),
    (1.0, "class_idx"),
    (torch.tensor([0.0, 1.0, 2.0]), "class_idx"),
    (torch.zeros(3, 1, dtype=torch.long), "class_idx"),
    ("1", "class_idx"),
])
def test_bad_class_idx(class_idx, match):
    with pytest.raises(ValueError, match=match):
        class_activation_map(Plain(classes=4), torch.randn(3, 3, 8, 8), class_idx)


@pytest.mark.parametrize("images, match", [
    (torch.randn(3, 8, 8), "images must be a non-empty 4-D"),
    (torch.randn(0, 3, 8, 8), "images must be a non-empty 4-D"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "images must be a floating-point"),
    (np.zeros((1, 3, 8, 8), np.float32), "images must be a tensor"),
])
def test_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        class_activation_map(Plain(), images)


def test_models_cam_does_not_apply_to():
    with pytest.raises(TypeError, match="model.fc or model.classifier"):
        class_activation_map(models.lenet5(), torch.randn(1, 1, 28, 28))

    class NoPool(torch.nn.Module):  # fc on the flattened map: no global pool anywhere
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 3)
            self.fc = torch.nn.Linear(2 * 4 * 4, 3)

        def forward(self, x):
            return self.fc(self.conv(x).flatten(1))

    with pytest.raises(TypeError, match="global average pool"):
        class_activation_map(NoPool(), torch.randn(1, 3, 6, 6))

    class PoolNotFeedingFc(Plain):  # avgpool exists, but fc reads a 2x2 pool
        def __init__(self):
            super().__init__(channels=2)
            self.fc = torch.nn.Linear(8, 3)
            self.pool2 = torch.nn.AdaptiveAvgPool2d(2)

        def forward(self, x):
            x = self.relu(self.conv1(x))
            self.avgpool(x)
            return self.fc(self.pool2(x).flatten(1))

    with pytest.raises(TypeError, match="must read the global average pool"):
        class_activation_map(PoolNotFeedingFc(), torch.randn(1, 3, 8, 8))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        class_activation_map(lambda x: x, torch.randn(1, 3, 8, 8))


def test_training_flags_restored_and_no_grad():
    model = Plain()
    model.train()
    model.bn1.eval()  # a mixed state (a frozen BatchNorm) must come back as it was
    images = torch.randn(2, 3, 8, 8, requires_grad=True)
    stats = model.bn1.running_mean.clone()
    cam = class_activation_map(model, images)
    assert model.training and model.conv1.training and not model.bn1.training
    assert not cam.requires_grad
    torch.testing.assert_close(model.bn1.running_mean, stats)
    model.eval()
    class_activation_map(model, images)
    assert not model.training


def test_constant_map_gives_zeros():
    model = WithFeatures()
    with torch.no_grad():
        model.conv1.weight.zero_()
        model.conv1.bias.zero_()
    cam = class_activation_map(model, torch.randn(2, 3, 8, 8))
    assert torch.equal(cam, torch.zeros(2, 8, 8))


def test_resnet18_and_densenet_like_classifier():
    torch.manual_seed(4)
    model = models.resnet18(num_classes=3)
    cam = class_activation_map(model, torch.randn(2, 3, 64, 48))
    assert cam.shape == (2, 64, 48) and 0 <= cam.min() and cam.max() <= 1

    class DenseLike(torch.nn.Module):  # forward_features + classifier Linear
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Conv2d(3, 4, 3)
            self.classifier = torch.nn.Linear(4, 2)

        def forward_features(self, x):
            return torch.relu(self.features(x))

    assert class_activation_map(DenseLike(), torch.randn(1, 3, 9, 9), 1).shape == (1, 9, 9)


def test_save_overlay_writes_rgb_png(tmp_path):
    image = torch.rand(3, 20, 30)
    cam = torch.rand(20, 30)
    path = save_overlay(image, cam, tmp_path / "a.png")
    assert path == str(tmp_path / "a.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (30, 20)
    # alpha 0: the image alone; a grey image of (H, W) or (1, H, W) becomes RGB.
    grey = torch.rand(20, 30)
    for img in (grey, grey[None], (grey * 255).round().to(torch.uint8)):
        with Image.open(save_overlay(img, cam, tmp_path / "b.png", alpha=0.0)) as im:
            out = np.asarray(im)
        assert out.shape == (20, 30, 3)
        expected = np.round(grey.numpy() * 255)
        assert np.abs(out.astype(float) - expected[..., None]).max() <= 1
    # alpha 1: the colormap alone.
    import matplotlib
    with Image.open(save_overlay(image.numpy(), cam.numpy(), tmp_path / "c.png", alpha=1.0, colormap="viridis")) as im:
        out = np.asarray(im).astype(float)
    expected = np.round(matplotlib.colormaps["viridis"](cam.numpy())[..., :3] * 255)
    assert np.abs(out - expected).max() <= 1


@pytest.mark.parametrize("image, cam, kwargs, match", [
    (torch.rand(3, 8, 8), torch.rand(8, 9), {}, r"cam must be \(H, W\) = \[8, 8\]"),
    (torch.rand(2, 8, 8), torch.rand(8, 8), {}, r"image must be \(3, H, W\)"),
    (torch.rand(1, 3, 8, 8), torch.rand(8, 8), {}, r"image must be"),
    (torch.randn(3, 8, 8) * 5, torch.rand(8, 8), {}, r"image must be in \[0, 1\]"),
    (torch.rand(3, 8, 8), torch.rand(8, 8) + 1, {}, r"cam must be in \[0, 1\]"),
    (torch.rand(3, 8, 8), torch.rand(8, 8), {"alpha": 1.5}, "alpha must be"),
    (torch.rand(3, 8, 8), torch.rand(8, 8), {"colormap": "no-such-map"}, "colormap must be"),
])
def test_save_overlay_bad_input(tmp_path, image, cam, kwargs, match):
    with pytest.raises(ValueError, match=match):
        save_overlay(image, cam, tmp_path / "x.png", **kwargs)
    assert not (tmp_path / "x.png").exists()
