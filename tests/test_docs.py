"""The README and docs/ stay true: links resolve, the set-up commands are the ones CI runs and
say what they print, and every pre-commit snippet pins the same working rev."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO
from upgd_migrate.cli import main

PAGES = [REPO / "README.md", REPO / "fixtures" / "README.md",
         *sorted((REPO / "docs").glob("*.md"))]
# Pages other branches of issues 13-17 add; linked from the README's map already. Remove each
# entry once its page is merged (the test then checks the link like any other).
NOT_YET_MERGED: set[str] = set()
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)


def prose(page: Path) -> str:
    """The page without its fenced code blocks (a `# comment` there is not a heading)."""
    return FENCE.sub("", page.read_text())


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to '-', repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    for title in re.findall(r"^#{1,6} (.+?)\s*$", prose(page), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def test_slugs_follow_githubs_rules():
    page = REPO / "README.md"
    assert {"set-up", "4-verify-it", "where-this-corrects-the-seed-design",
            "use-it-as-a-pre-commit-hook"} <= anchors(page)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_resolves(page):
    broken = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if path and rel(dest) in NOT_YET_MERGED:
            continue
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {rel(dest)}")
    assert broken == []


def test_allowlist_only_holds_pages_that_are_still_missing():
    # Once a page lands, its link must be checked like the others: drop it from the list.
    assert sorted(p for p in NOT_YET_MERGED if (REPO / p).exists()) == []


def test_readme_map_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Documentation\n", 1)[1]
    for page in (REPO / "docs").glob("*.md"):
        assert f"]({rel(page)})" in section, rel(page)


def setup_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Set up\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_two_setup_commands_and_ci_runs_the_second():
    first, second = setup_commands()
    assert first.endswith("&& upgd-migrate lint fixtures/configs/")
    assert second.endswith("&& pytest -q")
    ci = (REPO / ".ci" / "run").read_text()
    assert second in ci


def test_the_first_setup_command_prints_and_exits_as_the_readme_says(capsys, monkeypatch):
    # The README says, beside the command, that it exits 1 and which summary line it prints.
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("NO_COLOR", "1")
    section = (REPO / "README.md").read_text().split("## Set up\n", 1)[1].split("\n## ", 1)[0]
    assert "exits 1" in section
    code = main(["lint", "fixtures/configs/"])
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 1
    assert f"`{summary}`" in section


def snippets() -> list[tuple[Path, str]]:
    """Every pre-commit config snippet (a yaml block with a `rev:`) in README and docs."""
    return [(page, block) for page in PAGES
            for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), flags=re.S)
            if re.search(r"^\s+rev:", block, flags=re.M)]


def test_every_precommit_snippet_pins_the_readmes_repo_and_rev():
    found = snippets()
    readme = [block for page, block in found if page.name == "README.md" and page.parent == REPO]
    assert len(readme) == 1
    repo = re.search(r"repo: (\S+)", readme[0]).group(1)
    rev = re.search(r"rev: (\S+)", readme[0]).group(1)
    assert re.fullmatch(r"[0-9a-f]{40}", rev)
    assert len(found) >= 3  # the README's, and docs/pre-commit.md's lint and fixer forms
    for page, block in found:
        assert re.findall(r"repo: (\S+)", block) == [repo], rel(page)
        assert re.findall(r"rev: (\S+)", block) == [rev], rel(page)
    for page in PAGES:
        assert "rev: v0.1.0" not in page.read_text(), rel(page)


def history_or_skip() -> None:
    """Skip, saying why, where this checkout cannot answer for a commit of its history."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist): no history to look the rev up in")
    shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=REPO,
                             capture_output=True, text=True).stdout.strip()
    if shallow == "true":
        pytest.skip("shallow clone: the documented commit may be outside the fetched history")


def test_the_documented_rev_is_a_commit_of_this_repository_with_both_hooks():
    history_or_skip()
    block = next(b for p, b in snippets() if p.name == "README.md" and p.parent == REPO)
    rev = re.search(r"rev: (\S+)", block).group(1)
    shown = subprocess.run(["git", "show", f"{rev}:.pre-commit-hooks.yaml"], cwd=REPO,
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "- id: upgd-lint" in shown.stdout and "- id: upgd-migrate-config" in shown.stdout
    ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", rev, "HEAD"], cwd=REPO)
    assert ancestor.returncode == 0, f"{rev} is not in the history of HEAD"


def test_readme_stays_the_five_minute_path():
    readme = (REPO / "README.md").read_text()
    for heading in ("## Set up", "## Walkthrough: five minutes", "## Exit codes",
                    "## How the code is laid out", "## The optimizers and the VGS",
                    "### Where this corrects the seed design", "## Documentation"):
        assert f"\n{heading}\n" in readme, heading
    # the docs runner's directives are invisible on GitHub: they do not lengthen the page
    visible = [line for line in readme.splitlines() if not line.startswith("<!-- docs-test:")]
    assert len(visible) <= 400
    for page in PAGES:  # no machine-specific paths in what users read
        text = page.read_text()
        assert "/work/" not in text and "/root/" not in text, rel(page)


# Files the project grew from that are not part of it: a page must say what it needs from them.
OUTSIDE = re.compile(r"DOMAIN\.md|ARCHITECTURE\.md|domain brief|\.\./shared\b|"
                     r"UPGD_VGS_PROBLEM4_FIX_SUMMARY|seed file", flags=re.I)


def markdown_pages() -> list[Path]:
    """Every Markdown file of the repository (its own folders: no venv, build or cache)."""
    skip = {".venv", "build", "dist", "node_modules", ".git", ".pytest_cache"}
    return sorted(p for p in REPO.rglob("*.md")
                  if not skip & set(p.relative_to(REPO).parts) and ".egg-info" not in str(p))


@pytest.mark.parametrize("page", markdown_pages(), ids=rel)
def test_no_page_names_a_file_outside_the_repository(page):
    found = [m.group() for m in OUTSIDE.finditer(page.read_text())]
    assert found == [], f"{rel(page)} cites {found}: say what it says, in the page"
