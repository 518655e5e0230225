"""A DCP run in a bucket, migrated in place and resumed through torch's FsspecReader; only the
entries the migration reads cross the network (the data objects are staged sparsely)."""
from __future__ import annotations

import pytest
import torch
import torch.distributed.checkpoint as dcp
from dcp_helpers import Net, legacy, options
from s3_helpers import endpoint_option, s3, s3_endpoint, traffic  # noqa: F401 (fixtures)
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from upgd_migrate.cli import main

WEIGHTS = 4 * 4 * 1024 * 1024  # float32 elements: 64 MiB of model weights beside the state


def _save(folder) -> int:
    """A legacy AdaptiveUPGD run with 64 MiB of extra weights; the bytes of its Adam moments."""
    model = Net()
    opt = legacy(model)
    msd, osd = get_state_dict(model, opt, options=options(False))
    big = torch.arange(WEIGHTS // 4, dtype=torch.float32)
    msd.update({f"big.{i}": big + i for i in range(4)})
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(folder))
    return sum(s[k].nbytes for s in opt.state.values() for k in ("first_moment", "sec_moment"))


def _upload(fs, bucket, tmp_path) -> tuple[str, int, int]:
    moments = _save(tmp_path / "step_100")
    fs.put(str(tmp_path / "step_100"), f"{bucket}/run/", recursive=True)
    size = sum(p.stat().st_size for p in (tmp_path / "step_100").iterdir())
    return f"s3://{bucket}/run/step_100", size, moments


def _resumes(url: str, endpoint: str) -> None:
    """Torch's FsspecReader loads the folder at ``url`` into an AdaptiveUPGD run: a weight
    tensor read back whole, the migrated group (sigma 0.05, adaptive noise)."""
    from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader

    from upgd_migrate.optim.upgd import AdaptiveUPGD

    model = Net()
    opt = AdaptiveUPGD(model.parameters(), lr=1e-4)
    msd, osd = get_state_dict(model, opt, options=options(False))
    msd["big.3"] = torch.zeros(WEIGHTS // 4)
    dcp.load({"model": msd, "optim": osd},
             storage_reader=FsspecReader(url, client_kwargs={"endpoint_url": endpoint}))
    assert torch.equal(msd.pop("big.3"), torch.arange(WEIGHTS // 4, dtype=torch.float32) + 3)
    set_state_dict(model, opt, model_state_dict=msd, optim_state_dict=osd,
                   options=options(False))
    group = opt.param_groups[0]
    assert group["adaptive_noise"] is True and group["sigma"] == pytest.approx(0.05)


def test_dcp_in_place_in_a_bucket_reads_ranges_and_resumes_through_fsspec(
        s3, s3_endpoint, tmp_path, traffic):
    fs, bucket = s3
    url, size, _ = _upload(fs, bucket, tmp_path)
    before = {k: fs.info(k)["ETag"] for k in fs.find(f"{bucket}/run/step_100")}
    metadata = fs.cat(f"{url}/.metadata")
    traffic["get"] = 0
    assert main(["checkpoint", url, "--in-place", "--backup", ".orig", "--sigma-ratio", "0.05",
                 *endpoint_option(s3_endpoint)]) == 1
    assert 0 < traffic["get"] < size // 50  # .metadata and the options, never the weights
    fs.invalidate_cache()
    after = set(fs.find(f"{bucket}/run/step_100"))
    assert set(before) < after  # a new data object beside the old ones
    assert fs.cat(f"{url}/.metadata.orig") == metadata  # the backup: the old checkpoint
    for key, etag in before.items():  # old data objects untouched, a new .metadata
        assert (fs.info(key)["ETag"] == etag) != key.endswith(".metadata")

    _resumes(url, s3_endpoint)


def test_dcp_to_another_prefix_copies_its_data_objects_in_the_store(
        s3, s3_endpoint, tmp_path, traffic, monkeypatch):
    """-o in the same bucket: the data objects are copied by the server (in parts: the copy
    limit is lowered to 5 MiB here), only the new data object and .metadata are sent."""
    monkeypatch.setenv("UPGD_MIGRATE_COPY_BYTES", str(5 * 2**20))
    fs, bucket = s3
    url, size, _ = _upload(fs, bucket, tmp_path)
    before = {k: fs.info(k)["ETag"] for k in fs.find(f"{bucket}/run/step_100")}
    traffic.update(get=0, put=0)
    out = f"s3://{bucket}/migrated/step_100"
    assert main(["checkpoint", url, "-o", out, "--sigma-ratio", "0.05",
                 *endpoint_option(s3_endpoint)]) == 1
    assert 0 < traffic["get"] < size // 50 and 0 < traffic["put"] < size // 50
    sent = [key.rsplit("/", 1)[-1] for method, key in traffic["calls"]
            if method in ("put_object", "create_multipart_upload", "copy_object",
                          "upload_part_copy")]
    assert sent[-1] == ".metadata" and "upload_part_copy" in {m for m, _ in traffic["calls"]}
    fs.invalidate_cache()
    assert {k: fs.info(k)["ETag"] for k in fs.find(f"{bucket}/run/step_100")} == before
    assert {k.rsplit("/", 1)[-1] for k in fs.find(f"{bucket}/migrated/step_100")} > {
        k.rsplit("/", 1)[-1] for k in before}
    assert not fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads")
    _resumes(out, s3_endpoint)


def test_calibration_reads_the_moments_and_a_rerun_reads_a_sliver(s3, s3_endpoint, tmp_path,
                                                                   traffic, capsys):
    fs, bucket = s3
    url, size, moments = _upload(fs, bucket, tmp_path)
    traffic["get"] = 0
    assert main(["checkpoint", url, "--in-place", *endpoint_option(s3_endpoint)]) == 1
    assert "calibrated" in capsys.readouterr().out
    assert moments <= traffic["get"] <= moments + size // 50
    traffic["get"] = 0
    assert main(["checkpoint", url, "--check", *endpoint_option(s3_endpoint)]) == 0
    assert 0 < traffic["get"] < size // 50


def test_forked_workers_fetch_their_own_ranges(s3, s3_endpoint, tmp_path):
    """Two folders, --jobs 2: each worker reads its entries by range with its own file system,
    and writes what a local run writes (the calibrated moments were read, not holes)."""
    import shutil

    from dcp_helpers import save_legacy

    fs, bucket = s3
    for step in ("step_1", "step_2"):
        save_legacy(tmp_path / "run" / step)
    fs.put(str(tmp_path / "run"), f"{bucket}/", recursive=True)
    shutil.copytree(tmp_path / "run", tmp_path / "local")
    assert main(["checkpoint", str(tmp_path / "local"), "--in-place", "--jobs", "1"]) == 1
    assert main(["checkpoint", f"s3://{bucket}/run", "--in-place", "--jobs", "2",
                 *endpoint_option(s3_endpoint)]) == 1
    fs.invalidate_cache()
    for step in ("step_1", "step_2"):
        local = sorted((tmp_path / "local" / step).glob("__upgd_migrate_*"))
        assert local and all(fs.cat(f"{bucket}/run/{step}/{p.name}") == p.read_bytes()
                             for p in local)
