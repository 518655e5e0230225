"""``upgd_migrate.api``: plain, picklable results, the same entries the CLI's JSON holds."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from upgd_migrate import api
from upgd_migrate.cli import main

FIX = Path(__file__).resolve().parents[2] / "fixtures"
PBT = FIX / "containers" / "pbt.pt"


def _cli_json(capsys, *args) -> dict:
    main([*args, "--format", "json"])
    return json.loads(capsys.readouterr().out)


def test_verify_pickles_and_equals_the_cli_entry(capsys):
    got = api.verify(PBT, steps=4)
    assert pickle.loads(pickle.dumps(got)) == got
    assert json.loads(json.dumps(got)) == got  # builtins only
    assert got == _cli_json(capsys, "verify", str(PBT), "--steps", "4")["files"][0]


def test_inspect_pickles_and_equals_the_cli_entry(capsys):
    got = api.inspect(str(PBT))
    assert pickle.loads(pickle.dumps(got)) == got
    assert got == _cli_json(capsys, "checkpoint", "inspect", str(PBT))["files"][0]


def test_migrate_check_equals_the_cli_entry(capsys):
    got = api.migrate(PBT, check=True)
    assert got["status"] == "would migrate"
    assert pickle.loads(pickle.dumps(got)) == got
    assert got == _cli_json(capsys, "checkpoint", str(PBT), "--check")["files"][0]


def test_migrate_writes_and_verifies(tmp_path):
    out = tmp_path / "m.pt"
    got = api.migrate(PBT, output=out, verify=True)
    assert got["status"] == "migrated" and got["output"] == str(out)
    assert [s["ok"] for f in got["verify"] for s in f["states"]] == [True, True]
    assert api.migrate(out, check=True)["status"] == "already current"
    assert api.verify(out, steps=4)["states"][0]["ok"] is True


def test_migrate_in_place_with_backup(tmp_path):
    path = tmp_path / "pbt.pt"
    shutil.copy(PBT, path)
    got = api.migrate(path, in_place=True, backup=".orig")
    assert got["status"] == "migrated" and (tmp_path / "pbt.pt.orig").read_bytes() == \
        PBT.read_bytes()


def test_a_bad_file_is_a_value_not_an_exception(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert api.verify(bad)["error"].startswith(f"{bad}: ")
    assert set(api.inspect(bad)) == {"path", "error"}
    got = api.migrate(bad, check=True)
    assert got["status"] == "error" and got["error"].startswith(f"{bad}: ")


def test_migrate_needs_a_destination():
    with pytest.raises(ValueError, match="say where to write"):
        api.migrate(PBT)
