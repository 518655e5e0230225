"""Hostile checkpoints through the real commands: refused by name, nothing run, nothing written.

Every code-running payload would create ``MARKER`` in the test's folder; the test fails if it
appears. Each file goes through ``checkpoint -o``, ``checkpoint --in-place --backup``,
``checkpoint inspect`` and ``verify`` in-process (``cli.main``: the CLI's own entry point,
without a torch import per case; an exception escaping it fails the test), and the whole folder must be byte-identical afterwards.
"""
from __future__ import annotations

import base64
import io
import json
import os
import pickle
import struct
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from reliability_helpers import FIXTURES, System, snapshot
from upgd_migrate.cli import main

sys.path.insert(0, str(FIXTURES))
import generate  # noqa: E402
import make_containers as mc  # noqa: E402

MARKER = "MARKER"


class Eval:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w')",))


class Chain:
    """A __reduce__ chain: builtins.getattr(builtins, 'exec') is called on the stack."""

    def __init__(self, marker: str) -> None:
        self.inner = Eval(marker)

    def __reduce__(self):
        return (getattr, (self.inner, "__class__"))


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _exec_pickle(marker: str) -> bytes:
    """Hand-written protocol-2 pickle: builtins.exec("open(marker, 'w')")."""
    code = f"open({marker!r}, 'w')".encode()
    return (b"\x80\x02cbuiltins\nexec\nq\x00X" + struct.pack("<I", len(code)) + code
            + b"q\x01\x85q\x02Rq\x03.")


def _optimizer() -> dict:
    return generate.optimizer_fixtures()["upgd.pt"]


def _sb3(path: Path, replace: dict[str, bytes] | None = None,
         extra: list[tuple[str, bytes]] = ()) -> None:
    members = mc.sb3_members({"policy.optimizer.pth": _optimizer()}, None, mc._kwargs())
    members.update(replace or {})
    mc.write_sb3(path, members, sidecar=False)
    if extra:
        with zipfile.ZipFile(path, "a") as zf, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Duplicate name": that is the point
            for name, data in extra:
                zf.writestr(zipfile.ZipInfo(name, date_time=mc.ZIP_DATE), data)


def _bomb(path: Path) -> None:
    _sb3(path)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("policy.pth.bak", "w", force_zip64=True) as f:
            for _ in range(64):  # 64 MiB of zeros, ~64 KiB on disk
                f.write(bytes(1 << 20))


def _declared_huge(path: Path) -> None:
    """A stored member whose central directory claims 4 GiB."""
    _sb3(path)
    raw = bytearray(path.read_bytes())
    at = raw.rfind(b"PK\x01\x02")  # the last member's central directory entry
    raw[at + 24:at + 28] = struct.pack("<I", 0xFFFFFFF0)  # uncompressed size field
    path.write_bytes(bytes(raw))


def _truncated_member(path: Path) -> None:
    _sb3(path, {"policy.optimizer.pth": _torch_bytes(_optimizer())[:1500]})


def _wrong_magic_member(path: Path) -> None:
    _sb3(path, {"vgs_state.pth": b"\x89PNG\r\n\x1a\n" + bytes(300)})


def _bad_sidecar(path: Path) -> None:
    _sb3(path)
    path.with_name(path.name + ".sidecar.json").write_bytes(pickle.dumps(System(MARKER), 2))


def _cloudpickle_data(path: Path) -> None:
    """Only the *shape* may be carried: the data member holds a pickle in a :serialized: slot."""
    data = json.loads(mc.sb3_members({}, None, mc._kwargs())["data"])
    data["policy_class"] = {":type:": "<class 'type'>", ":serialized:":
                            base64.b64encode(pickle.dumps(System(MARKER))).decode()}
    _sb3(path, {"data": json.dumps(data).encode()})


def _write(obj_or_bytes, path: Path) -> None:
    if isinstance(obj_or_bytes, bytes):
        path.write_bytes(obj_or_bytes)
    else:
        torch.save(obj_or_bytes, path)


def _state_with(payload) -> dict:
    return {"state": {}, "param_groups": [], "x": payload}


# name -> (builder(path), substring the refusal must contain)
CASES = {
    "system_raw.pth": (lambda p: _write(pickle.dumps(System(MARKER), 2), p), "posix.system"),
    "eval_raw.pth": (lambda p: _write(pickle.dumps(Eval(MARKER), 4), p), "builtins.eval"),
    "exec_raw.pth": (lambda p: _write(_exec_pickle(MARKER), p), "builtins.exec"),
    "chain_raw.pt": (lambda p: _write(pickle.dumps(Chain(MARKER), 2), p), "getattr"),
    "system_torch.pt": (lambda p: _write(_state_with(System(MARKER)), p), "posix.system"),
    "eval_in_loop.pt": (lambda p: _write({"optimizer": _state_with(Eval(MARKER))}, p),
                        "builtins.eval"),
    "optimizer_member.zip": (lambda p: _sb3(p, {"policy.optimizer.pth": _torch_bytes(
        _state_with(System(MARKER)))}), "policy.optimizer.pth: refused"),
    "vgs_member.zip": (lambda p: _sb3(p, {"vgs_state.pth": pickle.dumps(Eval(MARKER), 2)}),
                       "vgs_state.pth: refused"),
    "data_pickle.zip": (lambda p: _sb3(p, {"data": pickle.dumps(System(MARKER), 2)}),
                        "member data is not JSON"),
    "dotdot.zip": (lambda p: _sb3(p, extra=[("../evil.optimizer.pth",
                                             _torch_bytes(_optimizer()))]), "outside"),
    "absolute.zip": (lambda p: _sb3(p, extra=[("/tmp/evil.optimizer.pth",
                                               _torch_bytes(_optimizer()))]), "outside"),
    "duplicate.zip": (lambda p: _sb3(p, extra=[("policy.optimizer.pth",
                                                _torch_bytes(_optimizer()))]), "twice"),
    "bad_sidecar.zip": (_bad_sidecar, "sidecar bad_sidecar.zip.sidecar.json is not JSON"),
    "bomb.zip": (_bomb, "zip bomb"),
    "declared_huge.zip": (_declared_huge, "zip bomb"),
    "truncated.zip": (lambda p: p.write_bytes((FIXTURES / "containers" / "ppo.zip")
                                              .read_bytes()[:3000]), "not a readable"),
    "truncated.pt": (lambda p: p.write_bytes((FIXTURES / "containers" / "training_loop.pt")
                                             .read_bytes()[:2000]), "not a readable"),
    "truncated_member.zip": (_truncated_member, "policy.optimizer.pth"),
    "wrong_magic.pt": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200)),
                       "not a readable torch checkpoint"),
    "wrong_magic_member.zip": (_wrong_magic_member, "vgs_state.pth"),
}

COMMANDS = {
    "migrate -o": lambda name: ["checkpoint", name, "-o", "out"],
    "migrate --in-place --backup": lambda name: ["checkpoint", name, "--in-place",
                                                 "--backup", ".bak"],
    "inspect": lambda name: ["checkpoint", "inspect", name],
    "verify": lambda name: ["verify", name, "--steps", "2"],
}


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", CASES)
def test_hostile_checkpoint_is_refused_and_nothing_runs_or_is_written(in_tmp, name, capsys):
    build, expected = CASES[name]
    build(in_tmp / name)
    (in_tmp / "out").mkdir()
    before = snapshot(in_tmp)
    for command, args in COMMANDS.items():
        code = main(args(name))
        out = "".join(capsys.readouterr())
        where = f"{name} via {command}"
        assert code != 0, f"{where}: accepted\n{out}"
        # One line names the file and says why; it must carry the expected reason.
        lines = [ln for ln in out.splitlines() if name in ln
                 and ("refused" in ln or "not a readable" in ln)]
        assert any(expected in ln for ln in lines), f"{where}:\n{out}"
        assert not (in_tmp / MARKER).exists(), f"{where}: the payload ran"
        assert snapshot(in_tmp) == before, f"{where}: something was written"
        assert sorted(os.listdir(in_tmp / "out")) == []


def test_cloudpickled_data_entry_is_carried_verbatim_and_never_unpickled(in_tmp, capsys):
    """A stable-baselines3 ``:serialized:`` entry is cloudpickle: kept as text, never loaded."""
    _cloudpickle_data(in_tmp / "model.zip")
    before = json.loads(zipfile.ZipFile(in_tmp / "model.zip").read("data"))
    for args in (["checkpoint", "model.zip", "-o", "out.zip"], ["checkpoint", "inspect",
                                                                "model.zip"],
                 ["verify", "model.zip", "--steps", "2"]):
        main(args)
        assert not (in_tmp / MARKER).exists()
    after = json.loads(zipfile.ZipFile(in_tmp / "out.zip").read("data"))
    assert after["policy_class"] == before["policy_class"]
