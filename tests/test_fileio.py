from __future__ import annotations

import os
import stat

import pytest

from upgd_migrate.fileio import UnreadableFile, atomic_write, read_text


def test_read_text_drops_bom(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert read_text(str(path)) == "a: 1\n"


def test_read_text_refuses_binary(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"PK\x03\x04\x00\x00")
    with pytest.raises(UnreadableFile, match="binary"):
        read_text(str(path))


def test_atomic_write_replaces_keeps_mode_and_leaves_no_temp(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("old\n")
    path.chmod(0o640)
    atomic_write(str(path), "new\n")
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert os.listdir(tmp_path) == ["c.yaml"]


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("old\n")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write(str(path), b"new\n")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["c.yaml"]
