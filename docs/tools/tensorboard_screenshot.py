#!/usr/bin/env python3
"""Remake docs/img/tensorboard.png: a screenshot of the real TensorBoard page showing the run
that tests/integrations/test_tensorboard_monitor.py logs.

    python docs/tools/tensorboard_screenshot.py [OUT.png]

Runs that test with UPGD_TENSORBOARD_LOGDIR set, so its event file lands in a temporary
``runs/`` folder; serves the folder with TensorBoard on a free port of 127.0.0.1; has headless
Chromium screenshot the Scalars page (smoothing off); stops TensorBoard and removes the folder.
Needs the test's extras (tensorboard) and a Chromium on PATH (``chromium`` or
``chromium-browser``). Not part of the test suite: CI machines have no browser.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST = "tests/integrations/test_tensorboard_monitor.py::test_the_event_file_holds_each_logged_step"
PAGE = "#scalars&_smoothingWeight=0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    sys.exit("tensorboard_screenshot: no chromium on PATH")


def main(out: Path) -> int:
    browser = _browser()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "UPGD_TENSORBOARD_LOGDIR": str(Path(tmp) / "runs" / "monitor")}
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST],
                       cwd=ROOT, env=env, check=True)
        port = _free_port()
        # Relative logdir: the page shows "runs", not this machine's temporary path.
        board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", "runs",
                                  "--host", "127.0.0.1", "--port", str(port)], cwd=tmp,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/"
            for _ in range(120):
                try:
                    urllib.request.urlopen(url, timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.5)
            subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu",
                            "--hide-scrollbars", "--window-size=1280,1180",
                            "--virtual-time-budget=15000", f"--screenshot={out.resolve()}",
                            url + PAGE], check=True, timeout=180,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            board.terminate()
            board.wait(timeout=30)
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs/img/tensorboard.png"))
