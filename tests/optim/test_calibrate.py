"""Calibration: the relative sigma reproduces the checkpoint's absolute noise level."""
from __future__ import annotations

import copy

import pytest
import torch
from optim_helpers import FIXTURES, params_for

from upgd_migrate.optim import AdaptiveUPGD, NoiseRecorder
from upgd_migrate.optim.calibrate import CalibrationError, calibrate_group, direction


def _known_moments_state(rms_target: float) -> dict:
    """Moments whose bias-corrected direction is exactly +-rms_target everywhere."""
    step, b1, b2 = 50, 0.9, 0.999
    v_hat = torch.full((100,), 4e-4)  # sqrt -> 0.02
    d = torch.tensor([rms_target, -rms_target]).repeat(50)
    m_hat = d * (v_hat.sqrt() + 1e-8)
    entry = {"step": step, "avg_utility": torch.zeros(100),
             "first_moment": m_hat * (1 - b1**step), "sec_moment": v_hat * (1 - b2**step)}
    group = {"lr": 1e-4, "weight_decay": 0.0, "beta_utility": 0.999, "sigma": 0.001,
             "beta1": b1, "beta2": b2, "eps": 1e-8, "params": [0]}
    return {"state": {0: entry}, "param_groups": [group]}


def test_known_moments_give_exact_ratio():
    cal = calibrate_group(_known_moments_state(0.5))
    assert cal.direction_rms == pytest.approx(0.5, rel=1e-6)  # float32 moments
    assert cal.sigma_relative == pytest.approx(0.001 / 0.5, rel=1e-6)
    assert (cal.tensors, cal.elements) == (1, 100)


def test_direction_matches_the_optimizer_formula():
    entry = _known_moments_state(0.25)["state"][0]
    d = direction(entry, 0.9, 0.999, 1e-8)
    torch.testing.assert_close(d.abs(), torch.full((100,), 0.25, dtype=torch.float64))


def test_calibrated_sigma_reproduces_the_absolute_noise_level_within_2_percent():
    saved = torch.load(FIXTURES / "optim" / "adaptive_upgd_g1.pt", weights_only=True)
    cal = calibrate_group(saved)
    levels = {}
    for mode, kwargs in {"absolute": {"sigma": cal.sigma_absolute},
                         "relative": {"sigma": cal.sigma_relative, "adaptive_noise": True}}.items():
        torch.manual_seed(0)
        params = params_for(saved)
        opt = AdaptiveUPGD(params)
        opt.load_state_dict(copy.deepcopy(saved))
        for group in opt.param_groups:
            group.update(kwargs)
        with NoiseRecorder(opt) as rec:
            for p in params:  # the expected gradient keeps the moments, so d, where they were
                p.grad = opt.state[p]["first_moment"] / (1 - 0.9 ** opt.state[p]["step"])
            opt.step()
        levels[mode] = rec.first_step_noise_rms()
    assert levels["relative"] == pytest.approx(levels["absolute"], rel=0.02)


def test_upgd_state_cannot_be_calibrated():
    saved = torch.load(FIXTURES / "optim" / "upgd.pt", weights_only=True)
    with pytest.raises(CalibrationError, match="no saved Adam moments"):
        calibrate_group(saved)


def test_upgdw_layout_is_read():
    saved = torch.load(FIXTURES / "optim" / "upgdw.pt", weights_only=True)
    assert calibrate_group(saved).sigma_relative > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_direction_energy_matches_the_materialised_direction(dtype, monkeypatch):
    from upgd_migrate.optim import calibrate
    monkeypatch.setattr(calibrate, "_CHUNK", 7)  # several chunks and a ragged last one
    gen = torch.Generator().manual_seed(0)
    m = (torch.randn(5, 9, generator=gen) * 1e-3).to(dtype)
    v = (m.double() ** 2 + torch.rand(5, 9, generator=gen, dtype=torch.float64) * 1e-6).to(dtype)
    entry = {"step": 40, "first_moment": m, "sec_moment": v}
    energy, numel = calibrate.direction_energy(entry, 0.9, 0.999, 1e-8)
    expected = float(direction(entry, 0.9, 0.999, 1e-8).pow(2).sum())
    assert numel == 45
    assert energy == pytest.approx(expected, rel=1e-6)
    assert torch.equal(entry["first_moment"], m)  # the state is never written
