from __future__ import annotations

import os
import stat
import sys

import pytest

from upgd_migrate import fileio, sparsefile
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


def test_read_text_and_bom_says_whether_there_was_one(tmp_path):
    from upgd_migrate.fileio import read_text_and_bom

    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\r\n")
    assert read_text_and_bom(str(path)) == ("a: 1\r\n", True)
    path.write_bytes(b"a: 1\n")
    assert read_text_and_bom(str(path)) == ("a: 1\n", False)


def test_atomic_create_never_replaces_and_leaves_no_temp(tmp_path):
    from upgd_migrate.fileio import atomic_create

    source = tmp_path / "c.yaml"
    source.write_text("a: 1\n")
    os.chmod(source, 0o600)
    atomic_create(str(tmp_path / "c.yaml.bak"), b"old\n", mode_of=str(source))
    assert (tmp_path / "c.yaml.bak").read_bytes() == b"old\n"
    assert stat.S_IMODE(os.stat(tmp_path / "c.yaml.bak").st_mode) == 0o600
    with pytest.raises(FileExistsError):
        atomic_create(str(tmp_path / "c.yaml.bak"), b"new\n", mode_of=str(source))
    assert (tmp_path / "c.yaml.bak").read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "c.yaml.bak"]


def test_a_new_file_gets_the_umask_default_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "new.json", "{}\n")
    finally:
        os.umask(old)
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["new.json"]


def test_a_copy_of_a_sparse_stand_in_keeps_its_holes_only_when_asked(tmp_path):
    """A stand-in of a bucket's object copied for -o in its own store (the store publishes the
    copy): its bytes, and no disk for its holes. Any other copy fetches the holes first."""
    src, dst = tmp_path / "data.distcp", tmp_path / "copy.distcp"
    with open(src, "wb") as fh:
        fh.truncate(64 << 20)
        fh.seek(1 << 20)
        fh.write(b"fetched" * 600)
    asked = []
    sparsefile.register_range_fetcher(src, lambda offset, length: asked.append((offset, length)))
    try:
        with sparsefile.holes_kept():
            fileio.clone_file(src, dst)
        assert asked == []
        assert dst.read_bytes() == src.read_bytes()
        assert dst.stat().st_blocks * 512 <= 1 << 20  # a few KiB on disk, not 64 MiB
        fileio.clone_file(src, tmp_path / "filled.distcp")
        assert asked == [(0, 64 << 20)]
    finally:
        sparsefile.forget_range_fetchers(str(src))


def test_inside_one_sync_mid_sized_files_start_their_writeback_others_wait(tmp_path,
                                                                           monkeypatch):
    from upgd_migrate import fileio

    started = []
    monkeypatch.setattr(fileio, "start_writeback", lambda fd: started.append(os.fstat(fd).st_size))
    monkeypatch.setattr(fileio, "_WRITEBACK_MIN", 10)
    monkeypatch.setattr(fileio, "_WRITEBACK_MAX", 100)
    with fileio.one_sync(tmp_path):
        atomic_write(tmp_path / "small", b"x" * 9)  # left to the sync at the end
        atomic_write(tmp_path / "mid", b"x" * 100)
        atomic_write(tmp_path / "big", b"x" * 101)  # left to the sync at the end
    atomic_write(tmp_path / "alone", b"x" * 50)  # outside: fsynced, no early writeback
    assert started == [100]
    assert (tmp_path / "big").read_bytes() == b"x" * 101


def test_clone_file_in_chunks_inside_one_sync_copies_every_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "_COPY_CHUNK", 4096)
    src = tmp_path / "src"
    src.write_bytes(bytes(range(256)) * 100)  # 25600 bytes: six full chunks and a part
    checks = []
    with fileio.one_sync(tmp_path):
        fileio.clone_file(src, tmp_path / "dst", lambda: checks.append(1))
    assert (tmp_path / "dst").read_bytes() == src.read_bytes()
    assert len(checks) == 7


def test_a_check_that_raises_stops_the_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "_COPY_CHUNK", 4096)
    src = tmp_path / "src"
    src.write_bytes(b"x" * 20000)

    def stop():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fileio.clone_file(src, tmp_path / "dst", stop)
    assert (tmp_path / "dst").stat().st_size == 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="syncfs is Linux's")
def test_the_c_library_is_found_without_a_subprocess(monkeypatch):
    """ctypes.util.find_library runs ``ldconfig -p``: 40-70 ms in a process holding torch,
    and again in each forked worker. The calls come from the symbols already loaded."""
    import subprocess

    def refuse(*a, **k):
        raise AssertionError("a subprocess was started")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(fileio, "_LIBC", {})
    assert fileio._libc_call("syncfs") is not None
    assert fileio._libc_call("sync_file_range") is not None
    assert fileio._libc_call("no_such_function_in_libc") is None
