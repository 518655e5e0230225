"""Docs that run: every transcript and Python snippet of README.md, docs/*.md and
fixtures/README.md runs here and must print what the page shows.

One test per block, named ``page:line``. Each page runs in its own temporary copy of the
repository's ``fixtures/`` (so ``fixtures/...`` and ``walkthrough/...`` paths work and the
fixtures stay as they are), its blocks in page order, since later ones use what earlier ones
wrote; a test for block N first runs the page's blocks before N. What counts as a block, the
directives (``<!-- docs-test: skip (REASON) -->``, ``exit N ...``, ``run``, ``save FILE``) and the
normalisation are in ``docs_blocks``'s docstring and docs/cli.md ("Docs that run").
``python -m pytest tests/test_docs_run.py -rs`` lists every skipped block with its reason.

A small runner of our own rather than Sybil, mktestdocs, pytest-examples or cram: none of
those runs a ``$ upgd-migrate`` line in-process (a subprocess per command costs seconds of torch
import each), keeps one working folder per page across blocks, and checks exit codes; this is
about 150 lines and adds no dependency.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from docs_blocks import Block, blocks, matches, normalise, run_command, run_snippet

from conftest import REPO

PAGES = [REPO / "README.md", REPO / "fixtures" / "README.md",
         *sorted((REPO / "docs").glob("*.md"))]
ALL = [block for page in PAGES for block in blocks(REPO, page)]
RUNNABLE = [block for block in ALL if block.kind is not None]


class PageRun:
    """One page's working folder and how far its blocks have run."""

    def __init__(self, folder: Path) -> None:
        shutil.copytree(REPO / "fixtures", folder / "fixtures")
        self.folder, self.done, self.namespace = folder, 0, {"__name__": "__docs__"}

    def run(self, block: Block) -> list[str]:
        """Run ``block``; the problems found (an empty list when it did what the page says)."""
        if block.kind == "snippet":
            if block.save_as:
                (self.folder / block.save_as).write_text(block.body + "\n")
            run_snippet(block, self.namespace)
            return []
        if block.kind == "setup":
            pairs = [(line, None) for line in block.body.splitlines() if line.strip()]
        else:
            pairs = block.commands()
        codes = block.exit_codes
        if codes is not None and len(codes) != len(pairs):
            return [f"{len(codes)} exit codes for {len(pairs)} commands"]
        problems = []
        for i, (command, pasted) in enumerate(pairs):
            code, printed = run_command(command, self.folder)
            allowed = {0} if pasted is None else {codes[i]} if codes else {0, 1}
            if code not in allowed:
                problems.append(f"$ {command}\nexit {code}, expected {sorted(allowed)}\n{printed}")
            if pasted is None:
                continue
            got, want = normalise(printed, str(self.folder)), normalise(pasted, str(self.folder))
            if not matches(got, want):
                problems.append(f"$ {command}\nprinted:\n" + "\n".join(got) +
                                "\npage shows:\n" + "\n".join(want))
        return problems


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory):
    return {}


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.name)
def test_block_runs_as_the_page_shows(block, page_runs, tmp_path_factory, monkeypatch):
    if block.skip_reason is not None:
        pytest.skip(f"{block.name}: {block.skip_reason}")
    if block.page not in page_runs:
        page_runs[block.page] = PageRun(tmp_path_factory.mktemp("docs"))
    run = page_runs[block.page]
    monkeypatch.chdir(run.folder)
    monkeypatch.setenv("NO_COLOR", "1")
    page = [b for b in RUNNABLE if b.page == block.page and b.skip_reason is None]
    for earlier in page[run.done:page.index(block)]:  # when selected alone (-k)
        run.run(earlier)
    run.done = page.index(block) + 1
    assert run.run(block) == []


def test_every_skip_and_directive_says_why():
    for block in ALL:
        for directive in block.directives:
            assert directive.split()[0] in {"skip", "exit", "run", "save"}, (block.name, directive)
        if block.skip_reason is not None:
            assert len(block.skip_reason) > 10, block.name
            assert block.kind is not None, f"{block.name}: a skip on a block that never runs"


def test_a_block_in_a_list_item_is_found_with_its_directive(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("- item:\n\n  <!-- docs-test: exit 1 -->\n  ```text\n  $ upgd-migrate x\n"
                    "  out\n  ```\n")
    (block,) = blocks(tmp_path, page)
    assert (block.kind, block.exit_codes, block.commands()) == (
        "transcript", [1], [("upgd-migrate x", "out")])


def test_the_runner_finds_the_readme_walkthrough():
    names = [b.name for b in RUNNABLE if b.page == "README.md" and b.kind == "transcript"]
    assert len(names) >= 6


def test_an_ellipsis_line_matches_any_run_of_lines_and_nothing_else_is_loose():
    assert matches(["a", "b", "c"], ["a", "...", "c"])
    assert matches(["a", "c"], ["a", "...", "c"])
    assert not matches(["a", "b", "c"], ["a", "c"])
    assert not matches(["a", "b"], ["a", "b", "c"])
    assert normalise("x /t/f/a  \n50%\r100%\n\n", "/t/f") == ["x a", "100%"]
