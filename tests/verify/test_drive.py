from __future__ import annotations

import math

import pytest
import torch
from ckpt_helpers import optim_state, vgs_state

from upgd_migrate.verify import levels
from upgd_migrate.checkpoint.steps import Context, migrate_optimizer, migrate_vgs
from upgd_migrate.verify.drive import verify_optimizer, verify_states, verify_vgs

NUMELS = [96, 16, 32, 2, 16, 1]


def _verify(sd, **kw):
    return verify_optimizer(sd, "s", steps=16, **kw)


@pytest.mark.parametrize("name", ["adaptive_upgd_g1.pt", "adaptive_upgd_g1_ema.pt"])
def test_migrated_g1_has_unit_amplification_and_no_spike(name):
    report = _verify(migrate_optimizer(optim_state(name)).state)
    assert report.ok, report.checks
    amps = report.metrics["amplification"]
    assert set(amps) == {"0.5", "0.1", "vgs"}
    assert all(abs(a - 1.0) <= 0.03 for a in amps.values())
    assert report.check("first step").ok is True
    assert report.check("reference resume") is None  # migrated: no legacy semantics left
    factors = report.metrics["vgs_factor"]
    assert factors[0] < 1.0  # the VGS run really scaled the gradients


def test_unmigrated_g1_ema_state_reports_the_spike():
    sd = optim_state("adaptive_upgd_g1_ema.pt")
    report = _verify(sd)
    assert not report.ok
    ref = report.check("reference resume")
    expected, _ = levels.reference_resume_level(sd)
    assert ref.ok is False
    assert ref.detail == (f"spike x{expected / 0.001:.3g}: {expected:.3g} on resume "
                          "(reference EMA path) vs 0.001")
    assert ref.detail.startswith("spike x6.7")
    assert report.check("first step").detail.startswith("drop x")


def test_reference_resume_level_formula():
    sd = optim_state("adaptive_upgd_g1_ema.pt")
    level, how = levels.reference_resume_level(sd)
    group, t = sd["param_groups"][0], 1201
    stds, sizes = [], []
    for entry in sd["state"].values():
        norm = math.sqrt(float(entry["sec_moment"].double().sum()) / (1 - 0.999**1200))
        ema = 0.999 * 4.7 + 0.001 * norm
        stds.append(group["sigma"] * ema / (1 - 0.999**t))
        sizes.append(entry["avg_utility"].numel())
    expected = math.sqrt(sum(s * s * n for s, n in zip(stds, sizes)) / sum(sizes))
    assert level == pytest.approx(expected, rel=1e-12)
    assert how == "reference EMA path"


def test_reference_keyerror_when_adaptive_noise_is_switched_on_over_old_state():
    sd = optim_state("adaptive_upgd_g1.pt")
    sd["param_groups"][0]["adaptive_noise"] = True
    level, how = levels.reference_resume_level(sd)
    assert level is None and how == "reference EMA path, KeyError 'grad_norm_ema' on some tensors"


def test_reference_crash_is_reported():
    sd = optim_state("adaptive_upgd_g1.pt")
    sd["param_groups"][0]["adaptive_noise"] = True
    check = _verify(sd).check("reference resume")
    assert check.ok is False
    assert check.detail == ("reference EMA path, KeyError 'grad_norm_ema' on some tensors: the "
                            "code that wrote this state crashes on resume")


def test_ema_path_lags_a_gradient_scale_drop_and_verify_says_so():
    sd = optim_state("adaptive_upgd_g2.pt")
    sd["param_groups"][0].update(adaptive_noise=True, instant_noise_scale=False)
    ema = _verify(migrate_optimizer(sd).state)
    assert ema.check("first step").ok is True  # seeded: no jump on resume
    assert ema.metrics["amplification"]["0.1"] > 1.5 and not ema.ok
    assert _verify(migrate_optimizer(sd, Context(instant_noise=True)).state).ok


def test_unmigrated_fixed_noise_is_amplified_by_gradient_scaling():
    report = _verify(optim_state("adaptive_upgd_g1.pt"))
    check = report.check("amplification")
    assert check.ok is False
    assert report.metrics["amplification"]["0.1"] > 2.0  # heads for 1/c while v̂ lags
    assert report.check("ratio").ok is None  # fixed noise has no ratio target


def test_upgdw_amplification_is_reported_not_checked():
    report = _verify(migrate_optimizer(optim_state("upgdw.pt")).state)
    assert report.check("amplification").ok is None
    assert report.ok


def test_upgd_without_gradient_statistics_has_no_first_step_verdict():
    report = _verify(migrate_optimizer(optim_state("upgd.pt")).state)
    assert report.check("first step").ok is None
    assert report.check("ratio").ok is True and report.ok


def test_non_finite_state_fails():
    sd = migrate_optimizer(optim_state("adaptive_upgd_g2.pt")).state
    sd["state"][0] = {**sd["state"][0], "first_moment": torch.full((16, 6), float("nan"))}
    report = _verify(sd)
    assert report.check("finite").ok is False and not report.ok


@pytest.mark.parametrize("name,ok", [("vgs_v3_0.pt", False), ("vgs_v3_1.pt", True)])
def test_vgs_state_verdicts(name, ok):
    assert verify_vgs(vgs_state(name), "v").ok is ok
    assert verify_vgs(migrate_vgs(vgs_state(name)).state, "v").ok


def test_v1_vgs_is_sized_from_the_container_optimizer():
    opt = migrate_optimizer(optim_state("adaptive_upgd_g1.pt")).state
    v1 = migrate_vgs(vgs_state("vgs_v1.pt"), Context(param_numels=NUMELS)).state
    reports = verify_states([("o", "optimizer", opt), ("v", "vgs", v1)], steps=4)
    assert [r.ok for r in reports] == [True, True]
    assert verify_states([("v", "vgs", vgs_state("vgs_v1.pt"))])[0].check("loads").ok is False
