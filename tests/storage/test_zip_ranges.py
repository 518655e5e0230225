"""A torch zip in a bucket is read by range: its pickle decides "already current", its states'
tensors serve calibration, inspect and verify, and only a write fetches the model weights."""
from __future__ import annotations

import shutil

import pytest
import torch
from s3_helpers import FIX, endpoint_option, s3, s3_endpoint, traffic  # noqa: F401 (fixtures)

from upgd_migrate import sparsefile, storage
from upgd_migrate.checkpoint import io
from upgd_migrate.cli import main
from upgd_migrate.errors import UpgdMigrateError

WEIGHTS = 1 << 20  # float32 elements: 4 MiB of model weights beside a legacy PBT state


def _member(path, scale: float = 1.0):
    """The PBT fixture (a legacy AdaptiveUPGD state) with 4 MiB of weights, its first moments
    times ``scale``; its size."""
    root = torch.load(FIX / "containers" / "pbt.pt", weights_only=True)
    root["weights"] = torch.arange(WEIGHTS, dtype=torch.float32)
    for entry in root["data"]["optimizer_state"]["state"].values():
        entry["first_moment"] = entry["first_moment"] * scale
    torch.save(root, path)
    return path.stat().st_size


def test_a_rerun_over_a_migrated_population_reads_a_sliver(s3, s3_endpoint, tmp_path,
                                                            traffic):
    """Two members migrated in place with backups by two forked workers (each fills its own
    stand-in before writing), then a --check rerun that reads their directories and pickles
    only."""
    fs, bucket = s3
    size = _member(tmp_path / "local.pt")
    original = (tmp_path / "local.pt").read_bytes()
    urls = [f"s3://{bucket}/pbt/train_{i}/checkpoint.pt" for i in range(2)]
    for url in urls:
        fs.put_file(str(tmp_path / "local.pt"), url)
    opt = endpoint_option(s3_endpoint)
    assert main(["checkpoint", str(tmp_path / "local.pt"), "--in-place",
                 "--sigma-ratio", "0.05"]) == 1
    assert main(["checkpoint", f"s3://{bucket}/pbt", "--in-place", "--backup", ".orig",
                 "--sigma-ratio", "0.05", "--jobs", "2", *opt]) == 1
    fs.invalidate_cache()
    assert all(fs.cat(url) == (tmp_path / "local.pt").read_bytes() for url in urls)
    assert all(fs.cat(url + ".orig") == original for url in urls)  # the bytes, not holes
    traffic["get"] = 0
    assert main(["checkpoint", f"s3://{bucket}/pbt", "--check", *opt]) == 0
    assert 0 < traffic["get"] < 2 * size // 100  # under 1% of the objects
    # --verify runs the real states (read by range), and fails them as it does the local file
    # (ratio 0.05 against a trained 0.001: the first step spikes); meta tensors would be exit 2
    assert main(["checkpoint", str(tmp_path / "local.pt"), "--check", "--verify"]) == 1
    traffic["get"] = 0
    assert main(["checkpoint", f"s3://{bucket}/pbt", "--check", "--verify", *opt]) == 1
    assert 0 < traffic["get"] < 2 * size // 20  # the states, never the weights


def test_a_legacy_torch_zip_is_inspected_checked_and_verified_without_its_weights(
        s3, s3_endpoint, tmp_path, traffic, capsys):
    fs, bucket = s3
    size = _member(tmp_path / "local.pt")
    url = f"s3://{bucket}/checkpoint.pt"
    fs.put_file(str(tmp_path / "local.pt"), url)
    opt = endpoint_option(s3_endpoint)
    traffic["get"] = 0
    assert main(["checkpoint", "inspect", url, *opt]) == 0
    remote = capsys.readouterr().out
    assert 0 < traffic["get"] < size // 20  # the pickle and the states' tensors
    assert main(["checkpoint", "inspect", str(tmp_path / "local.pt")]) == 0
    assert remote == capsys.readouterr().out.replace(str(tmp_path / "local.pt"), url)
    for args in (["checkpoint", url, "--check"], ["verify", url, "--steps", "4"]):
        traffic["get"] = 0
        assert main([*args, *opt]) == 1, args  # legacy: it would migrate; verify fails it
        assert 0 < traffic["get"] < size // 20, args  # calibration reads the moments only


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_o_into_the_same_bucket_uploads_migrated_zips_and_copies_the_rest(s3, s3_endpoint,
                                                                           tmp_path, jobs):
    """A member is filled before it is written (by a forked worker with --jobs 2): its
    migrated output is uploaded, not refused as a copy of holes; the carried file is copied
    by the server."""
    fs, bucket = s3
    _member(tmp_path / "local.pt")
    for i in range(2):
        fs.put_file(str(tmp_path / "local.pt"), f"s3://{bucket}/pbt/train_{i}/checkpoint.pt")
    fs.pipe(f"s3://{bucket}/pbt/params.json", b'{"lr": 0.1}')
    assert main(["checkpoint", f"s3://{bucket}/pbt", "-o", f"s3://{bucket}/out",
                 "--sigma-ratio", "0.05", "--jobs", jobs, *endpoint_option(s3_endpoint)]) == 1
    fs.invalidate_cache()
    assert fs.cat(f"s3://{bucket}/out/params.json") == b'{"lr": 0.1}'
    for i in range(2):
        fs.get_file(f"s3://{bucket}/out/train_{i}/checkpoint.pt", str(tmp_path / "out.pt"))
        root = torch.load(tmp_path / "out.pt", weights_only=True)
        assert torch.equal(root["weights"], torch.arange(WEIGHTS, dtype=torch.float32))
        groups = root["data"]["optimizer_state"]["param_groups"]
        assert [(g["adaptive_noise"], g["sigma"]) for g in groups] == [(True, 0.05)] * 2
    assert fs.cat(f"s3://{bucket}/pbt/train_0/checkpoint.pt") == \
        (tmp_path / "local.pt").read_bytes()  # the input untouched


def test_a_stand_in_never_passes_a_hole_off_as_data(s3, s3_endpoint, tmp_path):
    fs, bucket = s3
    _member(tmp_path / "a.pt")
    _member(tmp_path / "b.pt", scale=2.0)  # same layout and size, other moments
    url = f"s3://{bucket}/checkpoint.pt"
    fs.put_file(str(tmp_path / "a.pt"), url)
    with storage.staged([url], {"endpoint_url": s3_endpoint}, lazy=True) as (local, _):
        path = local[0]
        assert sparsefile.is_sparse(path)
        with io.sparse_reads("meta"):
            root = io.load(path)
        assert root["weights"].device.type == "meta"  # shape and dtype, no data to misread
        with pytest.raises(RuntimeError):
            float(root["weights"].sum())
        fs.put_file(str(tmp_path / "b.pt"), url)  # the object changed under the stand-in
        with io.sparse_reads("states"), pytest.raises(UpgdMigrateError, match="CRC-32"):
            io.load(path)
        fs.rm(url)  # gone: the holes cannot be filled, so the full load refuses
        with pytest.raises(UpgdMigrateError, match="no such object"):
            io.load(path)
        shutil.copy(tmp_path / "a.pt", tmp_path / "copy.pt")  # a local file: no fetch
        assert torch.equal(io.load(tmp_path / "copy.pt")["weights"],
                           torch.arange(WEIGHTS, dtype=torch.float32))


@pytest.mark.parametrize("zip64", [False, True])
def test_the_directory_is_found_from_the_end_records(tmp_path, monkeypatch, zip64):
    """The central directory's place from the file's last bytes alone, through the ZIP64
    records where the end record defers to them (a file over 4 GiB: forced here by a lower
    limit and the end record's fields set to 0xFFFFFFFF, as such a writer leaves them)."""
    import struct
    import zipfile

    from upgd_migrate.storage.zipranges import _directory

    if zip64:
        monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 64)
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(3):
            zf.writestr(f"archive/data/{i}", bytes(100))
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        start = zf.start_dir
    if zip64:
        struct.pack_into("<II", raw, len(raw) - 22 + 12, 0xFFFFFFFF, 0xFFFFFFFF)
    raw = bytes(raw)
    assert (b"PK\x06\x06" in raw) == zip64
    tail_at = len(raw) - 200
    offset, size = _directory(raw[tail_at:], tail_at)
    assert offset == start and raw[offset:offset + 4] == b"PK\x01\x02"
    assert raw[offset + size:offset + size + 4] == (b"PK\x06\x06" if zip64 else b"PK\x05\x06")
    assert _directory(raw[tail_at:-30], tail_at) is None  # no end record in what was read
