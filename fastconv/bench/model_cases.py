"""Whole-network benchmark cases: every reference architecture against its torch.nn twin
(fastconv.bench.model_twins) with the same weights, in the same process.

* ``fwd``: inference (eval, no_grad) at batch 1 and 8, 224x224 (LeNet-5: 28x28).
* ``step``: one training step at batch 8: forward, cross-entropy (GoogLeNet: + 0.3 x each
  auxiliary loss, as in the paper), backward, SGD with momentum.
* ``resnet50_vs_compile``: inference against ``torch.compile`` of the twin.

channels_last cases convert the model (``model.to(memory_format=torch.channels_last)``), as
a user running channels_last would. FLOPs count 2 x multiply-adds of every convolution and
linear layer (from a meta-device pass of the twin); a training step counts 3x. Bytes: the
weights and the input read once and the logits written, a lower bound (the GFLOP/s is what
the table reports for models).
"""
from __future__ import annotations

import copy
import functools
from typing import Any, Callable, List, Sequence, Tuple

import torch

from .cases import LAYOUTS, Case, random_input

#: (name, builder kwargs): one network per architecture family, plus the variants the
#: issue's targets name (AlexNet with LRN, VGG-11 for training).
INFERENCE_MODELS: Sequence[Tuple[str, str, dict]] = (
    ("lenet5", "lenet5", {}),
    ("alexnet", "alexnet", {}),
    ("alexnet_lrn", "alexnet", {"lrn": True}),
    ("vgg11", "vgg11", {}),
    ("vgg16", "vgg16", {}),
    ("googlenet", "googlenet", {}),
    ("resnet18", "resnet18", {}),
    ("resnet50", "resnet50", {}),
    ("densenet121", "densenet121", {}),
    ("se_resnet50", "se_resnet50", {}),
)
TRAIN_MODELS = ("resnet18", "resnet50", "alexnet", "vgg11", "googlenet", "densenet121", "se_resnet50")
INFERENCE_BATCHES = (1, 8)
TRAIN_BATCH = 8


def _input_shape(builder: str, batch: int) -> Tuple[int, int, int, int]:
    return (batch, 1, 28, 28) if builder == "lenet5" else (batch, 3, 224, 224)


@functools.lru_cache(maxsize=None)
def _flops_and_weights(builder: str, kwargs_items: Tuple[Tuple[str, Any], ...]) -> Tuple[int, int]:
    """(forward FLOPs at batch 1, parameter count) of the torch.nn twin, from a meta pass."""
    from .model_twins import twin

    with torch.device("meta"):
        model = twin(builder, **dict(kwargs_items)).eval()
    flops = [0]

    def count(m, inputs, out):
        if isinstance(m, torch.nn.Conv2d):
            flops[0] += 2 * out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, torch.nn.Linear):
            flops[0] += 2 * out.numel() * m.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.empty(_input_shape(builder, 1), device="meta"))
    for h in hooks:
        h.remove()
    return flops[0], sum(p.numel() for p in model.parameters())


def _ours(builder: str, kwargs: dict) -> torch.nn.Module:
    import fastconv.models

    torch.manual_seed(0)
    return fastconv.models.get_model(builder, **kwargs)


def _twin_of(builder: str, kwargs: dict) -> torch.nn.Module:
    from .model_twins import twin

    ref = twin(builder, **kwargs)
    ref.load_state_dict(_ours(builder, kwargs).state_dict(), strict=True)
    return ref


def _layout(model: torch.nn.Module, layout: str) -> torch.nn.Module:
    return model.to(memory_format=torch.channels_last) if layout == "channels_last" else model


class TrainStep:
    """``step(x)``: one SGD step on a fixed batch of labels; returns the logits (detached).
    ``reset()`` restores the initial weights, buffers and optimiser state."""

    def __init__(self, model: torch.nn.Module, batch: int, num_classes: int = 1000):
        self.model = model.train()
        self.labels = torch.randint(0, num_classes, (batch,), generator=torch.Generator().manual_seed(2))
        self._initial = copy.deepcopy(model.state_dict())
        self.reset()

    def reset(self) -> None:
        torch.manual_seed(0)  # dropout masks: both sides draw the same ones after a reset
        self.model.load_state_dict(self._initial)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        out = self.model(x)
        ce = torch.nn.functional.cross_entropy
        if isinstance(out, tuple):  # GoogLeNet in training: (logits, aux2, aux1)
            loss = ce(out[0], self.labels) + 0.3 * (ce(out[1], self.labels) + ce(out[2], self.labels))
            out = out[0]
        else:
            loss = ce(out, self.labels)
        loss.backward()
        self.opt.step()
        return out.detach()


def _factory(make: Callable[[], torch.nn.Module], layout: str, step_batch: int = 0,
             compile_: bool = False) -> Callable[[], Any]:
    def factory():
        model = _layout(make(), layout)
        if step_batch:
            return TrainStep(model, step_batch)
        model = model.eval()
        return torch.compile(model) if compile_ else model

    return factory


def _case(name: str, builder: str, kwargs: dict, batch: int, layout: str, direction: str, *,
          compile_: bool = False, base: str = "") -> Case:
    fwd_flops, n_params = _flops_and_weights(builder, tuple(sorted(kwargs.items())))
    shape = _input_shape(builder, batch)
    train = direction == "step"
    nbytes = 4 * (n_params + shape[0] * shape[1] * shape[2] * shape[3] + batch * 1000)
    base = base or f"{name}_b{batch}"
    ours = functools.partial(_ours, builder, kwargs)
    ref = functools.partial(_twin_of, builder, kwargs)
    return Case(
        name=f"{base}/{layout}/{direction}", base=base, family="model", op=name,
        params=("train step SGD" if train else "eval") + (" vs torch.compile" if compile_ else ""),
        shape=shape, layout=layout, direction=direction,
        make_inputs=random_input(shape, layout),
        make_ours=_factory(ours, layout, batch if train else 0),
        make_torch=_factory(ref, layout, batch if train else 0, compile_),
        nbytes=nbytes * (3 if train else 1), flops=fwd_flops * batch * (3 if train else 1), metric="GFLOP/s",
        # deep float32 networks: the logits agree to ~1e-5 relative; one training step
        # through BatchNorm by relative L2 error (see Case.rel_l2)
        tolerance=(1e-3, 1e-3), rel_l2=1e-3 if train else 1e-4)


def _all() -> List[Case]:
    cases = []
    for name, builder, kwargs in INFERENCE_MODELS:
        for batch in INFERENCE_BATCHES:
            for layout in LAYOUTS:
                cases.append(_case(name, builder, kwargs, batch, layout, "fwd"))
    for name in TRAIN_MODELS:
        for layout in LAYOUTS:
            cases.append(_case(name, name, {}, TRAIN_BATCH, layout, "step"))
    for batch in INFERENCE_BATCHES:
        cases.append(_case("resnet50", "resnet50", {}, batch, "nchw", "fwd", compile_=True,
                           base=f"resnet50_vs_compile_b{batch}"))
    return cases


MODEL_CASES: List[Case] = _all()
