"""stable-baselines3: a real PPO zip with fixed noise migrates, loads adaptive, learns, verifies."""
from __future__ import annotations

import io
import json
import zipfile

import pytest
import torch
from rw_helpers import assert_bit_identical, cli, cli_here, expected_ratio, state_tensors

pytestmark = pytest.mark.realworld

KEPT_MEMBERS = ("policy.pth", "pytorch_variables.pth", "_stable_baselines3_version",
                "system_info.txt")


def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _load(blob: bytes) -> dict:
    return torch.load(io.BytesIO(blob), weights_only=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(trained model, saved zip, migrated zip, checkpoint command result)."""
    from sb3_trainer import train

    folder = tmp_path_factory.mktemp("sb3")
    model = train(folder / "ppo.zip")
    result = cli("checkpoint", folder / "ppo.zip", "-o", folder / "migrated.zip")
    return model, folder / "ppo.zip", folder / "migrated.zip", result


def test_checkpoint_migrates_the_zip_trainer_saved(trained):
    from sb3_trainer import SIGMA_ABS, VGS_MEMBER

    _, saved, migrated, result = trained
    before, after = _members(saved), _members(migrated)
    assert VGS_MEMBER in before  # written by the trainer's save(), as the reference one does
    assert _load(before["policy.optimizer.pth"])["param_groups"][0]["adaptive_noise"] is False
    want = expected_ratio(_load(before["policy.optimizer.pth"]), SIGMA_ABS)
    assert result.returncode == 1, result.stdout + result.stderr  # 1: a file changed
    assert result.stdout.splitlines() == [
        f"{saved}: migrated -> {migrated} (stable-baselines3 zip)",
        "  policy.optimizer.pth: AdaptiveUPGD current: optim.adaptive-noise",
        f"    group 0: sigma 0.001 (absolute std) -> {want:.6g} (relative ratio, calibrated)",
        f"  {VGS_MEMBER}: VarianceGradientScaler v3.2: current",
        f"  data._optimizer_kwargs: sigma={want:.6g}, adaptive_noise=True, "
        "instant_noise_scale=True"]
    assert list(after) == list(before)
    for name in KEPT_MEMBERS + (VGS_MEMBER,):
        assert after[name] == before[name], name


def test_ppo_load_resumes_with_adaptive_noise_at_the_intended_level(trained):
    from sb3_trainer import OPTIMIZER_KWARGS, SIGMA_ABS, VGSPPO

    from upgd_migrate.optim import AdaptiveUPGD, NoiseRecorder

    import gymnasium

    model, saved, migrated, _ = trained
    want = expected_ratio(_load(_members(saved)["policy.optimizer.pth"]), SIGMA_ABS)
    loaded = VGSPPO.load(migrated, env=gymnasium.make("CartPole-v1"), device="cpu")
    optimizer = loaded.policy.optimizer
    group = optimizer.param_groups[0]
    assert type(optimizer) is AdaptiveUPGD
    assert group["adaptive_noise"] is True and group["instant_noise_scale"] is True
    assert group["sigma"] == pytest.approx(want, rel=1e-6)
    # The trainer's own record of its settings (plain JSON in `data`) follows the checkpoint.
    assert loaded._optimizer_kwargs == {**OPTIMIZER_KWARGS, "sigma": group["sigma"],
                                        "adaptive_noise": True, "instant_noise_scale": True}
    # Weights, optimizer tensors and VGS statistics come back exactly as trained.
    for key, value in model.policy.state_dict().items():
        assert torch.equal(loaded.policy.state_dict()[key], value), key
    assert_bit_identical(state_tensors(model.policy.optimizer.state_dict()["state"]),
                         state_tensors(optimizer.state_dict()["state"]))
    assert loaded.vgs.step_count == model.vgs.step_count > 0
    assert torch.equal(loaded.vgs.param_grad_sq_ema, model.vgs.param_grad_sq_ema)

    torch.manual_seed(1)
    saved_step = optimizer.state[optimizer.param_groups[0]["params"][0]]["step"]
    with NoiseRecorder(optimizer) as recorder:
        loaded.learn(64, reset_num_timesteps=False)  # learn() goes on from the checkpoint
    first = recorder.steps[0]
    # Adaptive: every large tensor gets noise sigma times its own update, not one fixed std.
    big = [r for r, n in zip(first.ratios, first.numels) if n >= 1000]
    assert len(big) == 2 and all(r == pytest.approx(want, rel=0.05) for r in big)
    assert first.weighted_ratio() == pytest.approx(want, rel=0.05)
    # ... and the first resumed step keeps the absolute level the fixed-noise run had.
    assert 1 / 1.5 <= recorder.first_step_noise_rms() / SIGMA_ABS <= 1.5
    assert loaded.num_timesteps == model.num_timesteps + 64
    assert optimizer.state[optimizer.param_groups[0]["params"][0]]["step"] > saved_step
    assert loaded.vgs.step_count > model.vgs.step_count
    assert all(torch.isfinite(p).all() for p in loaded.policy.parameters())


def test_verify_fails_the_saved_zip_and_passes_the_migrated_one(trained):
    _, saved, migrated, _ = trained
    code_before, before = cli_here("verify", saved, "--format", "json")
    code_after, after = cli_here("verify", migrated, "--format", "json")
    assert code_before == 1, before
    assert code_after == 0, after
    states = {s["where"]: s for s in json.loads(after)["files"][0]["states"]}
    assert sorted(states) == ["policy.optimizer.pth", "vgs_state.pth"]
    assert all(s["ok"] for s in states.values())
    assert {c["name"] for c in states["policy.optimizer.pth"]["checks"]} >= {
        "ratio", "amplification", "first step", "finite"}
    # Before migration the fixed noise is what fails: amplified when the gradients shrink
    # (and it has no ratio target: n/a).
    failed = [s for s in json.loads(before)["files"][0]["states"] if not s["ok"]]
    assert [s["where"] for s in failed] == ["policy.optimizer.pth"]
    verdicts = {c["name"]: c["ok"] for c in failed[0]["checks"]}
    assert verdicts == {"ratio": None, "amplification": False, "first step": True,
                        "finite": True}
