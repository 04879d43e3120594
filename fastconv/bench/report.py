"""Reporting: text tables, JSON round trip, regression comparison, plot.

Nothing here measures anything, so every function is testable from a
synthetic :class:`Run`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .harness import Probes, Result, summarise

#: JSON schema id; bump the number on incompatible changes.
SCHEMA = "fastconv-bench/1"


@dataclass
class Run:
    """Everything one ``python -m fastconv bench`` invocation produced."""

    results: List[Result]
    machine: Dict[str, Any] = field(default_factory=dict)
    probes: Optional[Probes] = None
    config: Dict[str, Any] = field(default_factory=dict)
    allocator: Dict[str, Any] = field(default_factory=dict)
    timestamp: str = field(default_factory=lambda: _dt.datetime.now().astimezone().isoformat(timespec="seconds"))

    def to_json(self) -> Dict[str, Any]:
        return {
            "schema": SCHEMA,
            "timestamp": self.timestamp,
            "machine": self.machine,
            "config": self.config,
            "allocator": self.allocator,
            "probes": self.probes.to_json() if self.probes else None,
            "results": [r.to_json() for r in self.results],
            "summary": summarise(self.results),
        }

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Run":
        schema = d.get("schema", "")
        if not str(schema).startswith("fastconv-bench/"):
            raise ValueError(f"not a fastconv benchmark file (schema={schema!r})")
        return cls(
            results=[Result.from_json(r) for r in d.get("results", [])],
            machine=d.get("machine", {}),
            probes=Probes.from_json(d["probes"]) if d.get("probes") else None,
            config=d.get("config", {}),
            allocator=d.get("allocator", {}),
            timestamp=d.get("timestamp", ""),
        )


def save_json(run: Run, path: str) -> None:
    """Write ``run`` to ``path`` (pretty-printed, NaN/inf written as null)."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(_finite(run.to_json()), fh, indent=1)
        fh.write("\n")


def load_json(path: str) -> Run:
    with open(path, encoding="utf-8") as fh:
        return Run.from_json(json.load(fh))


def _finite(obj: Any) -> Any:
    """Replace NaN/inf by None: strict JSON readers reject them."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------
# Text tables
# ---------------------------------------------------------------------------

def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w)
                         for c, w, r in zip(cells, widths, right)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 10 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"


def shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def format_results(results: Sequence[Result]) -> str:
    """Main results table: one row per case and thread count."""
    headers = ["op", "params", "shape", "layout", "dir", "thr", "ours ms", "torch ms",
               "ratio", "ours rate", "% limit"]
    right = [False, False, False, False, False, True, True, True, True, True, True]
    rows = []
    for r in results:
        pct = r.pct_of_limit("ours")
        flag = "" if r.match in (True, None) else " !"
        rows.append([
            r.op, r.params, shape_str(r.shape), r.layout, r.direction, str(r.threads),
            _ms(r.ours_s), _ms(r.torch_s), f"{r.ratio:.2f}x{flag}",
            f"{r.throughput('ours'):.1f} {r.metric}",
            "-" if pct is None else f"{pct:.0f}%",
        ])
    text = _table(headers, rows, right)
    busy = suspected_interference(results)
    if busy:
        text += ("\n\nnote: both sides ran >1.5x slower with more threads than with the fewest in "
                 + ", ".join(f"{r.case} t{r.threads}" for r in busy)
                 + ";\n      other processes were probably using the cores (the ratio is still "
                 "fair: the sides are interleaved). Re-run with --filter to confirm.")
    bad = [r for r in results if r.match is False]
    if bad:
        text += "\n\n! output mismatch vs torch (timings still shown): " + ", ".join(
            sorted({r.case for r in bad}))
    return text


def suspected_interference(results: Sequence[Result], factor: float = 1.5) -> List[Result]:
    """Rows where *both* sides got much slower than at the case's fewest threads.

    Adding threads should never make a kernel 1.5x slower on both
    implementations at once; when it does, the usual cause is another process
    holding a core, so every parallel region waits for a time slice.
    """
    fewest: Dict[str, Result] = {}
    for r in results:
        if r.case not in fewest or r.threads < fewest[r.case].threads:
            fewest[r.case] = r
    return [r for r in results
            if r.threads > fewest[r.case].threads
            and r.ours_s > factor * fewest[r.case].ours_s
            and r.torch_s > factor * fewest[r.case].torch_s]


def format_summary(results: Sequence[Result]) -> str:
    """Geomean speed-up per group, one column per thread count."""
    rows = summarise(results)
    thread_cols = sorted({r["threads"] for r in rows if r["threads"] != "all"})
    table: Dict[str, Dict[Any, Tuple[float, int]]] = {}
    for row in rows:
        table.setdefault(row["group"], {})[row["threads"]] = (row["geomean_ratio"], row["n"])
    headers = ["group (geomean torch/ours)"] + [f"{t} thr" for t in thread_cols] + ["all", "n"]
    out_rows = []
    for g, cols in table.items():
        cells = [g]
        for t in thread_cols:
            cells.append(f"{cols[t][0]:.2f}x" if t in cols else "-")
        cells.append(f"{cols['all'][0]:.2f}x")
        cells.append(str(cols["all"][1]))
        out_rows.append(cells)
    return _table(headers, out_rows, [False] + [True] * (len(headers) - 1))


def format_markdown(run: Run) -> str:
    """The machine line, the results table and the geomean summary as Markdown (for the
    README, so its numbers come straight from a run)."""
    lines = [f"Measured {run.timestamp} with `python -m fastconv bench` "
             f"({'quick' if run.config.get('quick') else 'full'} mode).", "",
             "```", format_machine(run), "```", "",
             "| op | params | shape | layout | dir | thr | ours ms | torch ms | ratio | ours rate | % limit |",
             "|---|---|---|---|---|--:|--:|--:|--:|--:|--:|"]
    for res in run.results:
        pct = res.pct_of_limit("ours")
        lines.append("| " + " | ".join([
            res.op, res.params, shape_str(res.shape), res.layout, res.direction, str(res.threads),
            _ms(res.ours_s), _ms(res.torch_s), f"**{res.ratio:.2f}x**",
            f"{res.throughput('ours'):.1f} {res.metric}", "-" if pct is None else f"{pct:.0f}%"]) + " |")
    lines += ["", "```", format_summary(run.results), "```", ""]
    return "\n".join(lines)


def format_machine(run: Run) -> str:
    """Short header: CPU, SIMD path, torch version and the probe roofline."""
    m = run.machine
    lines = [
        f"CPU: {m.get('cpu_model', '?')} ({m.get('cores', '?')} cores), "
        f"fastconv SIMD path: {m.get('simd', '?')}, torch {m.get('torch_version', '?')}",
    ]
    if run.probes:
        p = run.probes
        parts = [f"{t} thr: {p.fma_gflops[t]:.1f} GFLOP/s FMA, {p.copy_gbps[t]:.1f} GB/s copy"
                 for t in sorted(p.fma_gflops)]
        lines.append("roofline limits  " + " | ".join(parts))
    alloc = run.allocator or {}
    if alloc:
        lines.append(f"allocator: {alloc.get('note', '')}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Regression comparison
# ---------------------------------------------------------------------------

def compare(old: Run, new: Run, margin: float = 0.10) -> Tuple[str, bool]:
    """Compare speed-up ratios per (case, threads) between two runs.

    A case regresses when ``new_ratio < old_ratio * (1 - margin)``, i.e. its
    speed-up over torch fell by more than ``margin`` (relative). Comparing
    ratios rather than times makes the check robust to a faster or slower
    machine, since torch runs in the same process on the same machine.

    Returns the printable table and whether any case regressed.
    """
    old_by = {(r.case, r.threads): r for r in old.results}
    new_by = {(r.case, r.threads): r for r in new.results}
    rows = []
    regressed = False
    for key, nr in new_by.items():
        orr = old_by.get(key)
        if orr is None:
            rows.append([key[0], str(key[1]), "-", f"{nr.ratio:.2f}x", "-", "new"])
            continue
        change = nr.ratio / orr.ratio - 1.0 if orr.ratio > 0 else float("nan")
        bad = nr.ratio < orr.ratio * (1.0 - margin)
        regressed |= bad
        status = "REGRESSED" if bad else ("improved" if change > margin else "ok")
        rows.append([key[0], str(key[1]), f"{orr.ratio:.2f}x", f"{nr.ratio:.2f}x",
                     f"{change * 100:+.1f}%", status])
    for key in old_by:
        if key not in new_by:
            rows.append([key[0], str(key[1]), f"{old_by[key].ratio:.2f}x", "-", "-", "not run"])
    text = _table(["case", "thr", "old ratio", "new ratio", "change", "status"], rows,
                  [False, True, True, True, True, False])
    n_bad = sum(1 for r in rows if r[-1] == "REGRESSED")
    text += (f"\n\n{n_bad} case(s) regressed by more than {margin:.0%}" if regressed
             else f"\nno regression beyond {margin:.0%}")
    return text, regressed


# ---------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------

def plot(run: Run, path: str) -> None:
    """Write a two-panel PNG: speed-up bars and a log-log roofline.

    Left: horizontal bars of torch/ours per case and thread count, log scale,
    with a line at 1x. Right: achieved GFLOP/s against arithmetic intensity
    (FLOP/byte), ours filled and torch hollow, under the measured FMA peak and
    copy-bandwidth lines for each probed thread count.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless; must precede pyplot import
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    results = list(run.results)
    n = max(1, len(results))
    height = max(5.0, 0.26 * n + 1.8)  # inches; ~0.26" per bar keeps labels legible
    fig, (ax_bar, ax_roof) = plt.subplots(
        1, 2, figsize=(16, height), layout="constrained",  # makes room for suptitle
        gridspec_kw={"width_ratios": [1.1, 1.0]})

    # --- left: speed-up bars -------------------------------------------------
    labels = [f"{r.base} {r.layout} {r.direction} t{r.threads}" for r in results]
    ratios = [r.ratio if r.ratio > 0 and math.isfinite(r.ratio) else 1.0 for r in results]
    colors = ["#2a9d4b" if v >= 1 else "#d1495b" for v in ratios]
    ypos = list(range(len(results)))
    # Bars grow from the 1x line: right (green) when faster, left (red) when slower.
    ax_bar.barh(ypos, [abs(v - 1.0) or 1e-3 for v in ratios],
                left=[min(v, 1.0) for v in ratios], color=colors)
    for y, v in zip(ypos, ratios):
        ax_bar.text(v * (1.02 if v >= 1 else 0.98), y, f"{v:.2f}x", va="center",
                    ha="left" if v >= 1 else "right", fontsize=6)
    ax_bar.set_yticks(ypos)
    ax_bar.set_yticklabels(labels, fontsize=7)
    ax_bar.set_ylim(len(results) - 0.5, -0.5)  # first case on top
    ax_bar.set_xscale("log")
    ax_bar.axvline(1.0, color="black", linewidth=1, label="1x (parity with torch)")
    lo = min(ratios + [0.5]) / 1.4
    hi = max(ratios + [2.0]) * 1.4
    ax_bar.set_xlim(lo, hi)
    # Ticks at powers of two read naturally as "half as fast", "twice as fast".
    ticks = [2.0 ** k for k in range(math.floor(math.log2(lo)), math.ceil(math.log2(hi)) + 1)]
    ax_bar.xaxis.set_major_locator(FixedLocator(ticks))
    ax_bar.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}x"))
    ax_bar.xaxis.set_minor_formatter(NullFormatter())
    ax_bar.set_xlabel("speed-up vs torch (torch time / fastconv time, log scale)")
    ax_bar.set_title("Speed-up per case (>1x: fastconv faster)")
    ax_bar.legend(loc="lower right", fontsize=8)
    ax_bar.grid(axis="x", which="both", alpha=0.3)

    # --- right: roofline ----------------------------------------------------
    pts = [r for r in results if r.flops > 0 and r.ours_s > 0]
    intensities = [r.intensity for r in pts] or [0.1, 10.0]
    x_lo = min(intensities) / 4
    x_hi = max(intensities) * 4
    probes = run.probes
    palette = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]
    all_threads = sorted(set(probes.fma_gflops if probes else ()) | {r.threads for r in pts})

    def color(t: int) -> str:
        return palette[all_threads.index(t) % len(palette)]

    if probes:
        for t in probes.fma_gflops:
            # Keep each ridge point (peak / bandwidth) in view.
            x_hi = max(x_hi, 4 * probes.peak_gflops(t) / probes.bandwidth_gbps(t))
        xs = [x_lo * (x_hi / x_lo) ** (k / 200) for k in range(201)]
        for t in sorted(probes.fma_gflops):
            peak, bw = probes.peak_gflops(t), probes.bandwidth_gbps(t)
            ax_roof.plot(xs, [min(peak, x * bw) for x in xs], color=color(t), linewidth=1.5,
                         label=f"roofline {t} thr")
            ax_roof.plot([x_lo, x_hi], [peak, peak], color=color(t), linestyle=":", linewidth=1,
                         label=f"FMA peak {t} thr: {peak:.0f} GFLOP/s")
            ax_roof.plot(xs, [x * bw for x in xs], color=color(t), linestyle="--", linewidth=1,
                         label=f"copy bandwidth {t} thr: {bw:.1f} GB/s")
    for r in pts:
        c = color(r.threads)
        ax_roof.scatter([r.intensity], [r.gflops("ours")], color=c, marker="o", s=28, zorder=3)
        ax_roof.scatter([r.intensity], [r.gflops("torch")], facecolors="none", edgecolors=c,
                        marker="o", s=28, zorder=3)
    # Legend proxies for the point styles.
    ax_roof.scatter([], [], color="gray", marker="o", label="fastconv (filled)")
    ax_roof.scatter([], [], facecolors="none", edgecolors="gray", marker="o", label="torch (hollow)")
    ax_roof.set_xscale("log")
    ax_roof.set_yscale("log")
    ax_roof.set_xlim(x_lo, x_hi)
    ax_roof.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax_roof.set_ylabel("achieved performance (GFLOP/s)")
    ax_roof.set_title("Roofline (pooling: 1 FLOP per window element)")
    ax_roof.grid(which="both", alpha=0.3)
    ax_roof.legend(loc="lower right", fontsize=7)

    cpu = run.machine.get("cpu_model", "unknown CPU")
    date = (run.timestamp or "")[:10]
    simd = run.machine.get("simd", "?")
    fig.suptitle(f"fastconv vs torch {run.machine.get('torch_version', '')} on {cpu} "
                 f"({simd}), {date}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
