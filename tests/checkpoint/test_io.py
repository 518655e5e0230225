from __future__ import annotations

import os
import pickle
from fractions import Fraction

import pytest
import torch

from upgd_migrate.checkpoint import io
from upgd_migrate.errors import UpgdMigrateError


class CreatesFile:
    """Unpickling this calls open(target, "w"): loading it would create a file."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_checkpoint_is_refused_and_creates_nothing(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state": {}, "param_groups": [], "x": CreatesFile(target)}, path)
    with pytest.raises(io.UnsafeCheckpointError) as err:
        io.load(path)
    assert not target.exists()
    assert err.value.names == ["io.open"]
    assert str(err.value) == (f"{path}: refused: loading it needs globals outside the "
                              "weights-only allowlist: io.open (if you trust the file, re-run "
                              "with --allow-global io.open)")


def test_plain_pickle_is_refused_naming_the_global(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(CreatesFile(target), protocol=2))
    with pytest.raises(io.UnsafeCheckpointError) as err:
        io.load(path)
    assert not target.exists()
    assert err.value.names == ["io.open"]


def test_allow_global_admits_exactly_that_global(tmp_path):
    path = tmp_path / "frac.pt"
    torch.save({"ratio": Fraction(1, 3)}, path)
    with pytest.raises(io.UnsafeCheckpointError, match="fractions.Fraction"):
        io.load(path)
    assert io.load(path, ["fractions.Fraction"]) == {"ratio": Fraction(1, 3)}


def test_allow_global_that_does_not_exist_is_a_user_error():
    with pytest.raises(UpgdMigrateError, match="--allow-global nosuchmodule.X: cannot import"):
        io.resolve_globals(["nosuchmodule.X"])


def test_unreadable_and_missing_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(io.CheckpointError, match=r"junk.pt: not a readable torch checkpoint"):
        io.load(junk)
    with pytest.raises(io.CheckpointError, match=r"missing.pt: no such file"):
        io.load(tmp_path / "missing.pt")


def test_save_is_deterministic_whatever_the_file_name(tmp_path):
    obj = {"a": torch.arange(10.0), "b": [1, "x", None]}
    io.save(obj, tmp_path / "one.pt")
    io.save(obj, tmp_path / "two.pt")
    assert (tmp_path / "one.pt").read_bytes() == (tmp_path / "two.pt").read_bytes()
    assert (tmp_path / "one.pt").read_bytes() == io.save_bytes(obj)


def test_failed_save_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "keep.pt"
    io.save({"a": 1}, path)
    before = path.read_bytes()
    with pytest.raises(Exception):
        io.save({"bad": lambda: 0}, path)  # a lambda cannot be pickled
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.pt"]


def test_save_keeps_mode_of_replaced_file(tmp_path):
    path = tmp_path / "m.pt"
    io.save({"a": 1}, path)
    os.chmod(path, 0o640)
    io.save({"a": 2}, path)
    assert path.stat().st_mode & 0o777 == 0o640


def test_legacy_non_zip_format_loads_without_mmap(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"t": torch.ones(4)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(io.load(path)["t"], torch.ones(4))


def test_protocol_4_pickle_names_its_globals(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil4.pt"
    path.write_bytes(pickle.dumps([CreatesFile(target)], protocol=4))
    with pytest.raises(io.UnsafeCheckpointError) as err:
        io.load(path)
    assert not target.exists()
    assert err.value.names == ["io.open"]


def test_a_failing_write_inside_torch_save_is_the_os_error_not_torch_internals():
    """torch's C++ writer wraps our file object's error in '[enforce fail at
    inline_container.cc...]'; the user sees the real one."""
    import errno

    import torch

    from upgd_migrate.checkpoint import io as ckpt_io

    class FullDisk:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

    with pytest.raises(OSError) as caught:
        ckpt_io.save_to({"w": torch.zeros(1000)}, FullDisk())
    assert caught.value.errno == errno.ENOSPC
    assert "inline_container" not in str(caught.value)


def test_load_slice_reads_a_payload_inside_a_bigger_file(tmp_path):
    payload = io.save_bytes({"m": torch.arange(1000.0), "step": 3})
    path = tmp_path / "data.distcp"
    path.write_bytes(b"x" * 100 + payload + b"y" * 50)
    got = io.load_slice(path, 100, len(payload), "entry")
    assert torch.equal(got["m"], torch.arange(1000.0)) and got["step"] == 3
    with pytest.raises(io.CheckpointError, match=r"^entry: truncated: 50 of 60 bytes present$"):
        io.load_slice(path, len(payload) + 100, 60, "entry")
    with pytest.raises(io.CheckpointError, match="^entry: not a readable torch checkpoint"):
        io.load_slice(path, 0, 100, "entry")  # the bytes before it: no torch file
