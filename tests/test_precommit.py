"""Drive the real pre-commit framework against this repository's .pre-commit-hooks.yaml.

Slow (pre-commit builds the hook's virtualenv, which needs the package index), so it is marked
``precommit``; ``pytest -m 'not precommit'`` skips it. It runs by default, as in CI.
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys

import pytest

from conftest import CONFIGS, REPO

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid",
       "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"]


def git(cwd, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def snapshot_of_this_repo(dest) -> str:
    """Commit the working tree (uncommitted changes included) into ``dest``; return the sha."""
    listed = git(REPO, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    for name in filter(None, listed.split("\0")):
        if os.path.isfile(REPO / name):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "snapshot")
    return git(dest, "rev-parse", "HEAD")


@pytest.mark.precommit
def test_upgd_lint_hook_passes_and_fails(tmp_path):
    pytest.importorskip("pre_commit")
    hooks, user = tmp_path / "hooks", tmp_path / "user"
    hooks.mkdir(), user.mkdir()
    sha = snapshot_of_this_repo(hooks)
    shutil.copy(CONFIGS / "migrated.yaml", user / "good.yaml")
    shutil.copy(CONFIGS / "real-legacy-layout-a.yaml", user / "bad.yaml")
    git(user, "init", "-q")
    git(user, "add", "-A")
    env = {**os.environ, "NO_COLOR": "1"}

    def try_repo(*files: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "pre_commit", "try-repo", str(hooks), "upgd-lint",
               "--ref", sha, "--color", "never", "--files", *files]
        return subprocess.run(cmd, cwd=user, env=env, capture_output=True, text=True,
                              timeout=600)

    passed = try_repo("good.yaml")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "upgd-migrate lint" in passed.stdout and "Passed" in passed.stdout

    failed = try_repo("good.yaml", "bad.yaml")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Failed" in failed.stdout and "- exit code: 1" in failed.stdout
    assert ("bad.yaml:7:12: [error] UPG101 sigma 0.001 with adaptive_noise: true is below the "
            "plausible relative range 0.01-0.5") in failed.stdout
    assert "bad.yaml:14:5: [warning] UPG203 'accumulation_steps'" in failed.stdout
    assert "good.yaml:" not in failed.stdout


def test_hook_environment_does_not_need_torch():
    # pre-commit installs the hook repo with `pip install .`: core dependencies only.
    requires = importlib.metadata.requires("upgd-migrate")
    assert [r for r in requires if r.startswith("torch")]  # declared, but only as extras
    assert all("extra ==" in r for r in requires if r.startswith("torch"))
    hooks = (REPO / ".pre-commit-hooks.yaml").read_text()
    assert "additional_dependencies" not in hooks and hooks.count("language: python") == 2
