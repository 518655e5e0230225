"""FSDP2 (fully_shard, DTensor parameters) on 2 gloo ranks: exactness, noise level, uneven and
empty shards, the VGS factor, and an HSDP mesh."""
from __future__ import annotations

import contextlib
import copy

import torch
import torch.distributed as dist
from dist_helpers import gather_max_diff, worker_main
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Shard

from upgd_migrate.integrations.tensorboard import watch
from upgd_migrate.optim import (
    UPGD,
    AdaptiveUPGD,
    NoiseMonitor,
    NoiseRecorder,
    VarianceGradientScaler,
)

SIGMA = 0.05


def build() -> torch.nn.Module:
    """Dims that do not split evenly in two (30 -> 15/15, 7 -> 4/3, 1 -> 1/0: an empty shard)."""
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 30), torch.nn.Tanh(), torch.nn.Linear(30, 7),
                                torch.nn.Tanh(), torch.nn.Linear(7, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def batches(n: int, seed: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)  # the same data on every rank and in the reference
    return [(torch.randn(32, 16, generator=gen), torch.randn(32, 1, generator=gen))
            for _ in range(n)]


def loss_of(model, x, y, scale=1.0):
    return ((model(x) - y).square().mean() * scale)


def sharded(mesh=None) -> torch.nn.Module:
    model = build()
    for layer in (model[0], model[2], model[4]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def sigma_zero_matches_one_process() -> dict:
    out = {}
    makers = {"AdaptiveUPGD": lambda ps: AdaptiveUPGD(ps, lr=1e-2, sigma=0.0),
              "AdaptiveUPGD single-tensor": lambda ps: AdaptiveUPGD(ps, lr=1e-2, sigma=0.0,
                                                                    foreach=False),
              "UPGD": lambda ps: UPGD(ps, lr=1e-1, sigma=0.0)}
    for name, make in makers.items():
        ref, model = build(), sharded()
        opts = make(ref.parameters()), make(model.parameters())
        buffers = []
        for x, y in batches(10):
            for m, o in zip((ref, model), opts):
                loss_of(m, x, y).backward()
                o.step()
                o.zero_grad()
            if "single" not in name:  # the multi-tensor step's reused gate buffer
                buffers.append(id(opts[1]._scratch[("gate", 0)][1][0]))
        if buffers:
            out[f"buffers rebuilt {name}"] = len(set(buffers)) - 1
        out[name] = max(float((p.full_tensor() - q).detach().abs().max())
                        for p, q in zip(model.parameters(), ref.parameters()))
    return out


def noise_ratios() -> dict:
    """Noise-to-update ratio (whole tensors) per path, and under gradients scaled by c."""
    paths = {"instant": {}, "instant single-tensor": {"foreach": False},
             "EMA": {"instant_noise_scale": False}}
    out = {}
    ref = build()  # one process's run of the EMA path, for the EMA's lagging level
    opt = AdaptiveUPGD(ref.parameters(), lr=1e-3, sigma=SIGMA, adaptive_noise=True,
                       **paths["EMA"])
    with NoiseRecorder(opt) as rec:
        for x, y in batches(10):
            loss_of(ref, x, y).backward()
            opt.step()
            opt.zero_grad()
    out["EMA one process"] = rec.ratio()
    for name, extra in paths.items():
        for c in (1.0, 0.5, 0.1):
            model = sharded()
            opt = AdaptiveUPGD(model.parameters(), lr=1e-3, sigma=SIGMA, adaptive_noise=True,
                               **extra)
            for group in opt.param_groups:  # the same streams for every c (as a resume would)
                group["noise_seed"] = 1234
            with NoiseRecorder(opt) as rec:
                for x, y in batches(10):
                    loss_of(model, x, y, scale=c).backward()
                    opt.step()
                    opt.zero_grad()
            out[f"{name} c={c}"] = rec.ratio()
    return out


def fixed_noise() -> dict:
    """Fixed noise (an absolute std) on shards: the noise rms over whole tensors is sigma."""
    out = {}
    for name, make in (("AdaptiveUPGD", AdaptiveUPGD), ("UPGD", UPGD)):
        model = sharded()
        opt = make(model.parameters(), lr=1e-3, sigma=1e-3)
        with NoiseRecorder(opt) as rec:
            for x, y in batches(3):
                loss_of(model, x, y).backward()
                opt.step()
                opt.zero_grad()
        out[f"fixed {name} noise rms / sigma"] = rec.first_step_noise_rms() / 1e-3
    return out


def uneven_pieces(rank: int) -> dict:
    """A 1-D DTensor whose shards hold 800,000 and 8,000 elements, the small one's gradient
    100x larger: each rank's per-element noise std must be sigma * rms(whole gradient)."""
    mesh = init_device_mesh("cpu", (2,))
    sizes = (800_000, 8_000)
    gen = torch.Generator().manual_seed(11 + rank)
    grad_local = torch.randn(sizes[rank], generator=gen) * (1.0 if rank == 0 else 100.0)

    def dtensor(local):
        return DTensor.from_local(local, mesh, [Shard(0)], shape=(sum(sizes),), stride=(1,),
                                  run_check=False)
    whole_sq = torch.tensor([grad_local.double().square().sum().item()])
    dist.all_reduce(whole_sq)
    expected = SIGMA * float((whole_sq / sum(sizes)).sqrt())
    out = {}
    for name, extra in (("instant", {}), ("EMA", {"instant_noise_scale": False})):
        p = torch.nn.Parameter(dtensor(torch.zeros(sizes[rank])))
        p.grad = dtensor(grad_local.clone())
        opt = UPGD([p], lr=0.0, weight_decay=0.0, sigma=SIGMA, adaptive_noise=True, **extra)
        seen = []
        opt.register_noise_hook(lambda q, x, xi: seen.append(xi.to_local().double().std()))
        opt.step()
        out[f"{name} std / expected"] = float(seen[0]) / expected
        if name == "EMA":
            ema = float(opt.state[p]["noise_scale_ema"])
            out["EMA state / expected"] = ema / ((1 - 0.999) * expected / SIGMA)
    return out


def vgs_factor() -> dict:
    ref, model = build(), sharded()
    scalers = [VarianceGradientScaler(m.parameters(), warmup_steps=0, alpha=0.01,
                                      min_scaling_factor=1e-6,
                                      variance_cap=None) for m in (ref, model)]
    for x, y in batches(6, seed=9):
        for m, vgs in zip((ref, model), scalers):
            loss_of(m, x, y).backward()
            vgs.scale_gradients()
            vgs.step()
            m.zero_grad()
    factors = [s.get_scaling_factor() for s in scalers]
    ema_diff = max(float(((getattr(scalers[1], k) - getattr(scalers[0], k)).abs()
                          / getattr(scalers[0], k).abs().max()).max())
                   for k in ("param_grad_mean_ema", "param_grad_sq_ema"))
    return {"vgs reference": factors[0], "vgs sharded": factors[1], "vgs ema rel diff": ema_diff,
            "vgs rank spread": gather_max_diff(torch.tensor([factors[1]]))}


def hsdp_replicas() -> dict:
    """HSDP on a (replicate=2, shard=1) mesh with per-rank data: the replicas' noise (and
    so their parameters) must be identical, and the ratio must still be sigma."""
    mesh = init_device_mesh("cpu", (2, 1), mesh_dim_names=("replicate", "shard"))
    model = sharded(mesh)
    opt = AdaptiveUPGD(model.parameters(), lr=1e-3, sigma=SIGMA, adaptive_noise=True)
    logged = []
    with NoiseRecorder(opt) as rec, \
            NoiseMonitor(opt, every=1, callback=lambda step, m: logged.append(m)):
        for _ in range(10):
            x, y = torch.randn(32, 16), torch.randn(32, 1)  # per-rank global RNG
            loss_of(model, x, y).backward()
            opt.step()
            opt.zero_grad()
    flat = torch.cat([p.to_local().detach().flatten() for p in model.parameters()])
    return {"hsdp replica diff": gather_max_diff(flat), "hsdp ratio": rec.ratio(),
            "hsdp monitor": [{k.split("/")[1]: v for k, v in m.items()} for m in logged],
            "hsdp recorder": {"noise_to_update_ratio": rec.weighted_ratios(),
                              "noise_rms": rec.noise_levels()}}


def state_dict_resume() -> dict:
    """get_state_dict / set_state_dict (what DCP saves and loads) keep the noise streams: a
    resumed optimizer takes the same next steps as the one that kept running."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_state_dict,
        set_state_dict,
    )
    options = StateDictOptions(flatten_optimizer_state_dict=True)
    data = batches(5, seed=21)

    def run(model, opt, pairs):
        for x, y in pairs:
            loss_of(model, x, y).backward()
            opt.step()
            opt.zero_grad()
    make = lambda m: AdaptiveUPGD(m.parameters(), lr=1e-2, sigma=SIGMA,  # noqa: E731
                                  adaptive_noise=True, instant_noise_scale=False)
    model = sharded()
    opt = make(model)
    run(model, opt, data[:2])
    msd, osd = get_state_dict(model, opt, options=options)
    msd = {k: v.detach().clone() for k, v in msd.items()}
    osd = copy.deepcopy(osd)
    run(model, opt, data[2:])
    again = sharded()
    opt2 = make(again)
    set_state_dict(again, opt2, model_state_dict=msd, optim_state_dict=osd, options=options)
    draws = opt2.param_groups[0]["noise_draws"]
    run(again, opt2, data[2:])
    diff = max(float((p.full_tensor() - q.full_tensor()).detach().abs().max())
               for p, q in zip(model.parameters(), again.parameters()))
    suffixes = {k.rsplit(".", 1)[1] for k in osd if k.startswith("param_groups.")}
    return {"flat noise keys": sorted(suffixes & {"noise_seed", "noise_draws"}),
            "resumed draws": draws, "resumed diff": diff}


def monitored() -> dict:
    """A NoiseMonitor's metrics of each logged step, per path, with the hook-based recorder
    beside it and alone (the fast steps)."""
    paths = {"instant": {}, "instant single-tensor": {"foreach": False},
             "EMA": {"instant_noise_scale": False}, "fixed": {"adaptive_noise": False}}
    out = {}
    for name, kwargs in paths.items():
        for recorded in (True, False):
            model = sharded()
            opt = AdaptiveUPGD(model.parameters(), lr=1e-3, **{"sigma": SIGMA,
                               "adaptive_noise": True, **kwargs})
            logged, rec = [], NoiseRecorder(opt)
            with contextlib.ExitStack() as stack:
                stack.enter_context(NoiseMonitor(opt, every=1,
                                                 callback=lambda step, m, log=logged: log.append(m)))
                if recorded:
                    stack.enter_context(rec)
                for x, y in batches(4, seed=9):
                    loss_of(model, x, y).backward()
                    opt.step()
                    opt.zero_grad()
            tag = f"monitor {name} {'recorded' if recorded else 'alone'}"
            out[tag] = [{k.split("/")[1]: v for k, v in m.items()} for m in logged]
            if recorded:
                out[f"recorder {name}"] = {"noise_to_update_ratio": rec.weighted_ratios(),
                                           "noise_rms": rec.noise_levels()}
    return out | watched()


def watched() -> dict:
    """The TensorBoard adapter as FSDP2 scripts use it: every rank watches, rank 0 writes."""
    written = []

    class Writer:
        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

    model = sharded()
    opt = AdaptiveUPGD(model.parameters(), lr=1e-3, sigma=SIGMA, adaptive_noise=True)
    with watch(Writer() if dist.get_rank() == 0 else None, opt, every=2) as monitor:
        for x, y in batches(4, seed=9):
            loss_of(model, x, y).backward()
            opt.step()
            opt.zero_grad()
    return {"watch written": written, "watch latest": monitor.latest}


def scenario(rank: int, world: int) -> dict:
    torch.manual_seed(100 + rank)
    out = {("" if k.startswith("buffers") else "sigma0 ") + k: v
           for k, v in sigma_zero_matches_one_process().items()}
    out.update(noise_ratios())
    out.update(fixed_noise())
    out.update(uneven_pieces(rank))
    out.update(vgs_factor())
    out.update(hsdp_replicas())
    out.update(state_dict_resume())
    out.update(monitored())
    return out


if __name__ == "__main__":
    worker_main(scenario)
