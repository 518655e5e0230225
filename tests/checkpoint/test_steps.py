from __future__ import annotations

import copy
import io as _io
import math
import warnings

import pytest
import torch
from ckpt_helpers import OPTIM, VGS, assert_same, assert_state_tensors_kept, optim_state, vgs_state

from upgd_migrate.checkpoint.detect import AUDIT_KEY, FORMAT_KEY
from upgd_migrate.checkpoint.steps import REGISTRY, Context, migrate_optimizer, migrate_vgs
from upgd_migrate.optim import UPGD, UPGDW, AdaptiveUPGD, VarianceGradientScaler
from upgd_migrate.optim.calibrate import direction

CLASSES = {"AdaptiveUPGD": AdaptiveUPGD, "UPGD": UPGD, "UPGDW": UPGDW}
TRAINER_KEYS = ("initial_lr", "_kl_base_lr", "_lr_scale", "max_lr", "min_lr", "param_names")
NUMELS = [96, 16, 32, 2, 16, 1]


def _optimizer_for(sd: dict, cls: str):
    params = [torch.nn.Parameter(torch.zeros(sd["state"][i]["avg_utility"].shape))
              for g in sd["param_groups"] for i in g["params"]]
    groups, start = [], 0
    for g in sd["param_groups"]:
        groups.append({"params": params[start:start + len(g["params"])]})
        start += len(g["params"])
    return CLASSES[cls](groups), params


def test_registry_ids_in_order():
    assert [(m.kind, m.id) for m in REGISTRY] == [
        ("optimizer", "optim.fill-group-keys"), ("optimizer", "optim.adaptive-noise"),
        ("optimizer", "optim.instant-noise"), ("optimizer", "optim.seed-noise-ema"),
        ("optimizer", "optim.stamp-format"),
        ("vgs", "vgs.keep-legacy-statistics"), ("vgs", "vgs.add-statistics"),
        ("vgs", "vgs.upgrade-3.2")]


@pytest.mark.parametrize("name", OPTIM)
def test_every_generation_migrates_purely_and_keeps_untouched_tensors(name):
    sd = optim_state(name)
    pristine = copy.deepcopy(sd)
    result = migrate_optimizer(sd)
    assert_same(pristine, sd)  # the input is never mutated
    assert result.applied and result.applied[-1] == "optim.stamp-format"
    assert_state_tensors_kept(sd, result.state)
    for before, after in zip(sd["param_groups"], result.state["param_groups"]):
        assert after[FORMAT_KEY] == 1 and after["params"] == before["params"]
        for key in TRAINER_KEYS:
            if key in before:
                assert_same(before[key], after[key], key)
    assert not migrate_optimizer(result.state).applied  # idempotent


@pytest.mark.parametrize("name", OPTIM)
def test_migrated_state_loads_and_steps(name):
    result = migrate_optimizer(optim_state(name))
    opt, params = _optimizer_for(result.state, result.cls)
    opt.load_state_dict(copy.deepcopy(result.state))
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen) * 1e-2
        opt.step()
    assert all(torch.isfinite(p).all() for p in params)
    # The audit log and stamp survive load_state_dict -> state_dict.
    for saved, live in zip(result.state["param_groups"], opt.state_dict()["param_groups"]):
        assert live[AUDIT_KEY] == saved[AUDIT_KEY] and live[FORMAT_KEY] == 1


def test_g1_audit_log_and_calibrated_sigma():
    sd = optim_state("adaptive_upgd_g1.pt")
    result = migrate_optimizer(sd)
    group = result.state["param_groups"][0]
    d = [direction(sd["state"][i], 0.9, 0.999, 1e-8) for i in range(6)]
    rms = math.sqrt(sum(float(x.pow(2).sum()) for x in d) / sum(x.numel() for x in d))
    assert group["sigma"] == pytest.approx(0.001 / rms, rel=1e-6)
    assert group["adaptive_noise"] is True and group["instant_noise_scale"] is True
    assert group[AUDIT_KEY] == {
        "from": "G1",
        "applied": ["optim.fill-group-keys", "optim.adaptive-noise", "optim.stamp-format"],
        "sigma": {"absolute_before": 0.001, "source": "calibrated",
                  "direction_rms": pytest.approx(rms, rel=1e-6), "relative": group["sigma"]}}
    # Plain values only: the audit loads with weights_only=True.
    buf = _io.BytesIO()
    torch.save(result.state, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["param_groups"][0][AUDIT_KEY]["from"] == "G1"


def test_g0_warns_about_the_halved_step_and_keeps_lr():
    sd = optim_state("adaptive_upgd_g0.pt")
    result = migrate_optimizer(sd)
    assert result.state["param_groups"][0]["lr"] == sd["param_groups"][0]["lr"]
    assert result.notes[-1].level == "warning"
    assert result.notes[-1].text.startswith("G0 states were trained with a -2*lr update")


def test_grad_norm_ema_is_left_untouched():
    result = migrate_optimizer(optim_state("adaptive_upgd_g1_ema.pt"))
    assert all(e["grad_norm_ema"] == 4.7 for e in result.state["state"].values())


def test_sigma_value_policy():
    forced = migrate_optimizer(optim_state("adaptive_upgd_g0.pt"), Context(sigma_ratio=0.02))
    group = forced.state["param_groups"][0]
    assert group["sigma"] == 0.02 and group[AUDIT_KEY]["sigma"]["source"] == "--sigma-ratio"
    upgd = migrate_optimizer(optim_state("upgd.pt")).state["param_groups"][0]
    assert upgd["sigma"] == 0.05 and upgd[AUDIT_KEY]["sigma"]["source"] == "default"
    upgdw = migrate_optimizer(optim_state("upgdw.pt")).state["param_groups"][0]
    assert upgdw["sigma"] == 0.001 and "adaptive_noise" not in upgdw


def test_zero_sigma_stays_noise_free():
    sd = optim_state("adaptive_upgd_g1.pt")
    sd["param_groups"][0]["sigma"] = 0.0
    group = migrate_optimizer(sd).state["param_groups"][0]
    assert group["sigma"] == 0.0 and group["adaptive_noise"] is False


def test_ema_path_is_seeded_to_the_saved_direction_rms():
    sd = optim_state("adaptive_upgd_g2.pt")
    sd["param_groups"][0].update(adaptive_noise=True, instant_noise_scale=False)
    result = migrate_optimizer(sd)
    assert "optim.seed-noise-ema" in result.applied
    for i, entry in result.state["state"].items():
        d = direction(sd["state"][i], 0.9, 0.999, 1e-8)
        corrected = float(entry["noise_scale_ema"]) / (1 - 0.999 ** entry["noise_scale_steps"])
        assert corrected == pytest.approx(float(d.pow(2).mean().sqrt()), rel=1e-6)
        assert entry["noise_scale_ema"].dtype == torch.float32
    assert "optim.seed-noise-ema" not in migrate_optimizer(result.state).applied


def test_instant_noise_only_on_request():
    sd = optim_state("adaptive_upgd_g2.pt")
    sd["param_groups"][0].update(adaptive_noise=True, instant_noise_scale=False)
    kept = migrate_optimizer(sd)
    assert kept.state["param_groups"][0]["instant_noise_scale"] is False
    moved = migrate_optimizer(sd, Context(instant_noise=True))
    assert "optim.instant-noise" in moved.applied
    assert "optim.seed-noise-ema" not in moved.applied  # no EMA left to seed
    assert moved.state["param_groups"][0]["instant_noise_scale"] is True
    # On request it also moves an already-current state, once.
    again = migrate_optimizer(kept.state, Context(instant_noise=True))
    assert again.applied == ["optim.instant-noise"]
    assert not migrate_optimizer(again.state, Context(instant_noise=True)).applied


def test_other_optimizers_are_left_alone():
    p = torch.nn.Parameter(torch.ones(3))
    adam = torch.optim.Adam([p])
    p.grad = torch.ones(3)
    adam.step()
    sd = adam.state_dict()
    result = migrate_optimizer(sd)
    assert result.cls is None and not result.applied and result.state is sd


@pytest.mark.parametrize("name", VGS)
def test_every_vgs_version_migrates_and_loads_without_warning(name):
    sd = vgs_state(name)
    pristine = copy.deepcopy(sd)
    result = migrate_vgs(sd, Context(param_numels=NUMELS))
    assert_same(pristine, sd)
    state = result.state
    assert state["vgs_version"] == "3.2" and state["upgd_migrate_format"] == 1
    assert state[AUDIT_KEY]["from"] == result.generation
    for key in ("enabled", "beta", "alpha", "eps", "warmup_steps", "step_count",
                "grad_mean_ema", "grad_var_ema", "grad_norm_ema", "grad_max_ema"):
        assert_same(sd[key], state[key], key)
    vgs = VarianceGradientScaler([torch.zeros(n) for n in NUMELS])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vgs.load_state_dict(state)
    assert not migrate_vgs(state, Context(param_numels=NUMELS)).applied


@pytest.mark.parametrize("name", ["vgs_v2_0.pt", "vgs_v3_0.pt"])
def test_incompatible_statistics_are_kept_bit_identical(name):
    sd = vgs_state(name)
    result = migrate_vgs(sd)
    legacy = result.state["legacy_statistics"]
    for key in ("param_grad_mean_ema", "param_grad_sq_ema", "param_numel"):
        assert_same(sd[key], legacy[key], key)
    assert result.state["statistics_step_count"] == 0
    assert not result.state["param_grad_mean_ema"].any()
    assert [n.level for n in result.notes] == ["warning", "info"]


def test_compatible_statistics_are_kept_bit_identical():
    sd = vgs_state("vgs_v3_1.pt")
    state = migrate_vgs(sd).state
    for key in ("param_grad_mean_ema", "param_grad_sq_ema", "param_numel"):
        assert_same(sd[key], state[key], key)
    assert state["statistics_step_count"] == 900 and "legacy_statistics" not in state


def test_v1_without_a_parameter_list_is_left_as_is():
    result = migrate_vgs(vgs_state("vgs_v1.pt"))
    assert not result.applied


def test_float64_states_are_not_mutated_by_calibration():
    sd = optim_state("adaptive_upgd_g1.pt")
    sd["state"] = {i: {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in e.items()}
                   for i, e in sd["state"].items()}
    pristine = copy.deepcopy(sd)
    migrate_optimizer(sd)
    assert_same(pristine, sd)


def _packaged_state(cls, **kwargs) -> dict:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(8, 4)), torch.nn.Parameter(torch.randn(8))]
    opt = cls(params, lr=1e-3, **kwargs)
    for _ in range(5):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    return opt.state_dict()


@pytest.mark.parametrize("cls", [AdaptiveUPGD, UPGD])
def test_fixed_noise_written_by_the_packaged_optimizer_is_converted_once(cls):
    # The stamp says the format is current, not that the noise is adaptive: a state the
    # packaged optimizer wrote with adaptive_noise=False still carries an absolute sigma.
    sd = _packaged_state(cls, sigma=0.002, adaptive_noise=False)
    result = migrate_optimizer(sd)
    assert result.generation == "current"
    assert result.applied == ["optim.adaptive-noise"]
    group = result.state["param_groups"][0]
    assert group["adaptive_noise"] is True
    record = group[AUDIT_KEY]["sigma"]
    assert record["absolute_before"] == 0.002
    if cls is AdaptiveUPGD:
        assert record["source"] == "calibrated"
        assert group["sigma"] == pytest.approx(0.002 / record["direction_rms"], rel=1e-2)
    else:
        assert (record["source"], group["sigma"]) == ("default", 0.05)
    assert_state_tensors_kept(sd, result.state)
    assert not migrate_optimizer(result.state).applied


@pytest.mark.parametrize("kwargs", [dict(sigma=0.0), dict(sigma=0.05, adaptive_noise=True)])
def test_packaged_states_without_fixed_noise_are_left_alone(kwargs):
    sd = _packaged_state(AdaptiveUPGD, **kwargs)
    assert not migrate_optimizer(sd).applied
