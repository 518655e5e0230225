"""A DCP run in a bucket, migrated in place and resumed through torch's FsspecReader; only the
entries the migration reads cross the network (the data objects are staged sparsely)."""
from __future__ import annotations

import pytest
import torch
import torch.distributed.checkpoint as dcp
from dcp_helpers import Net, legacy, options
from s3_helpers import endpoint_option, read_bytes, s3, s3_endpoint  # noqa: F401 (fixtures)
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


def test_dcp_in_place_in_a_bucket_reads_ranges_and_resumes_through_fsspec(
        s3, s3_endpoint, tmp_path, read_bytes):
    fsspec_reader = pytest.importorskip("torch.distributed.checkpoint._fsspec_filesystem")
    fs, bucket = s3
    url, size, _ = _upload(fs, bucket, tmp_path)
    before = {k: fs.info(k)["ETag"] for k in fs.find(f"{bucket}/run/step_100")}
    metadata = fs.cat(f"{url}/.metadata")
    read_bytes[0] = 0
    assert main(["checkpoint", url, "--in-place", "--backup", ".orig", "--sigma-ratio", "0.05",
                 *endpoint_option(s3_endpoint)]) == 1
    assert 0 < read_bytes[0] < size // 50  # .metadata and the options, never the weights
    fs.invalidate_cache()
    after = set(fs.find(f"{bucket}/run/step_100"))
    assert set(before) < after  # a new data object beside the old ones
    assert fs.cat(f"{url}/.metadata.orig") == metadata  # the backup: the old checkpoint
    for key, etag in before.items():  # old data objects untouched, a new .metadata
        assert (fs.info(key)["ETag"] == etag) != key.endswith(".metadata")

    from upgd_migrate.optim.upgd import AdaptiveUPGD

    model = Net()
    opt = AdaptiveUPGD(model.parameters(), lr=1e-4)
    msd, osd = get_state_dict(model, opt, options=options(False))
    msd["big.3"] = torch.zeros(WEIGHTS // 4)
    reader = fsspec_reader.FsspecReader(url, client_kwargs={"endpoint_url": s3_endpoint})
    dcp.load({"model": msd, "optim": osd}, storage_reader=reader)
    assert torch.equal(msd.pop("big.3"), torch.arange(WEIGHTS // 4, dtype=torch.float32) + 3)
    set_state_dict(model, opt, model_state_dict=msd, optim_state_dict=osd,
                   options=options(False))
    group = opt.param_groups[0]
    assert group["adaptive_noise"] is True and group["sigma"] == pytest.approx(0.05)


def test_calibration_reads_the_moments_and_a_rerun_reads_a_sliver(s3, s3_endpoint, tmp_path,
                                                                   read_bytes, capsys):
    fs, bucket = s3
    url, size, moments = _upload(fs, bucket, tmp_path)
    read_bytes[0] = 0
    assert main(["checkpoint", url, "--in-place", *endpoint_option(s3_endpoint)]) == 1
    assert "calibrated" in capsys.readouterr().out
    assert moments <= read_bytes[0] <= moments + size // 50
    read_bytes[0] = 0
    assert main(["checkpoint", url, "--check", *endpoint_option(s3_endpoint)]) == 0
    assert 0 < read_bytes[0] < size // 50


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
