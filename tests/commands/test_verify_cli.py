"""`upgd-migrate verify` end to end (the checks themselves: tests/checkpoint/test_verify.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from upgd_migrate.cli import main

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "fixtures"
G1 = FIX / "optim" / "adaptive_upgd_g1.pt"
G1_EMA = FIX / "optim" / "adaptive_upgd_g1_ema.pt"


def test_verify_exit_codes_and_json(tmp_path, capsys):
    migrated = tmp_path / "m.pt"
    main(["checkpoint", str(G1), "-o", str(migrated)])
    capsys.readouterr()
    assert main(["verify", str(migrated), "--steps", "8"]) == 0
    capsys.readouterr()
    assert main(["verify", str(G1_EMA), "--steps", "8", "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    checks = {c["name"]: c for c in doc["files"][0]["states"][0]["checks"]}
    assert checks["reference resume"]["ok"] is False
    assert checks["reference resume"]["detail"].startswith("spike x6.7")
    assert main(["verify", str(G1_EMA), "--steps", "8"]) == 1
    out = capsys.readouterr()
    assert "  (whole file): reference resume: spike x6.7" in out.out
    assert out.err.strip().endswith("1 state verified in 1 file: 1 failed")


def test_verify_with_config(tmp_path, capsys):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("model:\n  optimizer_class: AdaptiveUPGD\n  optimizer_kwargs:\n"
                   "    sigma: 0.001\n    adaptive_noise: true\n  vgs:\n    enabled: true\n"
                   "    alpha: 0.1\n")
    migrated = tmp_path / "m.pt"
    main(["checkpoint", str(G1), "-o", str(migrated)])
    capsys.readouterr()
    assert main(["verify", str(migrated), "--config", str(cfg), "--steps", "4"]) == 1
    out = capsys.readouterr().out
    assert "(whole file): config: group 0 sigma: config 0.001, checkpoint 0.00405" in out


@pytest.mark.parametrize("name", ["real-legacy-layout-a.yaml", "seed-layout-b.yaml",
                                  "flat-trainer-kwargs-c.yaml"])
def test_config_layouts_are_read(name):
    from upgd_migrate.verify.config import read_config

    kwargs, vgs = read_config(FIX / "configs" / name)
    assert "sigma" in kwargs
    assert vgs is not None and vgs["enabled"] is True


def test_unreadable_config_is_a_usage_error(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("just: text\n")
    assert main(["verify", str(G1), "--config", str(cfg)]) == 2
    assert capsys.readouterr().err == f"error: {cfg}: no optimizer_kwargs block found\n"


def test_device_cpu_is_the_default_and_a_missing_device_is_a_usage_error(capsys):
    args = ["verify", str(G1_EMA), "--steps", "4", "--format", "json"]
    assert main(args) == 1
    default = json.loads(capsys.readouterr().out)
    assert main(args + ["--device", "cpu"]) == 1
    assert json.loads(capsys.readouterr().out) == default  # the same draws, the same verdicts
    assert main(["verify", str(G1_EMA), "--device", "gpu7"]) == 2
    assert capsys.readouterr().err == ("verify: --device gpu7: not a torch device "
                                       "(cpu, cuda, cuda:N)\n")
    assert main(["verify", str(G1_EMA), "--device", "meta"]) == 2
    assert capsys.readouterr().err == "verify: --device meta: only cpu and cuda are supported\n"


def test_device_cuda_without_a_gpu_is_a_usage_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU here: bench/device-check runs verify --device cuda")
    assert main(["verify", str(G1_EMA), "--device", "cuda"]) == 2
    assert capsys.readouterr().err == (f"verify: --device cuda: torch {torch.__version__} "
                                       f"sees no CUDA device\n")
