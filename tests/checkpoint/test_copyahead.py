"""Copy ahead: a DCP folder's data files copied toward -o OUT while the state is migrated."""
from __future__ import annotations

import threading

import pytest

from dcp_helpers import save_legacy
from upgd_migrate import fileio
from upgd_migrate.checkpoint import copyahead
from upgd_migrate.checkpoint.copyahead import CopyAhead
from upgd_migrate.cli import main


def _folder(tmp_path):
    src = tmp_path / "ck"
    src.mkdir()
    (src / ".metadata").write_bytes(b"md")
    (src / "__0_0.distcp").write_bytes(bytes(range(256)) * 40)  # several chunks, below
    (src / "__1_0.distcp").write_bytes(b"b" * 10)
    (src / ".upgd-migrate-x.tmp").write_bytes(b"left by an interrupted run")
    return src


def _hidden(folder):
    return [p for p in folder.rglob(".*") if p.name != ".metadata"]


def test_the_data_files_are_copied_into_a_folder_beside_the_output(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "_COPY_CHUNK", 4096)
    src, dst = _folder(tmp_path), tmp_path / "out" / "ck"
    ahead = CopyAhead.start(src, dst)
    folder = ahead.take()
    assert folder.parent == dst.parent and folder.name.startswith(".ck.")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {
        n: (src / n).read_bytes() for n in ("__0_0.distcp", "__1_0.distcp")}
    assert ahead.copied == ["__0_0.distcp", "__1_0.distcp"] and not dst.exists()
    ahead.cancel()  # taken: the folder is the writer's now
    assert folder.is_dir()


def test_cancel_stops_the_copy_and_leaves_nothing(tmp_path, monkeypatch):
    started, release = threading.Event(), threading.Event()

    def slow(src, dst, check):
        started.set()
        release.wait(10)
        check()  # raises: cancelled

    monkeypatch.setattr(copyahead, "clone_file", slow)
    src = _folder(tmp_path)
    ahead = CopyAhead.start(src, tmp_path / "out" / "deeper" / "ck")
    assert started.wait(10)
    release.set()
    ahead.cancel()
    assert not (tmp_path / "out").exists()  # the folders it made are gone too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_a_failed_copy_is_raised_to_the_writer_and_leaves_nothing(tmp_path, monkeypatch):
    def full(src, dst, check):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(copyahead, "clone_file", full)
    ahead = CopyAhead.start(_folder(tmp_path), tmp_path / "ck-out")
    with pytest.raises(OSError, match="No space"):
        ahead.take()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_no_copy_ahead_onto_an_existing_output(tmp_path):
    (tmp_path / "out").mkdir()
    assert CopyAhead.start(_folder(tmp_path), tmp_path / "out") is None


def test_minus_o_of_a_dcp_folder_takes_the_copy_made_ahead(tmp_path, monkeypatch):
    save_legacy(tmp_path / "run" / "step-1")
    taken = []
    real = CopyAhead.take
    monkeypatch.setattr(CopyAhead, "take", lambda self: taken.append(self) or real(self))
    assert main(["checkpoint", str(tmp_path / "run"), "-o", str(tmp_path / "out")]) == 1
    assert len(taken) == 1
    assert sorted(p.name for p in (tmp_path / "out" / "step-1").iterdir()) == [
        ".metadata", "__0_0.distcp", "__upgd_migrate_0.distcp"]
    assert not _hidden(tmp_path / "out")


def test_a_dcp_folder_that_fails_leaves_no_copy_in_the_output(tmp_path, capsys):
    save_legacy(tmp_path / "run" / "step-1")
    data = tmp_path / "run" / "step-1" / "__0_0.distcp"
    data.write_bytes(data.read_bytes()[:100])  # truncated: its entries lie beyond the end
    (tmp_path / "run" / "notes.txt").write_text("x")
    assert main(["checkpoint", str(tmp_path / "run"), "-o", str(tmp_path / "out")]) == 2
    assert "but the file has only 100 bytes" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["notes.txt"]
    assert not _hidden(tmp_path / "out")
