"""URLs on the reading commands: a PBT population in a bucket, inspected and verified."""
from __future__ import annotations

import json

from s3_helpers import FIX, endpoint_option, s3, s3_endpoint  # noqa: F401 (fixtures)

from upgd_migrate.cli import main


def _population(fs, bucket: str, members: int = 3) -> str:
    for i in range(members):
        fs.put_file(str(FIX / "containers" / "pbt.pt"),
                    f"{bucket}/pbt/train_{i:05d}/checkpoint_000001/checkpoint.pt")
    return f"s3://{bucket}/pbt"


def test_verify_a_population_in_a_bucket_names_its_urls(s3, s3_endpoint, capsys):
    fs, bucket = s3
    url = _population(fs, bucket)
    code = main(["verify", url, "--steps", "4", "--format", "json", "-j", "2",
                 *endpoint_option(s3_endpoint)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1  # legacy states: verify fails them, as on a local folder
    assert [f["path"] for f in doc["files"]] == [
        f"{url}/train_{i:05d}/checkpoint_000001/checkpoint.pt" for i in range(3)]


def test_inspect_one_object(s3, s3_endpoint, capsys):
    fs, bucket = s3
    url = _population(fs, bucket, 1) + "/train_00000/checkpoint_000001/checkpoint.pt"
    assert main(["checkpoint", "inspect", url, *endpoint_option(s3_endpoint)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{url}: population-based-training file, ")


def test_missing_bucket_and_object_are_one_line(s3, s3_endpoint, capsys):
    fs, bucket = s3
    for url in (f"s3://{bucket}-missing/x.pt", f"s3://{bucket}/nothing.pt"):
        assert main(["verify", url, *endpoint_option(s3_endpoint)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {url}: "), err


def test_config_calibrates_from_an_object(s3, s3_endpoint, tmp_path, capsys):
    fs, bucket = s3
    fs.put_file(str(FIX / "optim" / "adaptive_upgd_g1.pt"), f"{bucket}/opt.pt")
    cfg = tmp_path / "train.yaml"
    cfg.write_text("model:\n  optimizer_class: AdaptiveUPGD\n  optimizer_kwargs:\n"
                   "    sigma: 0.001\n    adaptive_noise: false\n")
    local = tmp_path / "local.yaml"
    local.write_text(cfg.read_text())
    assert main(["config", str(local), "--calibrate-from",
                 str(FIX / "optim" / "adaptive_upgd_g1.pt")]) == 1
    assert main(["config", str(cfg), "--calibrate-from", f"s3://{bucket}/opt.pt",
                 *endpoint_option(s3_endpoint)]) == 1
    assert cfg.read_text() == local.read_text()  # the same calibrated sigma as from the file
    assert main(["config", str(cfg), "--calibrate-from", f"s3://{bucket}/none.pt",
                 *endpoint_option(s3_endpoint)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        f"error: s3://{bucket}/none.pt: ")
