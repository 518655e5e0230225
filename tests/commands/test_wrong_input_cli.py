"""Wrong input never passes silently: torch.optim states, empty folders, a sigma ratio of 5."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from upgd_migrate.cli import main

FIX = Path(__file__).resolve().parents[2] / "fixtures"
G1 = FIX / "optim" / "adaptive_upgd_g1.pt"
SKIPPED = "not a UPGD/VGS state: skipped"


@pytest.fixture
def adam(tmp_path) -> Path:
    """A real torch.optim.Adam state after one step."""
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([w], lr=1e-3)
    w.sum().backward()
    opt.step()
    path = tmp_path / "adam.pt"
    torch.save(opt.state_dict(), path)
    return path


def test_verify_skips_an_adam_state_and_fails_the_run(adam, capsys):
    assert main(["verify", str(adam)]) == 2
    out = capsys.readouterr()
    assert out.out == f"{adam}: (whole file): {SKIPPED}\n"
    assert out.err == ("0 states verified in 1 file: 0 failed, 1 skipped (not UPGD/VGS); "
                       "nothing verified\n")


def test_checkpoint_skips_an_adam_state_and_writes_nothing(adam, tmp_path, capsys):
    out_file = tmp_path / "out.pt"
    assert main(["checkpoint", str(adam), "-o", str(out_file)]) == 2
    out = capsys.readouterr()
    assert out.out == (f"{adam}: {SKIPPED} (optimizer state: only (whole file) "
                       "(other optimizer))\n")
    assert out.err == "1 file: 1 skipped; no UPGD/VGS state to migrate\n"
    assert not out_file.exists()


def test_adam_beside_a_upgd_state_is_skipped_but_the_run_counts(adam, tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copy(adam, runs / "adam.pt")
    assert main(["checkpoint", str(G1), "-o", str(runs / "g1.pt")]) == 1
    capsys.readouterr()
    assert main(["verify", str(runs)]) == 0
    out = capsys.readouterr()
    assert f"{runs / 'adam.pt'}: (whole file): {SKIPPED}" in out.out.splitlines()
    assert out.err.endswith("1 state verified in 2 files: 0 failed, 1 skipped (not UPGD/VGS)\n")
    assert main(["checkpoint", str(runs), "--check"]) == 0
    assert capsys.readouterr().err == "2 files: 1 already current, 1 skipped\n"


@pytest.mark.parametrize("command", [["checkpoint", "inspect"], ["verify"],
                                     ["checkpoint", "--check"]])
def test_a_folder_without_checkpoints_is_an_error(tmp_path, command, capsys):
    (tmp_path / "notes.txt").write_text("no checkpoints here")
    assert main([*command, str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path}: no checkpoints found (no torch "
                                       "file, stable-baselines3 zip or DCP folder)\n")


def test_writing_into_an_empty_folder_is_an_error_and_creates_nothing(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    assert main(["checkpoint", str(src), "-o", str(tmp_path / "out")]) == 2
    assert "no checkpoints found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_one_empty_folder_among_others_is_a_warning(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["checkpoint", "inspect", str(tmp_path / "empty"), str(G1)]) == 0
    assert capsys.readouterr().err.startswith(f"warning: {tmp_path / 'empty'}: no checkpoints")


@pytest.mark.parametrize("command", [["lint"], ["config"], ["config", "--check"]])
def test_lint_and_config_stay_silent_and_clean_on_zero_files(tmp_path, command, capsys):
    assert main([*command, str(tmp_path)]) == 0
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("value,hint", [("5", "did you mean 0.05?"), ("50", "did you mean 0.5?"),
                                        ("1.5", "did you mean 0.015?")])
def test_sigma_ratio_above_one_is_a_usage_error(tmp_path, value, hint, capsys):
    assert main(["checkpoint", str(G1), "-o", str(tmp_path / "o.pt"),
                 "--sigma-ratio", value]) == 2
    err = capsys.readouterr().err
    assert "Invalid value for '--sigma-ratio'" in err and hint in err
    assert not (tmp_path / "o.pt").exists()


def test_sigma_ratio_outside_the_plausible_range_warns_and_writes(tmp_path, capsys):
    out_file = tmp_path / "o.pt"
    assert main(["checkpoint", str(G1), "-o", str(out_file), "--sigma-ratio", "0.8"]) == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        "warning: --sigma-ratio 0.8 is above the plausible relative range 0.01-0.5: noise 80% "
        "of the update")
    group = torch.load(out_file, weights_only=True)["param_groups"][0]
    assert group["sigma"] == 0.8


def test_sigma_ratio_callback_is_shared():
    """One callback for every command: config and checkpoint refuse and warn alike."""
    import click

    from upgd_migrate.commands.options import sigma_ratio_callback

    assert sigma_ratio_callback(None, None, 0.05) == 0.05
    assert sigma_ratio_callback(None, None, None) is None
    for bad in (0.0, -1.0, float("nan"), float("inf"), 2.0):
        with pytest.raises(click.BadParameter):
            sigma_ratio_callback(None, None, bad)


def test_empty_file_is_named_as_such(tmp_path, capsys):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert main(["checkpoint", "inspect", str(empty)]) == 2
    assert capsys.readouterr().err == f"{empty}: empty file (0 bytes)\n"


def test_json_output_of_a_skipped_run(adam, capsys):
    assert main(["verify", str(adam), "--format", "json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"] == {"states": 0, "failed": 0, "skipped": 1}
    assert doc["files"][0]["skipped"] == ["(whole file)"] and doc["exit_code"] == 2
