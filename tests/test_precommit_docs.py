"""The README's pre-commit snippet, as written, works with the real pre-commit framework.

The snippet is read out of README.md, not retyped here: its ``repo`` becomes a commit of this
tree (``snapshot_of_this_repo``, uncommitted changes included) and its ``rev`` that commit's
SHA; nothing else of the text changes. Git and pre-commit get their own config and cache, as in
``tests/realworld/test_precommit_commit.py``. Marked ``precommit``: pre-commit builds the hook
environment from the package index.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from test_precommit import snapshot_of_this_repo

from conftest import CONFIGS, REPO, git_env

pytestmark = pytest.mark.precommit

SECTION = "## Use it as a pre-commit hook"
FINDING = ("train.yaml:7:12: [error] UPG101 sigma 0.001 with adaptive_noise: true is below the "
           "plausible relative range 0.01-0.5")


def readme_snippet() -> str:
    """The first ``yaml`` block of the README's pre-commit section, byte for byte."""
    section = (REPO / "README.md").read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.search(r"```yaml\n(.*?)```", section, flags=re.S).group(1)


def documented(snippet: str) -> tuple[str, str]:
    """(repo URL, rev) as the snippet writes them."""
    repo = re.search(r"^  - repo: (\S+)$", snippet, flags=re.M).group(1)
    rev = re.search(r"^    rev: (\S+)", snippet, flags=re.M).group(1)
    return repo, rev


def pre_commit(user, env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pre_commit", *args], cwd=user, env=env,
                          capture_output=True, text=True, timeout=600)


def test_readme_snippet_runs_the_lint_hook_and_autoupdate_moves_its_rev(tmp_path):
    pytest.importorskip("pre_commit")
    snippet = readme_snippet()
    url, rev = documented(snippet)
    assert re.fullmatch(r"[0-9a-f]{40}", rev), f"rev {rev!r} is not a full commit SHA"
    env = git_env(tmp_path)
    hooks, user = tmp_path / "hooks", tmp_path / "user"
    hooks.mkdir(), user.mkdir()
    sha = snapshot_of_this_repo(hooks)
    shutil.copy(CONFIGS / "real-legacy-layout-a.yaml", user / "train.yaml")
    config = user / ".pre-commit-config.yaml"
    config.write_text(snippet.replace(url, str(hooks)).replace(rev, sha))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"]):
        subprocess.run(cmd, cwd=user, env=env, check=True, capture_output=True)

    ran = pre_commit(user, env, "run", "--all-files", "--color", "never")
    out = ran.stdout + ran.stderr
    assert ran.returncode == 1, out
    assert "upgd-migrate lint" in out and "Failed" in out and "- exit code: 1" in out
    assert FINDING in out
    assert "mutable reference" not in out  # a full SHA is what pre-commit wants

    # `pre-commit autoupdate`, as the README says: with no tag, the documented rev moves to the
    # newest commit, and the line keeps its comment.
    config.write_text(snippet.replace(url, str(hooks)))
    updated = pre_commit(user, env, "autoupdate")
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert config.read_text() == snippet.replace(url, str(hooks)).replace(rev, sha)
    assert f"updating {rev} -> {sha}" in updated.stdout


def test_a_tag_that_does_not_exist_fails_as_the_docs_say(tmp_path):
    # The form the README used to show; pre-commit stops before building any environment.
    pytest.importorskip("pre_commit")
    snippet = readme_snippet()
    url, rev = documented(snippet)
    env = git_env(tmp_path)
    hooks, user = tmp_path / "hooks", tmp_path / "user"
    hooks.mkdir(), user.mkdir()
    snapshot_of_this_repo(hooks)
    shutil.copy(CONFIGS / "real-legacy-layout-a.yaml", user / "train.yaml")
    (user / ".pre-commit-config.yaml").write_text(
        snippet.replace(url, str(hooks)).replace(rev, "v0.1.0"))
    subprocess.run(["git", "init", "-q"], cwd=user, env=env, check=True)
    subprocess.run(["git", "add", "-A"], cwd=user, env=env, check=True)

    ran = pre_commit(user, env, "run", "--all-files", "--color", "never")
    assert ran.returncode != 0
    assert "pathspec 'v0.1.0' did not match" in ran.stdout + ran.stderr
