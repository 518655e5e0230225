"""The README's five-minute walkthrough: every pasted command still prints what it shows.

Run in-process (``upgd_migrate.cli.main``, stdout and stderr into one buffer, as a terminal
shows them) in a temporary folder laid out like the repository, so the fixtures stay as they are.
"""
from __future__ import annotations

import re
import shlex
import shutil

import pytest
from rw_helpers import cli_here

from conftest import REPO

pytestmark = pytest.mark.realworld

SECTION = "## Walkthrough: five minutes"
# What each command exits with, in README order (the prose says so beside each).
EXIT_CODES = [1, 1, 1, 0, 0, 0, 1, 1, 0, 0]


def walkthrough_commands() -> list[tuple[str, str]]:
    """(command, pasted output) of every ``$ upgd-migrate ...`` in the section's text blocks
    (up to the next ``## `` heading)."""
    text = (REPO / "README.md").read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    pairs = []
    for block in re.findall(r"```text\n(.*?)```", text, flags=re.S):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, output = chunk.partition("\n")
            pairs.append((command, output))
    return pairs


def test_the_walkthrough_prints_what_the_readme_shows(tmp_path, monkeypatch):
    for name in ("fixtures/configs/real-legacy-layout-a.yaml", "fixtures/containers/ppo.zip",
                 "fixtures/containers/ppo.zip.sidecar.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")
    # The README's setup line: mkdir walkthrough && cp ...layout-a.yaml walkthrough/train.yaml
    (tmp_path / "walkthrough").mkdir()
    shutil.copy(tmp_path / "fixtures/configs/real-legacy-layout-a.yaml",
                tmp_path / "walkthrough/train.yaml")

    pairs = walkthrough_commands()
    assert len(pairs) == len(EXIT_CODES)
    for (command, pasted), code in zip(pairs, EXIT_CODES):
        argv = shlex.split(command)
        assert argv[0] == "upgd-migrate", command
        assert cli_here(*argv[1:]) == (code, pasted), command
