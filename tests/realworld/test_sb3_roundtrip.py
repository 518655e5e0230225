"""stable-baselines3: a real PPO zip with fixed noise migrates, loads adaptive, learns, verifies;
the trainer builds, pickles and relinks its VGS as the reference trainer does; a zip written with
the reference's class names resumes with the packaged classes swapped in; a zip whose VGS has no
statistics yet (saved right after a load) migrates, loads, learns and verifies."""
from __future__ import annotations

import base64
import csv
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
    model = train(folder / "ppo.zip", log_dir=folder / "log")
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


def test_ppo_load_resumes_with_adaptive_noise_at_the_intended_level(trained, tmp_path):
    from sb3_trainer import OPTIMIZER_KWARGS, SIGMA_ABS, VGSPPO

    from upgd_migrate.optim import AdaptiveUPGD, NoiseRecorder

    import gymnasium

    model, saved, migrated, _ = trained
    want = expected_ratio(_load(_members(saved)["policy.optimizer.pth"]), SIGMA_ABS)
    loaded = VGSPPO.load(migrated, env=gymnasium.make("CartPole-v1"), device="cpu",
                         log_dir=tmp_path)
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
    # The scaler comes back from `data`, its vgs_state.pth restored, relinked to the new policy;
    # the relink restarts its per-parameter statistics (as the reference trainer's load does).
    assert loaded.vgs is not model.vgs and loaded.vgs.step_count == model.vgs.step_count > 0
    assert [id(p) for p in loaded.vgs._parameters] == [id(p) for p in loaded.policy.parameters()]
    assert loaded.vgs.param_grad_sq_ema is None and loaded.vgs.statistics_step_count == 0
    assert loaded.vgs._grad_norm_ema == model.vgs._grad_norm_ema

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


LOG_KEYS = {"vgs/stochastic_var_p10", "vgs/stochastic_var_p50", "vgs/stochastic_var_p90",
            "vgs/stochastic_var_mean", "vgs/grad_norm_ema", "vgs/grad_mean_ema_spatial",
            "vgs/grad_var_ema_spatial", "vgs/grad_max_ema", "vgs/normalized_variance",
            "vgs/scaling_factor", "vgs/step_count", "vgs/warmup_active"}


def _data(path) -> dict:
    return json.loads(_members(path)["data"])


def test_the_trainer_builds_and_saves_its_vgs_as_the_reference_trainer(trained):
    from sb3_trainer import VGS_ATTR

    from upgd_migrate.optim import VarianceGradientScaler

    model, saved, _, _ = trained
    vgs = getattr(model, VGS_ATTR)
    assert type(vgs) is VarianceGradientScaler and vgs._logger is model.logger
    assert [id(p) for p in vgs._parameters] == [id(p) for p in model.policy.parameters()]
    entry = _data(saved)[VGS_ATTR]  # cloudpickled into `data`, never unpickled here
    assert set(entry) >= {":type:", ":serialized:"}
    assert b"upgd_migrate.optim.vgs" in base64.b64decode(entry[":serialized:"])
    with open(saved.parent / "log" / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # One row per PPO iteration, written after its rollout and before its 4 optimizer steps.
    assert LOG_KEYS <= set(rows[0]) and len(rows) == 4 and vgs.step_count == 16
    assert [float(r["vgs/step_count"]) for r in rows[1:]] == [4.0, 8.0, 12.0]
    assert all(0.1 <= float(r["vgs/scaling_factor"]) <= 1.0 for r in rows[1:])


def test_a_reference_layout_zip_resumes_with_our_classes_swapped_in(tmp_path):
    import gymnasium
    from reference_layout import ReferenceLayoutAdaptiveUPGD, ReferenceLayoutVGS, installed
    from sb3_trainer import VGS_ATTR, VGSPPO, train

    from upgd_migrate.optim import AdaptiveUPGD, VarianceGradientScaler

    class ReferenceLayoutPPO(VGSPPO):
        vgs_class = ReferenceLayoutVGS

    path = tmp_path / "reference.zip"
    with installed(ReferenceLayoutVGS, ReferenceLayoutAdaptiveUPGD):
        model = train(path, trainer=ReferenceLayoutPPO, optimizer_class=ReferenceLayoutAdaptiveUPGD,
                      log_dir=tmp_path / "log")
    steps = getattr(model, VGS_ATTR)._step_count
    blob = base64.b64decode(_data(path)[VGS_ATTR][":serialized:"])
    assert b"variance_gradient_scaler" in blob and b"_param_grad_mean_ema" in blob
    # upgd-migrate never unpickles `data`: the reference's modules are not importable here.
    code, out = cli_here("checkpoint", path, "-o", tmp_path / "migrated.zip")
    assert code == 1, out
    for zip_path in (path, tmp_path / "migrated.zip"):
        with installed(VarianceGradientScaler, AdaptiveUPGD):  # the user's import swap
            loaded = VGSPPO.load(zip_path, env=gymnasium.make("CartPole-v1"), device="cpu",
                                 log_dir=tmp_path)
        vgs = getattr(loaded, VGS_ATTR)
        assert type(vgs) is VarianceGradientScaler and type(loaded.policy.optimizer) is AdaptiveUPGD
        assert vgs._step_count == steps and vgs._grad_norm_ema is not None
        loaded.learn(64, reset_num_timesteps=False)
        assert vgs._step_count > steps and vgs.statistics_step_count > 0
        assert all(torch.isfinite(p).all() for p in loaded.policy.parameters())


def test_a_zip_saved_right_after_a_load_has_no_statistics_yet_and_round_trips(trained,
                                                                              tmp_path):
    import gymnasium
    from sb3_trainer import VGS_MEMBER, VGSPPO

    _, saved, _, _ = trained
    env = gymnasium.make("CartPole-v1")
    VGSPPO.load(saved, env=env, device="cpu").save(tmp_path / "reloaded.zip")
    state = _load(_members(tmp_path / "reloaded.zip")[VGS_MEMBER])
    assert state["param_grad_mean_ema"] is None and state["step_count"] > 0
    result = cli("checkpoint", tmp_path / "reloaded.zip", "-o", tmp_path / "migrated.zip")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"  {VGS_MEMBER}: VarianceGradientScaler v3.2: current" in result.stdout.splitlines()
    loaded = VGSPPO.load(tmp_path / "migrated.zip", env=env, device="cpu", log_dir=tmp_path)
    before = loaded.vgs.step_count
    loaded.learn(64, reset_num_timesteps=False)
    assert loaded.vgs.step_count > before and loaded.vgs.statistics_step_count > 0
    code, out = cli_here("verify", tmp_path / "migrated.zip", "--format", "json")
    assert code == 0 and "Traceback" not in out, out
    states = {s["where"]: s for s in json.loads(out)["files"][0]["states"]}
    loads = next(c for c in states[VGS_MEMBER]["checks"] if c["name"] == "loads")
    assert loads["ok"] is True and "no statistics yet" in loads["detail"]
