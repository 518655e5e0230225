"""Sampled proxies: the figures of a sampled run agree with the full-size run's, and what stays
whole-tensor (VGS statistics, saved finiteness, numel weights) stays whole."""
from __future__ import annotations

import math

import pytest
import torch

from upgd_migrate.checkpoint.steps import migrate_optimizer
from upgd_migrate.verify import sample as S
from upgd_migrate.verify.drive import verify_optimizer

SIZES = (30_000, 12_000, 50)  # two sampled tensors and one kept whole
GROUP = {"lr": 1e-4, "weight_decay": 0.001, "beta_utility": 0.999, "sigma": 0.001,
         "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "adaptive_noise": False,
         "noise_beta": 0.999, "min_noise_std": 1e-6}


def legacy_state(seed: int = 7) -> dict:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for i, n in enumerate(SIZES):
        scale = 10.0 ** -(2 + i)  # tensors on different gradient scales
        m = torch.randn(n, generator=gen) * scale * 0.3
        v = m * m + (torch.rand(n, generator=gen) + 0.5) * scale**2
        state[i] = {"step": 1200, "avg_utility": torch.randn(n, generator=gen) * 1e-5,
                    "first_moment": m, "sec_moment": v}
    return {"state": state, "param_groups": [{**GROUP, "params": list(range(len(SIZES)))}]}


def _pair(sd):
    full = verify_optimizer(sd, "s", steps=8, sample=0)
    part = verify_optimizer(sd, "s", steps=8, sample=2048)
    return full, part


@pytest.mark.parametrize("migrated", [False, True])
def test_sampled_figures_agree_with_the_full_run_and_verdicts_match(migrated):
    sd = legacy_state()
    if migrated:
        sd = migrate_optimizer(sd).state
    full, part = _pair(sd)
    assert [(c.name, c.ok) for c in part.checks] == [(c.name, c.ok) for c in full.checks]
    assert part.metrics["ratio"] == pytest.approx(full.metrics["ratio"], rel=0.02)
    assert part.metrics["first_step"] == pytest.approx(full.metrics["first_step"], rel=0.03)
    for key, amp in full.metrics["amplification"].items():
        assert part.metrics["amplification"][key] == pytest.approx(amp, rel=0.01), key
    assert part.metrics["vgs_factor"] == pytest.approx(full.metrics["vgs_factor"], abs=0.02)
    assert part.metrics["target"] == full.metrics["target"]  # read from the whole state


def test_small_tensors_are_driven_whole():
    assert S.indices(4096, 4096, torch.Generator()) is None
    assert S.indices(10, 0, torch.Generator()) is None
    picked = S.indices(10_000, 64, torch.Generator().manual_seed(0))
    assert picked.shape == (64,) and int(picked.max()) < 10_000


def test_a_non_finite_value_outside_the_sample_still_fails_finite():
    sd = legacy_state()
    sd["state"][0]["sec_moment"][-1] = float("nan")  # one element of 30000
    report = verify_optimizer(sd, "s", steps=2, sample=64)
    assert report.check("finite").ok is False


def test_tensors_are_weighted_by_their_saved_numel():
    sd = legacy_state()
    report = verify_optimizer(sd, "s", steps=2, sample=64)
    # the level is a numel-weighted RMS of per-tensor levels: the fixed sigma, whatever sample
    assert report.metrics["first_step"] == pytest.approx(0.001, rel=0.05)


def test_whole_tensor_statistics_follow_the_law_of_a_full_draw():
    gen = torch.Generator().manual_seed(3)
    n = 4000
    mu = torch.randn(n, generator=gen) * 0.01
    sd = torch.rand(n, generator=gen) * 0.02
    draws = [S.WholeTensorStats(mu, sd, n).draw(gen) for _ in range(3000)]
    m_model = torch.tensor([float(d.mean()) for d in draws])
    q_model = torch.tensor([float(d.square().mean()) for d in draws])
    full = [mu + sd * torch.randn(n, generator=gen) for _ in range(3000)]
    m_full = torch.tensor([float(g.mean()) for g in full])
    q_full = torch.tensor([float(g.square().mean()) for g in full])
    for model, real in ((m_model, m_full), (q_model, q_full)):
        assert float(model.mean()) == pytest.approx(float(real.mean()), abs=0.1 * float(real.std()))
        assert float(model.std()) == pytest.approx(float(real.std()), rel=0.08)


def test_relative_error_bound_shrinks_with_sample_and_steps():
    assert S.relative_error(4096, 32) == pytest.approx(1 / math.sqrt(2 * 4096 * 32))
    assert S.relative_error(0, 32) == 0.0
