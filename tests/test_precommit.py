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


# Outside a git checkout (an unpacked sdist) these are left out of the snapshot instead.
NOT_SOURCE = {"__pycache__", ".venv", "build", "dist", ".pytest_cache", ".hypothesis",
              "walkthrough"}


def source_names() -> list[str]:
    """The tree's files: git's list in a checkout, else every file outside build outputs."""
    if (REPO / ".git").exists():
        listed = git(REPO, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
        return list(filter(None, listed.split("\0")))
    names = []
    for top, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in NOT_SOURCE and not d.endswith(".egg-info")]
        names += [os.path.relpath(os.path.join(top, f), REPO) for f in files]
    return names


def snapshot_of_this_repo(dest) -> str:
    """Commit the working tree (uncommitted changes included) into ``dest``; return the sha."""
    for name in source_names():
        if os.path.isfile(REPO / name):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "snapshot")
    return git(dest, "rev-parse", "HEAD")


def hook_and_user_repos(tmp_path, **user_files) -> tuple:
    """(hooks repo, its sha, user repo) with ``user_files`` (name -> fixture config) staged."""
    hooks, user = tmp_path / "hooks", tmp_path / "user"
    hooks.mkdir(), user.mkdir()
    sha = snapshot_of_this_repo(hooks)
    for name, fixture in user_files.items():
        shutil.copy(CONFIGS / fixture, user / name)
    git(user, "init", "-q")
    git(user, "add", "-A")
    return hooks, sha, user


def try_repo(hooks, sha: str, user, hook: str, *files: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pre_commit", "try-repo", str(hooks), hook, "--ref", sha,
           "--color", "never", "--files", *files]
    return subprocess.run(cmd, cwd=user, env={**os.environ, "NO_COLOR": "1"},
                          capture_output=True, text=True, timeout=600)


@pytest.mark.precommit
def test_upgd_lint_hook_passes_and_fails(tmp_path):
    pytest.importorskip("pre_commit")
    hooks, sha, user = hook_and_user_repos(tmp_path, **{
        "good.yaml": "migrated.yaml", "bad.yaml": "real-legacy-layout-a.yaml"})

    passed = try_repo(hooks, sha, user, "upgd-lint", "good.yaml")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "upgd-migrate lint" in passed.stdout and "Passed" in passed.stdout

    failed = try_repo(hooks, sha, user, "upgd-lint", "good.yaml", "bad.yaml")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Failed" in failed.stdout and "- exit code: 1" in failed.stdout
    assert ("bad.yaml:7:12: [error] UPG101 sigma 0.001 with adaptive_noise: true is below the "
            "plausible relative range 0.01-0.5") in failed.stdout
    assert "bad.yaml:14:5: [warning] UPG203 'accumulation_steps'" in failed.stdout
    assert "good.yaml:" not in failed.stdout


@pytest.mark.precommit
def test_upgd_migrate_config_hook_fixes_then_passes(tmp_path):
    pytest.importorskip("pre_commit")
    hooks, sha, user = hook_and_user_repos(tmp_path, **{
        "good.yaml": "migrated.yaml", "bad.yaml": "real-legacy-layout-a.yaml"})

    fixed = try_repo(hooks, sha, user, "upgd-migrate-config", "good.yaml", "bad.yaml")
    assert fixed.returncode == 1, fixed.stdout + fixed.stderr
    assert "files were modified by this hook" in fixed.stdout
    assert "Rewriting bad.yaml\n" in fixed.stdout
    assert "1 file rewritten, 1 already migrated." in fixed.stdout
    golden = REPO / "tests" / "config" / "golden" / "config" / "layout-a.out.yaml"
    assert (user / "bad.yaml").read_bytes() == golden.read_bytes()

    git(user, "add", "-A")  # as a user stages the fix before committing again
    again = try_repo(hooks, sha, user, "upgd-migrate-config", "good.yaml", "bad.yaml")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Passed" in again.stdout
    linted = try_repo(hooks, sha, user, "upgd-lint", "good.yaml", "bad.yaml")
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_hook_environment_does_not_need_torch():
    # pre-commit installs the hook repo with `pip install .`: core dependencies only.
    requires = importlib.metadata.requires("upgd-migrate")
    assert [r for r in requires if r.startswith("torch")]  # declared, but only as extras
    assert all("extra ==" in r for r in requires if r.startswith("torch"))
    hooks = (REPO / ".pre-commit-hooks.yaml").read_text()
    assert "additional_dependencies" not in hooks and hooks.count("language: python") == 2
