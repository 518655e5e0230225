"""Text and JSON output of ``checkpoint`` and ``verify``, and the exit code they imply.

Exit codes: 0 clean (nothing changed, every check passed), 1 files changed or would change or a
check failed, 2 a file could not be read (refused, corrupt, missing) or a write failed.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any, Sequence

from upgd_migrate.checkpoint.pipeline import FileResult
from upgd_migrate.checkpoint.verify import StateReport


def migrate_exit_code(results: Sequence[FileResult]) -> int:
    if any(r.status == "error" for r in results):
        return 2
    return 1 if any(r.changed for r in results) else 0


def _summary(counter: Counter, order: Sequence[str]) -> str:
    parts = [f"{counter[k]} {k}" for k in order if counter[k]]
    return ", ".join(parts) if parts else "no files"


def summary_line(results: Sequence[FileResult]) -> str:
    counts = Counter(r.status for r in results)
    order = ("migrated", "would migrate", "already current", "no states", "error")
    files = "file" if len(results) == 1 else "files"
    return f"{len(results)} {files}: {_summary(counts, order)}"


def _status(r: FileResult) -> str:
    if r.status == "migrated":
        where = f" -> {r.output}" if r.output != r.path else " (in place)"
        return f"{r.path}: migrated{where} ({r.container})"
    if r.status == "already current":
        return f"{r.path}: already migrated, nothing to do ({r.container})"
    if r.status == "no states":
        return f"{r.path}: no optimizer or VGS state found ({r.container})"
    return f"{r.path}: {r.status} ({r.container})"


def migrate_text(results: Sequence[FileResult], detail: bool) -> list[str]:
    lines = []
    for r in results:
        if r.status == "error":
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def migrate_json(results: Sequence[FileResult], mode: str) -> str:
    files = []
    for r in results:
        files.append({
            "path": str(r.path), "status": r.status, "container": r.container,
            "output": str(r.output) if r.output else None, "error": r.error,
            "notes": r.notes,
            "states": [{"where": s.where, "kind": s.result.kind, "class": s.result.cls,
                        "generation": s.result.generation, "applied": s.result.applied,
                        "notes": [{"level": n.level, "text": n.text} for n in s.result.notes]}
                       for s in r.states]})
    counts = Counter(r.status for r in results)
    doc = {"mode": mode, "files": files, "summary": dict(sorted(counts.items())),
           "exit_code": migrate_exit_code(results)}
    return json.dumps(doc, indent=2)


# ------------------------------------------------------------------ verify


def _cell(report: StateReport, name: str) -> str:
    check = report.check(name)
    if check is None:
        return "-"
    mark = {True: "ok", False: "FAIL", None: "n/a"}[check.ok]
    return mark


def _row(report: StateReport) -> list[str]:
    m = report.metrics
    ratio = "-" if "ratio" not in m else (
        f"{m['ratio']:.4g}" + (f"/{m['target']:.4g}" if m.get("target") else " (fixed)"))
    amps = m.get("amplification") or {}
    amp = "/".join(f"{a:.3f}" for a in amps.values()) or "-"
    first = report.check("first step")
    ref = report.check("reference resume")
    step = "-" if first is None else first.detail.split(":")[0]
    if ref is not None and ref.ok is False:
        step += f"; ref {ref.detail.split(':')[0]}"
    return [report.where, report.cls, report.generation, ratio, amp, step,
            _cell(report, "finite"), "ok" if report.ok else "FAIL"]


HEADER = ["state", "class", "gen", "ratio/target", "amp c=.5/.1/VGS", "first step", "finite",
          "result"]


def table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*HEADER).rstrip(), *(fmt.format(*r).rstrip() for r in rows)]


def verify_text(path: str, reports: Sequence[StateReport]) -> list[str]:
    lines = [f"{path}:"]
    lines += ["  " + ln for ln in table([_row(r) for r in reports])]
    for r in reports:
        for c in r.checks:
            if c.ok is False:
                lines.append(f"  {r.where}: {c.name}: {c.detail}")
    return lines


def report_json(report: StateReport) -> dict:
    return _jsonable({"where": report.where, "kind": report.kind, "class": report.cls,
                      "generation": report.generation, "ok": report.ok,
                      "metrics": report.metrics,
                      "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail}
                                 for c in report.checks]})
