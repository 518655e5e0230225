from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from upgd_migrate.cli import main

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "fixtures"
G1 = FIX / "optim" / "adaptive_upgd_g1.pt"
G1_EMA = FIX / "optim" / "adaptive_upgd_g1_ema.pt"


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    return dst


def test_bare_checkpoint_is_migrate(tmp_path, capsys):
    assert main(["checkpoint", str(G1), "-o", str(tmp_path / "a.pt")]) == 1
    assert main(["checkpoint", "migrate", str(G1), "-o", str(tmp_path / "b.pt")]) == 1
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    out = capsys.readouterr()
    assert out.out.splitlines()[:2] == [
        f"{G1}: migrated -> {tmp_path / 'a.pt'} (optimizer state)",
        "  (whole file): AdaptiveUPGD G1: optim.fill-group-keys, optim.adaptive-noise, "
        "optim.stamp-format"]
    assert out.err.splitlines()[-1] == "1 file: 1 migrated"


def test_second_run_reports_nothing_to_do(tmp_path, capsys):
    out = tmp_path / "a.pt"
    assert main(["checkpoint", str(G1), "-o", str(out)]) == 1
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["checkpoint", str(out), "--in-place"]) == 0
    assert out.read_bytes() == before
    assert capsys.readouterr().out == f"{out}: already migrated, nothing to do (optimizer state)\n"


@pytest.mark.parametrize("args,message", [
    ([], "Error: say where to write: -o OUT or --in-place (or --check / --diff to only report)"),
    (["--check", "--dry-run"], "Error: --check and --diff/--dry-run cannot be combined"),
    (["--check", "--diff"], "Error: --check and --diff/--dry-run cannot be combined"),
    (["--check", "--in-place"], "Error: --check/--diff write nothing: drop -o/--in-place"),
    (["-o", "x.pt", "--backup", ".bak"], "Error: --backup needs --in-place"),
])
def test_usage_errors(args, message, capsys):
    assert main(["checkpoint", str(G1), *args]) == 2
    assert message in capsys.readouterr().err


def test_check_and_dry_run_write_nothing(tmp_path, capsys):
    path = _copy(G1, tmp_path)
    before = path.read_bytes()
    assert main(["checkpoint", str(path), "--check"]) == 1
    assert capsys.readouterr().out == f"{path}: would migrate (optimizer state)\n"
    assert main(["checkpoint", str(path), "--dry-run", "--format", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["mode"] == "dry-run" and doc["exit_code"] == 1
    assert doc["files"][0]["states"][0]["applied"] == [
        "optim.fill-group-keys", "optim.adaptive-noise", "optim.stamp-format"]
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_in_place_with_backup_never_overwrites_a_backup(tmp_path, capsys):
    path = _copy(G1, tmp_path)
    original = path.read_bytes()
    assert main(["checkpoint", str(path), "--in-place", "--backup", ".orig"]) == 1
    backup = tmp_path / (path.name + ".orig")
    assert backup.read_bytes() == original and path.read_bytes() != original
    shutil.copy(G1, path)  # un-migrate, then migrate again: the old backup must survive
    backup.write_bytes(b"precious")
    capsys.readouterr()
    assert main(["checkpoint", str(path), "--in-place", "--backup", ".orig"]) == 2
    assert backup.read_bytes() == b"precious" and path.read_bytes() == original
    assert capsys.readouterr().err.splitlines()[0] == (
        f"{path}: backup {backup} already exists: not overwritten, file left unchanged "
        "(remove it or pick another --backup suffix)")


def test_directory_continues_past_bad_files(tmp_path, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(G1, src / "sub" / "g1.pt")
    shutil.copy(FIX / "containers" / "ppo.zip", src / "ppo.zip")
    (src / "broken.ckpt").write_bytes(b"garbage")
    (src / "notes.txt").write_text("not a checkpoint: carried")
    assert main(["checkpoint", str(src), "-o", str(tmp_path / "out")]) == 2
    out = capsys.readouterr()
    assert (tmp_path / "out" / "sub" / "g1.pt").is_file()
    assert (tmp_path / "out" / "ppo.zip").is_file()
    assert f"{src / 'broken.ckpt'}: not a readable torch checkpoint" in out.err
    assert (tmp_path / "out" / "notes.txt").read_text() == "not a checkpoint: carried"
    assert out.err.splitlines()[-1] == ("4 files: 2 migrated, 1 carried, 1 error; unchanged "
                                        "inputs copied (1) into the output")


def test_malicious_file_via_cli_creates_nothing(tmp_path, capsys):
    target = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(target), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"optimizer": Evil()}, path)
    for command in (["checkpoint", "inspect"], ["verify"], ["checkpoint", "--check"]):
        assert main([*command, str(path)]) == 2
        assert "refused: loading it needs globals outside the weights-only allowlist: io.open" \
            in capsys.readouterr().err
    assert not target.exists()


def test_inspect(capsys):
    assert main(["checkpoint", "inspect", str(FIX / "containers" / "training_loop.pt")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{FIX / 'containers' / 'training_loop.pt'}: training-loop "
                               "dict, ")
    assert lines[1] == ("  optimizer: AdaptiveUPGD G1 -> optim.fill-group-keys, "
                        "optim.adaptive-noise, optim.stamp-format")
    assert "  vgs: VarianceGradientScaler v3.1 -> vgs.upgrade-3.2" in lines


def test_inspect_knows_the_keys_of_a_distributed_run(tmp_path, capsys):
    """A state saved under torch.distributed holds the noise streams' seed and draw count:
    known keys of the packaged optimizers, not "other keys"."""
    from upgd_migrate.optim import AdaptiveUPGD

    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    opt = AdaptiveUPGD([p], sigma=0.05, adaptive_noise=True)
    opt.step()
    sd = opt.state_dict()
    sd["param_groups"][0].update(noise_seed=12345, noise_draws=7, mystery=1)
    torch.save({"optimizer": sd}, tmp_path / "ddp.pt")
    assert main(["checkpoint", "inspect", str(tmp_path / "ddp.pt"), "--format", "json"]) == 0
    group = json.loads(capsys.readouterr().out)["files"][0]["states"][0]["groups"][0]
    assert group["other keys"] == ["mystery"]


def test_checkpoint_verify_flag(tmp_path, capsys):
    assert main(["checkpoint", str(FIX / "containers" / "ppo.zip"), "-o",
                 str(tmp_path / "p.zip"), "--verify"]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'p.zip'}:" in out and "FAIL" not in out


def test_help_does_not_import_torch():
    code = ("import sys; from upgd_migrate.cli import main; main(['--help']); "
            "main(['checkpoint', '--help']); main(['verify', '--help']); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_progress_bar_on_big_files_only(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from upgd_migrate.checkpoint import pipeline
    from upgd_migrate.cli import cli

    runner = CliRunner()
    small = runner.invoke(cli, ["checkpoint", str(G1), "-o", str(tmp_path / "a.pt")])
    assert f"{G1}  [" not in small.stderr
    monkeypatch.setattr(pipeline, "PROGRESS_BYTES", 0)  # every file counts as big
    big = runner.invoke(cli, ["checkpoint", str(G1), "-o", str(tmp_path / "b.pt")])
    assert f"{G1}" in big.stderr.splitlines()[0]
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_malformed_state_is_an_error_not_a_traceback(tmp_path, capsys):
    path = tmp_path / "odd.pt"
    torch.save({"state": {0: {"step": 3}}, "param_groups": [{"lr": 1e-3, "sigma": 0.1,
                                                             "params": [0]}]}, path)
    assert main(["checkpoint", "inspect", str(path)]) == 0  # an unknown class: shown, untouched
    assert main(["verify", str(path)]) == 2  # skipped: nothing verified is not a pass
    bad = tmp_path / "bad.pt"
    torch.save({"state": {}, "param_groups": [{"sigma": 0.1, "lr": 1e-3,
                                               "beta_utility": 0.9}]}, bad)  # no "params"
    capsys.readouterr()
    for command in (["checkpoint", "inspect"], ["verify"], ["checkpoint", "--check"]):
        assert main([*command, str(bad)]) == 2
        assert capsys.readouterr().err.splitlines()[0] == f"{bad}: missing key 'params'"


def test_files_without_states(tmp_path, capsys):
    path = tmp_path / "weights.pt"
    torch.save({"model": {"w": torch.ones(2)}}, path)
    # Nothing to verify or migrate: said, and exit 2, not a silent pass.
    assert main(["verify", str(path)]) == 2
    out = capsys.readouterr()
    assert out.out == f"{path}: no optimizer or VGS state found\n"
    assert out.err == "0 states verified in 1 file: 0 failed; nothing verified\n"
    assert main(["checkpoint", str(path), "--check"]) == 2
    out = capsys.readouterr()
    assert out.out == f"{path}: no optimizer or VGS state found (torch file)\n"
    assert out.err == "1 file: 1 no states; no UPGD/VGS state to migrate\n"


def test_progress_bar_reaches_100_only_after_the_write(tmp_path, monkeypatch):
    """The write and its fsync are the slow part of a big file: the bar must not sit at 100%
    while they run."""
    import click

    from upgd_migrate.checkpoint import pipeline
    from upgd_migrate.checkpoint import run as checkpoint_run

    bars, seen = [], []
    real_bar, real_write = click.progressbar, pipeline.write_checkpoint

    def progressbar(*args, **kwargs):
        bars.append(real_bar(*args, **kwargs))
        return bars[-1]

    def write_checkpoint(*args):
        seen.append((bars[-1].pos, bars[-1].length))
        real_write(*args)

    monkeypatch.setattr(pipeline, "PROGRESS_BYTES", 0)
    monkeypatch.setattr(checkpoint_run.click, "progressbar", progressbar)
    monkeypatch.setattr(pipeline, "write_checkpoint", write_checkpoint)
    assert main(["checkpoint", str(G1), "-o", str(tmp_path / "a.pt")]) == 1
    (pos, length), = seen
    assert pos < length  # the write is inside the bar
    assert bars[-1].pos == length  # and the bar ends full


@pytest.mark.parametrize("signum,code", [(2, 130), (15, 143)])
def test_an_interrupted_write_removes_this_runs_backup(tmp_path, monkeypatch, capsys,
                                                       signum, code):
    """The signal itself is tested for real in tests/reliability/test_interrupts.py; here the
    exception it raises arrives in the middle of the write, as the handler raises it."""
    from upgd_migrate.checkpoint import io as ckpt_io
    from upgd_migrate.errors import Interrupted

    path = _copy(G1, tmp_path)
    before = path.read_bytes()

    def interrupted_save(obj, fh):
        fh.write(b"half a checkpoint")
        raise Interrupted(signum)

    monkeypatch.setattr(ckpt_io, "save_to", interrupted_save)
    assert main(["checkpoint", str(path), "--in-place", "--backup", ".orig"]) == code
    assert capsys.readouterr().err.startswith("interrupted (SIG")
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert path.read_bytes() == before
