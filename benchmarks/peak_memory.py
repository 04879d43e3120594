"""Peak memory of a conv2d call, ours against torch's, on the conv benchmark suite.

    python benchmarks/peak_memory.py [--filter PAT] [--threads 2] [--json peak_memory.json]

Each (case, side) runs in a fresh interpreter, so neither side inherits the other's caches or
heap. glibc is set to map every allocation above 128 KB on its own and unmap it when freed
(MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_), so resident memory follows live memory. The
child builds the case's inputs and module (fastconv.bench.cases.CONV_CASES) and then measures,
via /proc/self/status after resetting the high-water mark (/proc/self/clear_refs):

  first  the first call: peak resident memory above what was resident before it (one-time
         work included: weight packing, oneDNN's primitive creation and scratchpad);
  steady a later call, after a warm-up: peak resident memory above the same starting point,
         so memory a side keeps between calls (oneDNN's cached scratchpad, our nothing) counts;
  kept   of that, what stays resident between calls (caches, and the gradients both sides
         leave in .grad).

Both sides produce the same output (and gradients), which every figure includes: the numbers
are whole-call peaks, not workspace alone. The report is the ratio torch / ours of each figure
(above 1: we need less)."""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

MiB = 2**20


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _measure(run, start_kb):
    """Peak resident bytes during ``run()`` above ``start_kb``."""
    _reset_peak()
    out = run()
    peak = _status_kb("VmHWM")
    del out
    return (peak - start_kb) * 1024


def child(name, side, threads):
    import torch

    from fastconv.bench.cases import CONV_CASES
    from fastconv.bench.harness import build_runner

    torch.set_num_threads(threads)
    case = next(c for c in CONV_CASES if c.name == name)
    inputs = case.make_inputs()
    fn = (case.make_ours if side == "ours" else case.make_torch)()
    runner = build_runner(case, fn, inputs)
    start = _status_kb("VmRSS")
    first = _measure(runner.run, start)
    for _ in range(2):
        runner.run()
    kept = (_status_kb("VmRSS") - start) * 1024
    steady = max(_measure(runner.run, start) for _ in range(3))
    print(json.dumps({"first": first, "steady": steady, "kept": kept}))


def parent(args):
    from fastconv.bench.cases import CONV_CASES

    cases = [c for c in CONV_CASES if not args.filter or args.filter in c.name or re.search(args.filter, c.name)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072",
               OMP_NUM_THREADS=str(args.threads))
    env.pop("MALLOC_MMAP_MAX_", None)
    rows = []
    print(f"{'case':<48} {'ours MiB':>9} {'torch MiB':>9} {'ratio':>6}   {'first: ours':>11} {'torch':>7} "
          f"{'ratio':>6}   {'kept: ours':>10} {'torch':>7}")
    for case in cases:
        row = {"case": case.name}
        for side in ("ours", "torch"):
            proc = subprocess.run([sys.executable, __file__, "--child", case.name, side, "--threads",
                                   str(args.threads)], env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{case.name} {side} failed:\n{proc.stderr[-2000:]}")
            row[side] = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        o, t = row["ours"], row["torch"]
        print(f"{case.name:<48} {o['steady'] / MiB:9.1f} {t['steady'] / MiB:9.1f} {t['steady'] / o['steady']:6.2f}"
              f"   {o['first'] / MiB:11.1f} {t['first'] / MiB:7.1f} {t['first'] / o['first']:6.2f}"
              f"   {o['kept'] / MiB:10.1f} {t['kept'] / MiB:7.1f}", flush=True)
    worse = [r["case"] for r in rows if r["ours"]["steady"] > r["torch"]["steady"]]
    worse_first = [r["case"] for r in rows if r["ours"]["first"] > r["torch"]["first"]]
    ratios = [r["torch"]["steady"] / r["ours"]["steady"] for r in rows]
    print(f"\n{len(rows)} cases, {args.threads} threads. steady peak torch / ours: geomean "
          f"{statistics.geometric_mean(ratios):.2f}, min {min(ratios):.2f}")
    print(f"ours above torch (steady): {len(worse)} {worse}")
    print(f"ours above torch (first call): {len(worse_first)} {worse_first}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "rows": rows}, f, indent=1)
    return 1 if worse else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--filter", default="")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default="")
    p.add_argument("--child", nargs=2, metavar=("CASE", "SIDE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.threads)
        return 0
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
