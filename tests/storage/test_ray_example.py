"""The Ray example of docs/storage.md, run on a local Ray instance against the local S3 server."""
from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest
from s3_helpers import FIX, s3, s3_endpoint  # noqa: F401 (fixtures)

DOC = Path(__file__).resolve().parents[2] / "docs" / "storage.md"


def _example(name: str) -> str:
    """The ```python block of docs/storage.md that follows the line naming ``name``."""
    text = DOC.read_text()
    match = re.search(rf"<!-- example: {name} -->\n(?:<!-- docs-test: [^\n]*-->\n)?```python\n(.*?)```", text, re.S)
    assert match, name
    return match.group(1)


@pytest.mark.slow  # a Ray instance starts in tens of seconds
def test_the_ray_example_migrates_and_verifies_a_bucket(s3, s3_endpoint, tmp_path,
                                                         monkeypatch):
    ray = pytest.importorskip("ray")
    fs, bucket = s3
    for i in range(3):
        fs.put_file(str(FIX / "containers" / "pbt.pt"),
                    f"{bucket}/pbt/train_{i:05d}/checkpoint_000001/checkpoint.pt")
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    # Ray's sockets live under _temp_dir and AF_UNIX paths stop at 107 bytes: a short folder,
    # removed at the end
    short = tempfile.mkdtemp(prefix="r", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=short, log_to_driver=False)
    try:
        scope = {"BUCKET": f"s3://{bucket}/pbt", "OPTIONS": {"endpoint_url": s3_endpoint}}
        exec(_example("ray"), scope)
    finally:
        ray.shutdown()
        shutil.rmtree(short, ignore_errors=True)
    results = scope["results"]
    assert [r["status"] for r in results] == ["migrated"] * 3
    assert all(s["ok"] for r in results for f in r["verify"] for s in f["states"])
    assert len(fs.find(f"{bucket}/pbt")) == 3  # in place: no other object appeared
