"""The process pool behind ``--jobs``: input order, errors as values, clean interrupts."""
from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from upgd_migrate.api.pool import imap

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "fixtures"


def _square_or_error(x: int) -> dict:
    if x == 3:
        return {"path": str(x), "error": "three is bad"}
    time.sleep(0.05 * (5 - x))  # the first items finish last
    return {"path": str(x), "value": x * x}


def test_every_item_once_in_input_order_after_sorting():
    seen = list(imap(_square_or_error, list(range(6)), 2))
    assert sorted(i for i, _ in seen) == list(range(6))
    by_index = dict(seen)
    assert by_index[3] == {"path": "3", "error": "three is bad"}
    assert [by_index[i].get("value") for i in range(6)] == [0, 1, 4, None, 16, 25]


def test_one_job_runs_in_this_process():
    assert list(imap(lambda _: os.getpid(), [1, 2], 1)) == [
        (0, os.getpid()), (1, os.getpid())]


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_stops_the_workers_and_leaves_nothing(tmp_path, signum, code):
    for i in range(4):
        (tmp_path / "run" / f"t{i}").mkdir(parents=True)
        (tmp_path / "run" / f"t{i}" / "c.pt").write_bytes((FIX / "containers" / "pbt.pt")
                                                          .read_bytes())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "upgd_migrate", "verify", str(tmp_path / "run"),
                             "-j", "2", "--steps", "10000"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 60
        while len(parent.children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = parent.children()
        assert len(workers) == 2
        time.sleep(1.0)  # inside a file
        # Ctrl-C reaches the whole process group; SIGTERM is sent to the parent only
        os.killpg(proc.pid, signum) if signum == signal.SIGINT else proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code
    assert err.strip().splitlines()[-1].startswith("interrupted (")
    assert "Traceback" not in err
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def _frozen(_: int) -> int:
    return gc.get_freeze_count()


def test_workers_inherit_the_parents_objects_frozen_and_the_parent_unfreezes():
    """A worker's garbage collector never walks what it inherited (each object it touched
    would copy a page of the parent's heap); the parent collects as before."""
    assert gc.get_freeze_count() == 0
    counts = [n for _, n in imap(_frozen, [0, 1], 2)]
    assert min(counts) > 1000  # torch, click and this package, at least
    assert gc.get_freeze_count() == 0


def test_a_callers_own_freeze_is_left_frozen():
    gc.freeze()
    try:
        assert [n for _, n in imap(_frozen, [0, 1], 2)]
        # not unfrozen (0); a frozen object that dies leaves the count, so no exact figure
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
