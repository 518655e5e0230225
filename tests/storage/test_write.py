"""Writes to a bucket: -o s3://..., in place with --backup, whole or absent."""
from __future__ import annotations

import json

from s3_helpers import FIX, endpoint_option, s3, s3_endpoint, traffic  # noqa: F401 (fixtures)

from upgd_migrate.cli import main

PBT = FIX / "containers" / "pbt.pt"


def _population(fs, bucket: str, members: int = 2) -> list[str]:
    keys = [f"{bucket}/pbt/train_{i:05d}/checkpoint_000001/checkpoint.pt" for i in range(members)]
    for key in keys:
        fs.put_file(str(PBT), key)
    fs.pipe_file(f"{bucket}/pbt/train_00000/params.json", b'{"lr": 0.001}')
    return keys


def test_population_to_another_prefix_then_verified(s3, s3_endpoint, traffic, capsys):
    """The migrated files are uploaded; params.json, unchanged, is copied by the server."""
    fs, bucket = s3
    keys = _population(fs, bucket)
    opt = endpoint_option(s3_endpoint)
    out = f"s3://{bucket}/migrated"
    assert main(["checkpoint", f"s3://{bucket}/pbt", "-o", out, *opt]) == 1
    text = capsys.readouterr().out
    assert f"s3://{bucket}/pbt/train_00000/checkpoint_000001/checkpoint.pt: migrated -> " \
           f"{out}/train_00000/checkpoint_000001/checkpoint.pt" in text
    assert sorted(fs.find(f"{bucket}/migrated")) == sorted(
        [k.replace("/pbt/", "/migrated/") for k in keys]
        + [f"{bucket}/migrated/train_00000/params.json"])
    assert all(fs.cat(k) == PBT.read_bytes() for k in keys)  # inputs untouched
    assert fs.cat(f"{bucket}/migrated/train_00000/params.json") == b'{"lr": 0.001}'
    sent = {(m, k.rsplit("/", 1)[-1]) for m, k in traffic["calls"]
            if "/migrated/" in f"/{k}" and m in ("put_object", "copy_object")}
    assert sent == {("put_object", "checkpoint.pt"), ("copy_object", "params.json")}
    assert main(["verify", out, "--steps", "4", "--format", "json", *opt]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["failed"] == 0
    assert main(["checkpoint", out, "--check", *opt]) == 0


def test_in_place_with_backup_and_an_existing_backup_is_refused(s3, s3_endpoint, capsys):
    fs, bucket = s3
    key = _population(fs, bucket, 1)[0]
    opt = endpoint_option(s3_endpoint)
    assert main(["checkpoint", f"s3://{key}", "--in-place", "--backup", ".orig", *opt]) == 1
    assert fs.cat(key + ".orig") == PBT.read_bytes() and fs.cat(key) != PBT.read_bytes()
    capsys.readouterr()
    other = f"{bucket}/other/checkpoint.pt"
    fs.put_file(str(PBT), other)
    fs.pipe_file(other + ".orig", b"an older backup")
    assert main(["checkpoint", f"s3://{other}", "--in-place", "--backup", ".orig", *opt]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"error: s3://{other}.orig: backup already exists: not overwritten, "
                       "object left unchanged (remove it or pick another --backup suffix); "
                       "0 of 2 objects written")
    assert fs.cat(other) == PBT.read_bytes() and fs.cat(other + ".orig") == b"an older backup"


def test_a_rerun_over_a_migrated_bucket_uploads_nothing(s3, s3_endpoint, capsys):
    fs, bucket = s3
    key = _population(fs, bucket, 1)[0]
    opt = endpoint_option(s3_endpoint)
    assert main(["checkpoint", f"s3://{key}", "--in-place", *opt]) == 1
    modified = fs.info(key)["LastModified"]
    assert main(["checkpoint", f"s3://{key}", "--in-place", *opt]) == 0
    fs.invalidate_cache()
    assert fs.info(key)["LastModified"] == modified


def test_an_output_onto_or_inside_its_input_is_refused_before_anything(s3, s3_endpoint, traffic,
                                                                       capsys):
    fs, bucket = s3
    keys = _population(fs, bucket, 1)
    traffic["calls"].clear()
    src = f"s3://{bucket}/pbt"
    for out, problem in ((f"s3a://{bucket}/pbt/", f"would write {src} over itself; pass "
                                                  "--in-place to rewrite inputs"),
                         (f"{src}/migrated", f"inside the input folder {src}: a rerun would "
                                             "walk into its own output; pick a folder outside it")):
        assert main(["checkpoint", src, "-o", out, *endpoint_option(s3_endpoint)]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"error: -o {out}: {problem}"]
    assert traffic["calls"] == [] and sorted(fs.find(bucket)) == sorted(
        keys + [f"{bucket}/pbt/train_00000/params.json"])
