"""Measurement: machine probes, runners, interleaved timing, roofline.

Timing protocol (per case and thread count, both sides in one process):

1. Build one runner per side over the *same* input tensors, so both read
   identical data from identical memory.
2. Sanity check: run each side once and compare outputs (and input grads for
   ``fwd+bwd``) with the case tolerance. This first call also absorbs lazy
   initialisation on both sides.
3. Calibrate: pick for each side how many calls make up one timed sample so a
   sample lasts at least ``min_sample_s`` (keeps microsecond ops above timer
   and scheduler noise; large ops use one call per sample).
4. Warm up both sides (``warmup`` samples each, interleaved).
5. ``repeats`` interleaved samples; repeat *i* runs ours first when *i* is
   even and torch first when odd, so neither side systematically runs on a
   cache or frequency state left by the other.
6. Report the median per-call time of each side; ``ratio = torch / ours``
   (> 1 means fastconv is faster).

The timer is injectable so the protocol is unit-testable with a fake clock.
"""

from __future__ import annotations

import gc
import importlib
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from .cases import Case

Timer = Callable[[], int]  # returns nanoseconds, like time.perf_counter_ns


class BenchError(RuntimeError):
    """Environment problem the user must fix (e.g. extension not built)."""


# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------

@dataclass
class Settings:
    """Knobs of the timing protocol. ``quick()`` and ``full()`` are presets."""

    repeats: int = 15
    warmup: int = 3
    min_sample_s: float = 0.01
    check: bool = True

    @classmethod
    def quick(cls) -> "Settings":
        # Fewer repeats and shorter samples, never smaller shapes: quick
        # numbers must stay comparable to full ones, only noisier.
        return cls(repeats=5, warmup=1, min_sample_s=0.002)

    @classmethod
    def full(cls) -> "Settings":
        return cls()


# ---------------------------------------------------------------------------
# Machine description and probes
# ---------------------------------------------------------------------------

def available_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (falls back to platform info)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown"


def last_level_cache_bytes() -> int:
    """Largest CPU cache size reported by sysfs, or 0 if unknown."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    best = 0
    try:
        entries = os.listdir(base)
    except OSError:
        return 0
    for entry in entries:
        try:
            with open(os.path.join(base, entry, "size"), encoding="ascii") as fh:
                text = fh.read().strip()
        except OSError:
            continue
        mult = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(text[-1:].upper(), 1)
        digits = text[:-1] if text[-1:].isalpha() else text
        if digits.isdigit():
            best = max(best, int(digits) * mult)
    return best


def load_extension() -> Any:
    """Import ``fastconv._C`` or raise :class:`BenchError` with a fix."""
    try:
        return importlib.import_module("fastconv._C")
    except ImportError as exc:
        raise BenchError(
            f"cannot import fastconv._C ({exc}). Build the extension first, "
            "e.g. `pip install -e .` from the repository root."
        ) from exc


def machine_info(ext: Any = None) -> Dict[str, Any]:
    """Static description of the machine and build, for the JSON report."""
    import platform

    info: Dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cores": available_cores(),
        "llc_bytes": last_level_cache_bytes(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "simd": "unknown",
        "build_info": {},
    }
    if ext is not None:
        if hasattr(ext, "cpu_capability"):
            info["simd"] = str(ext.cpu_capability())
        if hasattr(ext, "build_info"):
            try:
                info["build_info"] = {str(k): _jsonable(v) for k, v in dict(ext.build_info()).items()}
            except Exception as exc:  # report, don't die, for a cosmetic field
                info["build_info"] = {"error": repr(exc)}
    try:
        info["fastconv_version"] = str(importlib.import_module("fastconv").__version__)
    except Exception:  # not importable or no version: cosmetic, keep going
        info["fastconv_version"] = "unknown"
    return info


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


@dataclass
class Probes:
    """Measured machine limits, per thread count (keys are thread counts).

    ``fma_gflops[t]``: FP32 FMA peak with ``t`` threads.
    ``copy_gbps[t]``: copy bandwidth with ``t`` threads (read+write bytes).
    """

    fma_gflops: Dict[int, float]
    copy_gbps: Dict[int, float]
    copy_nbytes: int = 0

    def _at(self, table: Dict[int, float], threads: int) -> float:
        if threads in table:
            return table[threads]
        # Not probed at this count: scale the nearest lower measurement
        # linearly, capped by the largest measured value.
        lower = [t for t in table if t <= threads] or [min(table)]
        t0 = max(lower)
        return min(table[t0] * threads / t0, max(table.values()))

    def peak_gflops(self, threads: int) -> float:
        return self._at(self.fma_gflops, threads)

    def bandwidth_gbps(self, threads: int) -> float:
        return self._at(self.copy_gbps, threads)

    def attainable_gflops(self, intensity: float, threads: int) -> float:
        """Roofline: min(compute peak, intensity x bandwidth)."""
        return min(self.peak_gflops(threads), intensity * self.bandwidth_gbps(threads))

    def to_json(self) -> Dict[str, Any]:
        return {
            "fma_gflops": {str(k): v for k, v in sorted(self.fma_gflops.items())},
            "copy_gbps": {str(k): v for k, v in sorted(self.copy_gbps.items())},
            "copy_nbytes": self.copy_nbytes,
        }

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Probes":
        return cls(
            fma_gflops={int(k): float(v) for k, v in d["fma_gflops"].items()},
            copy_gbps={int(k): float(v) for k, v in d["copy_gbps"].items()},
            copy_nbytes=int(d.get("copy_nbytes", 0)),
        )


def probe_machine(ext: Any, threads: Iterable[int], tries: int = 1) -> Probes:
    """Measure FMA peak and copy bandwidth for 1 thread, all cores and ``threads``.

    Each probe is run ``tries`` times and the best is kept. The default is 1
    because the extension's probes already repeat internally: the FMA probe
    keeps its best run (interference only slows it), the copy probe its
    median run (shared DRAM bandwidth swings both ways).
    """
    missing = [n for n in ("probe_fma_gflops", "probe_copy_gbps") if not hasattr(ext, n)]
    if missing:
        raise BenchError(
            "fastconv._C lacks the machine probes "
            f"({', '.join(missing)}); the roofline cannot be computed. "
            "Rebuild the extension from a version that provides "
            "probe_fma_gflops(threads) and probe_copy_gbps(nbytes, threads)."
        )
    counts = sorted({1, available_cores(), *threads})
    # Copy buffer well beyond the last-level cache so we measure DRAM.
    nbytes = max(128 * 1024**2, 4 * last_level_cache_bytes())
    fma = {t: max(float(ext.probe_fma_gflops(t)) for _ in range(tries)) for t in counts}
    copy = {t: max(float(ext.probe_copy_gbps(nbytes, t)) for _ in range(tries)) for t in counts}
    return Probes(fma_gflops=fma, copy_gbps=copy, copy_nbytes=nbytes)


# ---------------------------------------------------------------------------
# Runners
# ---------------------------------------------------------------------------

@dataclass
class Runner:
    """One side of a case, ready to time: ``run()`` performs one call."""

    run: Callable[[], Any]
    outputs: Callable[[], List[torch.Tensor]]  # tensors to compare after a run


def build_runner(case: Case, fn: Callable[..., Any], inputs: Sequence[torch.Tensor]) -> Runner:
    """Wrap ``fn`` over ``inputs`` according to the case direction.

    ``fwd``: runs under ``torch.no_grad()`` (both sides), nothing is kept.

    ``fwd+bwd``: floating-point inputs require grad; each call sets their
    ``.grad`` (and a module's parameter grads) to ``None``, runs forward and
    ``y.backward(g)`` with a grad precomputed once, so both sides do the same
    bookkeeping and no gradient accumulation (an extra add) happens.
    """
    inputs = tuple(inputs)
    if case.direction == "fwd":

        def run_fwd() -> Any:
            with torch.no_grad():
                y = fn(*inputs)
            return y

        def outs_fwd() -> List[torch.Tensor]:
            with torch.no_grad():
                y = fn(*inputs)
            # A block with several outputs (an Inception 1x1 group) returns a tuple.
            return list(y) if isinstance(y, (tuple, list)) else [y]

        return Runner(run=run_fwd, outputs=outs_fwd)

    if case.direction == "step":
        # The callable is a whole training step (see fastconv.bench.model_cases.TrainStep);
        # the check restarts both sides from their initial state so they compare one step.
        def outs_step() -> List[torch.Tensor]:
            fn.reset()
            return [fn(*inputs)]

        return Runner(run=lambda: fn(*inputs), outputs=outs_step)

    leaves = [t for t in inputs if t.is_floating_point()] if case.input_grad else []
    for t in leaves:
        t.requires_grad_(True)
    params = list(fn.parameters()) if isinstance(fn, torch.nn.Module) else []
    grad_holders = leaves + [p for p in params if p.requires_grad]
    with torch.no_grad():
        probe = fn(*inputs)
    # The same logical gradient values on both sides (seeded, drawn in NCHW
    # order), stored in the layout of this side's output, as a real network's
    # next layer would hand it over. Drawing with randn_like directly would
    # give different values to an NCHW and a channels_last output.
    g = torch.empty_like(probe).copy_(
        torch.randn(probe.shape, dtype=probe.dtype, generator=torch.Generator().manual_seed(1)))
    del probe

    if case.direction == "bwd":
        # Backward alone: one forward builds the graph (kept with retain_graph), and each
        # timed call runs only its backward, on both sides.
        y_kept = fn(*inputs)

        def run_bwd_only() -> torch.Tensor:
            for t in grad_holders:
                t.grad = None
            y_kept.backward(g, retain_graph=True)
            return y_kept

        def outs_bwd_only() -> List[torch.Tensor]:
            run_bwd_only()
            return [y_kept.detach()] + [t.grad.detach().clone() for t in leaves]

        return Runner(run=run_bwd_only, outputs=outs_bwd_only)

    def run_bwd() -> torch.Tensor:
        for t in grad_holders:
            t.grad = None
        y = fn(*inputs)
        y.backward(g)
        return y

    def outs_bwd() -> List[torch.Tensor]:
        y = run_bwd()
        return [y.detach()] + [t.grad.detach().clone() for t in leaves]

    return Runner(run=run_bwd, outputs=outs_bwd)


def outputs_match(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor],
                  tolerance: Tuple[float, float], rel_l2: float = 0.0) -> bool:
    """True when both output lists agree in shape and value: elementwise within tolerance, or,
    with ``rel_l2``, each tensor within that relative L2 error (see ``Case.rel_l2``)."""
    if len(a) != len(b):
        return False
    rtol, atol = tolerance
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return False
        x, y = x.double(), y.double()
        if rel_l2:
            if not bool(torch.isfinite(x).all()) or (x - y).norm() > rel_l2 * y.norm():
                return False
        elif not torch.allclose(x, y, rtol=rtol, atol=atol):
            return False
    return True


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------

def time_sample(run: Callable[[], Any], number: int, timer: Timer) -> float:
    """Seconds per call, averaged over ``number`` back-to-back calls."""
    t0 = timer()
    for _ in range(number):
        run()
    return (timer() - t0) / 1e9 / number


def calibrate(run: Callable[[], Any], min_sample_s: float, timer: Timer,
              max_number: int = 10_000) -> int:
    """Calls per sample so that one sample lasts at least ``min_sample_s``."""
    if min_sample_s <= 0:
        return 1
    per_call = time_sample(run, 1, timer)
    if per_call <= 0:  # below timer resolution
        return max_number
    return max(1, min(max_number, math.ceil(min_sample_s / per_call)))


def interleaved_samples(run_ours: Callable[[], Any], run_torch: Callable[[], Any], *,
                        repeats: int, warmup: int, number_ours: int = 1,
                        number_torch: int = 1, timer: Timer = time.perf_counter_ns
                        ) -> Tuple[List[float], List[float]]:
    """Warm up, then time ``repeats`` alternating samples of both sides.

    Returns per-call seconds for each sample, ``(ours, torch)``. The order
    alternates per repeat (ours first on even repeats, torch first on odd).
    Warm-up samples are interleaved the same way and discarded.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    ours: List[float] = []
    ref: List[float] = []
    for i in range(warmup + repeats):
        pair = [("ours", run_ours, number_ours), ("torch", run_torch, number_torch)]
        if i % 2:
            pair.reverse()
        for side, run, number in pair:
            t = time_sample(run, number, timer)
            if i >= warmup:
                (ours if side == "ours" else ref).append(t)
    return ours, ref


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------

@dataclass
class Result:
    """Measured numbers for one case at one thread count (times in seconds)."""

    case: str
    base: str
    family: str
    op: str
    params: str
    shape: List[int]
    layout: str
    direction: str
    group: str
    threads: int
    ours_s: float
    torch_s: float
    ours_samples_s: List[float] = field(default_factory=list)
    torch_samples_s: List[float] = field(default_factory=list)
    nbytes: int = 0
    flops: int = 0
    metric: str = "GB/s"
    match: Optional[bool] = None
    limit_gflops: Optional[float] = None  # roofline limit at this intensity
    bandwidth_gbps: Optional[float] = None
    peak_gflops: Optional[float] = None

    # Derived numbers are properties so a loaded JSON cannot disagree with them.
    @property
    def ratio(self) -> float:
        return self.torch_s / self.ours_s if self.ours_s > 0 else float("inf")

    @property
    def intensity(self) -> float:
        return self.flops / self.nbytes if self.nbytes else 0.0

    def gbps(self, side: str = "ours") -> float:
        t = self.ours_s if side == "ours" else self.torch_s
        return self.nbytes / t / 1e9 if t > 0 else 0.0

    def gflops(self, side: str = "ours") -> float:
        t = self.ours_s if side == "ours" else self.torch_s
        return self.flops / t / 1e9 if t > 0 else 0.0

    def throughput(self, side: str = "ours") -> float:
        """Value of the case's primary metric (GB/s or GFLOP/s)."""
        return self.gbps(side) if self.metric == "GB/s" else self.gflops(side)

    def pct_of_limit(self, side: str = "ours") -> Optional[float]:
        """Achieved performance as % of the roofline limit at this intensity.

        With FLOPs counted, compares achieved GFLOP/s against
        ``min(peak, intensity * bandwidth)``; for cases with no FLOPs it is
        achieved GB/s against bandwidth. Both are the same roofline.
        """
        if self.flops and self.limit_gflops:
            return 100.0 * self.gflops(side) / self.limit_gflops
        if self.bandwidth_gbps:
            return 100.0 * self.gbps(side) / self.bandwidth_gbps
        return None

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d.update(
            ratio=self.ratio,
            ours_ms=self.ours_s * 1e3,
            torch_ms=self.torch_s * 1e3,
            intensity=self.intensity,
            ours_gbps=self.gbps("ours"),
            torch_gbps=self.gbps("torch"),
            ours_gflops=self.gflops("ours"),
            torch_gflops=self.gflops("torch"),
            ours_pct_of_limit=self.pct_of_limit("ours"),
            torch_pct_of_limit=self.pct_of_limit("torch"),
        )
        return d

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Result":
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})


def attach_roofline(result: Result, probes: Optional[Probes]) -> Result:
    """Fill the roofline fields of ``result`` from ``probes`` (if any)."""
    if probes is not None:
        t = result.threads
        result.bandwidth_gbps = probes.bandwidth_gbps(t)
        result.peak_gflops = probes.peak_gflops(t)
        if result.flops:
            result.limit_gflops = probes.attainable_gflops(result.intensity, t)
    return result


def measure_case(case: Case, threads: Sequence[int], settings: Settings,
                 probes: Optional[Probes] = None, timer: Timer = time.perf_counter_ns,
                 on_result: Optional[Callable[[Result], None]] = None) -> List[Result]:
    """Time ``case`` at each thread count; returns one :class:`Result` each.

    Inputs are created once per case and shared by both sides and all thread
    counts. The previous torch thread count is restored afterwards.
    """
    fn_ours = case.make_ours()
    fn_torch = case.make_torch()
    inputs = case.make_inputs()
    ours = build_runner(case, fn_ours, inputs)
    ref = build_runner(case, fn_torch, inputs)
    results: List[Result] = []
    saved_threads = torch.get_num_threads()
    gc_was_enabled = gc.isenabled()
    try:
        for t in threads:
            torch.set_num_threads(int(t))
            match: Optional[bool] = None
            if settings.check:
                # Also the first (cold) call of each side.
                match = outputs_match(ours.outputs(), ref.outputs(), case.tolerance, case.rel_l2)
            else:
                ours.run()
                ref.run()
            # A collection in the middle of a sample would be charged to
            # whichever side happened to allocate at that moment.
            gc.collect()
            gc.disable()
            n_ours = calibrate(ours.run, settings.min_sample_s, timer)
            n_ref = calibrate(ref.run, settings.min_sample_s, timer)
            s_ours, s_ref = interleaved_samples(
                ours.run, ref.run, repeats=settings.repeats, warmup=settings.warmup,
                number_ours=n_ours, number_torch=n_ref, timer=timer)
            if gc_was_enabled:
                gc.enable()
            res = Result(
                case=case.name, base=case.base, family=case.family, op=case.op,
                params=case.params, shape=list(case.shape), layout=case.layout,
                direction=case.direction, group=case.group, threads=int(t),
                ours_s=statistics.median(s_ours), torch_s=statistics.median(s_ref),
                ours_samples_s=s_ours, torch_samples_s=s_ref,
                nbytes=case.nbytes, flops=case.flops, metric=case.metric, match=match,
            )
            attach_roofline(res, probes)
            results.append(res)
            if on_result is not None:
                on_result(res)
    finally:
        torch.set_num_threads(saved_threads)
        if gc_was_enabled:
            gc.enable()
    return results


def run_all(cases: Sequence[Case], threads: Sequence[int], settings: Settings,
            probes: Optional[Probes] = None, timer: Timer = time.perf_counter_ns,
            progress: bool = True) -> List[Result]:
    """Run every case at every thread count with a tqdm bar on stderr."""
    import sys

    from tqdm import tqdm

    results: List[Result] = []
    with tqdm(total=len(cases) * len(threads), file=sys.stderr, disable=not progress,
              unit="run", desc="bench", dynamic_ncols=True) as bar:
        for case in cases:
            bar.set_postfix_str(case.name, refresh=True)

            def tick(res: Result) -> None:
                bar.update(1)

            results.extend(measure_case(case, threads, settings, probes, timer, on_result=tick))
    return results


def geomean(values: Iterable[float]) -> float:
    """Geometric mean of positive values (NaN for an empty input)."""
    vals = [v for v in values if v > 0 and math.isfinite(v)]
    if not vals:
        return float("nan")
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def summarise(results: Sequence[Result]) -> List[Dict[str, Any]]:
    """Geomean speed-up per (group, threads), plus each group over all threads.

    Returned rows: ``{"group", "threads" (int or "all"), "n", "geomean_ratio"}``,
    in first-seen group order.
    """
    groups: Dict[str, List[Result]] = {}
    for r in results:
        groups.setdefault(r.group, []).append(r)
    rows: List[Dict[str, Any]] = []
    for g, rs in groups.items():
        for t in sorted({r.threads for r in rs}):
            sel = [r.ratio for r in rs if r.threads == t]
            rows.append({"group": g, "threads": t, "n": len(sel), "geomean_ratio": geomean(sel)})
        rows.append({"group": g, "threads": "all", "n": len(rs),
                     "geomean_ratio": geomean(r.ratio for r in rs)})
    if groups:
        rows.append({"group": "overall", "threads": "all", "n": len(results),
                     "geomean_ratio": geomean(r.ratio for r in results)})
    return rows
