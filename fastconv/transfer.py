"""Transfer learning helpers: freeze / unfreeze, find and replace the classifier head, split a
model into stages, count parameters.

    model = fastconv.models.resnet18(weights="resnet18.pth")
    transfer.replace_head(model, 2)          # new trainable Linear(512, 2)
    transfer.freeze_features(model)          # only the head trains: 1,026 parameters
    transfer.unfreeze_last(model, 1)         # layer4 trains too (fine-tuning)
    model.train(); transfer.set_bn_eval(model)   # frozen BatchNorms keep their statistics

BatchNorm and freezing: :func:`freeze` only clears ``requires_grad``. A frozen BatchNorm
layer in train mode still normalises with the batch's statistics and updates its running
mean / variance (they are buffers, not parameters), so a "frozen" backbone would drift.
:func:`set_bn_eval` puts the BatchNorm layers that have no trainable parameter in eval mode
(running statistics used and kept); ``model.train()`` undoes it, so call it after every
``model.train()``. It is a separate step, not a ``freeze`` option, because the training flag
is reset by ``train()`` while ``requires_grad`` is not: one call could not keep it.
"""
import contextlib
from typing import Iterator, List, Tuple

import torch

__all__ = ["freeze", "unfreeze", "head", "replace_head", "stages", "freeze_features", "unfreeze_last",
           "count_parameters", "set_bn_eval", "eval_mode"]

_POOLS = (torch.nn.MaxPool2d, torch.nn.AvgPool2d, torch.nn.AdaptiveMaxPool2d, torch.nn.AdaptiveAvgPool2d)


def _check_module(fn: str, module) -> None:
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"{fn}: module must be a torch.nn.Module, got {type(module).__name__}")


def _set_requires_grad(fn: str, module, flag: bool):
    _check_module(fn, module)
    for p in module.parameters():
        p.requires_grad_(flag)
    return module


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """``requires_grad = False`` on every parameter of module (recursively); returns module.
    BatchNorm running statistics still update in train mode: see :func:`set_bn_eval`."""
    return _set_requires_grad("freeze", module, False)


def unfreeze(module: torch.nn.Module) -> torch.nn.Module:
    """``requires_grad = True`` on every parameter of module (recursively); returns module."""
    return _set_requires_grad("unfreeze", module, True)


def set_bn_eval(module: torch.nn.Module, frozen_only: bool = True) -> torch.nn.Module:
    """Put BatchNorm layers in eval mode (running statistics used, not updated); returns module.

    frozen_only: only the layers with no trainable parameter (frozen ones, and those without
    affine parameters); False: every BatchNorm layer. ``module.train()`` sets them back to
    train mode, so call this after it.
    """
    _check_module("set_bn_eval", module)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            if not frozen_only or not any(p.requires_grad for p in m.parameters()):
                m.eval()
    return module


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``with eval_mode(model):`` runs the block with model in eval mode, then gives every
    submodule back its own training flag (a model with some BatchNorms in eval, as after
    :func:`set_bn_eval`, comes back exactly so; ``model.train(was_training)`` would not)."""
    _check_module("eval_mode", model)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def _last_linear(prefix: str, module: torch.nn.Module):
    found = None
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.Linear):
            found = (".".join(part for part in (prefix, name) if part), m)
    return found


def _main_head(model: torch.nn.Module) -> Tuple[str, torch.nn.Linear]:
    for attr in ("fc", "classifier"):
        m = getattr(model, attr, None)
        if isinstance(m, torch.nn.Module):
            found = _last_linear(attr, m)
            if found is not None:
                return found
    found = _last_linear("", model)
    if found is None:
        raise TypeError(f"head: {type(model).__name__} has no classifier head: expected a torch.nn.Linear as "
                        "model.fc or model.classifier (or the last Linear of a classifier Sequential), or any "
                        "Linear in the model")
    if not found[0]:
        raise TypeError("head: the model is itself a Linear; there is no head inside it to find or replace")
    return found


def _heads(model: torch.nn.Module) -> List[Tuple[str, torch.nn.Linear]]:
    """The main head, then GoogLeNet's auxiliary classifiers' output Linears (aux1.fc2, ...)."""
    heads = [_main_head(model)]
    for attr in ("aux1", "aux2"):
        aux = getattr(model, attr, None)
        if isinstance(aux, torch.nn.Module) and isinstance(getattr(aux, "fc2", None), torch.nn.Linear):
            heads.append((f"{attr}.fc2", aux.fc2))
    return heads


def head(model: torch.nn.Module) -> Tuple[str, torch.nn.Linear]:
    """(name, Linear) of the classifier head: ``model.fc`` (ResNet, SE-ResNet, GoogLeNet),
    ``model.classifier`` (DenseNet), the last Linear of ``model.classifier`` (VGG, AlexNet,
    LeNet-5; e.g. ``"classifier.6"``), else the last Linear registered in the model.
    TypeError if the model has no Linear."""
    _check_module("head", model)
    return _main_head(model)


def replace_head(model: torch.nn.Module, num_classes: int) -> torch.nn.Module:
    """Replace the head by a new, trainable ``Linear(in_features, num_classes)`` (bias as the
    old one's, same device and dtype, torch's default initialisation); returns model.
    GoogLeNet's auxiliary classifiers, when present, get new output layers too."""
    _check_module("replace_head", model)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"replace_head: num_classes must be a positive int, got {num_classes!r}")
    for name, old in _heads(model):
        new = torch.nn.Linear(old.in_features, num_classes, bias=old.bias is not None,
                              device=old.weight.device, dtype=old.weight.dtype)
        model.set_submodule(name, new)
    return model


def _group(name: str, modules: List[torch.nn.Module]) -> Tuple[str, torch.nn.Module]:
    # Several modules form one stage: a ModuleList view sharing them (not registered anywhere).
    return (name, modules[0]) if len(modules) == 1 else (name, torch.nn.ModuleList(modules))


def _present(model, names) -> List[torch.nn.Module]:
    return [getattr(model, n) for n in names if isinstance(getattr(model, n, None), torch.nn.Module)]


def _split_at_pools(prefix: str, seq: torch.nn.Sequential, stop: int = None) -> List[Tuple[str, torch.nn.Module]]:
    """Runs of seq[:stop] each ending with a pooling layer, named ``prefix.first-last``."""
    items = list(seq._modules.items())[:stop]
    out, run = [], []
    for key, m in items:
        run.append((key, m))
        if isinstance(m, _POOLS):
            out.append(run)
            run = []
    if run:
        out.append(run)
    return [_group(f"{prefix}.{r[0][0]}" if len(r) == 1 else f"{prefix}.{r[0][0]}-{r[-1][0]}", [m for _, m in r])
            for r in out]


def _classifier_stage(model) -> List[Tuple[str, torch.nn.Module]]:
    """The hidden layers of a classifier Sequential before its head Linear (VGG's fc6 / fc7,
    LeNet's two hidden Linears), as one stage; [] when the head is the whole classifier."""
    name, _ = _main_head(model)
    parts = name.split(".")
    if len(parts) != 2 or not isinstance(getattr(model, parts[0], None), torch.nn.Sequential):
        return []
    seq = getattr(model, parts[0])
    keys = list(seq._modules)
    hidden = [(k, seq._modules[k]) for k in keys[:keys.index(parts[1])]]
    if not any(p.numel() for _, m in hidden for p in m.parameters()):
        return []
    return [_group(f"{parts[0]}.{hidden[0][0]}-{hidden[-1][0]}", [m for _, m in hidden])]


def stages(model: torch.nn.Module) -> List[Tuple[str, torch.nn.Module]]:
    """The feature extractor as an ordered list of (name, module) stages, input side first.

    - ResNet / SE-ResNet: ``stem`` (conv1, bn1, relu, maxpool), ``layer1`` .. ``layer4``;
    - DenseNet: ``features.stem`` (conv0 .. pool0), then ``features.denseblockK`` with its
      transition (the last block with norm5);
    - GoogLeNet: ``stem`` (conv1 .. maxpool2), ``inception3`` (3a, 3b, maxpool3),
      ``inception4`` (4a .. 4e, maxpool4), ``inception5`` (5a, 5b); the auxiliary
      classifiers are not a stage;
    - VGG / AlexNet / LeNet-5: ``features`` split after each pooling layer
      (``features.0-2``, ...), then the classifier's hidden layers (``classifier.0-5``) as the
      last stage, as they sit between the features and the head;
    - anything else: its top-level children that have parameters, except the head's.

    A stage of several modules is a ``torch.nn.ModuleList`` view sharing them (for freezing
    and counting; it is not registered in the model). The head is never part of a stage.
    """
    _check_module("stages", model)
    layers = [f"layer{i}" for i in range(1, 5)]
    if all(isinstance(getattr(model, n, None), torch.nn.Module) for n in ["conv1"] + layers):
        stem = _present(model, ("conv1", "bn1", "relu", "maxpool"))
        return [_group("stem", stem)] + [(n, getattr(model, n)) for n in layers]
    features = getattr(model, "features", None)
    if isinstance(features, torch.nn.Module) and hasattr(features, "denseblock1"):
        out, run, name = [], [], "features.stem"
        for key, m in features.named_children():
            if key.startswith("denseblock"):
                out.append(_group(name, run))
                run, name = [], f"features.{key}"
            run.append(m)
        out.append(_group(name, run))
        return out
    if isinstance(getattr(model, "inception3a", None), torch.nn.Module):
        names = [n for n, _ in model.named_children()]
        groups = [("stem", [n for n in ("conv1", "maxpool1", "conv2", "conv3", "maxpool2") if n in names])]
        for k in ("3", "4", "5"):
            groups.append((f"inception{k}", [n for n in names if n.startswith(f"inception{k}")]
                           + [n for n in (f"maxpool{k}",) if n in names]))
        return [_group(label, [getattr(model, n) for n in members]) for label, members in groups if members]
    if isinstance(features, torch.nn.Sequential) and any(isinstance(m, _POOLS) for m in features):
        return _split_at_pools("features", features) + _classifier_stage(model)
    head_top = _main_head(model)[0].split(".")[0]
    return [(n, m) for n, m in model.named_children()
            if n != head_top and any(True for _ in m.parameters())] + _classifier_stage(model)


def freeze_features(model: torch.nn.Module) -> torch.nn.Module:
    """Freeze everything but the classifier head(s) (see :func:`head`; GoogLeNet's auxiliary
    output layers stay trainable too); returns model."""
    freeze(model)
    for _, m in _heads(model):
        unfreeze(m)
    return model


def unfreeze_last(model: torch.nn.Module, k: int) -> torch.nn.Module:
    """Make exactly the last k :func:`stages` and the head(s) trainable, everything else
    frozen (k = 0: the head only, as :func:`freeze_features`); returns model."""
    _check_module("unfreeze_last", model)
    all_stages = stages(model)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= len(all_stages):
        raise ValueError(f"unfreeze_last: k must be an int in [0, {len(all_stages)}] (the number of stages of "
                         f"{type(model).__name__}: {[n for n, _ in all_stages]}), got {k!r}")
    freeze_features(model)
    for _, m in all_stages[len(all_stages) - k:]:
        unfreeze(m)
    return model


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once); trainable_only: only
    those with ``requires_grad``."""
    _check_module("count_parameters", model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
