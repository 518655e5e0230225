"""Text and JSON output of ``checkpoint``, and the exit code it implies.

Exit codes: 0 clean (nothing changed, every check passed), 1 files changed or would change or a
check failed, 2 a file could not be read (refused, corrupt, missing) or was not checked (a walked
file that could hold a state, refused for its globals), a write failed, or no input held a
UPGD-family or VGS state at all (a run that migrated nothing is not a pass). Carried files (no
state in them) count as neither.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any, Sequence

from upgd_migrate.checkpoint.pipeline import FileResult
from upgd_migrate.checkpoint.runfolder import NOT_A_STATE
from upgd_migrate.report import envelope, plural


ORDER = ("migrated", "would migrate", "sidecar repaired", "would repair sidecar",
         "already current", "skipped", "no states", "carried", "not checked", "error")
UNREAD = ("error", "not checked")  # their lines (with the hint) go to stderr
SKIPPED = "not a UPGD/VGS state: skipped"


def migrate_exit_code(results: Sequence[FileResult]) -> int:
    if any(r.status in UNREAD for r in results) or not any(r.relevant for r in results):
        return 2
    return 1 if any(r.changed for r in results) else 0


def _summary(counter: Counter, order: Sequence[str]) -> str:
    parts = [f"{counter[k]} {'errors' if k == 'error' and counter[k] > 1 else k}"
             for k in order if counter[k]]
    return ", ".join(parts) if parts else "no files"


def summary_line(results: Sequence[FileResult]) -> str:
    line = f"{plural(len(results), 'file')}: {_summary(Counter(r.status for r in results), ORDER)}"
    mirrored = Counter(r.mirrored for r in results if r.mirrored)
    if mirrored:
        line += "; unchanged inputs " + " and ".join(
            f"{how} ({n})" for how, n in sorted(mirrored.items())) + " into the output"
    if results and not any(r.relevant for r in results):
        line += "; no UPGD/VGS state to migrate"
    return line


def _status(r: FileResult) -> str:
    if r.status == "migrated":
        where = f" -> {r.output}" if r.output != r.path else " (in place)"
        return f"{r.path}: migrated{where} ({r.container})"
    if r.status == "already current":
        return f"{r.path}: already migrated, nothing to do ({r.container})"
    if r.status == "no states":
        return f"{r.path}: no optimizer or VGS state found ({r.container})"
    if r.status == "skipped":
        return f"{r.path}: {SKIPPED} ({r.container}: {_others(r)})"
    if r.status == "carried":
        return f"{r.path}: {NOT_A_STATE} ({r.container})"
    return f"{r.path}: {r.status} ({r.container})"


def _others(r: FileResult) -> str:
    return "only " + ", ".join(f"{s.where} (other optimizer)" for s in r.states)


def migrate_text(results: Sequence[FileResult], detail: bool) -> list[str]:
    lines = []
    for r in results:
        if r.status in UNREAD:
            continue  # errors go to stderr
        lines.append(_status(r))
        if not detail or not r.changed:
            continue
        for s in r.states:
            res = s.result
            applied = ", ".join(res.applied) if res.applied else "current"
            lines.append(f"  {s.where}: {res.cls or 'other optimizer'} {res.generation}: "
                         f"{applied}")
            lines += [f"    {'warning: ' if n.level == 'warning' else ''}{n.text}"
                      for n in res.notes]
        lines += [f"  {n}" for n in r.notes]
    return lines


def jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def file_entry(r: FileResult) -> dict:
    """One file's entry of the JSON envelope (and of ``--format jsonl``, and of the API)."""
    return {
        "path": str(r.path), "status": r.status, "container": r.container,
        "output": str(r.output) if r.output else None, "error": r.error,
        "mirrored": r.mirrored,
        "notes": r.notes,
        "states": [{"where": s.where, "kind": s.result.kind, "class": s.result.cls,
                    "generation": s.result.generation, "applied": s.result.applied,
                    "notes": [{"level": n.level, "text": n.text} for n in s.result.notes]}
                   for s in r.states]}


def migrate_doc(results: Sequence[FileResult], mode: str) -> dict:
    """The body of the JSON envelope (see ``report.envelope``)."""
    counts = Counter(r.status for r in results)
    return {"mode": mode, "files": [file_entry(r) for r in results],
            "summary": dict(sorted(counts.items()))}


def migrate_json(results: Sequence[FileResult], mode: str) -> str:
    """The whole ``checkpoint --format json`` document, exit code included."""
    doc = envelope("checkpoint", migrate_doc(results, mode), migrate_exit_code(results))
    return json.dumps(doc, indent=2)
