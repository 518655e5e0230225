"""Shared helpers for the reliability tests (imported by name, not a conftest).

The crash tests run the real CLI (``python -m upgd_migrate``) in a subprocess and SIGKILL it;
these helpers start it, time it, kill it and classify what is left in its folder.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONWARNINGS"] = "ignore"  # torch's NumPy warning is noise on stderr
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "upgd_migrate", *args]


def run_cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), cwd=cwd, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def is_temp(name: str) -> bool:
    """Both writers' temp names: ``.upgd-migrate-*.tmp`` (configs), ``.<name>.*.tmp``."""
    return name.startswith(".") and name.endswith(".tmp")


def temp_files(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if is_temp(n))


@dataclass
class Timing:
    """One normal run: its lifetime, and when a temp file was first and last seen."""

    lifetime: float
    write_start: float | None
    write_end: float | None


def measure(args: list[str], cwd: Path, twin: Path) -> tuple[Timing, subprocess.Popen]:
    """Run to completion, polling the folder so the kill delays can aim at the write.

    The same run goes on in ``twin`` meanwhile: trials run two at a time, and a lone run
    would time the write too early for them.
    """
    start = time.monotonic()
    other = subprocess.Popen(cli(*args), cwd=twin, env=cli_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    proc = subprocess.Popen(cli(*args), cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = last = None
    while proc.poll() is None:
        if temp_files(cwd):
            now = time.monotonic() - start
            first = now if first is None else first
            last = now
        time.sleep(0.001)
    proc.communicate()
    other.wait()
    return Timing(time.monotonic() - start, first, last), proc


def kill_delays(timing: Timing, trials: int, seed: int) -> list[tuple[float, bool]]:
    """Seeded (delay, aimed) pairs: a quarter from the start, spread over the whole lifetime;
    the rest counted from the moment the temp file appears, spread over the measured write.

    The write is a short tail of the run (parsing or importing torch dominates) and its start
    drifts with load, so delays from the start alone rarely land in it; counting from the temp
    file makes mid-write kills common, and the 2.5x spread (trials run two at a time, so
    slower than the measured run) also lands some just after the rename.
    """
    rng = random.Random(seed)
    write = 0.005
    if timing.write_start is not None and timing.write_end is not None:
        write = max(write, timing.write_end - timing.write_start)
    return [(rng.uniform(0, 1.05 * timing.lifetime), False) if i % 4 == 0
            else (rng.uniform(0, 2.5 * write), True) for i in range(trials)]


def run_and_kill(args: list[str], cwd: Path, delay: float, aimed: bool) -> bool:
    """Start the CLI and SIGKILL it ``delay`` s after its start (or, ``aimed``, after its temp
    file appears); True when it had already exited by itself."""
    proc = subprocess.Popen(cli(*args), cwd=cwd, env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while aimed and proc.poll() is None and not temp_files(cwd):
        time.sleep(0.0005)
    try:
        proc.wait(timeout=delay)
        return True
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return False


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes): for 'nothing was written'."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class System:
    """A pickle payload that would run ``touch MARKER``: a hostile input creates a file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
