"""NoiseMonitor: the numbers it logs, when it logs them, and that it changes nothing."""
from __future__ import annotations

import math

import pytest
import torch
from optim_helpers import SCHEDULES, no_cuda_sync, use_schedule

from upgd_migrate.optim import (
    UPGD,
    UPGDW,
    AdaptiveUPGD,
    NoiseRecorder,
    VarianceGradientScaler,
)
from upgd_migrate.optim.monitor import NoiseMonitor

MODES = {
    "fixed": {},
    "sigma0": {"sigma": 0.0},
    "instant": {"adaptive_noise": True, "sigma": 0.05},
    "ema": {"adaptive_noise": True, "sigma": 0.05, "instant_noise_scale": False},
}
CASES = [(cls, mode) for cls in (AdaptiveUPGD, UPGD) for mode in MODES] + [(UPGDW, "fixed")]
SHAPES = [(40, 30), (40,), (7, 40), (7,), (1,)]
STEPS = 12


def _run(cls, kwargs, foreach, every=None, steps=STEPS, recorder=False):
    """A few steps from seed 0; returns (params and states, RNG state, logged, recorder)."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
    groups = [{"params": params[:3]}, {"params": params[3:], "lr": 3e-3}]
    opt = cls(groups, lr=1e-2, foreach=foreach, **kwargs)
    grads = torch.Generator().manual_seed(1)
    logged: list[tuple[int, dict]] = []
    monitor = None if every is None else NoiseMonitor(
        opt, every=every, callback=lambda s, m: logged.append((s, m)))
    rec = NoiseRecorder(opt).__enter__() if recorder else None
    for t in range(steps):
        for i, p in enumerate(params):
            p.grad = None if (i == 4 and t % 3 == 0) else torch.randn(p.shape, generator=grads)
        opt.step()
    if monitor is not None:
        monitor.close()
    tensors = [p.detach().clone() for p in params] + [
        v.clone() for p in params for v in opt.state[p].values() if isinstance(v, torch.Tensor)]
    return tensors, torch.get_rng_state(), logged, rec


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("cls,mode", CASES, ids=lambda v: getattr(v, "__name__", v))
def test_a_monitored_run_is_bit_identical_and_keeps_its_schedule(cls, mode, schedule,
                                                                 monkeypatch):
    foreach, ran = use_schedule(schedule, monkeypatch)
    plain, plain_rng, _, _ = _run(cls, MODES[mode], foreach)
    plain_two_lane = ran["two-lane"]
    watched, watched_rng, logged, _ = _run(cls, MODES[mode], foreach, every=1)
    assert ran["two-lane"] == 2 * plain_two_lane  # the monitor kept the fast path
    assert len(logged) == STEPS
    assert torch.equal(plain_rng, watched_rng)  # the same draws, no more
    assert len(plain) == len(watched)
    for a, b in zip(plain, watched):
        assert torch.equal(a, b)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("cls,mode", CASES, ids=lambda v: getattr(v, "__name__", v))
def test_the_ratio_and_noise_level_are_the_ones_verify_measures(cls, mode, schedule,
                                                                monkeypatch):
    foreach, _ = use_schedule(schedule, monkeypatch)
    *_, logged, _ = _run(cls, MODES[mode], foreach, every=1)
    *_, rec = _run(cls, MODES[mode], foreach, recorder=True)  # the hooked, sequential step
    if mode == "sigma0":
        assert not rec.steps and all(m["upgd/noise_rms"] == 0.0 for _, m in logged)
        assert all(m["upgd/noise_to_update_ratio"] == 0.0 for _, m in logged)
        return
    assert len(rec.steps) == len(logged)
    for (_, m), step in zip(logged, rec.steps):
        total = sum(step.numels)
        level = math.sqrt(sum(r * r * n for r, n in zip(step.noise_rms, step.numels)) / total)
        assert m["upgd/noise_to_update_ratio"] == pytest.approx(step.weighted_ratio(), rel=1e-4)
        assert m["upgd/noise_rms"] == pytest.approx(level, rel=1e-4)


def test_update_rms_and_gate_mean_from_the_formulas():
    """Step 1 of UPGD from zero utility: x is the gradient, the gate follows docs/optimizers.md."""
    torch.manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(s)) for s in [(50, 4), (9,)]]
    grads = [torch.randn(p.shape) for p in params]
    opt = UPGD(params, lr=1e-2, sigma=0.05, adaptive_noise=True, beta_utility=0.9)
    expected_u = [(-(g * p)).detach() for g, p in zip(grads, params)]  # u/(1-b) after step 1
    for p, g in zip(params, grads):
        p.grad = g.clone()
    with NoiseMonitor(opt) as monitor:
        opt.step()
    m = monitor.pop()
    flat_u = torch.cat([u.flatten() for u in expected_u]).double()
    n = ((flat_u - flat_u.min()) / (flat_u.max() - flat_u.min() + 1e-8)).clamp(0, 1)
    gate = 1.0 - torch.sigmoid(2.0 * (n - 0.5))
    flat_g = torch.cat([g.flatten() for g in grads]).double()
    assert m["upgd/gate_mean"] == pytest.approx(float(gate.mean()), rel=1e-5)
    assert m["upgd/update_rms"] == pytest.approx(float(flat_g.pow(2).mean().sqrt()), rel=1e-5)
    assert monitor.pop() is None  # handed out once


def test_adaptive_ratio_is_sigma_on_large_tensors():
    params = [torch.nn.Parameter(torch.randn(300, 300)) for _ in range(2)]
    opt = AdaptiveUPGD(params, sigma=0.05, adaptive_noise=True)
    with NoiseMonitor(opt, every=1) as monitor:
        for scale in (1.0, 1e-3):  # any gradient scale
            for p in params:
                p.grad = torch.randn_like(p) * scale
            opt.step()
            assert monitor.latest["upgd/noise_to_update_ratio"] == pytest.approx(0.05, rel=0.01)


def test_every_k_logs_the_first_step_then_each_kth_and_arm_adds_one():
    p = torch.nn.Parameter(torch.zeros(4))
    opt = UPGD([p], sigma=0.1)
    seen: list[int] = []
    monitor = NoiseMonitor(opt, every=4, callback=lambda s, m: seen.append(s))
    for t in range(1, 11):
        if t == 3:
            monitor.arm()
        p.grad = torch.ones(4)
        opt.step()
    monitor.close()
    p.grad = torch.ones(4)
    opt.step()  # detached: no more calls, no observer left behind
    assert seen == [1, 3, 5, 9]
    assert "_observer" not in opt.__dict__


def test_every_none_logs_only_armed_steps_of_the_armed_optimizer():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    first, second = UPGD([a], sigma=0.1), UPGD([b], sigma=0.1)
    seen: list[tuple[int, str]] = []
    with NoiseMonitor([first, second], every=None,
                      callback=lambda s, m: seen.append((s, sorted(m)[0]))) as monitor:
        for t in range(1, 5):
            if t == 3:
                monitor.arm(second)
            a.grad, b.grad = torch.ones(3), torch.ones(3)
            first.step()
            second.step()
    assert seen == [(3, "upgd_1/gate_mean")]


def test_arm_from_inside_a_closure_observes_that_very_step():
    p = torch.nn.Parameter(torch.ones(3))
    opt = AdaptiveUPGD([p], sigma=0.05, adaptive_noise=True)
    seen: list[int] = []
    monitor = NoiseMonitor(opt, every=None, callback=lambda s, m: seen.append(s))

    def closure(arm: bool):
        p.grad = torch.ones(3)
        if arm:
            monitor.arm(opt)
        return 0.0
    for t in range(1, 4):
        opt.step(lambda arm=(t == 2): closure(arm))
    monitor.close()
    assert seen == [2]


def test_a_step_without_gradients_logs_nothing():
    p = torch.nn.Parameter(torch.zeros(4))
    opt = UPGD([p])
    with NoiseMonitor(opt, every=1) as monitor:
        opt.step()
    assert monitor.latest is None


def test_vgs_values_are_the_factor_this_step_was_scaled_by():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(20, 5)) for _ in range(3)]
    opt = AdaptiveUPGD(params, sigma=0.05, adaptive_noise=True)
    vgs = VarianceGradientScaler(params, warmup_steps=3, alpha=0.5)
    applied = []
    with NoiseMonitor(opt, vgs=vgs, every=1) as monitor:
        for t in range(8):
            for i, p in enumerate(params):  # means near zero: a high normalised variance
                p.grad = torch.randn_like(p) * (1 + i) + 0.05
            applied.append(vgs.scale_gradients())
            opt.step()
            vgs.step()
            m = monitor.pop()
            assert m["vgs/scaling_factor"] == applied[-1]
            nv = m["vgs/normalized_variance"]
            assert (nv > 0) == (t > 0)  # no statistics before the first vgs.step()
            if t >= 3:  # after warmup the factor is the formula of nv
                assert applied[-1] == pytest.approx(max(0.1, 1 / (1 + 0.5 * nv)), rel=1e-6)
    assert min(applied) < 1.0


def test_a_second_optimizer_gets_its_own_prefix():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    first, second = UPGD([a], sigma=0.1), AdaptiveUPGD([b], sigma=0.1)
    with NoiseMonitor([first, second], every=1) as monitor:
        a.grad, b.grad = torch.ones(3), torch.ones(3)
        second.step()
        assert set(monitor.pop()) == {"upgd_1/noise_to_update_ratio", "upgd_1/noise_rms",
                                      "upgd_1/update_rms", "upgd_1/gate_mean"}


def test_refuses_what_it_cannot_watch():
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(TypeError, match="watches UPGD, AdaptiveUPGD or UPGDW optimizers, got Adam"):
        NoiseMonitor(torch.optim.Adam([p]))
    with pytest.raises(ValueError, match="Invalid every: 0"):
        NoiseMonitor(UPGD([p]), every=0)


@pytest.mark.cuda
def test_cuda_unlogged_steps_never_sync_and_logged_ones_match():
    params = [torch.nn.Parameter(torch.randn(64, 64, device="cuda")) for _ in range(3)]
    opt = AdaptiveUPGD(params, sigma=0.05, adaptive_noise=True)
    monitor = NoiseMonitor(opt, every=3)
    for step in range(1, 8):
        for p in params:
            p.grad = torch.randn_like(p)
        if step % 3 == 1:
            opt.step()  # logged: reads its numbers back
            assert monitor.pop()["upgd/noise_to_update_ratio"] == pytest.approx(0.05, rel=0.05)
            continue
        with no_cuda_sync():
            opt.step()
    monitor.close()
