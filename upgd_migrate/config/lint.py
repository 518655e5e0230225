"""Lint driver: paths -> files -> YAML documents -> located blocks -> rules -> Findings.

A bad file becomes one finding for that file and the run goes on; nothing here raises for
user input. Findings on a line carrying ``# upgd-migrate: disable=CODE[,CODE]`` are dropped, and
so is UPG102 on a sigma `upgd-migrate config` marked as migrated (relative by decision). The
rules trust the value config wrote (the marker's `, set V`); an edited value on a marked line
stays a finding, worded for a line config will not convert twice.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Iterable, Iterator, NamedTuple

from upgd_migrate.fileio import UnreadableFile, read_text
from upgd_migrate.findings import Finding
from upgd_migrate.legacy import (SIGMA_MARKER_HONOURED, SIGMA_MARKER_NOTED, SIGMA_MARKER_RE,
                                 sigma_set_by_config)
from upgd_migrate.config.locate import ConfigBlock, locate
from upgd_migrate.config.rules import Context, LintOptions, rule_for
from upgd_migrate.config.rules.keys import (check_kwargs, check_optimizer_name, check_vgs_keys,
                                     check_vgs_shape)
from upgd_migrate.config.rules.noise import check_noise
from upgd_migrate.config.rules.values import check_yaml11_numbers, describe
from upgd_migrate.config.yaml_io import DuplicateKeyError, Mapping, Sequence, YamlError, load_all

YAML_SUFFIXES = (".yaml", ".yml")
PARALLEL_MIN_FILES = 32  # per worker: below this a process pool costs more than it saves
_SUPPRESS = re.compile(r"#\s*upgd-migrate:\s*disable=([\w\-, ]+)")
_MIGRATED_SIGMA = re.compile(SIGMA_MARKER_RE)
_MARKED_NOTE = ("; this line was migrated once (its `# upgd-migrate: sigma was` marker) and "
                "the value is not the one `config` wrote{wrote}, so it is checked like any "
                "other: set a relative ratio by hand (a deliberately small one: add "
                "`disable=UPG101`)")


class _At(NamedTuple):
    line: int
    col: int


@dataclass
class LintResult:
    findings: list[Finding]
    files: int


def iter_files(paths: Iterable[str]) -> Iterator[str]:
    """Files as given, and *.yaml / *.yml under directories (hidden folders skipped), sorted."""
    for path in paths:
        if not os.path.isdir(path):
            yield path
            continue
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if name.endswith(YAML_SUFFIXES):
                    yield os.path.join(root, name)


def default_jobs() -> int:
    """The CPUs this process may use (``--jobs 0``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def lint_paths(paths: Iterable[str], options: LintOptions | None = None,
               jobs: int = 1) -> LintResult:
    """Lint every file under ``paths``; with ``jobs`` > 1, many files go to worker processes.

    Parsing is pure Python (ruamel has no compiled parser here), so a large tree is CPU-bound
    and scales with processes; a pool costs tens of milliseconds, so few files stay serial.
    """
    files = list(iter_files(paths))
    jobs = min(jobs, len(files) // PARALLEL_MIN_FILES)
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs) as pool:
            per_file = list(pool.map(lint_file, files, [options] * len(files),
                                     chunksize=max(1, len(files) // (jobs * 8))))
    else:
        per_file = [lint_file(path, options) for path in files]
    return LintResult([f for found in per_file for f in found], len(files))


def lint_file(path: str, options: LintOptions | None = None) -> list[Finding]:
    try:
        text = read_text(path)
    except UnreadableFile as e:
        ctx = Context(path)
        ctx.report("UPG001", _At(1, 1), str(e))
        return ctx.findings
    return lint_text(path, text, options)


def lint_text(path: str, text: str, options: LintOptions | None = None) -> list[Finding]:
    """Findings for one file's text, sorted by position, suppressions applied."""
    ctx = Context(path, options or LintOptions(), lines=tuple(text.split("\n")))
    _lint_documents(ctx, text)
    return sorted(_unsuppressed(ctx.findings, text), key=Finding.sort_key)


def _lint_documents(ctx: Context, text: str) -> None:
    try:
        documents = load_all(text)
    except DuplicateKeyError as e:
        ctx.report("UPG003", _At(e.line, e.col), f"{e.message}: loaders disagree on which "
                   "value wins; keep one")
        return
    except YamlError as e:
        ctx.report("UPG002", _At(e.line, e.col), f"not valid YAML: {e.message}")
        return
    if not any(isinstance(doc, (Mapping, Sequence)) for doc in documents):
        what = f"its document is {describe(documents[0])}" if documents else "it holds no document"
        ctx.report("UPG004", documents[0] if documents else _At(1, 1),
                   f"nothing to lint: {what}, not a mapping")
        return
    for document in documents:
        blocks = locate(document)
        check_yaml11_numbers(ctx, blocks)
        for block in blocks:
            check_block(ctx, block)


def check_block(ctx: Context, block: ConfigBlock) -> None:
    optimizer = check_optimizer_name(ctx, block)
    kwargs = check_kwargs(ctx, block, optimizer)
    check_vgs_shape(ctx, block)
    if block.vgs is not None:
        check_vgs_keys(ctx, block.vgs)
    check_noise(ctx, block, optimizer, kwargs)


def _unsuppressed(findings: list[Finding], text: str) -> list[Finding]:
    if not findings:
        return findings
    lines = text.split("\n")
    return [_on_marked_line(f, lines) for f in findings if not _suppressed(f, lines)]


def _on_marked_line(finding: Finding, lines: list[str]) -> Finding:
    """A sigma finding on a migrated line: its fix is no longer `config` (it never converts a
    marked line again), so say what to do instead."""
    line = lines[finding.line - 1] if finding.line <= len(lines) else ""
    if finding.code in SIGMA_MARKER_NOTED and _MIGRATED_SIGMA.search(line):
        written = sigma_set_by_config(line)
        wrote = f" ({written:g})" if written is not None else \
            " (an older marker that does not record it)"
        return replace(finding, message=finding.message + _MARKED_NOTE.format(wrote=wrote),
                       fix=None)
    return finding


def _suppressed(finding: Finding, lines: list[str]) -> bool:
    line = lines[finding.line - 1] if finding.line <= len(lines) else ""
    return is_disabled(line, finding.code)


def is_disabled(line: str, code: str) -> bool:
    """True when ``line`` silences rule ``code``: a disable comment or the migrated-sigma mark."""
    if code in SIGMA_MARKER_HONOURED and _MIGRATED_SIGMA.search(line):
        return True
    match = _SUPPRESS.search(line)
    if match is None:
        return False
    selectors = {s.strip() for s in match.group(1).split(",") if s.strip()}
    return "all" in selectors or any(
        (rule := rule_for(s)) is not None and rule.code == code for s in selectors)
