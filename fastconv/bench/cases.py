"""Declarative benchmark case table.

Every benchmark is a :class:`Case`: a name, an op family, the input shape, the
memory layout, the direction (``fwd``, ``fwd+bwd`` or ``bwd``), factories that return
the callable for *ours* (fastconv) and for *torch*, an input factory, and the
bytes moved and FLOPs used to turn a time into GB/s or GFLOP/s.

The harness knows nothing about pooling: adding a new op family (conv2d, LRN,
squeeze-excitation, whole models) means appending ``Case`` objects to
:data:`CASES`, usually through a small expansion helper like
:func:`pool_cases`. A factory may return any callable taking the inputs
positionally, including an ``nn.Module``; for ``fwd+bwd`` the harness
resets the grads of all floating-point inputs and of the module's parameters.

Accounting conventions (also printed in ``benchmarks/README.md``):

* bytes, ``fwd``: every input read once + output written once. This is the
  minimum traffic any implementation needs; caches may beat it for small
  tensors, so "% of limit" above 100 is possible for cache-resident shapes.
* bytes, ``fwd+bwd``: forward bytes + grad_output read + grad_input written
  (for pooling: ``2 * (in + out)`` elements). Max-pool index tensors and the
  zero-fill of grad_input are implementation choices and are not counted.
* FLOPs for pooling: one op per window element, i.e. ``k*k`` per output for
  max and average pooling (compares and adds alike; the final divide of avg
  pooling is not counted), ``H*W`` per output for global average pooling.
  Backward counts the same again (one scatter/accumulate per window element).
  Pooling is memory-bound, so GB/s is its primary metric.
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

LAYOUTS = ("nchw", "channels_last")
DIRECTIONS = ("fwd", "fwd+bwd")
#: ``bwd`` (backward alone, the forward graph built once outside the timing) is opt-in per case;
#: ``step`` is a whole training step (forward, loss, backward, optimiser) done by the callable.
VALID_DIRECTIONS = DIRECTIONS + ("bwd", "step")
METRICS = ("GB/s", "GFLOP/s")

# A factory returns the callable to benchmark; it is called lazily (at run
# time) so this table can be imported before the extension is built.
OpFactory = Callable[[], Callable[..., Any]]


@dataclass(frozen=True)
class Case:
    """One benchmark: a single op configuration in one layout and direction.

    Attributes:
        name: unique id, ``"<base>/<layout>/<direction>"``; ``--filter``
            matches against it.
        base: configuration name shared by the layout/direction variants,
            e.g. ``"alexnet_max3x3s2"``.
        family: op family used for grouping (``"pool"``, later ``"conv"``...).
        op: the public op name, e.g. ``"max_pool2d"``.
        params: human-readable parameters, e.g. ``"k3 s2 p0"``.
        shape: logical NCHW shape of the primary input.
        layout: ``"nchw"`` or ``"channels_last"``.
        direction: ``"fwd"`` or ``"fwd+bwd"``.
        make_inputs: returns a fresh tuple of input tensors in ``layout``.
        make_ours: factory returning fastconv's callable.
        make_torch: factory returning the reference torch callable.
        nbytes: bytes moved per call (see module docstring).
        flops: floating-point ops per call (see module docstring).
        metric: primary throughput metric, ``"GB/s"`` or ``"GFLOP/s"``.
        tolerance: ``(rtol, atol)`` for the ours-vs-torch sanity check.
    """

    name: str
    base: str
    family: str
    op: str
    params: str
    shape: Tuple[int, ...]
    layout: str
    direction: str
    make_inputs: Callable[[], Tuple[torch.Tensor, ...]] = field(repr=False, compare=False)
    make_ours: OpFactory = field(repr=False, compare=False)
    make_torch: OpFactory = field(repr=False, compare=False)
    nbytes: int = 0
    flops: int = 0
    metric: str = "GB/s"
    tolerance: Tuple[float, float] = (1e-4, 1e-5)
    #: ``fwd+bwd``: whether the input needs a gradient (a network's first layer does not).
    input_grad: bool = True
    #: If set, the sanity check compares each output by relative L2 error (``|a - b| / |b|``)
    #: instead of elementwise: for a training step through BatchNorm and ReLUs, where one
    #: activation rounding across zero flips a gradient element and the batch-norm backward
    #: spreads it, amplified by 1 / sigma, over the channel.
    rel_l2: float = 0.0

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"{self.name}: layout must be one of {LAYOUTS}")
        if self.direction not in VALID_DIRECTIONS:
            raise ValueError(f"{self.name}: direction must be one of {VALID_DIRECTIONS}")
        if self.metric not in METRICS:
            raise ValueError(f"{self.name}: metric must be one of {METRICS}")
        if self.nbytes <= 0:
            raise ValueError(f"{self.name}: nbytes must be positive")

    @property
    def group(self) -> str:
        """Group used for geomean summaries, e.g. ``"pool nchw fwd"``."""
        return f"{self.family} {self.layout} {self.direction}"

    @property
    def intensity(self) -> float:
        """Arithmetic intensity in FLOP/byte."""
        return self.flops / self.nbytes


# ---------------------------------------------------------------------------
# Helpers shared by families
# ---------------------------------------------------------------------------

def ours(op_name: str, **kwargs: Any) -> OpFactory:
    """Factory resolving ``fastconv.<op_name>`` lazily, bound to ``kwargs``.

    Resolution is deferred so that listing cases, ``--load`` and the unit
    tests work without a built extension; a missing op raises a clear error
    when the case actually runs.
    """

    def factory() -> Callable[..., Any]:
        try:
            mod = importlib.import_module("fastconv")
            fn = getattr(mod, op_name)
        except (ImportError, AttributeError) as exc:
            raise RuntimeError(
                f"fastconv.{op_name} is not available ({exc}); "
                "build the extension first (pip install -e .)"
            ) from exc
        return functools.partial(fn, **kwargs) if kwargs else fn

    return factory


def reference(fn: Callable[..., Any], **kwargs: Any) -> OpFactory:
    """Factory for a torch reference callable bound to ``kwargs``."""
    return lambda: functools.partial(fn, **kwargs) if kwargs else fn


def random_input(shape: Sequence[int], layout: str, dtype: torch.dtype = torch.float32,
                 seed: int = 0) -> Callable[[], Tuple[torch.Tensor, ...]]:
    """Input factory: one seeded standard-normal tensor in ``layout``."""

    def make() -> Tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(tuple(shape), generator=gen, dtype=dtype)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        return (x,)

    return make


def meta_output_shape(fn: Callable[..., torch.Tensor], shape: Sequence[int]) -> Tuple[int, ...]:
    """Output shape of ``fn`` on ``shape`` computed on the meta device (free)."""
    return tuple(fn(torch.empty(tuple(shape), device="meta")).shape)


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _fmt_params(kernel: int, stride: int, padding: int) -> str:
    return f"k{kernel} s{stride} p{padding}"


# ---------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------

def pool_cases(base: str, op: str, shape: Tuple[int, int, int, int], *,
               kwargs: Dict[str, Any], window: int, params: str,
               torch_fn: Callable[..., torch.Tensor],
               layouts: Sequence[str] = LAYOUTS,
               directions: Sequence[str] = DIRECTIONS,
               dtype: torch.dtype = torch.float32, family: str = "pool") -> List[Case]:
    """Expand one pooling configuration into its layout x direction cases.

    Args:
        base: configuration name, e.g. ``"alexnet_max3x3s2"``.
        op: fastconv op name (``max_pool2d``, ``avg_pool2d``,
            ``global_avg_pool2d``...).
        shape: NCHW input shape.
        kwargs: keyword arguments passed to both sides.
        window: elements per pooling window (FLOPs per output element).
        params: human-readable parameter string for tables.
        torch_fn: torch reference function (called with the same ``kwargs``).
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    out_shape = meta_output_shape(functools.partial(torch_fn, **kwargs), shape)
    n_in, n_out = _numel(shape), _numel(out_shape)
    fwd_flops = n_out * window
    cases = []
    for layout in layouts:
        for direction in directions:
            if direction == "fwd":
                nbytes = (n_in + n_out) * itemsize
                flops = fwd_flops
            elif direction == "bwd":
                # grad_output read + grad_input written.
                nbytes = (n_in + n_out) * itemsize
                flops = fwd_flops
            else:
                # + grad_output read + grad_input written.
                nbytes = 2 * (n_in + n_out) * itemsize
                flops = 2 * fwd_flops
            cases.append(Case(
                name=f"{base}/{layout}/{direction}", base=base, family=family,
                op=op, params=params, shape=tuple(shape), layout=layout,
                direction=direction,
                make_inputs=random_input(shape, layout, dtype),
                make_ours=ours(op, **kwargs),
                make_torch=reference(torch_fn, **kwargs),
                nbytes=nbytes, flops=flops, metric="GB/s",
            ))
    return cases


def _max(base: str, shape: Tuple[int, int, int, int], k: int, s: int, p: int = 0) -> List[Case]:
    return pool_cases(base, "max_pool2d", shape,
                      kwargs=dict(kernel_size=k, stride=s, padding=p),
                      window=k * k, params=_fmt_params(k, s, p), torch_fn=F.max_pool2d)


def _avg(base: str, shape: Tuple[int, int, int, int], k: int, s: int, p: int = 0) -> List[Case]:
    return pool_cases(base, "avg_pool2d", shape,
                      kwargs=dict(kernel_size=k, stride=s, padding=p),
                      window=k * k, params=_fmt_params(k, s, p), torch_fn=F.avg_pool2d)


def _global_avg(base: str, shape: Tuple[int, int, int, int]) -> List[Case]:
    # fastconv.global_avg_pool2d(x) takes no extra arguments; torch's
    # equivalent is adaptive_avg_pool2d(x, 1).
    return pool_cases(base, "global_avg_pool2d", shape, kwargs={},
                      window=shape[2] * shape[3], params=f"global {shape[2]}x{shape[3]}",
                      torch_fn=functools.partial(F.adaptive_avg_pool2d, output_size=1),
                      directions=DIRECTIONS + ("bwd",))


POOL_CASES: List[Case] = [
    *_max("alexnet_max3x3s2", (32, 96, 55, 55), k=3, s=2),
    *_max("vgg_max2x2s2", (8, 64, 224, 224), k=2, s=2),
    *_max("resnet_max3x3s2p1", (8, 64, 112, 112), k=3, s=2, p=1),
    *_max("googlenet_max3x3s1p1", (8, 192, 28, 28), k=3, s=1, p=1),
    *_avg("googlenet_avg3x3s1p1", (8, 192, 28, 28), k=3, s=1, p=1),
    *_global_avg("resnet50_global_avg7x7", (8, 2048, 7, 7)),
]

def _lrn(base: str, shape: Tuple[int, int, int, int], size: int, alpha: float, beta: float,
         k: float) -> List[Case]:
    # FLOPs per element: the window's squares and adds, the scale, the power and the divide
    # (counted as 2 * size + 6); LRN is memory-bound, GB/s is its metric.
    return pool_cases(base, "local_response_norm", shape,
                      kwargs=dict(size=size, alpha=alpha, beta=beta, k=k),
                      window=2 * size + 6, params=f"size {size} b {beta} k {k:g}",
                      torch_fn=F.local_response_norm, family="lrn")


LRN_CASES: List[Case] = [
    *_lrn("alexnet_lrn1", (32, 96, 55, 55), size=5, alpha=1e-4, beta=0.75, k=2.0),
    *_lrn("alexnet_lrn2", (32, 256, 27, 27), size=5, alpha=1e-4, beta=0.75, k=2.0),
]

# ---------------------------------------------------------------------------
# conv2d
# ---------------------------------------------------------------------------

def _conv_module(cls_path: str, seed: int, **kwargs: Any) -> OpFactory:
    """Factory for a conv module; the same seed gives both sides the same weights."""

    def factory() -> Callable[..., Any]:
        module_name, cls_name = cls_path.rsplit(".", 1)
        cls = getattr(importlib.import_module(module_name), cls_name)
        torch.manual_seed(seed)
        return cls(**kwargs)

    return factory


def conv_cases(base: str, n: int, cin: int, size: int, cout: int, k: int, stride: int = 1,
               padding: int = 0, groups: int = 1, first_layer: bool = False,
               layouts: Sequence[str] = LAYOUTS, directions: Sequence[str] = DIRECTIONS) -> List[Case]:
    """Expand one convolution layer (square input ``size``, square kernel ``k``) into its
    layout x direction cases, ours ``fastconv.nn.Conv2d`` against ``torch.nn.Conv2d``.

    FLOPs: ``2 * N * OC * C/groups * k * k * OH * OW`` forward; a training step adds the
    weight gradient (the same again) and, unless ``first_layer``, the input gradient.
    Bytes (forward): input + weight + output, each once.
    """
    kwargs = dict(in_channels=cin, out_channels=cout, kernel_size=k, stride=stride, padding=padding,
                  groups=groups)
    out = (size + 2 * padding - k) // stride + 1
    shape = (n, cin, size, size)
    fwd_flops = 2 * n * cout * (cin // groups) * k * k * out * out
    n_in, n_out, n_w = _numel(shape), n * cout * out * out, cout * (cin // groups) * k * k
    cases = []
    for layout in layouts:
        for direction in directions:
            if direction == "fwd":
                flops, nbytes = fwd_flops, 4 * (n_in + n_out + n_w)
            else:
                flops = fwd_flops * (2 if first_layer else 3)
                nbytes = 4 * (2 * n_in + 2 * n_out + 2 * n_w)
            cases.append(Case(
                name=f"{base}/{layout}/{direction}", base=base, family="conv", op="conv2d",
                params=f"{cin}->{cout} k{k} s{stride} p{padding}" + (f" g{groups}" if groups > 1 else ""),
                shape=shape, layout=layout, direction=direction,
                make_inputs=random_input(shape, layout),
                make_ours=_conv_module("fastconv.nn.Conv2d", 0, **kwargs),
                make_torch=_conv_module("torch.nn.Conv2d", 0, **kwargs),
                nbytes=nbytes, flops=flops, metric="GFLOP/s",
                # float32 sums over up to 4608 products in a different order than oneDNN's
                tolerance=(1e-3, 1e-3), input_grad=not first_layer,
            ))
    return cases


CONV_CASES: List[Case] = [
    *conv_cases("alexnet_conv1", 8, 3, 224, 64, 11, stride=4, padding=2, first_layer=True),
    *conv_cases("alexnet_conv2", 8, 64, 27, 192, 5, padding=2),
    *conv_cases("vgg16_conv1_2", 1, 64, 224, 64, 3, padding=1),
    *conv_cases("vgg16_conv3_2", 8, 256, 56, 256, 3, padding=1),
    *conv_cases("vgg16_conv5", 8, 512, 14, 512, 3, padding=1),
    *conv_cases("inception3a_1x1", 8, 192, 28, 64, 1),
    *conv_cases("inception3a_3x3", 8, 96, 28, 128, 3, padding=1),
    *conv_cases("inception3a_5x5", 8, 16, 28, 32, 5, padding=2),
    *conv_cases("resnet50_stem", 8, 3, 224, 64, 7, stride=2, padding=3, first_layer=True),
    *conv_cases("resnet50_layer1_1x1_reduce", 8, 256, 56, 64, 1),
    *conv_cases("resnet50_layer1_1x1_expand", 8, 64, 56, 256, 1),
    *conv_cases("resnet50_layer1_3x3", 8, 64, 56, 64, 3, padding=1),
    *conv_cases("resnet50_layer3_3x3", 8, 256, 14, 256, 3, padding=1),
    *conv_cases("resnet50_layer4_1x1", 8, 2048, 7, 512, 1),
    *conv_cases("densenet121_3x3", 8, 128, 56, 32, 3, padding=1),
    *conv_cases("lenet5_conv1", 64, 1, 28, 6, 5, first_layer=True),
]

# ---------------------------------------------------------------------------
# Squeeze-and-Excitation and the fused conv blocks (issue 4)
# ---------------------------------------------------------------------------

def _block_module(cls_path: str, seed: int, train: bool, *args: Any, **kwargs: Any) -> OpFactory:
    """Factory for a block module in train or eval mode; the same seed gives both sides the
    same weights (the twins create their parameters in the same order)."""

    def factory() -> Callable[..., Any]:
        module_name, cls_name = cls_path.rsplit(".", 1)
        cls = getattr(importlib.import_module(module_name), cls_name)
        torch.manual_seed(seed)
        return cls(*args, **kwargs).train(train)

    return factory


def block_cases(base: str, family: str, op: str, params: str, shape: Tuple[int, int, int, int], ours_cls: str,
                torch_cls: str, args: Tuple[Any, ...], *, flops: int, nbytes: int, metric: str,
                directions: Sequence[str] = DIRECTIONS, layouts: Sequence[str] = LAYOUTS,
                kwargs: Optional[Dict[str, Any]] = None, train_forward: bool = False) -> List[Case]:
    """One block configuration in every layout and direction: ``fwd`` is the module in eval
    mode (inference; in train mode with ``train_forward``), ``fwd+bwd`` one training step in
    train mode (batch statistics). ``flops`` / ``nbytes`` are the forward's; a training step
    counts 3x / 2x."""
    kwargs = kwargs or {}
    cases = []
    for layout in layouts:
        for direction in directions:
            step = direction != "fwd"
            train = train_forward or step
            cases.append(Case(
                name=f"{base}/{layout}/{direction}", base=base, family=family, op=op, params=params,
                shape=tuple(shape), layout=layout, direction=direction,
                make_inputs=random_input(shape, layout),
                make_ours=_block_module(ours_cls, 0, train, *args, **kwargs),
                make_torch=_block_module(torch_cls, 0, train, *args, **kwargs),
                nbytes=nbytes * (2 if step else 1), flops=flops * (3 if step else 1), metric=metric,
                # Measured on bottleneck_layer3's training step: one ReLU flip left 0.17% of
                # grad_input off by more than 1e-2 (max 1.1) against float64, at a relative L2
                # error of ~1e-3; a wrong gradient is off by O(1).
                tolerance=(1e-3, 1e-3), rel_l2=1e-2 if train else 0.0))
    return cases


def _se(base: str, shape: Tuple[int, int, int, int], reduction: int = 16) -> List[Case]:
    # Minimum traffic: the map read once and the output written once (fwd); a training step
    # adds grad_output read and grad_input written. FLOPs: the squeeze's add and the scale's
    # multiply per element (the FC layers are negligible).
    n = _numel(shape)
    return block_cases(base, "se", "squeeze_excitation", f"r{reduction}", shape,
                       "fastconv.nn.SqueezeExcitation", "fastconv.bench.twins.TorchSqueezeExcitation",
                       (shape[1], reduction), flops=2 * n, nbytes=8 * n, metric="GB/s")


def _bn_act(base: str, shape: Tuple[int, int, int, int]) -> List[Case]:
    # relu(bn(x) + x) in train mode, forward and a training step: BatchNorm on the batch
    # statistics with the residual add and ReLU of a ResNet block. Minimum traffic: x read
    # twice (statistics, then normalising) and the output written (fwd).
    n = _numel(shape)
    return block_cases(base, "bn", "batch_norm_act", "train, + residual, relu", shape,
                       "fastconv.bench.twins.BatchNormAddReLU", "fastconv.bench.twins.TorchBatchNormAddReLU",
                       (shape[1],), flops=6 * n, nbytes=12 * n, metric="GB/s", train_forward=True)


def _conv_bn_relu(base: str, n: int, cin: int, size: int, cout: int) -> List[Case]:
    shape = (n, cin, size, size)
    return block_cases(base, "convbn", "ConvBNReLU", f"{cin}->{cout} k1 eval", shape,
                       "fastconv.nn.ConvBNReLU", "fastconv.bench.twins.TorchConvBNReLU", (cin, cout, 1),
                       flops=2 * n * size * size * cin * cout, nbytes=4 * (n * size * size * (cin + cout) + cin * cout),
                       metric="GFLOP/s", directions=("fwd",))


def _bottleneck(base: str, n: int, inplanes: int, planes: int, size: int) -> List[Case]:
    hw = n * size * size
    flops = 2 * hw * (inplanes * planes + 9 * planes * planes + planes * 4 * planes)
    weights = inplanes * planes + 9 * planes * planes + 4 * planes * planes
    return block_cases(base, "bottleneck", "Bottleneck", f"{inplanes}->{planes}->{4 * planes}", (n, inplanes, size, size),
                       "fastconv.nn.Bottleneck", "fastconv.bench.twins.TorchBottleneck", (inplanes, planes),
                       flops=flops, nbytes=4 * (hw * (inplanes + 4 * planes) + weights), metric="GFLOP/s")


def _inception_1x1(base: str, n: int, cin: int, size: int, couts: Tuple[int, ...]) -> List[Case]:
    hw = n * size * size
    return block_cases(base, "inception", "Conv1x1Group", f"{cin}->{'+'.join(map(str, couts))} k1 eval",
                       (n, cin, size, size), "fastconv.bench.twins.Inception1x1",
                       "fastconv.bench.twins.TorchInception1x1", (cin, couts),
                       flops=2 * hw * cin * sum(couts), nbytes=4 * (hw * (cin + sum(couts)) + cin * sum(couts)),
                       metric="GFLOP/s", directions=("fwd",))


FUSED_CASES: List[Case] = [
    *_se("se_layer1", (8, 256, 56, 56)),
    *_se("se_layer3", (8, 1024, 14, 14)),
    *_bn_act("bn_act_layer1", (8, 256, 56, 56)),
    *_bn_act("bn_act_layer3", (8, 1024, 14, 14)),
    *_conv_bn_relu("convbnrelu_256_64", 8, 256, 56, 64),
    *_conv_bn_relu("convbnrelu_1024_256", 8, 1024, 14, 256),
    *_bottleneck("bottleneck_layer1", 8, 256, 64, 56),
    *_bottleneck("bottleneck_layer3", 8, 1024, 256, 14),
    *_inception_1x1("inception3a_1x1_group", 8, 192, 28, (64, 96, 16)),
]

def _model_cases() -> List[Case]:
    from .model_cases import MODEL_CASES  # after Case and the helpers above exist

    return MODEL_CASES


#: The case table. Later families append here.
CASES: List[Case] = [
    *POOL_CASES,
    *LRN_CASES,
    *CONV_CASES,
    *FUSED_CASES,
    *_model_cases(),
]


def matches(name: str, pattern: Optional[str]) -> bool:
    """True if ``name`` contains ``pattern`` or matches it as a regex.

    Substring matching comes first so names with regex metacharacters such as
    ``fwd+bwd`` can be typed literally; an invalid regex is treated as a plain
    substring. An empty pattern matches everything.
    """
    if not pattern or pattern in name:
        return True
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return False


def select(cases: Sequence[Case], pattern: Optional[str]) -> List[Case]:
    """Cases whose name :func:`matches` ``pattern``, in table order."""
    return [c for c in cases if matches(c.name, pattern)]


def _check_unique(cases: Sequence[Case]) -> None:
    seen = set()
    for c in cases:
        if c.name in seen:
            raise ValueError(f"duplicate case name {c.name!r}")
        seen.add(c.name)


_check_unique(CASES)
