"""Hostile DCP folders: a ``.metadata`` or a bytes entry that would run code is refused by name.

torch's own reader (``dcp.load``) unpickles ``.metadata`` with ``pickle.load`` and bytes entries
with ``torch.load(weights_only=False)``: either payload below would create ``MARKER`` the moment
it is loaded. Through every command that reads a DCP folder, the marker must never appear, the
exit code is 2, the message names the refused global, and the folder is byte-identical.
"""
from __future__ import annotations

import pickle
import shutil
import struct
import sys

import pytest
import torch.distributed.checkpoint as dcp

from reliability_helpers import REPO, System, snapshot
from upgd_migrate.cli import main

sys.path.insert(0, str(REPO / "tests" / "checkpoint"))
from dcp_helpers import Net, legacy, metadata, save_legacy, write_metadata  # noqa: E402

MARKER = "MARKER"


def _exec_pickle(marker: str) -> bytes:
    """Hand-written protocol-2 pickle: builtins.exec("open(marker, 'w')")."""
    code = f"open({marker!r}, 'w')".encode()
    return (b"\x80\x02cbuiltins\nexec\nq\x00X" + struct.pack("<I", len(code)) + code
            + b"q\x01\x85q\x02Rq\x03.")


def _metadata_is_a_system_call(folder, marker):
    save_legacy(folder)
    (folder / ".metadata").write_bytes(pickle.dumps(System(marker)))
    return f"{folder}/.metadata: refused: it names posix.system"


def _metadata_is_exec(folder, marker):
    save_legacy(folder)
    (folder / ".metadata").write_bytes(_exec_pickle(marker))
    return f"{folder}/.metadata: refused: it names builtins.exec"


def _payload_deep_inside_valid_metadata(folder, marker):
    """A real Metadata whose storage_meta is the payload: found while unpickling, refused."""
    save_legacy(folder)
    md = metadata(folder)
    md.storage_meta = System(marker)
    write_metadata(folder, md)
    return f"{folder}/.metadata: refused: it names posix.system"


def _bytes_entry_is_a_system_call(folder, marker):
    model = Net()
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, legacy(model))
    osd["state"]["body.weight"]["step"] = System(marker)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(folder))
    return (f"{folder}/__0_0.distcp: entry optim.state.body.weight.step: refused: loading it "
            "needs globals outside the weights-only allowlist: posix.system")


CASES = [_metadata_is_a_system_call, _metadata_is_exec, _payload_deep_inside_valid_metadata,
         _bytes_entry_is_a_system_call]
COMMANDS = [["checkpoint", "inspect", "CK"], ["checkpoint", "CK", "-o", "OUT"],
            ["checkpoint", "CK", "--in-place", "--backup", ".bak"], ["verify", "CK"],
            ["config", "CFG", "--calibrate-from", "CK", "--check"]]


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__.strip("_"))
def test_refused_by_name_and_nothing_runs(tmp_path, monkeypatch, capsys, make):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "ck"
    expected = make(folder, str(tmp_path / MARKER))
    cfg = tmp_path / "c.yaml"
    shutil.copy(REPO / "fixtures" / "configs" / sorted(
        p.name for p in (REPO / "fixtures" / "configs").glob("*.yaml"))[0], cfg)
    before = snapshot(tmp_path)
    for command in COMMANDS:
        argv = [{"CK": str(folder), "OUT": str(tmp_path / "out"), "CFG": str(cfg)}.get(a, a)
                for a in command]
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        if command[0] != "config":
            assert expected in err, (argv, err)
        else:
            assert "posix.system" in err or "builtins.exec" in err, err
        assert not (tmp_path / MARKER).exists()
        assert snapshot(tmp_path) == before, argv
