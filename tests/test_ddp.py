"""DistributedDataParallel (gloo, 2 processes on this machine) trains a fastconv ResNet-18, and its
gradients and parameters match single-process training on the same two half-batches.

The two ranks run as `python tests/test_ddp.py <dir>` (a subprocess with a timeout, so a hung
collective fails the test instead of hanging it); each writes what it saw to <dir>."""
import os
import subprocess
import sys
import tempfile

import torch

import fastconv.models as M

STEPS = 3
HALF = 2  # images per rank


def _data():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2 * HALF, 3, 32, 32, generator=g)
    y = torch.randint(0, 5, (2 * HALF,), generator=g)
    return x, y


def _model():
    torch.manual_seed(0)
    return M.resnet18(num_classes=5)


def _optimizer(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def _rank(rank, world, out_dir):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)  # two processes on two cores
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world)
    try:
        model = DDP(_model())
        opt = _optimizer(model.parameters())
        x, y = _data()
        xs, ys = x[rank * HALF:(rank + 1) * HALF], y[rank * HALF:(rank + 1) * HALF]
        record = {"grads": [], "losses": []}
        for _ in range(STEPS):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xs), ys)
            loss.backward()
            record["grads"].append(_grads(model.module))
            record["losses"].append(loss.item())
            opt.step()
        record["state"] = {k: v.clone() for k, v in model.module.state_dict().items()}
        torch.save(record, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _single_process():
    """DDP's arithmetic in one process: each half-batch's gradient, averaged; BatchNorm's batch
    statistics per half (as on each rank), running statistics those of rank 0's half (DDP
    broadcasts rank 0's buffers before every forward)."""
    torch.set_num_threads(1)
    model = _model()
    opt = _optimizer(model.parameters())
    x, y = _data()
    record = {"grads": [], "losses": []}
    for _ in range(STEPS):
        opt.zero_grad()
        start = {k: b.clone() for k, b in model.named_buffers()}
        per_half, losses = [], []
        for r in range(2):
            for k, b in model.named_buffers():
                b.copy_(start[k])
            model.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[r * HALF:(r + 1) * HALF]), y[r * HALF:(r + 1) * HALF])
            loss.backward()
            per_half.append(_grads(model))
            losses.append(loss.item())
            if r == 0:
                after_rank0 = {k: b.clone() for k, b in model.named_buffers()}
        for k, b in model.named_buffers():
            b.copy_(after_rank0[k])
        for n, p in model.named_parameters():
            p.grad = (per_half[0][n] + per_half[1][n]) / 2
        record["grads"].append(_grads(model))
        record["losses"].append(losses)
        opt.step()
    record["state"] = model.state_dict()
    return record


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def test_ddp_gloo_two_processes_matches_single_process():
    with tempfile.TemporaryDirectory() as out_dir:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, __file__, out_dir], env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        ranks = [torch.load(f"{out_dir}/rank{r}.pt", weights_only=True) for r in range(2)]
    ref = _single_process()
    for step in range(STEPS):
        for r in range(2):
            assert abs(ranks[r]["losses"][step] - ref["losses"][step][r]) < 1e-5, (step, r)
        for n, g in ref["grads"][step].items():
            # Both ranks hold the averaged gradient, equal to each other bit for bit.
            assert torch.equal(ranks[0]["grads"][step][n], ranks[1]["grads"][step][n]), (step, n)
            assert _rel(ranks[0]["grads"][step][n], g) < 1e-5, (step, n)
    for k, v in ref["state"].items():
        if v.is_floating_point():
            assert _rel(ranks[0]["state"][k], v) < 1e-5, k
            assert torch.equal(ranks[0]["state"][k], ranks[1]["state"][k]) or k.endswith(("running_mean",
                                                                                           "running_var")), k
        else:
            assert torch.equal(ranks[0]["state"][k], v), k


if __name__ == "__main__":
    import torch.multiprocessing as mp

    mp.spawn(_rank, args=(2, sys.argv[1]), nprocs=2, join=True)
