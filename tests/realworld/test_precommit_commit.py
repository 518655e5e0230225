"""pre-commit in a user's repository: a real ``git commit`` runs this repository's hooks.

The hooks repository is a commit of the current tree (``snapshot_of_this_repo``), so the test
works on a fresh clone as in CI and on a working tree with uncommitted changes alike. Git and
pre-commit get their own global config and cache, so neither the machine's settings (a global
``core.hooksPath`` makes ``pre-commit install`` refuse) nor its hook cache leak in or out.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from test_precommit import snapshot_of_this_repo

from conftest import CONFIGS, REPO, git_env

pytestmark = pytest.mark.realworld

CONFIG = """\
repos:
  - repo: {repo}
    rev: {rev}
    hooks:
      - id: upgd-lint
      - id: upgd-migrate-config
        stages: [manual]
"""
FINDING = ("train.yaml:7:12: [error] UPG101 sigma 0.001 with adaptive_noise: true is below the "
           "plausible relative range 0.01-0.5")
MIGRATED = REPO / "tests" / "config" / "golden" / "config" / "layout-a.out.yaml"


def _run(cwd, env, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _user_repo(tmp_path, env):
    hooks, user = tmp_path / "hooks", tmp_path / "user"
    hooks.mkdir(), user.mkdir()
    sha = snapshot_of_this_repo(hooks)
    (user / ".pre-commit-config.yaml").write_text(CONFIG.format(repo=hooks, rev=sha))
    shutil.copy(CONFIGS / "real-legacy-layout-a.yaml", user / "train.yaml")
    for cmd in (("git", "init", "-q"), (sys.executable, "-m", "pre_commit", "install"),
                ("git", "add", "-A")):
        done = _run(user, env, *cmd)
        assert done.returncode == 0, done.stdout + done.stderr
    return user


def test_commit_fails_on_a_legacy_config_then_the_fixer_makes_it_pass(tmp_path):
    env = git_env(tmp_path)
    user = _user_repo(tmp_path, env)
    assert (user / ".git" / "hooks" / "pre-commit").is_file()

    blocked = _run(user, env, "git", "commit", "-m", "add training config")
    out = blocked.stdout + blocked.stderr
    assert blocked.returncode == 1, out
    assert "upgd-migrate lint" in out and "Failed" in out and "- exit code: 1" in out
    assert FINDING in out
    assert "train.yaml:14:5: [warning] UPG203 'accumulation_steps'" in out
    assert _run(user, env, "git", "rev-parse", "--verify", "-q", "HEAD").returncode != 0

    fixed = _run(user, env, sys.executable, "-m", "pre_commit", "run", "upgd-migrate-config",
                 "--hook-stage", "manual", "--files", "train.yaml")
    assert fixed.returncode == 1, fixed.stdout + fixed.stderr
    assert "files were modified by this hook" in fixed.stdout
    assert "Rewriting train.yaml" in fixed.stdout
    assert (user / "train.yaml").read_bytes() == MIGRATED.read_bytes()

    assert _run(user, env, "git", "add", "train.yaml").returncode == 0
    passed = _run(user, env, "git", "commit", "-m", "add training config")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "upgd-migrate lint" in passed.stdout + passed.stderr
    assert "Passed" in passed.stdout + passed.stderr
    shown = _run(user, env, "git", "show", "HEAD:train.yaml")
    assert shown.stdout == MIGRATED.read_text()
