"""bench/device-check run for real on the CPU (``--device cpu --quick``), so the script that a
lent GPU runs once is exercised on every test run: its stages, its JSON report, its exit code."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "device-check"
sys.path.insert(0, str(REPO / "bench"))
from device_check_report import render, verdict  # noqa: E402

STAGES = {"tests", "optim_a", "optim_b", "monitor", "verify", "optim_c"}
CONTENDERS = {"AdaptiveUPGD fixed noise", "AdaptiveUPGD adaptive noise", "torch AdamW (default)",
              "torch AdamW (fused=True)", "peer: per-tensor reference", "peer, adaptive noise",
              "floor: normal_ + fused Adam"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One quick CPU run. Its budget is generous here: the default (58 s) bounds a run on an
    idle machine, and the test machines are shared (nothing here asserts on time)."""
    out = tmp_path_factory.mktemp("device-check") / "report.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick",
                           "--budget-s", "300", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=400)
    return proc, out


@pytest.mark.slow
def test_quick_cpu_run_reports_every_stage_and_exits_clean(quick):
    proc, out = quick
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.json"]  # no temp left
    report = json.loads(out.read_text())
    assert report["schema"] == "upgd-migrate/device-check/1"
    assert (report["device"], report["quick"], report["exit_code"]) == ("cpu", True, 0)
    assert report["problems"] == [] and set(report["stages"]) == STAGES
    assert set(report["skipped"]) == {"tests", "syncs", "peak_memory", "verify_compare"}
    tests = report["stages"]["tests"]
    assert tests["status"] == "skipped" and tests["result"]["skipped"] == 3
    assert tests["reason"] == "needs a CUDA device: torch sees none here"
    for name, key in (("optim_a", "a"), ("optim_b", "b"), ("optim_c", "c")):
        stage = report["stages"][name]
        assert stage["status"] == "ok", stage
        case = stage["result"]["cases"][0]
        assert case["case"] == key and case["steps"] >= 3 and set(case["contenders"]) == CONTENDERS
        for figures in case["contenders"].values():
            assert figures["ms"] > 0 and figures["syncs_per_step"] is None
            assert figures["peak_mib"] is None and figures["sync_error"] is None
    monitor = report["stages"]["monitor"]["result"]["optimizers"]
    assert set(monitor) == {"adaptive noise", "fixed noise"}
    assert all(r["wall_ms"] > 0 for rows in monitor.values() for r in rows.values())
    verify = report["stages"]["verify"]["result"]
    assert verify["summary"]["states"] == 1 and "compare" not in verify
    assert proc.stdout.rstrip().endswith("result: OK")
    assert "| AdaptiveUPGD fixed noise |" in proc.stdout


@pytest.mark.slow
def test_a_step_of_ours_that_syncs_fails_the_run(quick):
    report = json.loads(quick[1].read_text())
    synced = copy.deepcopy(report)
    synced["device"] = "cuda"
    figures = synced["stages"]["optim_b"]["result"]["cases"][0]["contenders"]
    figures["AdaptiveUPGD adaptive noise"]["syncs_per_step"] = 1.0
    figures["peer: per-tensor reference"]["syncs_per_step"] = 20.0  # the peer's .item()s: allowed
    synced["stages"]["tests"]["status"] = "ok"
    assert verdict(synced) == ["optim_b: AdaptiveUPGD adaptive noise syncs: 1.0 per step under "
                               "'warn'; under 'error': nothing raised"]
    synced["stages"]["tests"].update(status="skipped")
    assert verdict(synced)[0].startswith("tests: no CUDA test ran on the GPU (needs a CUDA")
    synced["problems"] = verdict(synced)
    assert render(synced).endswith("result: FAILED: " + "; ".join(synced["problems"]))


def test_cuda_without_a_gpu_is_a_usage_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU: the quick run and the device tool cover it")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "r.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("device-check: --device cuda: torch ")
    assert "sees no CUDA device" in proc.stderr
    assert list(tmp_path.iterdir()) == []
