from __future__ import annotations

import os
import pathlib
import shutil
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

@pytest.fixture(scope="session")
def sb3_default_log_folder(tmp_path_factory):
    """stable-baselines3 gives a model without a logger of its own a fresh ``SB3-<time>``
    folder in the system temp folder (``logger.configure``'s default), left there for good.
    ``SB3_LOGDIR`` overrides that default: pointed here for the session (subprocesses inherit
    it), so such a folder lands in pytest's own temp folder and is seen by the check below."""
    folder = tmp_path_factory.getbasetemp() / "sb3-default-log-folder"
    before = os.environ.get("SB3_LOGDIR")
    os.environ["SB3_LOGDIR"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("SB3_LOGDIR", None)
    else:
        os.environ["SB3_LOGDIR"] = before


@pytest.fixture(autouse=True)
def _no_sb3_default_log_folder(sb3_default_log_folder):
    """Fail the test that let stable-baselines3 pick its default log folder (outside the
    suite, an ``SB3-<time>`` folder left in the system temp folder)."""
    yield
    if sb3_default_log_folder.exists():
        shutil.rmtree(sb3_default_log_folder)  # the next test starts clean: one culprit named
        pytest.fail("stable-baselines3 created its default log folder (outside the tests, an "
                    "SB3-<time> folder left in the system temp folder): give the model a logger "
                    "under tmp_path, model.set_logger(configure(str(tmp_path), []))",
                    pytrace=False)


@pytest.fixture(autouse=True)
def _environment_restored():
    """Every test ends with the environment it began with. Libraries under test set variables
    of their own (Lightning's strategies leave WORLD_SIZE, RANK and LOCAL_RANK behind), and a
    later test's library reads them: transformers then starts torch.distributed."""
    before = dict(os.environ)
    yield
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)
