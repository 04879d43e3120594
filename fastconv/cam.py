"""Class activation maps (Zhou et al., "Learning Deep Features for Discriminative
Localization", 2016) for networks that end in global average pooling and one Linear layer.

    cam = fastconv.cam.class_activation_map(model, images)        # (N, H, W) in [0, 1]
    fastconv.cam.save_overlay(images[0], cam[0], "cam.png")

For a feature map f (C, h, w) and class c, ``CAM_c = sum_k W[c, k] * f[k]``: the logit of c
is the spatial mean of that map plus the bias, so the map shows where the evidence for c is.
As in the paper's code, there is no ReLU: the map is upsampled to the image size (bilinear,
``align_corners=False``) and min-max normalised per image, so 1 marks the strongest evidence
for the class and 0 the strongest evidence against it. A constant map (no place stands out,
e.g. an all-zero feature map) gives all zeros, not NaN.
"""
import numbers
import os
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .transfer import eval_mode

__all__ = ["class_activation_map", "save_overlay"]

ClassIndex = Union[None, int, Sequence[int], torch.Tensor]

# A map whose range is below this fraction of its magnitude is constant up to the rounding of
# the upsampling: normalising it would only blow the rounding up to [0, 1].
_FLAT = 1e-5


def _cam_head(model) -> torch.nn.Linear:
    for attr in ("fc", "classifier"):
        m = getattr(model, attr, None)
        if isinstance(m, torch.nn.Linear):
            return m
    raise TypeError(f"class_activation_map: model ({type(model).__name__}) must end in global average pooling and "
                    "one torch.nn.Linear held as model.fc or model.classifier (e.g. ResNet, SE-ResNet, GoogLeNet, "
                    "DenseNet); VGG / AlexNet / LeNet-5 have hidden fully connected layers, so CAM does not apply")


def _global_pool(model) -> torch.nn.Module:
    pool = getattr(model, "avgpool", None)
    if isinstance(pool, torch.nn.Module):
        return pool
    from .nn import GlobalAvgPool2d
    found = None
    for m in model.modules():
        if isinstance(m, GlobalAvgPool2d) or (isinstance(m, torch.nn.AdaptiveAvgPool2d)
                                              and m.output_size in (1, (1, 1))):
            found = m
    if found is None:
        raise TypeError(f"class_activation_map: model ({type(model).__name__}) must have forward_features(x) "
                        "returning the last feature map, or a global average pool (model.avgpool, or an "
                        "AdaptiveAvgPool2d(1) / fastconv.nn.GlobalAvgPool2d) feeding model.fc / model.classifier")
    return found


def _check_images(images) -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"class_activation_map: images must be a tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"class_activation_map: images must be a non-empty 4-D (N, C, H, W) tensor, got shape "
                         f"{list(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"class_activation_map: images must be a floating-point tensor, got {images.dtype}")


def _class_indices(class_idx: ClassIndex, n: int, num_classes: int) -> Optional[torch.Tensor]:
    """class_idx as an int64 tensor of n indices, or None for "the predicted class"."""
    if class_idx is None:
        return None
    where = f"class_idx must be None, an int or {n} ints in [0, {num_classes})"
    if isinstance(class_idx, torch.Tensor):
        if class_idx.dim() > 1 or class_idx.is_floating_point() or class_idx.is_complex() \
                or class_idx.dtype == torch.bool:
            raise ValueError(f"class_activation_map: {where}, got a {class_idx.dim()}-D {class_idx.dtype} tensor")
        idx = class_idx.reshape(-1).to(torch.int64).cpu()
        if class_idx.dim() == 0:
            idx = idx.expand(n)
    elif isinstance(class_idx, numbers.Integral) and not isinstance(class_idx, bool):
        idx = torch.full((n,), int(class_idx), dtype=torch.int64)
    elif isinstance(class_idx, Sequence) and not isinstance(class_idx, (str, bytes)) and all(
            isinstance(c, numbers.Integral) and not isinstance(c, bool) for c in class_idx):
        idx = torch.tensor([int(c) for c in class_idx], dtype=torch.int64)
    else:
        raise ValueError(f"class_activation_map: {where}, got {class_idx!r}")
    if idx.numel() != n:
        raise ValueError(f"class_activation_map: {where}: got {idx.numel()} indices for {n} images")
    bad = (idx < 0) | (idx >= num_classes)
    if bool(bad.any()):
        raise ValueError(f"class_activation_map: {where}, got {idx[bad][0].item()} (model has {num_classes} classes)")
    return idx


def _features_and_logits(model, images, fc) -> Tuple[torch.Tensor, torch.Tensor]:
    if callable(getattr(model, "forward_features", None)):
        features = model.forward_features(images)
        if not isinstance(features, torch.Tensor) or features.dim() != 4:
            raise TypeError("class_activation_map: model.forward_features must return the last feature map "
                            f"(N, C, h, w), got {getattr(features, 'shape', type(features).__name__)}")
        # The models with forward_features classify fc(dropout(mean over h, w)); in eval this is
        # their logits, and one pass gives both.
        return features, fc(features.mean((2, 3)))

    pool = _global_pool(model)
    seen = {}
    hooks = [pool.register_forward_hook(lambda m, args, out: seen.update(map=args[0], pooled=out)),
             fc.register_forward_hook(lambda m, args, out: seen.update(fc_in=args[0]))]
    try:
        logits = model(images)
    finally:
        for h in hooks:
            h.remove()
    features, pooled, fc_in = seen.get("map"), seen.get("pooled"), seen.get("fc_in")
    if not isinstance(features, torch.Tensor) or features.dim() != 4 or fc_in is None:
        raise TypeError("class_activation_map: the global average pool and model.fc / model.classifier must both "
                        "run in model's forward, the pool on a 4-D feature map")
    # The CAM is exact only when the Linear reads the global average of the map, nothing else.
    if (pooled.numel() != fc_in.numel() or not torch.allclose(pooled.reshape(fc_in.shape), fc_in)
            or not torch.allclose(fc_in, features.mean((2, 3)), rtol=1e-4, atol=1e-5)):
        raise TypeError("class_activation_map: the Linear head must read the global average pool of the last "
                        f"feature map directly (pool output {list(pooled.shape)}, head input {list(fc_in.shape)})")
    if isinstance(logits, tuple):  # GoogLeNetOutputs and the like: logits first
        logits = logits[0]
    return features, logits


def class_activation_map(model: torch.nn.Module, images: torch.Tensor, class_idx: ClassIndex = None) -> torch.Tensor:
    """Class activation maps of images, ``(N, H, W)`` float32 in [0, 1].

    model: ends in global average pooling and a Linear: ``forward_features(x)`` and ``fc`` or
    ``classifier`` (fastconv's ResNet, SE-ResNet, GoogLeNet, DenseNet), or a torchvision-style
    model whose ``avgpool`` (else its last ``AdaptiveAvgPool2d(1)`` / ``GlobalAvgPool2d``)
    feeds ``fc`` / ``classifier``, read with forward hooks. Anything else: TypeError.
    images: ``(N, C, H, W)`` floating point, on the model's device.
    class_idx: None (each image's predicted class, the argmax of its logits), an int (one class
    for all) or N ints (a sequence or 1-D integer tensor), each in ``[0, num_classes)``.

    Runs under no_grad in eval mode; every submodule's training flag is restored afterwards.
    See the module docstring for the normalisation.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"class_activation_map: model must be a torch.nn.Module, got {type(model).__name__}")
    _check_images(images)
    fc = _cam_head(model)
    n, (height, width) = images.shape[0], images.shape[2:]
    idx = _class_indices(class_idx, n, fc.out_features)
    with torch.no_grad(), eval_mode(model):
        features, logits = _features_and_logits(model, images, fc)
        if features.shape[1] != fc.in_features:
            raise TypeError(f"class_activation_map: the last feature map has {features.shape[1]} channels but the "
                            f"head is Linear({fc.in_features}, {fc.out_features})")
        if idx is None:
            idx = logits.argmax(1)
        weights = fc.weight[idx.to(fc.weight.device)].to(features.dtype)          # (N, C)
        cams = torch.einsum("nc,nchw->nhw", weights, features)
        cams = F.interpolate(cams.unsqueeze(1).float(), size=(height, width), mode="bilinear",
                             align_corners=False).squeeze(1)
        lo = cams.amin((1, 2), keepdim=True)
        hi = cams.amax((1, 2), keepdim=True)
        span = hi - lo
        flat = span <= _FLAT * torch.maximum(hi.abs(), lo.abs())
        return torch.where(flat, torch.zeros_like(cams), (cams - lo) / torch.where(flat, 1.0, span))


def _to_float_array(x, name: str):
    import numpy as np
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if x.dtype.kind not in "fiu" or x.dtype == np.bool_:
        raise ValueError(f"save_overlay: {name} must be float in [0, 1] or uint8, got dtype {x.dtype}")
    x = x.astype(np.float32)
    if x.size and (not np.isfinite(x).all() or x.min() < -1e-6 or x.max() > 1 + 1e-6):
        raise ValueError(f"save_overlay: {name} must be in [0, 1] (undo any mean / std normalisation first), got "
                         f"values in [{np.nanmin(x):.4g}, {np.nanmax(x):.4g}]")
    return np.clip(x, 0.0, 1.0)


def save_overlay(image, cam, path, alpha: float = 0.5, colormap: str = "jet") -> str:
    """Write an RGB PNG of cam's heatmap blended over image; returns path (as a str).

    image: ``(3, H, W)``, ``(1, H, W)`` or ``(H, W)``, float in [0, 1] or uint8 (tensor or
    array). cam: ``(H, W)`` in [0, 1] (a row of :func:`class_activation_map`). Each pixel is
    ``(1 - alpha) * image + alpha * colormap(cam)``; colormap: a matplotlib colormap name.
    """
    import numpy as np
    from PIL import Image
    import matplotlib

    img = _to_float_array(image, "image")
    heat = _to_float_array(cam, "cam")
    if img.ndim == 3 and img.shape[0] in (1, 3):
        img = np.moveaxis(img, 0, -1)
        if img.shape[-1] == 1:
            img = img[..., 0]
    elif img.ndim != 2:
        raise ValueError(f"save_overlay: image must be (3, H, W), (1, H, W) or (H, W), got shape {list(img.shape)}")
    if heat.ndim != 2 or heat.shape != img.shape[:2]:
        raise ValueError(f"save_overlay: cam must be (H, W) = {list(img.shape[:2])} to match image, got shape "
                         f"{list(heat.shape)}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"save_overlay: alpha must be a number in [0, 1], got {alpha!r}")
    if not isinstance(colormap, str) or colormap not in matplotlib.colormaps:
        raise ValueError(f"save_overlay: colormap must be a matplotlib colormap name (e.g. 'jet', 'viridis'), got "
                         f"{colormap!r}")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    rgb = matplotlib.colormaps[colormap](heat)[..., :3]
    blend = (1.0 - alpha) * img + alpha * rgb
    path = os.fspath(path)
    Image.fromarray(np.round(blend * 255.0).astype(np.uint8)).save(path, format="PNG")
    return path
