"""Fused blocks: Conv2d + BatchNorm2d (+ ReLU), the ResNet bottleneck, and the horizontal
fusion of an Inception module's 1x1 convolutions.

In eval mode with no gradient to record, BatchNorm is folded into the convolution (weight *
gamma / sqrt(var + eps), bias shifted to match), cached and refreshed whenever a parameter or
running statistic changes (the key: each tensor's storage and version counter, BatchNorm's
num_batches_tracked, and a count of torch.optim steps; writes through ``.data`` are not seen),
and
ReLU and the residual add run in the convolution's output tile: one pass over the output
instead of three or four. In training, BatchNorm is torch's (exact batch statistics, running
averages with momentum / cumulative averaging), on the output of our convolution. A conv or
BatchNorm with hooks (forward hooks, pruning or weight-norm pre-hooks) runs as a module.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.nn.modules import module as _torch_module
from torch.optim.optimizer import register_optimizer_step_post_hook

from .. import ops
from .conv import Conv2d


def _foldable(bn) -> bool:
    """BatchNorm that uses running statistics (eval mode, tracked): a per-channel affine map."""
    return (type(bn) is torch.nn.BatchNorm2d and not bn.training and bn.track_running_stats
            and bn.running_mean is not None)


def fold_conv_bn(conv: torch.nn.Conv2d, bn: Optional[torch.nn.BatchNorm2d]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of ``bn(conv(x))`` as one convolution, bn in eval mode. Differentiable
    in the parameters. weight ``(OC, C / groups, kH, kW)``, bias ``(OC,)``."""
    w = conv.weight
    b = conv.bias if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    if bn is None:
        return w, b
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = bn.weight * scale
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return w * scale.reshape(-1, 1, 1, 1), b * scale + shift


def _version_key(tensors) -> tuple:
    return tuple(None if t is None else (t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape))
                 for t in tensors)


def _fold_tensors(conv, bn) -> list:
    out = [conv.weight, conv.bias]
    if bn is not None:
        # A training-mode forward updates the running statistics without bumping their
        # version counters; num_batches_tracked is bumped (an in-place add) on every update.
        out += [bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.num_batches_tracked]
    return out


#: Bumped after every optimiser step (of any torch.optim optimiser): fused optimisers update
#: parameters without bumping their version counters, so a step invalidates every fold.
_step_generation = [0]


def _on_optimizer_step(optimizer, args, kwargs):
    _step_generation[0] += 1


register_optimizer_step_post_hook(_on_optimizer_step)


class _FoldCache:
    """The folded (weight, bias) of one or more conv/bn pairs, recomputed when any input
    tensor changed: in-place updates and load_state_dict bump version counters, .to() /
    deepcopy change storages, BatchNorm updates bump num_batches_tracked, and any torch.optim
    step invalidates every fold. Not seen: writes through ``.data`` (a separate version
    counter); call ``invalidate()`` after those. Never used while compiling (the graph folds
    instead)."""

    def __init__(self):
        self.key = None
        self.value = None

    def get(self, pairs, fold):
        if torch.compiler.is_compiling():
            return fold()
        key = _version_key([t for conv, bn in pairs for t in _fold_tensors(conv, bn)]) + tuple(
            None if bn is None else bn.eps for _, bn in pairs) + (_step_generation[0],)
        if key != self.key:
            with torch.no_grad():
                self.value = fold()
            self.key = key
        return self.value

    def invalidate(self) -> None:
        self.key = None
        self.value = None

    def __getstate__(self):  # a pickled / copied module refolds on first use
        return {"key": None, "value": None}


def _records_grad(tensors, modules) -> bool:
    """Whether autograd would record a call on these tensors (None allowed) and modules."""
    if not torch.is_grad_enabled():
        return False
    if any(t is not None and t.requires_grad for t in tensors):
        return True
    return any(p.requires_grad for m in modules if m is not None for p in m.parameters())


def _conv_input(conv, input):
    """(input, padding) with a non-zero padding mode applied first, as torch.nn.Conv2d does."""
    if conv.padding_mode != "zeros":
        return F.pad(input, conv._reversed_padding_repeated_twice, mode=conv.padding_mode), 0
    return input, conv.padding


def _check_4d(name, input):
    if not isinstance(input, torch.Tensor) or input.dim() != 4:
        got = f"{input.dim()}-D" if isinstance(input, torch.Tensor) else type(input).__name__
        raise ValueError(f"{name}: input must be 4-D (N, C, H, W), got {got}")


def conv_bn_act(input: torch.Tensor, conv: torch.nn.Conv2d, bn, relu: bool, cache: Optional[_FoldCache],
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``act(bn(conv(input)) + residual)`` with the fastest path the modes allow (see the
    module docstring). bn may be None (conv only)."""
    return _conv_bn_act(input, conv, bn, relu, cache, residual)


def _has_hooks(m) -> bool:
    """Hooks (forward hooks, pruning / weight-norm pre-hooks) must see the module run."""
    return m is not None and bool(m._forward_hooks or m._forward_pre_hooks or _torch_module._global_forward_hooks
                                  or _torch_module._global_forward_pre_hooks)


def batch_stats(bn, y: torch.Tensor) -> bool:
    """A plain BatchNorm2d that normalises y with the batch's statistics (training, or no
    running statistics) on a device with a ``batch_norm_act`` kernel: ``bn_act`` runs it."""
    return (type(bn) is torch.nn.BatchNorm2d and (bn.training or (bn.running_mean is None and bn.running_var is None))
            and y.dim() == 4 and not _has_hooks(bn) and _bn_act_on(y.device))


def _bn_act_on(device: torch.device) -> bool:
    return device.type == "cpu" or torch._C._dispatch_has_kernel_for_dispatch_key(
        "fastconv::batch_norm_act", torch._C._dispatch_key_for_device(device.type))


def bn_act(y: torch.Tensor, bn: torch.nn.BatchNorm2d, residual: Optional[torch.Tensor] = None,
           relu: bool = True) -> torch.Tensor:
    """``act(bn(y) + residual)`` for a BatchNorm2d on batch statistics (``batch_stats``) as one
    op, two passes each way instead of torch's five forward and seven backward; the running
    statistics and ``num_batches_tracked`` are updated as ``bn(y)`` would. y / residual
    ``(N, C, H, W)``."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    track = bn.training and bn.track_running_stats
    return ops.batch_norm_act(y, bn.running_mean if track else None, bn.running_var if track else None, bn.weight,
                              bn.bias, residual, relu, factor, bn.eps)


def norm_relu(bn: torch.nn.Module, relu: Optional[torch.nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``relu(bn(x))`` (DenseNet's pre-activation order; relu None: ``bn(x)``), as one op when bn
    normalises with batch statistics and relu is a plain ``torch.nn.ReLU``; else the modules."""
    plain_relu = relu is None or (type(relu) is torch.nn.ReLU and not _has_hooks(relu))
    if plain_relu and batch_stats(bn, x):
        return bn_act(x, bn, None, relu is not None)
    x = bn(x)
    return relu(x) if relu is not None else x


def _conv_bn_act(input, conv, bn, relu, cache, residual):
    if _has_hooks(conv) or _has_hooks(bn):
        y = conv(input)
        y = bn(y) if bn is not None else y
        y = y + residual if residual is not None else y
        return torch.relu(y) if relu else y
    x, padding = _conv_input(conv, input)
    if bn is None or _foldable(bn):
        if cache is not None and not _records_grad((input, residual), (conv, bn)):
            w, b = cache.get([(conv, bn)], lambda: fold_conv_bn(conv, bn))
            return ops.conv2d_fused(x, w, b, residual=residual, relu=relu, stride=conv.stride,
                                    padding=padding, dilation=conv.dilation, groups=conv.groups)
        w, b = fold_conv_bn(conv, bn)
        y = ops.conv2d(x, w, b, conv.stride, padding, conv.dilation, conv.groups)
    else:
        y = ops.conv2d(x, conv.weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups)
        if batch_stats(bn, y):
            return bn_act(y, bn, residual, relu)
        y = bn(y)
    if residual is not None:
        y = y + residual
    return torch.relu(y) if relu else y


class ConvBNReLU(torch.nn.Module):
    """``relu(bn(conv(x)))`` as one module (``relu=False`` drops the ReLU).

    input ``(N, in_channels, H, W)``; output ``(N, out_channels, OH, OW)``. The arguments are
    ``torch.nn.Conv2d``'s (``bias`` defaults to False, as before a BatchNorm) plus
    ``torch.nn.BatchNorm2d``'s ``eps``, ``momentum``, ``affine``, ``track_running_stats``.

    state_dict keys are those of an unfused pair held as ``conv`` and ``bn`` (torchvision's
    ``BasicConv2d``, for one): ``conv.weight`` (``conv.bias``), ``bn.weight``, ``bn.bias``,
    ``bn.running_mean``, ``bn.running_var``, ``bn.num_batches_tracked``; such a state_dict loads
    with ``strict=True``, and ``ConvBNReLU.from_modules(conv, bn)`` wraps existing modules
    (sharing their parameters). Eval with no gradient to record: BatchNorm folded into the
    weights (cached), ReLU in the conv epilogue; any kernel size, 1x1 the fastest. Eval with
    gradients: the same folding, recorded by autograd. Train: our conv, then BatchNorm on the
    batch statistics and the ReLU as one op (``fastconv.ops.batch_norm_act``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=1, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = False, padding_mode: str = "zeros", eps: float = 1e-5,
                 momentum: Optional[float] = 0.1, affine: bool = True, track_running_stats: bool = True,
                 relu: bool = True, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.conv = Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                           padding_mode, **kw)
        self.bn = torch.nn.BatchNorm2d(out_channels, eps, momentum, affine, track_running_stats, **kw)
        self.relu = bool(relu)
        self._fold = _FoldCache()

    @classmethod
    def from_modules(cls, conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d, relu: bool = True) -> "ConvBNReLU":
        """Wrap an existing conv / bn pair (parameters and buffers shared, not copied)."""
        if not isinstance(conv, torch.nn.Conv2d):
            raise TypeError(f"ConvBNReLU.from_modules: conv must be a torch.nn.Conv2d, got {type(conv).__name__}")
        if not isinstance(bn, torch.nn.BatchNorm2d):
            raise TypeError(f"ConvBNReLU.from_modules: bn must be a torch.nn.BatchNorm2d, got {type(bn).__name__}")
        if bn.num_features != conv.out_channels:
            raise ValueError(f"ConvBNReLU.from_modules: bn.num_features ({bn.num_features}) must equal "
                             f"conv.out_channels ({conv.out_channels})")
        self = cls.__new__(cls)
        torch.nn.Module.__init__(self)
        self.conv = Conv2d.from_conv(conv)
        self.bn = bn
        self.relu = bool(relu)
        self._fold = _FoldCache()
        self.train(conv.training)
        return self

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        _check_4d("ConvBNReLU", input)
        return conv_bn_act(input, self.conv, self.bn, self.relu, self._fold)

    def folded(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The cached (weight, bias) with BatchNorm folded in (eval statistics)."""
        return self._fold.get([(self.conv, self.bn)], lambda: fold_conv_bn(self.conv, self.bn))

    def extra_repr(self) -> str:
        return f"relu={self.relu}"


def shortcut(downsample: Optional[torch.nn.Module], x: torch.Tensor, cache: _FoldCache) -> torch.Tensor:
    """A residual block's identity branch: x, or ``downsample(x)`` (a conv + BatchNorm
    projection runs folded)."""
    d = downsample
    if d is None:
        return x
    if (isinstance(d, torch.nn.Sequential) and len(d) == 2 and isinstance(d[0], torch.nn.Conv2d)
            and isinstance(d[1], torch.nn.BatchNorm2d)):
        return conv_bn_act(x, d[0], d[1], False, cache)
    return d(x)


def _conv1x1(cin, cout, stride=1):
    return Conv2d(cin, cout, 1, stride=stride, bias=False)


class Bottleneck(torch.nn.Module):
    """The ResNet-50/101/152 block (torchvision's ``Bottleneck``, "v1.5": the stride on the
    3x3): ``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))``.

    input ``(N, inplanes, H, W)``; output ``(N, planes * 4, H / stride, W / stride)``. Same
    constructor and attribute names as torchvision (``conv1``, ``bn1``, ``conv2``, ``bn2``,
    ``conv3``, ``bn3``, ``relu``, ``downsample``, ``stride``), so its state_dict keys match;
    when the shape changes and no ``downsample`` is given, the projection shortcut
    (``downsample.0`` a 1x1 conv with the stride, ``downsample.1`` a BatchNorm) is built.
    Eval: every conv with its BatchNorm folded, ReLU in the epilogues, and the residual add +
    ReLU in conv3's epilogue. Train: our convolutions, each followed by one op for its BatchNorm
    (batch statistics), the residual add (conv3) and the ReLU (``fastconv.ops.batch_norm_act``).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[torch.nn.Module] = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1, norm_layer=None):
        super().__init__()
        norm_layer = norm_layer or torch.nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = Conv2d(width, width, 3, stride=stride, padding=dilation, groups=groups, bias=False,
                            dilation=dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = torch.nn.ReLU(inplace=True)
        if downsample is None and (stride != 1 or inplanes != planes * self.expansion):
            downsample = torch.nn.Sequential(_conv1x1(inplanes, planes * self.expansion, stride),
                                             norm_layer(planes * self.expansion))
        self.downsample = downsample
        self.stride = stride
        self._folds = [_FoldCache() for _ in range(4)]

    def _shortcut(self, x):
        return shortcut(self.downsample, x, self._folds[3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_4d("Bottleneck", x)
        out = conv_bn_act(x, self.conv1, self.bn1, True, self._folds[0])
        out = conv_bn_act(out, self.conv2, self.bn2, True, self._folds[1])
        return conv_bn_act(out, self.conv3, self.bn3, True, self._folds[2], residual=self._shortcut(x))


class Conv1x1Group:
    """Horizontal fusion: 1x1 ``ConvBNReLU`` branches that read the same input (an Inception
    module's 1x1 branch and its 3x3 / 5x5 reductions) run as one GEMM with the folded weights
    concatenated along the output channels, then split.

    ``Conv1x1Group([b1, b2, b3])(x)`` returns ``(b1(x), b2(x), b3(x))``; x ``(N, C, H, W)``,
    each output ``(N, OC_i, H, W)`` (channel slices of one tensor in eval). It holds references,
    not submodules: the branches stay registered (and keep their state_dict keys) where they
    are. All branches must be 1x1, stride 1, no padding, one group, the same in_channels and
    the same ``relu``. In training, or when gradients are recorded, each branch runs alone.
    """

    def __init__(self, branches: Sequence[ConvBNReLU]):
        branches = list(branches)
        if not branches:
            raise ValueError("Conv1x1Group: branches must not be empty")
        for i, b in enumerate(branches):
            if not isinstance(b, ConvBNReLU):
                raise TypeError(f"Conv1x1Group: branches[{i}] must be a ConvBNReLU, got {type(b).__name__}")
            c = b.conv
            if (c.kernel_size != (1, 1) or c.stride != (1, 1) or c.padding not in ((0, 0), "valid")
                    or c.groups != 1 or c.padding_mode != "zeros"):
                raise ValueError(f"Conv1x1Group: branches[{i}] must be a 1x1 conv with stride 1, no padding, "
                                 f"groups 1; got {c}")
            if c.in_channels != branches[0].conv.in_channels or b.relu != branches[0].relu:
                raise ValueError(f"Conv1x1Group: branches[{i}] must have the in_channels and relu of branches[0]")
        self.branches = branches
        self._fold = _FoldCache()

    def _fold_all(self):
        ws, bs = zip(*(fold_conv_bn(b.conv, b.bn) for b in self.branches))
        return torch.cat(ws, 0), torch.cat(bs, 0)

    def __call__(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        _check_4d("Conv1x1Group", x)
        branches = self.branches
        if any(b.training or not _foldable(b.bn) for b in branches) or _records_grad((x,), branches):
            return tuple(b(x) for b in branches)
        w, bias = self._fold.get([(b.conv, b.bn) for b in branches], self._fold_all)
        y = ops.conv2d_fused(x, w, bias, relu=branches[0].relu)
        return tuple(torch.split(y, [b.conv.out_channels for b in branches], dim=1))
