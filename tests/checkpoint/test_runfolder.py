"""-o never writes over an input; -o OUTDIR gives every input a counterpart; stale sidecars."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from upgd_migrate import fileio
from upgd_migrate.checkpoint.runfolder import copy_counterpart
from upgd_migrate.cli import main
from upgd_migrate.fileio import clone_file

FIX = Path(__file__).resolve().parents[2] / "fixtures"
G1 = FIX / "optim" / "adaptive_upgd_g1.pt"
PPO = FIX / "containers" / "ppo.zip"


def test_output_onto_the_input_is_refused(tmp_path, capsys, monkeypatch):
    same = tmp_path / "same.pt"
    shutil.copy(G1, same)
    before = same.read_bytes()
    assert main(["checkpoint", str(same), "-o", str(same)]) == 2
    assert capsys.readouterr().err == (f"error: -o {same}: would write {same} over itself; "
                                       "pass --in-place to rewrite inputs\n")
    monkeypatch.chdir(tmp_path)
    assert main(["checkpoint", "same.pt", "-o", "."]) == 2  # . resolves onto the input
    assert main(["checkpoint", str(tmp_path), "-o", str(tmp_path)]) == 2  # a folder onto itself
    assert same.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["same.pt"]


def test_every_input_gets_a_counterpart_in_the_output_folder(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "out"
    (runs / "sub").mkdir(parents=True)
    shutil.copy(G1, runs / "legacy.pt")
    assert main(["checkpoint", str(G1), "-o", str(runs / "sub" / "current.pt")]) == 1
    capsys.readouterr()
    assert main(["checkpoint", str(runs), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == ("2 files: 1 migrated, 1 already current; "
                   "unchanged inputs copied (1) into the output\n")
    assert (out / "legacy.pt").is_file()
    current, counterpart = runs / "sub" / "current.pt", out / "sub" / "current.pt"
    kept = current.read_bytes()
    assert counterpart.read_bytes() == kept and not os.path.samefile(counterpart, current)
    # A second run over the same output replaces the outputs, never the inputs.
    assert main(["checkpoint", str(runs), "-o", str(out)]) == 1
    assert (runs / "legacy.pt").read_bytes() == G1.read_bytes()
    # A trainer resuming from OUT saves over its file in place: the input keeps its bytes.
    torch.save({"step": 1}, counterpart)
    assert current.read_bytes() == kept


def test_the_counterpart_is_a_copy_even_over_an_old_hard_link(tmp_path):
    src, dst = tmp_path / "a.pt", tmp_path / "out" / "a.pt"
    src.write_bytes(b"one")
    dst.parent.mkdir()
    os.link(src, dst)  # what an older version left in OUT
    assert copy_counterpart(src, dst) == "copied"
    assert dst.read_bytes() == b"one" and not os.path.samefile(src, dst)
    dst.write_bytes(b"rewritten in place")
    assert src.read_bytes() == b"one"
    assert copy_counterpart(src, dst) == "copied" and dst.read_bytes() == b"one"
    assert sorted(os.listdir(dst.parent)) == ["a.pt"]  # no temp file left


def test_clone_file_copies_through_user_space_when_the_kernel_cannot(tmp_path, monkeypatch):
    src, dst = tmp_path / "a.bin", tmp_path / "b.bin"
    src.write_bytes(bytes(range(256)) * 1000)
    src.chmod(0o640)

    def refuse(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(fileio, "_reflink", lambda s, d: False)
    monkeypatch.setattr(os, "copy_file_range", refuse)
    clone_file(src, dst)
    assert dst.read_bytes() == src.read_bytes() and dst.stat().st_mode & 0o777 == 0o640
    with pytest.raises(FileExistsError):  # never over an existing file
        clone_file(src, dst)


def _sidecar_digest(zip_path: Path) -> tuple[str, int]:
    meta = json.loads(zip_path.with_name(zip_path.name + ".sidecar.json").read_text())
    return meta["sha256"], meta["size"]


def test_a_stale_sidecar_left_by_an_interrupted_run_is_repaired(tmp_path, capsys):
    work = tmp_path / "ppo.zip"
    shutil.copy(PPO, work)
    sidecar = work.with_name("ppo.zip.sidecar.json")
    shutil.copy(PPO.with_name("ppo.zip.sidecar.json"), sidecar)
    stale = sidecar.read_bytes()
    assert main(["checkpoint", str(work), "--in-place"]) == 1
    real = (hashlib.sha256(work.read_bytes()).hexdigest(), work.stat().st_size)
    assert _sidecar_digest(work) == real
    sidecar.write_bytes(stale)  # the zip was replaced, the run stopped before the sidecar
    capsys.readouterr()
    assert main(["checkpoint", str(work), "--check"]) == 1
    assert capsys.readouterr().err == "1 file: 1 would repair sidecar\n"
    assert sidecar.read_bytes() == stale
    assert main(["checkpoint", str(work), "--in-place"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{work}: sidecar repaired (stable-baselines3 zip)"
    assert ("  ppo.zip.sidecar.json: sha256 and size repaired (left stale by an interrupted run)"
            in lines)
    assert _sidecar_digest(work) == real
    assert json.loads(sidecar.read_text())["saved_by"] == "trainer checkpoint callback"
    assert main(["checkpoint", str(work), "--in-place"]) == 0  # now current, sidecar too


def test_a_current_zip_copied_to_an_output_folder_takes_its_sidecar(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "out"
    runs.mkdir()
    shutil.copy(PPO.with_name("ppo.zip.sidecar.json"), runs / "ppo.zip.sidecar.json")
    assert main(["checkpoint", str(PPO), "-o", str(runs / "ppo.zip")]) == 1
    assert main(["checkpoint", str(runs), "-o", str(out)]) == 0
    assert _sidecar_digest(out / "ppo.zip") == _sidecar_digest(runs / "ppo.zip")
    assert (hashlib.sha256((out / "ppo.zip").read_bytes()).hexdigest()
            == _sidecar_digest(out / "ppo.zip")[0])


def test_a_failed_write_names_the_output_not_a_temp_file(tmp_path, capsys, monkeypatch):
    from upgd_migrate import fileio

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full_disk)  # the disk fills during the write
    assert main(["checkpoint", str(G1), "-o", str(tmp_path / "out.pt")]) == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        f"{G1}: cannot write {tmp_path / 'out.pt'}: No space left on device")
    assert os.listdir(tmp_path) == []


def test_an_output_folder_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["checkpoint", str(G1), "-o", str(tmp_path / "file" / "out.pt")]) == 2
    assert capsys.readouterr().err.splitlines()[0].startswith(
        f"{G1}: cannot write {tmp_path / 'file' / 'out.pt'}: ")
