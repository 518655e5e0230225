"""bench/device-check's report: what fails the run, and the compact text (one table, then one
line per figure)."""
from __future__ import annotations

OURS = ("AdaptiveUPGD fixed noise", "AdaptiveUPGD adaptive noise")
CASES = ("optim_a", "optim_b", "optim_c")


def _case(stage: dict) -> dict | None:
    result = stage.get("result") if stage.get("status") == "ok" else None
    return result["cases"][0] if result else None


def _stage_problem(name: str, stage: dict, device: str) -> list[str]:
    status = stage["status"]
    if status in ("error", "timeout", "failed"):
        return [f"{name}: {status}: {stage['reason']}"]
    if name == "tests" and status == "skipped" and device == "cuda":
        return [f"tests: no CUDA test ran on the GPU ({stage['reason']})"]
    return []


def verdict(report: dict) -> list[str]:
    """What makes the run fail: a CUDA test failing (or none running on a GPU), a step of ours
    that syncs (a count under "warn", or a raise under "error"), a stage that crashed or overran."""
    problems = []
    for name, stage in report["stages"].items():
        problems += _stage_problem(name, stage, report["device"])
    for name in CASES:
        case = _case(report["stages"].get(name, {}))
        for who in OURS if case else ():
            r = case["contenders"][who]
            if r["syncs_per_step"] or r["sync_error"]:
                problems.append(f"{name}: {who} syncs: {r['syncs_per_step']} per step under "
                                f"'warn'; under 'error': {r['sync_error'] or 'nothing raised'}")
    monitor = report["stages"].get("monitor", {})
    if monitor.get("status") == "ok":
        for label, rows in monitor["result"]["optimizers"].items():
            if rows["plain step"]["syncs_per_step"]:
                problems.append(f"monitor: the plain step ({label}) syncs "
                                f"{rows['plain step']['syncs_per_step']} per step")
    return problems


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(report: dict) -> list[str]:
    cases = {name: _case(report["stages"].get(name, {})) for name in CASES}
    ran = {k: c for k, c in cases.items() if c}
    if not ran:
        return ["(no optimizer case ran)"]
    head = [f"({c['case']}) {c['numel'] / 1e6:.3g}M ms" for c in ran.values()]
    largest = list(ran.values())[-1]
    lines = ["| contender | " + " | ".join(head) + " | syncs/step | peak MiB "
             f"({largest['case']}) |", "|---" * (len(head) + 3) + "|"]
    for who in largest["contenders"]:
        ms = [_fmt(c["contenders"][who]["ms"], ".3f") for c in ran.values()]
        syncs = [c["contenders"][who]["syncs_per_step"] for c in ran.values()]
        sync = "-" if all(s is None for s in syncs) else "/".join(_fmt(s, "g") for s in syncs)
        peak = _fmt(largest["contenders"][who]["peak_mib"], ".1f")
        lines.append(f"| {who} | " + " | ".join(ms) + f" | {sync} | {peak} |")
    return lines


def _lines_cases(report: dict) -> list[str]:
    lines = []
    for name in CASES:
        stage = report["stages"].get(name)
        case = _case(stage or {})
        if not case:
            lines.append(f"{name}: {stage['status'] if stage else 'not run'}: "
                         f"{(stage or {}).get('reason')}")
            continue
        q = case["ratios"]
        scale = f", scaled x{case['scale']:g}" if case["scale"] != 1 else ""
        lines.append(f"({case['case']}) {case['title']}{scale}, {case['steps']} steps: "
                     f"over the peer fixed {q['over_peer_fixed']:.2f}x adaptive "
                     f"{q['over_peer_adaptive']:.2f}x (like for like "
                     f"{q['over_peer_like_for_like']:.2f}x); over the floor fixed "
                     f"{q['over_floor_fixed']:.2f}x adaptive {q['over_floor_adaptive']:.2f}x; "
                     f"adaptive over fixed {q['adaptive_over_fixed_pct']:+.1f}%")
    return lines


def _lines_monitor(stage: dict) -> list[str]:
    if stage.get("status") != "ok":
        return [f"monitor: {stage.get('status')}: {stage.get('reason')}"]
    lines = []
    result = stage["result"]
    for label, rows in result["optimizers"].items():
        parts = []
        for who, r in rows.items():
            if r["paired_pct"] is None:
                continue
            syncs = "" if r["syncs_per_step"] is None else f" ({r['syncs_per_step']:g} syncs/step)"
            parts.append(f"{who} {r['paired_pct']:+.1f}%{syncs}")
        lines.append(f"monitor, {label}, {result['rounds']} rounds of {result['block']} steps, "
                     f"over the plain step {rows['plain step']['wall_ms']:.3f} ms: "
                     + "; ".join(parts))
    return lines


def _line_verify(stage: dict, device: str) -> str:
    if stage.get("status") != "ok":
        return f"verify: {stage.get('status')}: {stage.get('reason')}"
    s = stage["result"]["summary"]
    line = (f"verify --device {device}: {s['states']} states, {s['failed']} failed (pre-migration "
            f"fixtures are made to fail)")
    cmp = stage["result"].get("compare")
    if cmp is None:
        return line + "; CPU comparison: skipped (the run was on the CPU)"
    if cmp["status"] != "ok":
        return line + f"; CPU comparison: {cmp['status']}: {cmp['reason']}"
    return line + (f"; verdicts agree with the CPU's on {cmp['agree']} of {cmp['states']} "
                   f"states" + (f" (differ: {', '.join(cmp['differ'])})" if cmp["differ"] else ""))


def render(report: dict) -> str:
    stages = report["stages"]
    tests = stages["tests"]
    counts = tests.get("result") or {}
    lines = [f"device-check: {report['device']} ({report['device_name']}), torch "
             f"{report['torch']}, {'quick, ' if report['quick'] else ''}budget "
             f"{report['budget_s']:.0f} s, took {report['elapsed_s']} s", *table(report),
             f"tests (pytest -m cuda): {tests['status']}: {counts.get('passed', 0)} passed, "
             f"{counts.get('failed', 0)} failed, {counts.get('skipped', 0)} skipped"
             + (f" ({tests['reason']})" if tests["reason"] else ""),
             *_lines_cases(report), *_lines_monitor(stages["monitor"]),
             _line_verify(stages["verify"], report["device"]),
             *([f"skipped on the CPU: {'; '.join(report['skipped'].values())}"]
               if report["skipped"] else []),
             "stage seconds: " + ", ".join(f"{k} {v['seconds']}" for k, v in stages.items()),
             "result: " + ("OK" if not report["problems"] else
                           "FAILED: " + "; ".join(report["problems"]))]
    return "\n".join(lines)
