"""A per-layer table of a model, in the layout of the ``torchsummary`` package:

    >>> fastconv.summary(fastconv.models.lenet5(), (1, 28, 28))
    ----------------------------------------------------------------
            Layer (type)               Output Shape         Param #
    ================================================================
                Conv2d-1            [-1, 6, 28, 28]             156
                  ReLU-2            [-1, 6, 28, 28]               0
    ...

How layers are seen: one forward pass with a forward hook on every leaf module (a row per
call, numbered in call order). fastconv's fused paths do work without calling the leaf
modules they fuse, so the pass is made so that they show:

- it runs in eval mode on a zero input that records autograd (no backward is run, the graph
  is dropped at once): with a gradient to record, ``FusedSequential`` and the Inception
  module's grouped 1x1 convolutions call their layers one by one;
- fastconv's fused ``conv [-> BatchNorm] [-> ReLU] [+ residual]`` helper (ConvBNReLU, the
  ResNet blocks and stem) runs its conv and bn as modules when they carry hooks, so they
  give rows (a ReLU fused into it has none);
- a submodule with parameters whose forward never ran while its parent's did (it was used
  through a fused kernel, e.g. an SE block's tail) gets a row with the shape "fused in
  parent" and its parameter count. The model's own unused children (GoogLeNet's auxiliary
  classifiers in eval) get no row.

Totals come from ``model.parameters()`` (each parameter once), not from the rows.
"""
import math
import sys
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch

from .transfer import eval_mode

__all__ = ["summary"]

_WIDTHS = "{:>20}  {:>25} {:>15}"
_RULE = "-" * 64
_DOUBLE_RULE = "=" * 64
_FUSED = "fused in parent"
_MB = 1024.0 ** 2


class _Stdout:
    """Default of ``file``: whatever sys.stdout is at call time (pytest's capture, say)."""

    def __repr__(self) -> str:
        return "sys.stdout"


_STDOUT = _Stdout()

_CONTAINERS = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)
_CONTAINER_FORWARDS = {c.forward for c in _CONTAINERS}


def _input_shapes(input_size) -> List[Tuple[int, ...]]:
    def is_dims(t):
        return isinstance(t, (tuple, list)) and len(t) > 0 and all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in t)

    if is_dims(input_size):
        return [tuple(input_size)]
    if isinstance(input_size, (tuple, list)) and input_size and all(is_dims(t) for t in input_size):
        return [tuple(t) for t in input_size]
    raise ValueError("summary: input_size must be one tuple of positive ints without the batch dimension, e.g. "
                     f"(3, 224, 224), or a list of such tuples for a multi-input model; got {input_size!r}")


def _shape(output, batch_size: int):
    if isinstance(output, torch.Tensor):
        return [batch_size] + list(output.shape[1:])
    if isinstance(output, (tuple, list)):
        shapes = [_shape(o, batch_size) for o in output]
        return [s for s in shapes if s is not None] or None
    return None


def _numel(shape) -> int:
    """Elements of one sample of a row's output (nested lists for tuple outputs)."""
    if not shape:
        return 0
    if isinstance(shape[0], list):
        return sum(_numel(s) for s in shape)
    return math.prod(shape[1:])


class _Recorder:
    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.rows: List[Tuple[str, Any, int]] = []   # (type name, shape or _FUSED, params), call order
        self.fired = set()                           # ids of modules that ran or got a row

    def row(self, module: torch.nn.Module, shape) -> Tuple[str, Any, int]:
        self.fired.add(id(module))
        return type(module).__name__, shape, sum(p.numel() for p in module.parameters())

    def pre_hook(self, module, args) -> None:
        self.fired.add(id(module))

    def hook(self, module, args, output) -> None:
        children = list(module.children())
        if not children:
            self.rows.append(self.row(module, _shape(output, self.batch_size)))
            return
        # Children with parameters that never ran: they were fused into module's own kernels.
        for child in children:
            if not any(id(m) in self.fired for m in child.modules()) and any(True for _ in child.parameters()):
                self.rows.append(self.row(child, _FUSED))


def _format(rows, model, shapes, batch_size, dtype) -> str:
    lines = [_RULE, _WIDTHS.format("Layer (type)", "Output Shape", "Param #"), _DOUBLE_RULE]
    for i, (name, shape, params) in enumerate(rows):
        lines.append(_WIDTHS.format(f"{name}-{i + 1}", str(shape), f"{params:,}"))
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    item = torch.empty((), dtype=dtype).element_size()
    batch = abs(batch_size)
    input_mb = sum(math.prod(s) for s in shapes) * batch * item / _MB
    # As torchsummary: every row's output twice (the activation and its gradient).
    pass_mb = 2.0 * sum(_numel(s) for _, s, _ in rows if s != _FUSED) * batch * item / _MB
    params_mb = sum(p.numel() * p.element_size() for p in params) / _MB
    lines += [_DOUBLE_RULE,
              f"Total params: {total:,}",
              f"Trainable params: {trainable:,}",
              f"Non-trainable params: {total - trainable:,}",
              _RULE,
              f"Input size (MB): {input_mb:0.2f}",
              f"Forward/backward pass size (MB): {pass_mb:0.2f}",
              f"Params size (MB): {params_mb:0.2f}",
              f"Estimated Total Size (MB): {input_mb + pass_mb + params_mb:0.2f}",
              _RULE]
    return "\n".join(lines) + "\n"


def summary(model: torch.nn.Module, input_size: Union[Sequence[int], Sequence[Sequence[int]]], batch_size: int = -1,
            device: Optional[Union[str, torch.device]] = None, dtype: torch.dtype = torch.float32,
            file=_STDOUT) -> str:
    """Print and return torchsummary's table of model for inputs of ``(N, *input_size)``.

    input_size: ``(C, H, W)`` (any per-sample shape), or a list of them for a model called
    as ``model(x1, x2, ...)``. batch_size: the batch shown in the shapes and used for the
    sizes (-1: shown as -1, sizes for one sample). device: of the probe input (default: the
    model's first parameter's, else CPU). dtype: of the probe input. file: where to print
    (default sys.stdout; None: print nothing).

    One forward runs in eval mode on zeros of ``(2, *input_size)`` (see the module docstring
    for how fused layers are seen); the training flags are restored and the hooks removed,
    even when the forward fails (a RuntimeError naming the input shapes).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"summary: model must be a torch.nn.Module, got {type(model).__name__}")
    shapes = _input_shapes(input_size)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or (batch_size <= 0 and batch_size != -1):
        raise ValueError(f"summary: batch_size must be -1 or a positive int, got {batch_size!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"summary: dtype must be a floating-point torch.dtype, got {dtype!r}")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    if file is _STDOUT:
        file = sys.stdout

    recorder = _Recorder(batch_size)
    handles = []
    try:
        for m in model.modules():
            # The model itself gets no row (unless it is a single layer), nor do plain containers.
            if (m is model and any(True for _ in m.children())) or (
                    isinstance(m, _CONTAINERS) and type(m).forward in _CONTAINER_FORWARDS):
                continue
            handles.append(m.register_forward_pre_hook(recorder.pre_hook))
            handles.append(m.register_forward_hook(recorder.hook))
        # A non-leaf input that records autograd: fused paths then call their layers as
        # modules, and a model's in-place op on its input stays legal.
        inputs = [torch.zeros((2,) + s, device=device, dtype=dtype, requires_grad=True).clone() for s in shapes]
        with eval_mode(model), torch.enable_grad():
            try:
                model(*inputs)
            except Exception as e:
                raise RuntimeError(f"summary: the forward pass of {type(model).__name__} on zeros of shape(s) "
                                   f"{[list(x.shape) for x in inputs]} failed: {type(e).__name__}: {e}") from e
    finally:
        for h in handles:
            h.remove()
    text = _format(recorder.rows, model, shapes, batch_size, dtype)
    if file is not None:
        print(text, end="", file=file)
    return text
