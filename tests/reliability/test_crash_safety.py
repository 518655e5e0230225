"""SIGKILL the real CLI at random moments of an in-place migration; no file may be lost.

After every kill: the file is its original bytes or the complete migrated bytes (migration is
deterministic, so "complete" is exact equality with a normal run's output, which loads); a
``--backup`` is the original whenever the file is migrated; a backup that existed before is
never touched. A run that ends on its own leaves no temp file. A kill can strand a hidden temp
file (nothing can clean up after SIGKILL); it never replaces or corrupts the real one.
"""
from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reliability_helpers import (FIXTURES, is_temp, kill_delays, measure, run_and_kill,
                                 temp_files)

TRIALS = int(os.environ.get("UPGD_CRASH_TRIALS", "50"))
SENTINEL = b"a backup the user already had\n"
# Trial kinds, in turn: plain in place, --backup into a fresh name, --backup onto an existing one.
PLAIN, BACKUP, BACKUP_EXISTS = range(3)


def big_config() -> bytes:
    """A legacy config and ~300 KB of user notes: a hundred times a real config, and a run of
    a few seconds (ruamel is pure Python, ~0.2-0.3 MB/s), which keeps 50 trials affordable."""
    head = (FIXTURES / "configs" / "seed-layout-b.yaml").read_bytes()
    notes = "".join(f"  line {i}: the quick brown fox jumps over the lazy dog 0123456789\n"
                    for i in range(4_000))
    return head + b"notes: |\n" + notes.encode()


def big_checkpoint(path: Path) -> None:
    """A training-loop dict with a legacy UPGD and VGS state and a 24 MB model."""
    import torch

    sys.path.insert(0, str(FIXTURES))
    import generate
    import make_containers

    state = make_containers.build_training_loop(
        generate.optimizer_fixtures()["adaptive_upgd_g1.pt"],
        generate.vgs_fixtures()["vgs_v3_1.pt"])
    state["model"]["big"] = torch.randn(6_000_000, generator=torch.Generator().manual_seed(0))
    torch.save(state, path)


def _trial(folder: Path, name: str, original: bytes, migrated: bytes, args: list[str],
           kind: int, delay: tuple[float, bool]) -> tuple[str, bool]:
    target, backup = folder / name, folder / (name + ".bak")
    folder.mkdir()
    target.write_bytes(original)
    if kind == BACKUP_EXISTS:
        backup.write_bytes(SENTINEL)
    extra = ["--backup", ".bak"] if kind != PLAIN else []
    finished = run_and_kill(args + extra, folder, *delay)
    now = target.read_bytes()
    assert now in (original, migrated), f"{target}: neither original nor migrated ({delay})"
    others = {n for n in os.listdir(folder) if n != name}
    assert all(is_temp(n) or n == backup.name for n in others), others
    if kind == BACKUP_EXISTS:
        assert backup.read_bytes() == SENTINEL and now == original
    elif kind == BACKUP and backup.exists():
        assert backup.read_bytes() == original
    if kind == BACKUP and now == migrated:
        assert backup.exists(), "migrated without the backup it promised"
    if finished:
        assert not temp_files(folder), "a run that ended on its own left a temp file"
    outcome = "original" if now == original else "migrated"
    return outcome, bool(temp_files(folder))


def _crash_trials(tmp_path: Path, name: str, original: bytes, args: list[str],
                  seed: int) -> Counter:
    """One normal run for the reference bytes and timing, then TRIALS killed runs."""
    ref, twin = tmp_path / "reference", tmp_path / "twin"
    for folder in (ref, twin):
        folder.mkdir()
        (folder / name).write_bytes(original)
    timing, proc = measure(args, ref, twin)
    assert proc.returncode in (0, 1)
    migrated = (ref / name).read_bytes()
    assert migrated != original
    assert os.listdir(ref) == [name], "a normal run left files behind"
    delays = kill_delays(timing, TRIALS, seed)
    jobs = [(tmp_path / f"trial-{i:03d}", name, original, migrated, args, i % 3, d)
            for i, d in enumerate(delays)]
    with ThreadPoolExecutor(2) as pool:  # two at a time: CI runners have two cores
        results = list(pool.map(lambda job: _trial(*job), jobs))
    counts = Counter(outcome for outcome, _ in results)
    counts["temp left by a kill"] = sum(left for _, left in results)
    print(f"\n{name}: {TRIALS} kills, lifetime {timing.lifetime:.2f}s, {dict(counts)}")
    shutil.rmtree(tmp_path, ignore_errors=True)  # tens of MB per checkpoint trial
    return counts


@pytest.mark.slow
def test_sigkill_during_in_place_config_migration(tmp_path):
    counts = _crash_trials(tmp_path, "big.yaml", big_config(), ["config", "big.yaml"], 7)
    assert counts["original"] + counts["migrated"] == TRIALS
    assert counts["original"] and counts["migrated"], counts  # kills landed on both sides


@pytest.mark.slow
def test_sigkill_during_in_place_checkpoint_migration(tmp_path):
    source = tmp_path / "source.pt"
    big_checkpoint(source)
    original = source.read_bytes()
    source.unlink()
    work = tmp_path / "work"
    work.mkdir()
    counts = _crash_trials(work, "big.pt", original, ["checkpoint", "big.pt", "--in-place"], 11)
    assert counts["original"] + counts["migrated"] == TRIALS
    assert counts["original"] and counts["migrated"], counts


@pytest.mark.slow
def test_migrated_checkpoint_of_the_crash_test_loads_and_is_current(tmp_path):
    """'Complete' above is byte equality with this output: prove that output is loadable."""
    import torch

    from reliability_helpers import run_cli

    big_checkpoint(tmp_path / "big.pt")
    result = run_cli(["checkpoint", "big.pt", "--in-place"], tmp_path)
    assert result.returncode in (0, 1), result.stderr
    loaded = torch.load(tmp_path / "big.pt", weights_only=True)
    assert loaded["model"]["big"].numel() == 6_000_000
    again = run_cli(["checkpoint", "big.pt", "--check"], tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert os.listdir(tmp_path) == ["big.pt"]
