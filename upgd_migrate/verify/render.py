"""Text and JSON output of ``verify``: one table row per state, the failed checks below it."""
from __future__ import annotations

from typing import Sequence

from upgd_migrate.checkpoint.render import jsonable
from upgd_migrate.verify.verdicts import StateReport


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
    if not reports:
        return [f"{path}: no optimizer or VGS state found"]
    lines = [f"{path}:"]
    lines += ["  " + ln for ln in table([_row(r) for r in reports])]
    for r in reports:
        for c in r.checks:
            if c.ok is False:
                lines.append(f"  {r.where}: {c.name}: {c.detail}")
    return lines


def report_json(report: StateReport) -> dict:
    return jsonable({"where": report.where, "kind": report.kind, "class": report.cls,
                      "generation": report.generation, "ok": report.ok,
                      "metrics": report.metrics,
                      "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail}
                                 for c in report.checks]})
