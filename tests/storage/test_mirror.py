"""Which output files are copies the store can make itself (no server needed here)."""
from __future__ import annotations

import pytest

from upgd_migrate.errors import UpgdMigrateError
from upgd_migrate.sparsefile import forget_range_fetchers, register_range_fetcher
from upgd_migrate.storage.mirror import same_store, source_of


def test_same_store_needs_one_scheme_for_every_url():
    assert same_store(["s3://a/run"], "s3a://b/out")
    assert same_store(["s3://a/x.pt", "local.pt"], "s3://a/out")
    assert not same_store(["gs://a/run"], "s3://a/out")
    assert not same_store(["local/run"], "s3://a/out")
    assert not same_store(["s3://a/run"], None)


def _tree(tmp_path):
    src, out = tmp_path / "in" / "run", tmp_path / "out" / "migrated"
    for root in (src, out):
        (root / "step").mkdir(parents=True)
        (root / "params.json").write_bytes(b"{}")
    (src / "step" / "ckpt.pt").write_bytes(b"old")
    (out / "step" / "ckpt.pt").write_bytes(b"new")
    (out / "step" / "extra.bin").write_bytes(b"x")
    return src, out


def test_an_identical_file_at_its_relative_path_is_a_copy(tmp_path):
    src, out = _tree(tmp_path)
    sources = {str(src): "s3://b/run"}
    assert source_of(out / "params.json", out, sources) == "s3://b/run/params.json"
    assert source_of(out / "step" / "ckpt.pt", out, sources) is None  # migrated: uploaded
    assert source_of(out / "step" / "extra.bin", out, sources) is None  # new: uploaded


def test_a_file_built_from_a_partial_stand_in_is_refused(tmp_path):
    src, out = _tree(tmp_path)
    register_range_fetcher(src / "step" / "ckpt.pt", lambda offset, length: None)
    try:
        with pytest.raises(UpgdMigrateError, match="differs from the partial stand-in"):
            source_of(out / "step" / "ckpt.pt", out, {str(src): "s3://b/run"})
    finally:
        forget_range_fetchers(str(tmp_path))


def test_a_single_object_and_several_inputs(tmp_path):
    src, out = _tree(tmp_path)
    one = tmp_path / "in" / "a.pt"
    one.write_bytes(b"a")
    copy = tmp_path / "a.pt"
    copy.write_bytes(b"a")
    assert source_of(copy, copy, {str(one): "s3://b/a.pt"}) == "s3://b/a.pt"
    (out / "a.pt").write_bytes(b"a")
    (out / "run").mkdir()
    (out / "run" / "params.json").write_bytes(b"{}")
    sources = {str(one): "s3://b/a.pt", str(src): "s3://b/run"}
    assert source_of(out / "a.pt", out, sources) == "s3://b/a.pt"
    assert source_of(out / "run" / "params.json", out, sources) == "s3://b/run/params.json"
