"""Parallel ``config`` runs, as pre-commit starts them: no file is ever corrupted.

Writers race on distinct files and on one shared file (with and without ``--backup``) while
``lint`` processes read the shared file: every reader sees the old or the new file whole
(never a parse error from half a file), and the shared file ends fully migrated.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reliability_helpers import FIXTURES, cli, cli_env, temp_files
from upgd_migrate.config.migrate import migrate_text

ROUNDS = 3
WRITERS = 5


def _configs() -> dict[str, bytes]:
    """Every legacy fixture, padded with notes so reads and writes take a moment."""
    notes = "".join(f"  line {i}: filler so the write is not instant\n" for i in range(200))
    return {p.name: p.read_bytes() + b"notes: |\n" + notes.encode()
            for p in sorted((FIXTURES / "configs").glob("*.yaml"))}


def _migrated(original: bytes) -> bytes:
    return migrate_text(original.decode()).text.encode()


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cli(*args), cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(procs: list[subprocess.Popen]) -> list[tuple[int, str]]:
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert "Traceback" not in stderr, stderr
        out.append((proc.returncode, stdout + stderr))
    return out


@pytest.mark.slow
def test_parallel_runs_on_distinct_files(tmp_path):
    configs = _configs()
    for name, data in configs.items():
        (tmp_path / name).write_bytes(data)
    names = sorted(configs)
    # Two files per process, in overlapping pairs: each file is also migrated twice at once.
    batches = [names[i:i + 2] or names[:1] for i in range(len(names))]
    results = _finish([_start(["config", *batch], tmp_path) for batch in batches])
    assert all(code in (0, 1) for code, _ in results), results
    for name, data in configs.items():
        assert (tmp_path / name).read_bytes() == _migrated(data), name
    assert temp_files(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("backup", [False, True])
def test_parallel_runs_on_one_shared_file_while_lint_reads_it(tmp_path, backup):
    original = _configs()["seed-layout-b.yaml"]
    expected = _migrated(original)
    target = tmp_path / "shared.yaml"
    extra = ["--backup", ".bak"] if backup else []
    for round_ in range(ROUNDS):
        target.write_bytes(original)
        if backup and (tmp_path / "shared.yaml.bak").exists():
            os.unlink(tmp_path / "shared.yaml.bak")
        procs = []
        for i in range(WRITERS):
            procs.append(_start(["config", "shared.yaml", *extra], tmp_path))
            procs.append(_start(["lint", "shared.yaml"], tmp_path))
        results = _finish(procs)
        assert target.read_bytes() == expected, f"round {round_}: not fully migrated"
        for code, output in results[1::2]:  # the readers
            assert "UPG001" not in output and "UPG002" not in output, output
        if backup:  # one writer made it; the others refused to overwrite it or had nothing to do
            assert (tmp_path / "shared.yaml.bak").read_bytes() == original
        assert temp_files(tmp_path) == []
        assert sorted(os.listdir(tmp_path)) == sorted(
            ["shared.yaml"] + (["shared.yaml.bak"] if backup else []))
