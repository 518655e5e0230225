"""Lightning: a real Trainer checkpoint migrates, and fit(ckpt_path=...) resumes from it."""
from __future__ import annotations

import pytest
import torch
from rw_helpers import assert_bit_identical, cli, expected_ratio, state_tensors

pytestmark = pytest.mark.realworld


def test_fit_resumes_with_the_migrated_optimizer_state(tmp_path):
    from lightning_trainer import FIRST_STEPS, MORE_STEPS, SIGMA_ABS, resume, train

    from upgd_migrate.optim import AdaptiveUPGD

    saved, first = train(tmp_path)
    assert first.group["adaptive_noise"] is False
    # Fixed noise: the std is sigma itself, whatever the update's size.
    assert first.recorder.first_step_noise_rms() == pytest.approx(SIGMA_ABS, rel=0.1)
    saved_state = torch.load(saved, weights_only=True)["optimizer_states"][0]
    want = expected_ratio(saved_state, SIGMA_ABS)

    migrated = tmp_path / "migrated.ckpt"
    result = cli("checkpoint", saved, "-o", migrated)
    assert result.returncode == 1, result.stdout + result.stderr  # 1: a file changed
    assert result.stdout.splitlines() == [
        f"{saved}: migrated -> {migrated} (Lightning checkpoint)",
        "  optimizer_states[0]: AdaptiveUPGD current: optim.adaptive-noise",
        f"    group 0: sigma 0.001 (absolute std) -> {want:.6g} (relative ratio, calibrated)"]

    fitted, probe = resume(migrated)
    # Checked on the optimizer Lightning rebuilt and restored, when training starts again.
    assert probe.optimizer_type is AdaptiveUPGD
    assert probe.global_step == FIRST_STEPS
    assert probe.group["adaptive_noise"] is True and probe.group["instant_noise_scale"] is True
    assert probe.group["sigma"] == pytest.approx(want, rel=1e-6)
    assert probe.group["upgd_migrate_audit"]["sigma"] == {
        "absolute_before": SIGMA_ABS, "source": "calibrated",
        "direction_rms": pytest.approx(SIGMA_ABS / want, rel=1e-6),
        "relative": probe.group["sigma"]}
    # Moments and utilities carry over bit-identically; the step count too.
    assert_bit_identical(state_tensors(saved_state["state"]), state_tensors(probe.state))
    assert {entry["step"] for entry in probe.state.values()} == {FIRST_STEPS}

    assert fitted.global_step == FIRST_STEPS + MORE_STEPS
    assert len(probe.recorder.steps) == MORE_STEPS
    # Adaptive now: the noise is sigma times the update, step after step.
    assert probe.recorder.ratio() == pytest.approx(probe.group["sigma"], rel=0.05)
    assert 1 / 1.5 <= probe.recorder.first_step_noise_rms() / SIGMA_ABS <= 1.5
