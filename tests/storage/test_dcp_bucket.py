"""A DCP run in a bucket, migrated in place and resumed through torch's FsspecReader."""
from __future__ import annotations

import pytest
import torch.distributed.checkpoint as dcp
from dcp_helpers import Net, options, save_legacy
from s3_helpers import endpoint_option, s3, s3_endpoint  # noqa: F401 (fixtures)
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from upgd_migrate.cli import main


def test_dcp_in_place_in_a_bucket_resumes_through_fsspec(s3, s3_endpoint, tmp_path):
    fsspec_reader = pytest.importorskip("torch.distributed.checkpoint._fsspec_filesystem")
    fs, bucket = s3
    save_legacy(tmp_path / "step_100")
    fs.put(str(tmp_path / "step_100"), f"{bucket}/run/", recursive=True)
    before = {k: fs.cat(k) for k in fs.find(f"{bucket}/run/step_100")}
    url = f"s3://{bucket}/run/step_100"
    assert main(["checkpoint", url, "--in-place", "--sigma-ratio", "0.05",
                 *endpoint_option(s3_endpoint)]) == 1
    fs.invalidate_cache()
    after = set(fs.find(f"{bucket}/run/step_100"))
    assert set(before) < after  # a new data object beside the old ones
    for key, data in before.items():
        if not key.endswith(".metadata"):
            assert fs.cat(key) == data  # old data objects untouched
    assert fs.cat(f"{bucket}/run/step_100/.metadata") != before[
        f"{bucket}/run/step_100/.metadata"]

    from upgd_migrate.optim.upgd import AdaptiveUPGD

    model = Net()
    opt = AdaptiveUPGD(model.parameters(), lr=1e-4)
    msd, osd = get_state_dict(model, opt, options=options(False))
    reader = fsspec_reader.FsspecReader(url, client_kwargs={"endpoint_url": s3_endpoint})
    dcp.load({"model": msd, "optim": osd}, storage_reader=reader)
    set_state_dict(model, opt, model_state_dict=msd, optim_state_dict=osd,
                   options=options(False))
    group = opt.param_groups[0]
    assert group["adaptive_noise"] is True and group["sigma"] == pytest.approx(0.05)
