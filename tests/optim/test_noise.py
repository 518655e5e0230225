"""Adaptive noise as docs/optimizers.md defines it: ratio, amplification, no start-up spike."""
from __future__ import annotations

import copy

import pytest
import torch
from optim_helpers import FIXTURES, params_for

from upgd_migrate.optim import UPGD, AdaptiveUPGD, NoiseRecorder, amplification

SIGMA = 0.05


def _run(cls, kwargs, shapes, steps, grad_scale=1.0, seed=0) -> float:
    """Noise-to-update ratio over a run whose gradients are drawn from a fixed stream and
    multiplied by ``grad_scale`` (a steady VGS factor); the noise RNG is seeded identically."""
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    opt = cls(params, lr=1e-3, **kwargs)
    grads = torch.Generator().manual_seed(seed + 1)
    with NoiseRecorder(opt) as rec:
        for _ in range(steps):
            for p in params:
                p.grad = (torch.randn(p.shape, generator=grads) + 0.1) * grad_scale
            opt.step()
    return rec.ratio()


@pytest.mark.parametrize("cls", [AdaptiveUPGD, UPGD])
@pytest.mark.parametrize("numel,steps", [(10, 400), (10**4, 20), (10**6, 3)])
def test_adaptive_ratio_matches_sigma_for_any_size(cls, numel, steps):
    ratio = _run(cls, {"adaptive_noise": True, "sigma": SIGMA}, [(numel,)], steps)
    assert ratio == pytest.approx(SIGMA, rel=0.05)


@pytest.mark.parametrize("cls", [AdaptiveUPGD, UPGD])
@pytest.mark.parametrize("instant", [True, False])
def test_adaptive_noise_is_not_amplified_by_gradient_scaling(cls, instant):
    kwargs = {"adaptive_noise": True, "sigma": SIGMA, "instant_noise_scale": instant}
    shapes = [(32, 16), (32,), (4, 32)]
    base = _run(cls, kwargs, shapes, steps=30)
    for c in (1.0, 0.5, 0.1):
        amp = amplification(_run(cls, kwargs, shapes, steps=30, grad_scale=c), base)
        assert amp == pytest.approx(1.0, abs=0.03), (c, amp)


def test_fixed_noise_on_upgd_is_amplified_by_one_over_c():
    """The problem the option solves: fixed noise over a scaled SGD gradient."""
    shapes = [(32, 16), (32,), (4, 32)]
    kwargs = {"sigma": 0.01}
    base = _run(UPGD, kwargs, shapes, steps=30)
    for c in (0.5, 0.1):
        amp = amplification(_run(UPGD, kwargs, shapes, steps=30, grad_scale=c), base)
        assert amp == pytest.approx(1.0 / c, rel=0.03), (c, amp)


def test_fixed_noise_on_adaptive_upgd_is_not_amplified_by_a_steady_scale():
    """Adam's direction is invariant to a constant gradient scale (docs/optimizers.md)."""
    shapes = [(32, 16), (32,)]
    base = _run(AdaptiveUPGD, {"sigma": 0.01}, shapes, steps=20)
    amp = amplification(_run(AdaptiveUPGD, {"sigma": 0.01}, shapes, steps=20, grad_scale=0.1), base)
    assert amp == pytest.approx(1.0, abs=0.01)


def reference_ema_spike(grad_norm: float, beta: float = 0.999, t: int = 1) -> float:
    """The reference EMA path's first-step multiplier: initialised at 1.0, bias-corrected as if
    from zero (docs/optimizers.md)."""
    ema = beta**t * 1.0 + (1 - beta**t) * grad_norm
    return ema / (1 - beta**t) / grad_norm


def test_reference_spike_figure():
    assert reference_ema_spike(4.7) == pytest.approx(213.6, abs=0.5)
    assert reference_ema_spike(0.05) == pytest.approx(20000, rel=0.01)


@pytest.mark.parametrize("foreach", [False, True])
def test_ema_path_over_g0_state_starts_at_the_intended_level(foreach):
    saved = torch.load(FIXTURES / "optim" / "adaptive_upgd_g0.pt", weights_only=True)
    params = params_for(saved)
    opt = AdaptiveUPGD(params, foreach=foreach)
    opt.load_state_dict(copy.deepcopy(saved))
    for group in opt.param_groups:  # switched on over a state that never had it
        group.update(adaptive_noise=True, sigma=SIGMA, instant_noise_scale=False)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    with NoiseRecorder(opt) as rec:
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen) * 1e-2
        opt.step()
    first = rec.steps[0]
    # The first step's noise is sigma times the direction's rms, per tensor (x1, not x213).
    spike = max(r / SIGMA for r, n in zip(first.ratios, first.numels) if n >= 16)
    assert spike == pytest.approx(1.0, abs=0.35)  # chi noise of a 16-element tensor
    assert rec.ratio() == pytest.approx(SIGMA, rel=0.15)
    assert all(opt.state[p]["noise_scale_steps"] == 1 for p in params)


def test_switching_adaptive_noise_on_mid_run_does_not_raise_or_spike():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(64, 64))]
    opt = AdaptiveUPGD(params, lr=1e-3)
    gen = torch.Generator().manual_seed(5)
    for _ in range(10):
        params[0].grad = torch.randn(64, 64, generator=gen)
        opt.step()
    opt.param_groups[0].update(adaptive_noise=True, sigma=SIGMA, instant_noise_scale=False)
    with NoiseRecorder(opt) as rec:
        params[0].grad = torch.randn(64, 64, generator=gen)
        opt.step()
    assert rec.steps[0].ratios[0] == pytest.approx(SIGMA, rel=0.05)


def test_min_noise_std_floor():
    p = torch.nn.Parameter(torch.zeros(1000))
    opt = UPGD([p], adaptive_noise=True, sigma=SIGMA, min_noise_std=1e-3)
    seen = []
    opt.register_noise_hook(lambda p_, x, xi: seen.append(float(xi.std())))
    p.grad = torch.zeros_like(p)
    opt.step()
    assert seen[0] == pytest.approx(1e-3, rel=0.1)
