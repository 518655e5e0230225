"""DDP on 2 gloo ranks seeded ``100 + rank``: every step path, the off switch and a resume."""
from __future__ import annotations

import io

import torch
import torch.distributed as dist
from dist_helpers import gather_max_diff, worker_main
from torch.nn.parallel import DistributedDataParallel

from upgd_migrate.optim import UPGD, UPGDW, AdaptiveUPGD
from upgd_migrate.optim import _two_lane as two_lane

STEPS = 50
# Big enough for the two-lane step (>= 32768 noisy elements, >= 8192 a tensor on average).
WIDTH_IN, HIDDEN, OUT = 64, 256, 128


def build() -> torch.nn.Module:
    gen = torch.Generator().manual_seed(0)  # the same replica everywhere, without the global RNG
    model = torch.nn.Sequential(torch.nn.Linear(WIDTH_IN, HIDDEN), torch.nn.Tanh(),
                                torch.nn.Linear(HIDDEN, OUT))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


CASES = {
    # name: (optimizer factory, intra-op threads)
    "single-tensor fixed": (lambda ps, **kw: AdaptiveUPGD(ps, lr=1e-3, foreach=False, **kw), 1),
    "multi-tensor adaptive": (lambda ps, **kw: AdaptiveUPGD(
        ps, lr=1e-3, sigma=0.05, adaptive_noise=True, **kw), 1),
    "two-lane adaptive EMA": (lambda ps, **kw: AdaptiveUPGD(
        ps, lr=1e-3, sigma=0.05, adaptive_noise=True, instant_noise_scale=False, **kw), 2),
    "two-lane UPGD adaptive": (lambda ps, **kw: UPGD(
        ps, lr=1e-2, sigma=0.05, adaptive_noise=True, **kw), 2),
    "UPGDW fixed": (lambda ps, **kw: UPGDW(ps, lr=1e-3, **kw), 1),
}


def train(make, threads: int, steps: int, **kw) -> dict:
    torch.set_num_threads(threads)
    model = build()
    ddp = DistributedDataParallel(model)
    opt = make(model.parameters(), **kw)
    untouched, lanes = True, []
    original = two_lane.step

    def counting(*args):
        lanes.append(1)
        return original(*args)
    two_lane.step = counting
    try:
        for _ in range(steps):
            x = torch.randn(16, WIDTH_IN)  # per-rank data from the per-rank global seed
            ddp(x).square().mean().backward()
            before = torch.get_rng_state()
            opt.step()
            untouched = untouched and torch.equal(before, torch.get_rng_state())
            opt.zero_grad()
    finally:
        two_lane.step = original
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    return {"max_diff": gather_max_diff(flat), "global_rng_untouched": untouched,
            "two_lane_steps": len(lanes), "groups": _plain(opt.state_dict()["param_groups"])}


def _plain(groups: list[dict]) -> list[dict]:
    return [{k: v for k, v in g.items() if k in ("noise_seed", "noise_draws")} for g in groups]


def resume(rank: int) -> dict:
    """3 steps, save, 3 more; a fresh optimizer loading the save must take the same 3 steps."""
    model = build()
    opt = AdaptiveUPGD(model.parameters(), lr=1e-3, sigma=0.05, adaptive_noise=True)
    gen = torch.Generator().manual_seed(7 + rank)
    batches = [torch.randn(16, WIDTH_IN, generator=gen) for _ in range(6)]

    def one(m, o, x):
        m(x).square().mean().backward()
        for p in m.parameters():  # DDP's all-reduce, by hand: the grads agree across ranks
            dist.all_reduce(p.grad)
        o.step()
        o.zero_grad()
    for x in batches[:3]:
        one(model, opt, x)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, buffer)
    for x in batches[3:]:
        one(model, opt, x)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    again = build()
    again.load_state_dict(saved["model"])
    opt2 = AdaptiveUPGD(again.parameters(), lr=1e-3, sigma=0.05, adaptive_noise=True)
    opt2.load_state_dict(saved["optim"])
    for x in batches[3:]:
        one(again, opt2, x)
    diff = max(float((a - b).abs().max()) for a, b in zip(model.parameters(), again.parameters()))
    return {"resume_diff": diff, "saved_groups": _plain(saved["optim"]["param_groups"])}


def scenario(rank: int, world: int) -> dict:
    torch.manual_seed(100 + rank)
    out = {"initial_seed": torch.initial_seed()}
    for name, (make, threads) in CASES.items():
        out[name] = train(make, threads, STEPS)
    out["off switch"] = train(CASES["multi-tensor adaptive"][0], 1, 5, noise_sync="off")
    out.update(resume(rank))
    return out


if __name__ == "__main__":
    worker_main(scenario)
