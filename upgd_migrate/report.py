"""Reporters, one registry: text (default), json, github (workflow annotations), sarif.

Each reporter writes a whole run's findings to a stream. Only ``text`` uses colour, and only
on a terminal with ``NO_COLOR`` unset (https://no-color.org).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from typing import Callable, TextIO

from upgd_migrate import __version__
from upgd_migrate.findings import Finding, Severity
from upgd_migrate.config.rules import RULES

JSON_FORMAT_VERSION = 1
_COLOURS = {Severity.ERROR: "31", Severity.WARNING: "33", Severity.INFO: "36"}
_SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
_GITHUB_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}

Reporter = Callable[[list[Finding], int, TextIO], None]


def use_colour(stream: TextIO) -> bool:
    return not os.environ.get("NO_COLOR") and hasattr(stream, "isatty") and stream.isatty()


def format_text(finding: Finding, colour: bool = False) -> str:
    """``path:line:col: [severity] CODE message (fix: command)``."""
    severity = finding.severity.value
    if colour:
        severity = f"\033[{_COLOURS[finding.severity]}m{severity}\033[0m"
    fix = f" (fix: {finding.fix})" if finding.fix else ""
    return f"{finding.path}:{finding.line}:{finding.col}: [{severity}] {finding.code} " \
           f"{finding.message}{fix}"


def plural(count: int, noun: str) -> str:
    """``1 file``, ``2 files``: every count a command prints goes through here."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def envelope(command: str, body: dict, exit_code: int, warnings: list[str] = ()) -> dict:
    """The one JSON document every ``--format json`` prints: version and command first,
    the command's own fields (``findings`` or ``files``, ``summary``...), the exit code last."""
    doc = {"version": JSON_FORMAT_VERSION, "command": command, **body}
    if warnings:
        doc["warnings"] = list(warnings)
    doc["exit_code"] = exit_code
    return doc


def summary_line(findings: list[Finding], files: int) -> str:
    counts = Counter(f.severity for f in findings)
    flagged = len({f.path for f in findings})
    parts = ", ".join(f"{counts[s]} {s.value}{'s' if counts[s] != 1 and s != Severity.INFO else ''}"
                      for s in Severity)
    return f"{len(findings)} finding{'s' if len(findings) != 1 else ''} ({parts}) in " \
           f"{flagged} of {files} file{'s' if files != 1 else ''}"


def report_text(findings: list[Finding], files: int, stream: TextIO) -> None:
    colour = use_colour(stream)
    for finding in findings:
        stream.write(format_text(finding, colour) + "\n")
    if findings:  # silent when clean, as pre-commit hooks are
        stream.write(summary_line(findings, files) + "\n")


def as_dict(finding: Finding) -> dict:
    return {"path": finding.path, "line": finding.line, "col": finding.col,
            "code": finding.code, "name": RULES[finding.code].name,
            "severity": finding.severity.value, "message": finding.message, "fix": finding.fix}


def report_json(findings: list[Finding], files: int, stream: TextIO,
                exit_code: int | None = None) -> None:
    counts = Counter(f.severity.value for f in findings)
    body = {
        "findings": [as_dict(f) for f in findings],
        "summary": {"files": files, "files_with_findings": len({f.path for f in findings}),
                    **{s.value: counts[s.value] for s in Severity}},
    }
    if exit_code is None:  # the plain reporter signature: errors fail, as lint's default
        exit_code = 1 if counts[Severity.ERROR.value] else 0
    stream.write(json.dumps(envelope("lint", body, exit_code), indent=2) + "\n")


def _escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def report_github(findings: list[Finding], files: int, stream: TextIO) -> None:
    for f in findings:
        title = _escape(f"{f.code} {RULES[f.code].name}", prop=True)
        message = f.message + (f" (fix: {f.fix})" if f.fix else "")
        stream.write(f"::{_GITHUB_LEVEL[f.severity]} file={_escape(f.path, prop=True)},"
                     f"line={f.line},col={f.col},title={title}::{_escape(message)}\n")


def _sarif_result(f: Finding) -> dict:
    return {
        "ruleId": f.code, "level": _SARIF_LEVEL[f.severity],
        "message": {"text": f.message + (f" (fix: {f.fix})" if f.fix else "")},
        "locations": [{"physicalLocation": {
            "artifactLocation": {"uri": f.path.replace(os.sep, "/")},
            "region": {"startLine": f.line, "startColumn": f.col}}}],
    }


def report_sarif(findings: list[Finding], files: int, stream: TextIO) -> None:
    rules = [{"id": r.code, "name": r.name, "shortDescription": {"text": r.summary},
              "defaultConfiguration": {"level": _SARIF_LEVEL[r.severity]}}
             for r in RULES.values()]
    log = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "upgd-migrate", "version": __version__,
                                      "rules": rules}},
                  "results": [_sarif_result(f) for f in findings]}],
    }
    stream.write(json.dumps(log, indent=2) + "\n")


REPORTERS: dict[str, Reporter] = {
    "text": report_text, "json": report_json, "github": report_github, "sarif": report_sarif,
}
