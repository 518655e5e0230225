"""Run folders as the libraries write them: walked by content, carried, mirrored by -o."""
from __future__ import annotations

import fractions
import os

import torch

from ckpt_helpers import optim_state
from run_helpers import (accelerate_state, hf_checkpoint, ray_experiment, titan_step,
                         tree)
from upgd_migrate.checkpoint.runfolder import NO_STATE_KEY, NOT_A_STATE
from upgd_migrate.cli import main


def _mirrored(src, out, migrated):
    """OUT holds every file of src, byte-identical except the migrated ones."""
    before, after = tree(src), tree(out)
    assert sorted(before) == sorted(after)
    for name in before:
        assert (before[name] != after[name]) == (name in migrated), name


def test_hf_checkpoint_rng_state_beside_a_legacy_optimizer(tmp_path, capsys):
    run = tmp_path / "run"
    hf_checkpoint(run / "checkpoint-2")
    hf_checkpoint(run / "checkpoint-4", legacy_format=True)
    assert main(["checkpoint", str(run), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.endswith("14 files: 2 migrated, 12 carried; unchanged inputs copied (12) into "
                        "the output\n")
    _mirrored(run, tmp_path / "out", {"checkpoint-2/optimizer.pt", "checkpoint-4/optimizer.pt"})
    assert main(["checkpoint", str(run), "--in-place"]) == 1
    assert main(["checkpoint", str(run), "--check"]) == 0
    out = capsys.readouterr().out
    assert f"{run / 'checkpoint-2' / 'rng_state.pth'}: {NOT_A_STATE} ({NO_STATE_KEY})" in out
    assert f"{run / 'checkpoint-2' / 'model.safetensors'}: {NOT_A_STATE} (safetensors " \
           "weights)" in out
    assert main(["verify", str(run)]) == 0
    assert f"{run / 'checkpoint-4' / 'scheduler.pt'}: {NOT_A_STATE} ({NO_STATE_KEY})" in \
        capsys.readouterr().out.splitlines()
    assert main(["checkpoint", "inspect", str(run)]) == 0


def test_a_walked_pickled_dataclass_is_carried_a_named_one_refused(tmp_path, capsys):
    hf_checkpoint(tmp_path / "ck")
    assert main(["checkpoint", str(tmp_path / "ck"), "--check"]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'ck' / 'training_args.bin'}: {NOT_A_STATE} ({NO_STATE_KEY})" in out
    for command in (["checkpoint", "--check"], ["checkpoint", "inspect"], ["verify"]):
        assert main([*command, str(tmp_path / "ck" / "training_args.bin")]) == 2
        assert "--allow-global run_helpers.TrainingArguments" in capsys.readouterr().err


def test_a_walked_file_that_could_hold_a_state_is_not_checked_and_the_hint_works(
        tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"optimizer": optim_state("adaptive_upgd_g1.pt"),
                "ratio": fractions.Fraction(1, 3)}, run / "state.bin")
    for command in (["checkpoint", "--check"], ["checkpoint", "inspect"], ["verify"]):
        assert main([*command, str(run)]) == 2
        err = capsys.readouterr().err
        assert "refused" in err and "--allow-global fractions.Fraction" in err
    assert main(["checkpoint", "--check", str(run), "--allow-global", "fractions.Fraction"]) == 1


def test_accelerate_optimizer_bin_is_found(tmp_path, capsys):
    accelerate_state(tmp_path / "checkpoints" / "checkpoint_0")
    assert main(["checkpoint", str(tmp_path / "checkpoints"), "--check"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"{tmp_path / 'checkpoints' / 'checkpoint_0' / 'optimizer.bin'}: would migrate " \
           "(optimizer state)" in out


def test_ray_experiment_is_mirrored_whole(tmp_path, capsys):
    states = ray_experiment(tmp_path / "exp")
    assert main(["checkpoint", str(tmp_path / "exp"), "-o", str(tmp_path / "out")]) == 1
    _mirrored(tmp_path / "exp", tmp_path / "out", set(states))
    assert capsys.readouterr().err.endswith("12 files: 2 migrated, 10 carried; unchanged inputs "
                                            "copied (10) into the output\n")


def test_titan_train_state_is_carried_unread(tmp_path, capsys):
    titan_step(tmp_path / "ck" / "step-10")
    assert main(["checkpoint", str(tmp_path / "ck"), "-o", str(tmp_path / "out")]) == 1
    assert main(["verify", str(tmp_path / "out")]) == 0
    assert main(["checkpoint", "--check", str(tmp_path / "out")]) == 0
    assert "refused" not in capsys.readouterr().err


def test_same_named_inputs_are_refused_before_writing(tmp_path, capsys):
    for n in (2, 4):
        hf_checkpoint(tmp_path / "run" / f"checkpoint-{n}")
    a, b = (tmp_path / "run" / f"checkpoint-{n}" / "optimizer.pt" for n in (2, 4))
    out = tmp_path / "out"
    for inputs in ([a, b], [a.parent, b.parent]):
        assert main(["checkpoint", *map(str, inputs), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert "would both be written to" in err and "nothing written" in err
        assert not out.exists()


def test_output_inside_an_input_is_refused_and_nothing_nests(tmp_path, capsys):
    hf_checkpoint(tmp_path / "run" / "checkpoint-2")
    before = tree(tmp_path / "run")
    for _ in range(2):
        assert main(["checkpoint", str(tmp_path / "run"), "-o",
                     str(tmp_path / "run" / "migrated")]) == 2
        assert "inside the input folder" in capsys.readouterr().err
    assert tree(tmp_path / "run") == before


def test_link_only_when_asked(tmp_path):
    hf_checkpoint(tmp_path / "run" / "checkpoint-2")
    src = tmp_path / "run" / "checkpoint-2"
    for flag, linked in (([], False), (["--link"], True)):
        out = tmp_path / f"out{len(flag)}"
        assert main(["checkpoint", str(tmp_path / "run"), "-o", str(out), *flag]) == 1
        for name in ("rng_state.pth", "model.safetensors", "trainer_state.json"):
            same = os.stat(src / name).st_ino == os.stat(out / "checkpoint-2" / name).st_ino
            assert same == linked, (flag, name)
        assert os.stat(src / "optimizer.pt").st_ino != \
            os.stat(out / "checkpoint-2" / "optimizer.pt").st_ino


def test_an_sb3_zip_in_a_run_keeps_its_sidecar_with_it(tmp_path, capsys):
    import hashlib
    import json
    import shutil

    from ckpt_helpers import FIXTURES

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(FIXTURES / "containers" / "ppo.zip", run / "ppo.zip")
    shutil.copy(FIXTURES / "containers" / "ppo.zip.sidecar.json", run / "ppo.zip.sidecar.json")
    (run / "ppo.zip.orig").write_bytes((run / "ppo.zip").read_bytes())  # a --backup
    assert main(["checkpoint", str(run), "-o", str(tmp_path / "out")]) == 1
    out = tmp_path / "out"
    meta = json.loads((out / "ppo.zip.sidecar.json").read_text())
    assert meta["sha256"] == hashlib.sha256((out / "ppo.zip").read_bytes()).hexdigest()
    assert (out / "ppo.zip.orig").read_bytes() == (run / "ppo.zip.orig").read_bytes()
    assert "ppo.zip.orig: not an optimizer state: carried (a backup beside its checkpoint)" \
        in capsys.readouterr().out


def test_a_run_is_synced_once_and_a_failed_sync_is_exit_2(tmp_path, capsys, monkeypatch):
    from upgd_migrate import fileio

    hf_checkpoint(tmp_path / "run" / "checkpoint-2")
    calls = []
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: calls.append(fd))
    assert main(["checkpoint", str(tmp_path / "run"), "-o", str(tmp_path / "a")]) == 1
    assert calls == []  # no fsync per file: one syncfs of the tree at the end

    def failing(folder):
        raise OSError(5, "Input/output error", str(folder))

    monkeypatch.setattr(fileio, "_syncfs", failing)
    assert main(["checkpoint", str(tmp_path / "run"), "-o", str(tmp_path / "b")]) == 2
    assert (f"{tmp_path / 'b'}: cannot make the output durable: Input/output error"
            in capsys.readouterr().err)


def test_numpy_data_beside_a_state_needs_no_allow_global(tmp_path):
    from run_helpers import rng_state

    (tmp_path / "run").mkdir()
    torch.save({"optimizer": optim_state("adaptive_upgd_g1.pt"), "rng": rng_state()},
               tmp_path / "run" / "loop.pt")
    assert main(["checkpoint", "--check", str(tmp_path / "run")]) == 1
    assert main(["checkpoint", "--check", str(tmp_path / "run" / "loop.pt")]) == 1
