"""Unit tests for the pure-Python parts of ``fastconv.bench``.

Nothing here times real work: clocks are fake, shapes are tiny, and the
fastconv ops are monkeypatched to torch's where a case has to run, so these
tests check the harness logic, not the kernels, and take a few seconds.
"""
from __future__ import annotations

import dataclasses

import json
import math
import types

import pytest
import torch
import torch.nn.functional as F

import fastconv
from fastconv.__main__ import main as fastconv_main
from fastconv.bench import alloc, cli, harness, report
from fastconv.bench.cases import CASES, matches, pool_cases, select
from fastconv.bench.harness import build_runner, outputs_match


class FakeClock:
    """perf_counter_ns stand-in: time moves only when told (or per read)."""

    def __init__(self, tick_ns: int = 0):
        self.now = 0
        self.tick_ns = tick_ns

    def __call__(self) -> int:
        self.now += self.tick_ns
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


@pytest.fixture
def torch_as_fastconv(monkeypatch):
    """Make fastconv's pooling ops torch's, so harness tests need no kernels."""
    monkeypatch.setattr(fastconv, "max_pool2d", F.max_pool2d, raising=False)
    monkeypatch.setattr(fastconv, "avg_pool2d", F.avg_pool2d, raising=False)
    monkeypatch.setattr(fastconv, "global_avg_pool2d",
                        lambda x: F.adaptive_avg_pool2d(x, 1), raising=False)


def make_result(case="a/nchw/fwd", threads=1, ours_s=1e-3, torch_s=2e-3, **kw):
    base, layout, direction = case.split("/")
    fields = dict(case=case, base=base, family="pool", op="max_pool2d", params="k3 s2 p0",
                  shape=[1, 2, 8, 8], layout=layout, direction=direction,
                  group=f"pool {layout} {direction}", threads=threads, ours_s=ours_s,
                  torch_s=torch_s, ours_samples_s=[ours_s] * 3, torch_samples_s=[torch_s] * 3,
                  nbytes=1000, flops=500, match=True)
    fields.update(kw)
    return harness.attach_roofline(harness.Result(**fields), make_probes())


def make_probes():
    return harness.Probes(fma_gflops={1: 50.0, 2: 100.0}, copy_gbps={1: 10.0, 2: 15.0},
                          copy_nbytes=1 << 27)


def make_run(ratios):
    """A Run whose results have the given {(case, threads): ratio}."""
    results = [make_result(case, t, ours_s=1e-3, torch_s=r * 1e-3) for (case, t), r in ratios.items()]
    return report.Run(results=results, machine={"cpu_model": "Test CPU", "simd": "avx2",
                                                "torch_version": torch.__version__},
                      probes=make_probes(), config={"threads": [1, 2]})


# --- timing protocol ---------------------------------------------------------

def test_interleaved_median_and_alternating_order():
    clock = FakeClock()
    order = []
    ours_times = iter([5e-3, 2e-3, 2e-3, 9e-3, 2e-3, 1e-3])  # 1 warm-up + 5 repeats
    torch_times = iter([7e-3, 3e-3, 3e-3, 3e-3, 30e-3, 3e-3])

    def run_ours():
        order.append("o")
        clock.advance(next(ours_times))

    def run_torch():
        order.append("t")
        clock.advance(next(torch_times))

    ours, ref = harness.interleaved_samples(run_ours, run_torch, repeats=5, warmup=1, timer=clock)
    # Warm-up samples dropped; outliers (9 ms, 30 ms) do not move the median.
    assert ours == pytest.approx([2e-3, 2e-3, 9e-3, 2e-3, 1e-3])
    assert ref == pytest.approx([3e-3, 3e-3, 3e-3, 30e-3, 3e-3])
    assert harness.statistics.median(ours) == pytest.approx(2e-3)
    assert harness.statistics.median(ref) == pytest.approx(3e-3)
    # Ours first on even iterations, torch first on odd ones.
    assert "".join(order) == "ot" "to" "ot" "to" "ot" "to"


def test_sample_averages_over_number_of_calls():
    clock = FakeClock()
    ours, ref = harness.interleaved_samples(lambda: clock.advance(1e-3), lambda: clock.advance(4e-3),
                                            repeats=3, warmup=0, number_ours=10,
                                            number_torch=2, timer=clock)
    assert ours == pytest.approx([1e-3] * 3)
    assert ref == pytest.approx([4e-3] * 3)


def test_calibrate_reaches_min_sample_time():
    clock = FakeClock()
    assert harness.calibrate(lambda: clock.advance(1e-4), 0.01, clock) == 100
    assert harness.calibrate(lambda: clock.advance(1.0), 0.01, clock) == 1
    assert harness.calibrate(lambda: None, 0.0, clock) == 1


def test_geomean_and_summary_groups():
    assert harness.geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert math.isnan(harness.geomean([]))
    run = make_run({("a/nchw/fwd", 1): 2.0, ("b/nchw/fwd", 1): 8.0,
                    ("a/channels_last/fwd", 1): 1.0, ("a/nchw/fwd", 2): 1.0})
    rows = {(r["group"], r["threads"]): r for r in harness.summarise(run.results)}
    assert rows[("pool nchw fwd", 1)]["geomean_ratio"] == pytest.approx(4.0)
    assert rows[("pool nchw fwd", 2)]["geomean_ratio"] == pytest.approx(1.0)
    assert rows[("pool channels_last fwd", "all")]["n"] == 1
    assert rows[("overall", "all")]["n"] == 4


def test_roofline_limit_and_percent():
    p = make_probes()
    # Intensity 0.5 FLOP/B: bandwidth-bound at 1 thread (0.5 * 10 = 5 < 50).
    assert p.attainable_gflops(0.5, 1) == pytest.approx(5.0)
    assert p.attainable_gflops(100.0, 2) == pytest.approx(100.0)
    # Unprobed thread count: scaled from the nearest lower one, capped by the max.
    assert p.peak_gflops(4) == pytest.approx(100.0)
    r = make_result(ours_s=1e-6)  # 1000 B in 1 us = 1 GB/s; 500 flop = 0.5 GFLOP/s
    assert r.gbps() == pytest.approx(1.0)
    assert r.pct_of_limit() == pytest.approx(10.0)  # 0.5 of a 5 GFLOP/s limit


# --- case table ----------------------------------------------------------------

def test_case_table_is_complete_and_consistent():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    bases = {c.base for c in CASES}
    assert {"alexnet_max3x3s2", "vgg_max2x2s2", "resnet_max3x3s2p1", "googlenet_max3x3s1p1",
            "googlenet_avg3x3s1p1", "resnet50_global_avg7x7"} <= bases
    # The inference-only blocks (ConvBNReLU eval, the Inception 1x1 group) have no training step.
    eval_only = {c.base for c in CASES if c.family in ("convbn", "inception")}
    for base in {c.base for c in CASES if c.family != "model"}:
        variants = {(c.layout, c.direction) for c in CASES if c.base == base}
        directions = ("fwd",) if base in eval_only else ("fwd", "fwd+bwd")
        assert variants >= {(l, d) for l in ("nchw", "channels_last") for d in directions}
    # The global pool also reports backward alone (its own speed target).
    assert {c.direction for c in CASES if c.base == "resnet50_global_avg7x7"} == {"fwd", "fwd+bwd", "bwd"}
    vgg = next(c for c in CASES if c.name == "vgg_max2x2s2/nchw/fwd")
    n_in, n_out = 8 * 64 * 224 * 224, 8 * 64 * 112 * 112
    assert vgg.nbytes == 4 * (n_in + n_out)
    assert vgg.flops == 4 * n_out  # k*k = 4 ops per output
    vgg_bwd = next(c for c in CASES if c.name == "vgg_max2x2s2/nchw/fwd+bwd")
    assert vgg_bwd.nbytes == 2 * vgg.nbytes and vgg_bwd.flops == 2 * vgg.flops


def test_filter_substring_and_regex():
    assert matches("vgg_max2x2s2/nchw/fwd+bwd", "fwd+bwd")  # literal, not regex
    assert matches("vgg_max2x2s2/channels_last/fwd", "channels_last/fwd$")
    assert not matches("vgg_max2x2s2/channels_last/fwd+bwd", "channels_last/fwd$")
    assert not matches("vgg", "(")  # invalid regex falls back to substring
    assert len(select(CASES, "vgg_max")) == 4


def test_conv_case_accounting():
    c = next(c for c in CASES if c.name == "vgg16_conv3_2/nchw/fwd")
    assert c.family == "conv" and c.metric == "GFLOP/s"
    assert c.flops == 2 * 8 * 256 * 256 * 9 * 56 * 56
    step = next(c for c in CASES if c.name == "vgg16_conv3_2/nchw/fwd+bwd")
    assert step.flops == 3 * c.flops and step.input_grad
    first = next(c for c in CASES if c.name == "alexnet_conv1/nchw/fwd+bwd")
    assert not first.input_grad  # a network's first layer needs no input gradient
    assert first.flops == 2 * next(c for c in CASES if c.name == "alexnet_conv1/nchw/fwd").flops


def test_fused_case_accounting_and_modes():
    se = next(c for c in CASES if c.name == "se_layer1/nchw/fwd")
    assert se.nbytes == 8 * 8 * 256 * 56 * 56 and se.metric == "GB/s"
    block = next(c for c in CASES if c.name == "bottleneck_layer3/nchw/fwd")
    assert block.flops == 2 * 8 * 14 * 14 * (1024 * 256 + 9 * 256 * 256 + 256 * 1024)
    train = next(c for c in CASES if c.name == "bottleneck_layer3/nchw/fwd+bwd")
    assert train.flops == 3 * block.flops and train.rel_l2 > 0
    assert not block.make_ours().training and train.make_ours().training  # eval vs one training step
    group = next(c for c in CASES if c.name == "inception3a_1x1_group/nchw/fwd")
    ours, ref = group.make_ours().eval(), group.make_torch().eval()
    x = group.make_inputs()
    runners = [build_runner(group, f, x) for f in (ours, ref)]
    outs = [r.outputs() for r in runners]
    assert [o.shape[1] for o in outs[0]] == [64, 96, 16]
    assert outputs_match(outs[0], outs[1], group.tolerance)


def test_model_cases_cover_every_architecture():
    models = [c for c in CASES if c.family == "model"]
    fwd = {c.base for c in models if c.direction == "fwd"}
    for arch in ("lenet5", "alexnet", "alexnet_lrn", "vgg11", "vgg16", "googlenet", "resnet18", "resnet50",
                 "densenet121", "se_resnet50"):
        for batch in (1, 8):
            assert {(c.layout) for c in models if c.base == f"{arch}_b{batch}" and c.direction == "fwd"} == {
                "nchw", "channels_last"}, arch
    steps = {c.base for c in models if c.direction == "step"}
    assert steps == {f"{m}_b8" for m in ("resnet18", "resnet50", "alexnet", "vgg11", "googlenet", "densenet121",
                                          "se_resnet50")}
    assert {"resnet50_vs_compile_b1", "resnet50_vs_compile_b8"} <= fwd
    r50 = next(c for c in models if c.name == "resnet50_b1/nchw/fwd")
    assert 8.0e9 < r50.flops < 8.4e9  # 4.1 G multiply-adds, the published count
    step = next(c for c in models if c.name == "resnet50_b8/nchw/step")
    assert step.flops == 3 * 8 * r50.flops


def test_model_train_step_case_checks_one_step_from_the_start():
    from fastconv.bench.model_cases import TrainStep

    case = next(c for c in CASES if c.name == "lenet5_b1/nchw/fwd")
    torch.manual_seed(0)
    import fastconv.models
    from fastconv.bench.model_twins import TorchLeNet5

    ours = fastconv.models.lenet5()
    ref = TorchLeNet5()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(4, 1, 28, 28)
    steps = [TrainStep(m, 4, num_classes=10) for m in (ours, ref)]
    step_case = dataclasses.replace(case, name="lenet5_t/nchw/step", direction="step")
    runners = [build_runner(step_case, s, (x,)) for s in steps]
    first = [r.outputs() for r in runners]
    assert outputs_match(first[0], first[1], (1e-5, 1e-5))
    w0 = ours.features[0].weight.detach().clone()
    runners[0].run()
    runners[0].run()
    assert not torch.equal(w0, ours.features[0].weight)  # the step trains
    again = runners[0].outputs()  # after reset: the first step's logits once more
    assert outputs_match(again, first[1], (1e-5, 1e-5))


def test_outputs_match_relative_l2():
    a = torch.randn(10000)
    b = a.clone()
    b[3] += 1.0  # one element flipped (a ReLU rounding across zero)
    assert not outputs_match([a], [b], (1e-4, 1e-5))
    assert outputs_match([a], [b], (1e-4, 1e-5), rel_l2=1e-2)
    assert not outputs_match([a], [-b], (1e-4, 1e-5), rel_l2=1e-2)  # a wrong gradient
    c = a.clone()
    c[0] = float("nan")
    assert not outputs_match([c], [a], (1e-4, 1e-5), rel_l2=1e-2)


# --- running a (tiny) case end to end with a fake clock -----------------------------

@pytest.mark.parametrize("direction", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_measure_tiny_case(torch_as_fastconv, direction, layout):
    (case,) = pool_cases("tiny_max", "max_pool2d", (2, 3, 9, 9),
                         kwargs=dict(kernel_size=3, stride=2, padding=1), window=9,
                         params="k3 s2 p1", torch_fn=F.max_pool2d,
                         layouts=[layout], directions=[direction])
    settings = harness.Settings(repeats=3, warmup=1, min_sample_s=0.0)
    clock = FakeClock(tick_ns=1000)  # every timer read advances 1 us
    results = harness.measure_case(case, [1, 2], settings, make_probes(), timer=clock)
    assert [r.threads for r in results] == [1, 2]
    for r in results:
        assert r.match is True
        assert len(r.ours_samples_s) == len(r.torch_samples_s) == 3
        assert r.ratio == pytest.approx(1.0)
        assert r.limit_gflops is not None and r.pct_of_limit() is not None


def test_fwd_bwd_runner_resets_grads(torch_as_fastconv):
    (case,) = pool_cases("tiny_avg", "avg_pool2d", (1, 2, 6, 6),
                         kwargs=dict(kernel_size=3, stride=1, padding=1), window=9,
                         params="k3 s1 p1", torch_fn=F.avg_pool2d,
                         layouts=["nchw"], directions=["fwd+bwd"])
    x = case.make_inputs()
    runner = harness.build_runner(case, case.make_torch(), x)
    runner.run()
    first = x[0].grad.clone()
    runner.run()
    assert torch.equal(x[0].grad, first)  # reset, not accumulated


def test_probes_missing_gives_clear_error():
    with pytest.raises(harness.BenchError, match="probe_fma_gflops"):
        harness.probe_machine(types.SimpleNamespace(), [1])


def test_probe_machine_keeps_best_of_tries():
    calls = iter([10.0, 12.0] * 10)
    ext = types.SimpleNamespace(probe_fma_gflops=lambda t: next(calls) * t,
                                probe_copy_gbps=lambda n, t: 5.0 * t)
    p = harness.probe_machine(ext, [1], tries=2)
    assert p.fma_gflops[1] == pytest.approx(12.0)
    assert 1 in p.copy_gbps


# --- JSON, compare, plot, CLI ---------------------------------------------------

def test_json_round_trip(tmp_path):
    run = make_run({("a/nchw/fwd", 1): 2.0, ("a/nchw/fwd+bwd", 2): 0.5})
    path = tmp_path / "run.json"
    report.save_json(run, str(path))
    raw = json.loads(path.read_text())
    assert raw["schema"] == report.SCHEMA
    assert {"machine", "config", "probes", "results", "summary", "timestamp"} <= raw.keys()
    assert raw["results"][0]["ratio"] == pytest.approx(2.0)
    assert raw["probes"]["fma_gflops"]["1"] == pytest.approx(50.0)
    back = report.load_json(str(path))
    assert [r.ratio for r in back.results] == pytest.approx([2.0, 0.5])
    assert back.results[0].ours_samples_s == run.results[0].ours_samples_s
    assert back.probes.copy_gbps == run.probes.copy_gbps
    assert back.machine == run.machine and back.timestamp == run.timestamp
    with pytest.raises(ValueError):
        report.Run.from_json({"schema": "something-else"})


def test_compare_detects_regression():
    old = make_run({("a/nchw/fwd", 1): 2.0, ("b/nchw/fwd", 1): 1.0})
    fine = make_run({("a/nchw/fwd", 1): 1.85, ("b/nchw/fwd", 1): 1.0})  # -7.5%
    bad = make_run({("a/nchw/fwd", 1): 1.7, ("b/nchw/fwd", 1): 1.0})  # -15%
    assert report.compare(old, fine, 0.10)[1] is False
    text, regressed = report.compare(old, bad, 0.10)
    assert regressed and "REGRESSED" in text and "-15.0%" in text
    assert report.compare(old, bad, 0.20)[1] is False


def test_cli_compare_exit_code(tmp_path, capsys):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    report.save_json(make_run({("a/nchw/fwd", 1): 2.0}), str(old))
    report.save_json(make_run({("a/nchw/fwd", 1): 1.0}), str(new))
    assert cli.main(["--load", str(new), "--compare", str(old)]) == cli.EXIT_REGRESSION
    out = capsys.readouterr().out
    assert "ratio" in out and "geomean" in out and "REGRESSED" in out
    assert cli.main(["--load", str(old), "--compare", str(old)]) == cli.EXIT_OK
    assert cli.main(["--load", str(new), "--compare", str(old), "--margin", "0.6"]) == cli.EXIT_OK


def test_plot_written(tmp_path):
    run = make_run({("a/nchw/fwd", 1): 2.0, ("a/nchw/fwd", 2): 0.5,
                    ("a/channels_last/fwd+bwd", 1): 1.2})
    path = tmp_path / "bench.png"
    report.plot(run, str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_table_has_required_columns():
    text = report.format_results(make_run({("a/nchw/fwd", 1): 2.0}).results)
    header = text.splitlines()[0]
    for col in ("op", "shape", "layout", "dir", "thr", "ours ms", "torch ms", "ratio",
                "ours rate", "% limit"):
        assert col in header
    assert "2.00x" in text and "GB/s" in text


def test_usage_errors():
    assert fastconv_main([]) == 2
    assert fastconv_main(["no-such-command"]) == 2
    assert cli.main(["--threads", "0"]) == 2
    assert cli.main(["--no-mallopt", "--filter", "no-such-case-xyz"]) == 2


def test_mallopt_with_fake_libc():
    calls = []
    fake = types.SimpleNamespace(mallopt=lambda p, v: calls.append((p, v)) or 1)
    env = {}
    rep = alloc.neutralise_allocator(libc=fake, environ=env)
    assert (alloc.M_MMAP_MAX, 0) in calls
    assert (alloc.M_TRIM_THRESHOLD, alloc.TRIM_THRESHOLD_BYTES) in calls
    assert env[alloc.ENV_MMAP_MAX] == "0" and rep["applied"]
    # Values the user exported are honoured, not overridden.
    calls.clear()
    rep = alloc.neutralise_allocator(libc=fake, environ={alloc.ENV_TRIM: "123"})
    assert all(p != alloc.M_TRIM_THRESHOLD for p, _ in calls)
    assert "123" in rep["settings"]["M_TRIM_THRESHOLD"]


def test_interference_note():
    run = make_run({("a/nchw/fwd", 1): 1.0, ("a/nchw/fwd", 2): 1.0})
    run.results[1].ours_s = run.results[1].torch_s = 8e-3  # 8x slower with 2 threads
    assert [r.threads for r in report.suspected_interference(run.results)] == [2]
    assert "other processes" in report.format_results(run.results)
