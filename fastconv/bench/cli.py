"""``python -m fastconv bench``: command-line front end of the harness.

Exit codes: 0 success, 1 regression found by ``--compare``, 2 usage error,
3 environment error (extension not built, probes missing, op missing).
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_ENV = 0, 1, 2, 3

DESCRIPTION = """\
Benchmark fastconv against torch in the same process.

Measures the machine first (FMA peak, copy bandwidth) to get a roofline,
then for each case and thread count times fastconv and torch interleaved
(median of repeats) and prints a table with the speed-up ratio
torch/ours (>1: fastconv faster), throughput and % of the roofline limit,
followed by geomean ratios per group.
"""

EPILOG = """\
examples:
  python -m fastconv bench --json bench.json --plot bench.png
  python -m fastconv bench --quick --filter vgg
  python -m fastconv bench --filter 'channels_last/fwd$' --threads 1
  python -m fastconv bench --compare bench.json --margin 0.10
  python -m fastconv bench --load bench.json --plot bench.png   # no measuring

The glibc allocator is configured as if MALLOC_MMAP_MAX_=0 and
MALLOC_TRIM_THRESHOLD_=2147483647 were exported (values you export yourself
are honoured); see fastconv/bench/alloc.py for why.
"""


def _threads(text: str) -> List[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"thread counts must be >= 1, got {text!r}")
    return list(dict.fromkeys(vals))  # de-duplicate, keep order


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _margin(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError("margin is a relative fraction in [0, 1), e.g. 0.10")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fastconv bench", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_argument_group("mode")
    mode.add_argument("--quick", action="store_true",
                      help="fewer repeats and shorter samples, same shapes (about a third of the full run)")
    mode.add_argument("--repeats", type=_positive_int, metavar="N",
                      help="timed samples per side (default: 15, quick: 5)")
    mode.add_argument("--warmup", type=int, metavar="N",
                      help="warm-up samples per side (default: 3, quick: 1)")
    mode.add_argument("--threads", type=_threads, default=[1, 2], metavar="1,2",
                      help="comma-separated torch.set_num_threads values (default: 1,2)")
    mode.add_argument("--filter", metavar="PATTERN",
                      help="run cases whose name contains PATTERN or matches it as a regex "
                           "(names look like 'vgg_max2x2s2/channels_last/fwd+bwd')")
    mode.add_argument("--list", action="store_true", help="list case names and exit")
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", help="write all numbers and the machine to PATH")
    out.add_argument("--plot", metavar="PATH", help="write a speed-up + roofline PNG to PATH")
    out.add_argument("--markdown", metavar="PATH",
                     help="write the machine, table and summary as Markdown to PATH")
    out.add_argument("--compare", metavar="OLD.json",
                     help="compare ratios with a previous --json; exit 1 on regression")
    out.add_argument("--margin", type=_margin, default=0.10,
                     help="relative ratio drop tolerated by --compare (default: 0.10)")
    out.add_argument("--load", metavar="RUN.json",
                     help="report a saved run instead of measuring (table, --plot, --compare)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    adv = p.add_argument_group("advanced")
    adv.add_argument("--no-mallopt", action="store_true",
                     help="leave the glibc allocator alone (to see its effect)")
    adv.add_argument("--no-check", action="store_true",
                     help="skip the ours-vs-torch output check before timing")
    return p


def _err(msg: str) -> None:
    print(f"fastconv bench: error: {msg}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse: -h gives 0, bad usage gives 2
        return int(exc.code or 0)

    measuring = not (args.load or args.list)
    if measuring and not args.no_mallopt:
        # First thing, before any benchmark tensor exists: only later
        # allocations are affected.
        from .alloc import neutralise_allocator

        neutralise_allocator()

    from . import harness, report
    from .cases import CASES, matches, select

    if args.list:
        for c in select(CASES, args.filter):
            print(c.name)
        return EXIT_OK

    if args.load:
        try:
            run = report.load_json(args.load)
        except (OSError, ValueError, KeyError) as exc:
            _err(f"cannot read {args.load}: {exc}")
            return EXIT_USAGE
        run.results = [r for r in run.results if matches(r.case, args.filter)]
    else:
        cases = select(CASES, args.filter)
        if not cases:
            _err(f"no case matches {args.filter!r}; see --list")
            return EXIT_USAGE
        try:
            run = _measure(args, cases)
        except harness.BenchError as exc:
            _err(str(exc))
            return EXIT_ENV

    print(report.format_machine(run))
    print()
    print(report.format_results(run.results))
    print()
    print(report.format_summary(run.results))

    if args.json:
        report.save_json(run, args.json)
        print(f"\nwrote {args.json}", file=sys.stderr)
    if args.plot:
        report.plot(run, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report.format_markdown(run))
        print(f"wrote {args.markdown}", file=sys.stderr)
    if args.compare:
        try:
            old = report.load_json(args.compare)
        except (OSError, ValueError, KeyError) as exc:
            _err(f"cannot read {args.compare}: {exc}")
            return EXIT_USAGE
        # With --filter, compare like with like rather than listing every
        # unselected old case as "not run".
        old.results = [r for r in old.results if matches(r.case, args.filter)]
        text, regressed = report.compare(old, run, args.margin)
        print(f"\ncompared with {args.compare} ({old.timestamp}):")
        print(text)
        if regressed:
            return EXIT_REGRESSION
    return EXIT_OK


def _measure(args: argparse.Namespace, cases):  # -> report.Run
    """Probe the machine, then run ``cases``; raises harness.BenchError."""
    from . import harness, report
    from .alloc import allocator_state

    settings = harness.Settings.quick() if args.quick else harness.Settings.full()
    if args.repeats:
        settings.repeats = args.repeats
    if args.warmup is not None:
        settings.warmup = max(0, args.warmup)
    settings.check = not args.no_check

    # Fail fast, before minutes of probing, if any op cannot be resolved.
    for case in cases:
        try:
            case.make_ours()
        except RuntimeError as exc:
            raise harness.BenchError(str(exc)) from exc

    cores = harness.available_cores()
    over = [t for t in args.threads if t > cores]
    if over:
        print(f"warning: threads {over} exceed the {cores} available cores; "
              "those rows measure oversubscription", file=sys.stderr)

    ext = harness.load_extension()
    machine = harness.machine_info(ext)
    print("probing machine (FMA peak, copy bandwidth)...", file=sys.stderr)
    probes = harness.probe_machine(ext, args.threads)
    results = harness.run_all(cases, args.threads, settings, probes,
                              progress=not args.no_progress)
    return report.Run(
        results=results, machine=machine, probes=probes,
        config={"threads": list(args.threads), "repeats": settings.repeats,
                "warmup": settings.warmup, "min_sample_s": settings.min_sample_s,
                "quick": bool(args.quick), "filter": args.filter,
                "check": settings.check, "cases": [c.name for c in cases]},
        allocator=allocator_state(),
    )
