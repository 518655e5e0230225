"""Migrate configs: a pure text -> text driver over the migration registry, and the file side.

As pre-commit's ``migrate-config``: validate first (a file that does not parse is reported and
left alone), run each registered pass on the text the previous one wrote, write only on change,
and say "already migrated" when there is nothing to do. As black: check / diff / write modes and
one :class:`Report` that owns the exit code.
"""
from __future__ import annotations

import codecs
import difflib
import enum
import os
import re
from dataclasses import dataclass, field
from typing import TextIO

from upgd_migrate.errors import deferred_signals
from upgd_migrate.fileio import UnreadableFile, atomic_create, atomic_write, read_text_and_bom
from upgd_migrate.legacy import MIGRATED_CODES, MIGRATIONS, UNSAFE_CODES
from upgd_migrate.config.lint import lint_text
from upgd_migrate.config.locate import locate
from upgd_migrate.config.migrations import PASSES, Change, SigmaPolicy, Skip
from upgd_migrate.report import format_text
from upgd_migrate.config.yaml_io import DuplicateKeyError, Node, YamlError, load_all


class MigrateError(Exception):
    """The text cannot be migrated (not YAML); ``line``/``col`` are 1-based."""

    def __init__(self, message: str, line: int = 1, col: int = 1) -> None:
        super().__init__(message)
        self.message, self.line, self.col = message, line, col


@dataclass
class Migrated:
    text: str
    changes: list[tuple[int, Change]]  # (line in the migrated text, change)
    skips: list[tuple[int, Skip]]
    blocks: int  # optimizer/VGS blocks found: none means the file is not a config of ours


def _parse(text: str) -> list[Node]:
    try:
        return load_all(text)
    except DuplicateKeyError as e:
        raise MigrateError(f"{e.message}: loaders disagree on which value wins", e.line,
                           e.col) from e
    except YamlError as e:
        raise MigrateError(f"not valid YAML: {e.message}", e.line, e.col) from e


def _moved(offset: int, splices: list[tuple[int, int, str]]) -> int:
    """Where ``offset`` lands after ``splices``; text inserted at ``offset`` starts there."""
    return offset + sum(len(new) - (end - start) for start, end, new in splices
                        if start < offset and end <= offset)


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def migrate_text(text: str, policy: SigmaPolicy | None = None,
                 unsafe_fixes: bool = False) -> Migrated:
    """Run every registered migration, in order, on ``text``; raise :class:`MigrateError`.

    Unsafe migrations (``Migration.unsafe``) run only with ``unsafe_fixes``.
    """
    policy = policy or SigmaPolicy()
    documents = _parse(text)
    blocks = sum(len(locate(document)) for document in documents)
    found: list[tuple[int, Change | Skip]] = []
    for info in MIGRATIONS:
        if info.unsafe and not unsafe_fixes:
            continue
        result = PASSES[info.id](text, documents, policy)
        found += [(item.offset, item) for item in [*result.changes, *result.skips]]
        if result.edits:
            try:
                text, splices = result.edits.apply()
            except ValueError as e:  # overlapping edits: a bug of ours, never half-applied
                raise MigrateError(f"internal error: migration {info.id}: {e}; file left "
                                   "unchanged") from e
            found = [(_moved(offset, splices), item) for offset, item in found]
            try:
                documents = _parse(text)
            except MigrateError as e:  # a bug of ours: never write what we cannot read back
                raise MigrateError(f"internal error: migration {info.id} wrote invalid YAML "
                                   f"({e.message}); file left unchanged", e.line, e.col) from e
    found.sort(key=lambda pair: pair[0])
    return Migrated(text, [(_line(text, o), c) for o, c in found if isinstance(c, Change)],
                    [(_line(text, o), s) for o, s in found if isinstance(s, Skip)], blocks)


class Mode(enum.Enum):
    WRITE = "write"
    CHECK = "check"
    DIFF = "diff"


@dataclass
class Report:
    """Counts files by outcome and owns the exit code: 2 when a file could not be read, parsed,
    written or backed up (as ``checkpoint`` does); else 1 when a file changed (or would); else 0.
    What needs a manual fix is printed; lint fails on it.
    """

    mode: Mode
    changed: int = 0
    already: int = 0
    unrelated: int = 0
    manual: int = 0
    failed: int = 0

    @property
    def exit_code(self) -> int:
        return 2 if self.failed else 1 if self.changed else 0

    def summary(self) -> str:
        """``2 files rewritten, 1 already migrated.``; empty when no file was given."""
        parts = [(self.changed, "rewritten" if self.mode is Mode.WRITE else "would be rewritten"),
                 (self.already, "already migrated"), (self.unrelated, "without UPGD settings"),
                 (self.manual, "needs a manual fix" if self.manual == 1 else "need a manual fix"),
                 (self.failed, "cannot be migrated")]
        counted = [(n, what) for n, what in parts if n]
        if not counted:
            return ""
        words = [f"{n} {what}" for n, what in counted]
        words[0] = f"{counted[0][0]} file{'s' if counted[0][0] != 1 else ''} {counted[0][1]}"
        return ", ".join(words) + "."


@dataclass
class FileJob:
    """How to treat each file: the value policy, the mode, the backup suffix, the streams."""

    policy: SigmaPolicy
    mode: Mode
    out: TextIO
    err: TextIO
    backup: str | None = None
    unsafe_fixes: bool = False
    report: Report = field(init=False)

    def __post_init__(self) -> None:
        self.report = Report(self.mode)


def unified_diff(path: str, old: str, new: str) -> str:
    """A unified diff that keeps CRLF and marks a missing final newline as diff(1) does."""
    def lines(text: str) -> list[str]:
        parts = re.split(r"(?<=\n)", text)
        return [p if p.endswith("\n") else p + "\n\\ No newline at end of file\n"
                for p in parts if p]
    return "".join(difflib.unified_diff(lines(old), lines(new), f"{path}\t(original)",
                                        f"{path}\t(migrated)"))


def migrate_file(path: str, job: FileJob) -> None:
    """Migrate one file according to ``job``; every outcome is printed and counted, none raises."""
    try:
        text, bom = read_text_and_bom(path)
        migrated = migrate_text(text, job.policy, job.unsafe_fixes)
    except UnreadableFile as e:
        return _fail(job, f"{path}: cannot migrate: {e}")
    except MigrateError as e:
        return _fail(job, f"{path}:{e.line}:{e.col}: cannot migrate: {e.message}")
    if migrated.text != text and not _emit(path, text, bom, migrated, job):
        return None
    for line, skip in migrated.skips:
        job.err.write(f"{path}:{line}: {skip.migration}: not migrated: {skip.reason}\n")
    if migrated.blocks:  # YAML that configures no optimizer is not ours to comment on
        _print_unfixable(path, migrated.text, job)
    report = job.report
    if migrated.text != text:
        report.changed += 1
    elif migrated.skips:
        report.manual += 1
    elif migrated.blocks:
        report.already += 1
    else:
        report.unrelated += 1
    return None


def _fail(job: FileJob, message: str) -> None:
    job.err.write(message + "\n")
    job.report.failed += 1


def _emit(path: str, old: str, bom: bool, migrated: Migrated, job: FileJob) -> bool:
    """Show or write one changed file; False (reported) when it had to be left unchanged."""
    if job.mode is Mode.DIFF:
        job.out.write(unified_diff(path, old, migrated.text))
    if job.mode is Mode.WRITE:
        prefix = codecs.BOM_UTF8 if bom else b""
        inode = None
        try:
            with deferred_signals():  # the backup exists and `inode` says so, or neither
                if job.backup and not _backup(path, prefix + old.encode("utf-8"), job):
                    return False
                inode = os.stat(path).st_ino
            atomic_write(path, prefix + migrated.text.encode("utf-8"))
        except BaseException as e:  # OSError, or Ctrl-C / SIGTERM (errors.Interrupted)
            if job.backup and inode is not None and os.stat(path).st_ino == inode:
                os.unlink(path + job.backup)  # the file was not replaced: drop our backup
            if not isinstance(e, OSError):
                raise
            _fail(job, f"{path}: cannot migrate: cannot write: {e.strerror or e}")
            return False
        job.err.write(f"Rewriting {path}\n")
    else:
        job.err.write(f"Would rewrite {path}\n")
    for line, change in migrated.changes:
        job.err.write(f"{path}:{line}: {change.migration}: {change.message}\n")
    return True


def _backup(path: str, data: bytes, job: FileJob) -> bool:
    target = path + job.backup
    try:
        atomic_create(target, data, mode_of=path)
    except FileExistsError:
        _fail(job, f"{path}: cannot migrate: backup {target} already exists; not overwriting "
                   "it, file left unchanged")
        return False
    except OSError as e:
        _fail(job, f"{path}: cannot migrate: cannot write backup {target}: {e.strerror or e}")
        return False
    return True


def _print_unfixable(path: str, text: str, job: FileJob) -> None:
    """Findings no migration that ran fixes (positions in the migrated text): never hidden by a
    fix; those an unsafe fix would remove say so in their ``(fix: ...)``."""
    fixed = MIGRATED_CODES | UNSAFE_CODES if job.unsafe_fixes else MIGRATED_CODES
    for finding in lint_text(path, text):
        if finding.code not in fixed or finding.fix is None:  # None: on a line config marked
            job.err.write(format_text(finding) + "\n")
