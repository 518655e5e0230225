from __future__ import annotations

import os
import pathlib
import sys
import textwrap

import pytest

from upgd_migrate.config.lint import lint_text
from upgd_migrate.config.rules import LintOptions

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = REPO / "fixtures" / "configs"
# ckpt_helpers builds states for the checkpoint and the verify tests alike
sys.path.insert(0, str(REPO / "tests" / "checkpoint"))


def run_lint(text: str, options: LintOptions | None = None) -> list[str]:
    """Findings of ``text`` as 'line:col CODE message' strings (exact, for pinning)."""
    return [f"{f.line}:{f.col} {f.code} {f.message}"
            for f in lint_text("x.yaml", textwrap.dedent(text), options)]


def git_env(tmp_path) -> dict[str, str]:
    """An environment for real git + pre-commit runs: its own git config and hook cache."""
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("[user]\n\tname = test\n\temail = test@example.invalid\n"
                         "[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n")
    return {**os.environ, "GIT_CONFIG_GLOBAL": str(gitconfig), "GIT_CONFIG_NOSYSTEM": "1",
            "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"), "NO_COLOR": "1"}


def pytest_collection_modifyitems(config, items):
    """Skip the ``cuda``-marked tests, with the reason, where torch sees no CUDA device
    (``pytest -m cuda`` selects them; bench/device-check runs them on a GPU)."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: torch sees none here")
    for item in marked:
        item.add_marker(skip)
