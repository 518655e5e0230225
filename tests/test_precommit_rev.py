"""The `rev` the docs pin: its hooks behave as the pages say, so a stale pin fails CI.

The snippets are read out of README.md and docs/pre-commit.md; only their ``repo`` URL is
pointed at this checkout (pre-commit clones it and checks out the pinned ``rev``, exactly as
for a user). The hooks at that rev must do what the current code does, which the docs runner
(tests/test_docs_run.py) holds to the pages: the fixer writes the bytes `upgd-migrate config
--sigma-ratio 0.05` writes today (the VGS keys stay: they are commented out only with
--unsafe-fixes), the lint hook passes a config calibrated by `config --calibrate-from` and
fails a legacy one with UPG101. When hook behaviour changes, move the pin (docs/pre-commit.md,
"Moving the pinned rev"). Marked ``precommit``: pre-commit builds the hook environment.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from test_docs import history_or_skip
from test_precommit_docs import FINDING, documented, readme_snippet

from conftest import CONFIGS, REPO, git_env
from upgd_migrate.cli import main

pytestmark = pytest.mark.precommit


def fixer_snippet() -> str:
    page = (REPO / "docs" / "pre-commit.md").read_text()
    return next(b for b in re.findall(r"```yaml\n(.*?)```", page, flags=re.S)
                if "id: upgd-migrate-config" in b and "repo:" in b)


def pinned_rev_here() -> str:
    """The README's rev, after checking this checkout can answer for it."""
    history_or_skip()
    rev = documented(readme_snippet())[1]
    found = subprocess.run(["git", "cat-file", "-e", f"{rev}^{{commit}}"], cwd=REPO)
    assert found.returncode == 0, f"the pinned rev {rev} is not a commit of this repository"
    return rev


def pre_commit(user, env, config: str, *args: str) -> subprocess.CompletedProcess:
    (user / ".pre-commit-config.yaml").write_text(config)
    subprocess.run(["git", "add", "-A"], cwd=user, env=env, check=True)
    return subprocess.run([sys.executable, "-m", "pre_commit", "run", "--color", "never", *args],
                          cwd=user, env=env, capture_output=True, text=True, timeout=600)


def test_the_hooks_at_the_pinned_rev_do_what_the_pages_say(tmp_path):
    pytest.importorskip("pre_commit")
    rev = pinned_rev_here()
    env, user, today = git_env(tmp_path), tmp_path / "user", tmp_path / "today"
    env.pop("PYTHONPATH", None)  # the hooks must run the pinned rev's code, not this tree's
    user.mkdir(), today.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=user, env=env, check=True)
    legacy = CONFIGS / "real-legacy-layout-a.yaml"
    for folder in (user, today):
        shutil.copy(legacy, folder / "train.yaml")
        shutil.copy(legacy, folder / "calibrated.yaml")
    assert main(["config", "--sigma-ratio", "0.05", str(today / "train.yaml")]) == 1
    assert main(["config", "--calibrate-from", str(REPO / "fixtures/containers/ppo.zip"),
                 str(user / "calibrated.yaml")]) == 1
    url = documented(readme_snippet())[0]

    fixer = fixer_snippet()
    assert f"rev: {rev}" in fixer
    ran = pre_commit(user, env, fixer.replace(url, str(REPO)), "--files", "train.yaml")
    out = ran.stdout + ran.stderr
    assert ran.returncode == 1 and "files were modified by this hook" in out, out
    assert (user / "train.yaml").read_bytes() == (today / "train.yaml").read_bytes()
    assert "\n    accumulation_steps: 4 " in (user / "train.yaml").read_text()

    lint = readme_snippet().replace(url, str(REPO))
    assert pre_commit(user, env, lint, "--files", "calibrated.yaml").returncode == 0
    shutil.copy(legacy, user / "legacy.yaml")
    ran = pre_commit(user, env, lint, "--files", "legacy.yaml")
    assert ran.returncode == 1 and FINDING.replace("train.yaml", "legacy.yaml") in ran.stdout
