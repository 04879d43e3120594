"""fastconv's CUDA kernels against cuDNN / torch's CUDA kernels, on the CPU suite's shapes.

    python benchmarks/gpu_bench.py [--filter REGEX] [--repeats 20] [--warmup 5] [--json out.json]

NOT YET MEASURED: fastconv is developed on a machine without a GPU; this script is ready for a
machine that has one (a CUDA build of fastconv, `FASTCONV_CUDA=1 pip install --no-build-isolation .`).
It exits with a message when no GPU is present.

Method (as the CPU suite): both sides in one process on the same inputs and weights,
interleaved (ours, torch, ours, torch, ...), each call timed with CUDA events on the current
stream after warm-up, median of the repeats; reports the ratio torch time / our time (above 1:
we are faster) and our GFLOP/s or GB/s. The outputs are compared once before timing.
torch.backends.cudnn.benchmark is left at torch's default (off) unless --cudnn-benchmark.
"""
import argparse
import json
import re
import statistics
import sys

import torch

from fastconv.bench.cases import CONV_CASES, FUSED_CASES, LRN_CASES, POOL_CASES


def to_device(obj, device):
    if isinstance(obj, torch.nn.Module):
        return obj.to(device)
    return obj


def make_step(case, fn, inputs):
    """One call of the case on `inputs`: forward, or forward + backward with a fixed gradient."""
    if case.direction == "fwd":
        def run():
            with torch.no_grad():
                return fn(*inputs)
        return run
    leaves = [t.requires_grad_(True) for t in inputs if t.is_floating_point()] if case.input_grad else []
    params = [p for p in fn.parameters() if p.requires_grad] if isinstance(fn, torch.nn.Module) else []
    with torch.no_grad():
        probe = fn(*inputs)
    g = torch.randn(probe.shape, generator=torch.Generator().manual_seed(1)).to(probe)

    def run():
        for t in leaves + params:
            t.grad = None
        y = fn(*inputs)
        y.backward(g)
        return y
    return run


def time_once(run):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--filter", default="", help="regex on case names (e.g. 'conv.*fwd$')")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN autotune (torch side)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_bench: no CUDA device here; nothing measured (see the module docstring)")
        return 0
    import fastconv
    if not fastconv.build_info()["cuda"]:
        print("gpu_bench: fastconv was built without CUDA kernels (FASTCONV_CUDA=1)", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    dev = torch.device("cuda")
    pattern = re.compile(args.filter)
    cases = [c for c in POOL_CASES + LRN_CASES + CONV_CASES + FUSED_CASES
             if pattern.search(c.name) and c.direction in ("fwd", "fwd+bwd")]
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | cuDNN {torch.backends.cudnn.version()}")
    print(f"{'case':<48} {'ours ms':>9} {'torch ms':>9} {'ratio':>7} {'ours ' + 'rate':>12}")
    results = []
    for case in cases:
        inputs_ours = [t.to(dev) for t in case.make_inputs()]
        inputs_torch = [t.detach().clone() for t in inputs_ours]
        ours, ref = to_device(case.make_ours(), dev), to_device(case.make_torch(), dev)
        run_ours, run_torch = make_step(case, ours, inputs_ours), make_step(case, ref, inputs_torch)
        a, b = run_ours(), run_torch()
        ok = torch.allclose(a.float(), b.float(), rtol=case.tolerance[0] * 10, atol=case.tolerance[1] * 10)
        for _ in range(args.warmup):
            run_ours()
            run_torch()
        t_ours, t_torch = [], []
        for _ in range(args.repeats):
            t_ours.append(time_once(run_ours))
            t_torch.append(time_once(run_torch))
        mo, mt = statistics.median(t_ours), statistics.median(t_torch)
        work = case.flops if case.metric == "GFLOP/s" else case.nbytes
        rate = f"{work / mo / 1e9:8.1f} {case.metric.split('/')[0]}/s"
        print(f"{case.name:<48} {mo * 1e3:9.3f} {mt * 1e3:9.3f} {mt / mo:7.2f} {rate:>12}{'' if ok else '  MISMATCH'}")
        results.append(dict(name=case.name, ours_s=mo, torch_s=mt, ratio=mt / mo, metric=case.metric,
                            work=work, outputs_match=bool(ok)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, results=results), f, indent=1)
    return 0 if all(r["outputs_match"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
