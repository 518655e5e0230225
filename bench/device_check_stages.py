"""The stages of bench/device-check: each a subprocess with a time allotment, killed (its whole
process group) if it overruns, and its output read back as figures."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# Taken off a subprocess's allotment when it is told its --budget-s (which counts from its own
# start): the time to write its figures and exit before it would be killed.
MARGIN_S = 2.0
LOG_CHARS = 6000


@dataclass
class Stage:
    name: str
    cmd: list[str]
    result_path: Optional[Path]  # where it writes its figures (None: JSON on stdout)
    budget_flag: bool = False  # takes --budget-s
    compare: Optional[list[str]] = None  # verify: the same run on the CPU, to compare with


def spawn(cmd: list[str], seconds: float, repo: Path) -> tuple[Optional[int], str, str]:
    """(exit code or None when killed at ``seconds``, stdout, stderr)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=max(seconds, 1.0))
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: it and its children alone
        out, err = proc.communicate()
        return None, out, err


def run_stage(stage: Stage, allot: float, repo: Path, device: str) -> dict:
    begun = time.perf_counter()
    cmd = list(stage.cmd)
    if stage.budget_flag:
        cmd += ["--budget-s", f"{max(allot - MARGIN_S, 1.0):.1f}"]
    code, out, err = spawn(cmd, allot, repo)
    entry = {"status": "ok", "reason": None, "command": " ".join(cmd[1:]),
             "log": (out + err)[-LOG_CHARS:]}
    if code is None:
        entry.update(status="timeout", reason=f"killed after its {allot:.0f} s")
    else:
        read = {"tests": read_tests, "verify": read_verify}.get(stage.name, read_figures)
        try:
            entry.update(read(stage, code, out, err))
            if stage.compare and entry["status"] == "ok":
                left = allot - (time.perf_counter() - begun)
                entry["result"]["compare"] = compare_verify(stage.compare, entry["result"], left,
                                                            repo)
        except Exception as e:  # output a stage left unreadable fails that stage, not the run
            entry.update(status="error", reason=f"{type(e).__name__}: {e}; "
                                                f"{last_line(err, code)}")
    entry["seconds"] = round(time.perf_counter() - begun, 1)
    return entry


def last_line(err: str, code: int) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {code}"


def read_figures(stage: Stage, code: int, out: str, err: str) -> dict:
    if code != 0 or stage.result_path is None or not stage.result_path.is_file():
        return {"status": "error", "reason": last_line(err, code)}
    return {"result": json.loads(stage.result_path.read_text())}


def read_tests(stage: Stage, code: int, out: str, err: str) -> dict:
    """pytest's JUnit XML: each test's outcome; all skipped reads as skipped, with the reason."""
    if stage.result_path is None or not stage.result_path.is_file():
        return {"status": "error", "reason": last_line(out + err, code)}
    tests = {}
    for case in ET.parse(stage.result_path).getroot().iter("testcase"):
        outcome, reason = "passed", None
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = child.get("message")
                reason = message.splitlines()[0] if message else None
        tests[f"{case.get('classname')}::{case.get('name')}"] = {"outcome": outcome,
                                                                 "reason": reason}
    outcomes = [t["outcome"] for t in tests.values()]
    result = {"tests": tests, **{k: outcomes.count(k) for k in
                                 ("passed", "failed", "error", "skipped")}}
    if result["failed"] or result["error"] or code not in (0, 5):
        return {"status": "failed", "reason": f"exit code {code}", "result": result}
    if not result["passed"]:
        reasons = sorted({t["reason"] or "" for t in tests.values()})
        return {"status": "skipped", "reason": "; ".join(reasons) or "no cuda test collected",
                "result": result}
    return {"result": result}


def verdicts(body: dict) -> dict[str, dict]:
    """Per state (file and place in it): its overall verdict and each check's."""
    return {f"{f['path']}: {s['where']}": {"ok": s["ok"], "checks": {c["name"]: c["ok"]
                                                                      for c in s["checks"]}}
            for f in body["files"] for s in f["states"]}


def read_verify(stage: Stage, code: int, out: str, err: str) -> dict:
    if code not in (0, 1):  # 1: a check failed, which the legacy fixtures are made to do
        return {"status": "error", "reason": last_line(err, code)}
    body = json.loads(out)
    return {"result": {"summary": body["summary"], "states": verdicts(body)}}


def compare_verify(cmd: list[str], device_result: dict, seconds: float, repo: Path) -> dict:
    """The same verify on the CPU; the states whose verdicts differ between the devices."""
    code, out, err = spawn(cmd + ["--device", "cpu"], seconds, repo)
    if code not in (0, 1):
        return {"status": "timeout" if code is None else "error",
                "reason": "killed" if code is None else last_line(err, code)}
    cpu = verdicts(json.loads(out))
    differ = sorted(k for k in cpu if cpu[k] != device_result["states"].get(k))
    return {"status": "ok", "states": len(cpu), "agree": len(cpu) - len(differ),
            "differ": {k: {"cpu": cpu[k], "device": device_result["states"].get(k)}
                       for k in differ}}
