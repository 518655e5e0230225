"""End to end: an FSDP2 run with fixed noise saves DCP; ``upgd-migrate checkpoint`` migrates the
folder in place; an FSDP2 run resumes from it at the calibrated sigma; ``verify`` passes it."""
from __future__ import annotations

import json

import pytest
from dist_helpers import run_ranks, skip_unless_fully_shard

from upgd_migrate.cli import main

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory):
    skip_unless_fully_shard()
    folder = tmp_path_factory.mktemp("e2e") / "ckpt"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UPGD_E2E_FOLDER", str(folder))
        mp.setenv("PHASE", "train")
        trained = run_ranks("dcp_e2e_worker.py")
        data = sorted(p.name for p in folder.iterdir())
        before = {n: (folder / n).read_bytes() for n in data if n.endswith(".distcp")}
        migrate = main(["checkpoint", str(folder), "--in-place", "--format", "json"])
        after = {n: (folder / n).read_bytes() for n in before}
        mp.setenv("PHASE", "resume")
        resumed = run_ranks("dcp_e2e_worker.py")
    return {"folder": folder, "trained": trained, "resumed": resumed, "migrate": migrate,
            "data_kept": before == after}


def test_the_migration_changes_the_folder_and_keeps_every_data_file(roundtrip):
    assert roundtrip["migrate"] == 1
    assert roundtrip["data_kept"]


def test_fsdp2_resumes_adaptive_at_the_calibrated_sigma(roundtrip):
    for r in roundtrip["resumed"]:
        assert r["adaptive_noise"] is True
        assert r["sigma"] != 1e-3 and 0 < r["sigma"] < 1
    assert roundtrip["resumed"][0]["sigma"] == roundtrip["resumed"][1]["sigma"]


def test_the_first_resumed_step_keeps_the_noise_level_within_1_5x(roundtrip):
    before = roundtrip["trained"][0]["level"]
    for r in roundtrip["resumed"]:
        assert 1 / 1.5 <= r["level"] / before <= 1.5, (r["level"], before)


def test_verify_passes_the_migrated_folder(roundtrip, capsys):
    capsys.readouterr()
    assert main(["verify", str(roundtrip["folder"]), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    states = [s for f in doc["files"] for s in f["states"]]
    assert states and all(s["ok"] for s in states)
