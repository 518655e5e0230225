"""verify describes a VGS state with None statistics as "no statistics yet" (not as a v1 state)
and runs a stable-baselines3 zip holding one without a traceback."""
from __future__ import annotations

import contextlib
import io
import json

import pytest
from ckpt_helpers import make_containers, optim_state, vgs_state

from upgd_migrate.checkpoint.steps import migrate_optimizer
from upgd_migrate.cli import main
from upgd_migrate.verify.drive import verify_states, verify_vgs

TENSOR_KEYS = ("param_grad_mean_ema", "param_grad_sq_ema", "param_numel")


def _none_state(version: str) -> dict:
    return {**vgs_state(f"vgs_v{version.replace('.', '_')}.pt"), **dict.fromkeys(TENSOR_KEYS)}


@pytest.mark.parametrize("version", ["2.0", "3.0", "3.1", "3.2"])
def test_none_statistics_are_described_as_none_yet(version):
    report = verify_vgs(_none_state(version), "vgs_state.pth")
    loads = report.check("loads")
    assert report.ok and loads.ok is True and report.generation == f"v{version}"
    assert f"loads as VGS {version} with no statistics yet" in loads.detail
    assert "v1" not in loads.detail and report.metrics["factor"] == 1.0


def test_a_v1_state_is_still_described_as_one():
    loads = verify_vgs({**vgs_state("vgs_v1.pt"), "vgs_version": "1.0"}, "v").check("loads")
    assert loads.ok is False and "a v1 state" in loads.detail


def test_a_state_of_another_model_is_a_failed_check_not_a_traceback():
    sd = vgs_state("vgs_v3_2.pt")
    sd["param_numel"] = sd["param_numel"][:-1]
    loads = verify_vgs(sd, "v").check("loads")
    assert loads.ok is False and "but not all" not in loads.detail


def test_the_vgs_run_of_an_optimizer_uses_a_none_statistics_state():
    opt = migrate_optimizer(optim_state("adaptive_upgd_g2.pt")).state
    reports = verify_states([("o", "optimizer", opt), ("v", "vgs", _none_state("3.2"))], steps=4)
    assert [r.ok for r in reports] == [True, True]
    assert reports[0].metrics["vgs_factor"] is not None


def test_a_ppo_zip_with_none_statistics_verifies_without_traceback(tmp_path):
    opt = migrate_optimizer(optim_state("adaptive_upgd_g2.pt")).state
    members = make_containers.sb3_members({"policy.optimizer.pth": opt}, _none_state("3.1"),
                                          {"sigma": 0.05, "adaptive_noise": True})
    path = tmp_path / "ppo.zip"
    make_containers.write_sb3(path, members)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        code = main(["verify", str(path), "--format", "json"])
    text = buf.getvalue()
    assert "Traceback" not in text and code == 0, text
    states = {s["where"]: s for s in json.loads(text)["files"][0]["states"]}
    loads = next(c for c in states["vgs_state.pth"]["checks"] if c["name"] == "loads")
    assert loads["ok"] is True and "no statistics yet" in loads["detail"]
