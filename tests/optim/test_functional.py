"""The multi-tensor (foreach) path agrees with the single-tensor reference, step after step."""
from __future__ import annotations

import pytest
import torch
from optim_helpers import no_cuda_sync, use_schedule

from upgd_migrate.optim import UPGD, UPGDW, AdaptiveUPGD

MODES = {
    "fixed": {},
    "sigma0": {"sigma": 0.0},
    "instant": {"adaptive_noise": True, "sigma": 0.05},
    "ema": {"adaptive_noise": True, "sigma": 0.05, "instant_noise_scale": False},
}
CASES = [(cls, mode) for cls in (AdaptiveUPGD, UPGD) for mode in MODES] + [(UPGDW, "fixed"),
                                                                              (UPGDW, "sigma0")]
SHAPES = [(17, 9), (17,), (3, 17), (3,), (1,)]


def _trajectory(cls, kwargs, foreach: bool, steps: int = 60) -> list[torch.Tensor]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
    groups = [{"params": params[:3]}, {"params": params[3:], "lr": 3e-3}]
    opt = cls(groups, lr=1e-2, foreach=foreach, **kwargs)
    grads = torch.Generator().manual_seed(1)
    for t in range(steps):
        for i, p in enumerate(params):
            # one parameter sits out some steps, as frozen or unused parameters do
            p.grad = None if (i == 4 and t % 3 == 0) else torch.randn(p.shape, generator=grads)
        opt.step()
    return [p.detach().clone() for p in params] + [
        v.clone() for p in params for v in opt.state[p].values() if isinstance(v, torch.Tensor)]


@pytest.mark.parametrize("schedule", ["multi-tensor", "two-lane"])
@pytest.mark.parametrize("cls,mode", CASES, ids=lambda v: getattr(v, "__name__", v))
def test_multi_tensor_matches_single_tensor(cls, mode, schedule, monkeypatch):
    single = _trajectory(cls, MODES[mode], foreach=False)
    foreach, ran = use_schedule(schedule, monkeypatch)
    multi = _trajectory(cls, MODES[mode], foreach=foreach)
    assert ran["two-lane"] == (60 if schedule == "two-lane" else 0)
    assert len(single) == len(multi)
    for a, b in zip(single, multi):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_foreach_none_picks_multi_tensor_on_cpu(monkeypatch):
    from upgd_migrate.optim import _multi_tensor as M
    calls = []
    monkeypatch.setattr(M, "param_update", lambda *a: calls.append("multi"))
    p = torch.nn.Parameter(torch.zeros(3))
    opt = AdaptiveUPGD([p])
    p.grad = torch.ones(3)
    opt.step()
    assert calls == ["multi"]


@pytest.mark.cuda
def test_cuda_step_is_sync_free():
    params = [torch.nn.Parameter(torch.randn(64, 64, device="cuda")) for _ in range(3)]
    for kwargs in ({}, {"adaptive_noise": True, "sigma": 0.05},
                   {"adaptive_noise": True, "sigma": 0.05, "instant_noise_scale": False}):
        opt = AdaptiveUPGD(params, **kwargs)
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()  # warm-up: lazy state creation may allocate
        with no_cuda_sync():
            opt.step()


@pytest.mark.parametrize("schedule", ["multi-tensor", "two-lane"])
@pytest.mark.parametrize("mode", ["fixed", "instant"])
def test_unfused_adam_fallback_matches_single_tensor(monkeypatch, mode, schedule):
    """Devices without torch's fused Adam kernel take the foreach formulas instead."""
    from upgd_migrate.optim import _multi_tensor as M
    monkeypatch.setattr(M, "_FUSED_ADAM_DEVICES", ())
    single = _trajectory(AdaptiveUPGD, MODES[mode], foreach=False, steps=20)
    foreach, _ = use_schedule(schedule, monkeypatch)
    multi = _trajectory(AdaptiveUPGD, MODES[mode], foreach=foreach, steps=20)
    for a, b in zip(single, multi):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
