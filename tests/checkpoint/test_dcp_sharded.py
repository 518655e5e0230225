"""A real 2-rank FSDP2 save (gloo, CPU): tensors in two chunks across two data files, migrated in
place, then loaded by torch's ``dcp.load`` into one unsharded process at the migrated sigma."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ckpt_helpers import assert_same, optim_state
from dcp_helpers import metadata, resume
from upgd_migrate.checkpoint.steps import migrate_optimizer
from upgd_migrate.cli import main

pytestmark = pytest.mark.slow  # two gloo processes: deselect with -m "not slow"
WORKER = Path(__file__).resolve().parent / "dcp_sharded_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fsdp2") / "ck"
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), str(port), str(folder)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for r in (0, 1)]
    try:
        outs = [p.communicate(timeout=180)[0].decode() for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), outs
    return folder


def test_sharded_save_migrates_in_place_and_loads_unsharded(sharded, tmp_path):
    import shutil

    folder = tmp_path / "ck"
    shutil.copytree(sharded, folder)
    md = metadata(folder)
    chunks = md.state_dict_metadata["optim.state.body.weight.first_moment"].chunks
    assert len(chunks) == 2 and sorted(p.name for p in folder.glob("*.distcp")) == [
        "__0_0.distcp", "__1_0.distcp"]
    before = {p.name: p.read_bytes() for p in folder.glob("*.distcp")}
    assert main(["checkpoint", str(folder), "--in-place"]) == 1
    assert {p.name: p.read_bytes() for p in folder.glob("__?_0.distcp")} == before
    expected = migrate_optimizer(optim_state("adaptive_upgd_g1.pt")).state["param_groups"][0]
    _, opt = resume(folder)
    assert opt.param_groups[0]["sigma"] == expected["sigma"]
    saved = optim_state("adaptive_upgd_g1.pt")
    for i, p in enumerate(opt.param_groups[0]["params"]):
        assert_same(opt.state[p]["sec_moment"], saved["state"][i]["sec_moment"])
