"""SIGKILL during ``checkpoint DIR --in-place`` on a DCP folder: every kill leaves the old
checkpoint or the migrated one, readable, with every original data file byte-identical."""
from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from reliability_helpers import REPO, cli, cli_env, run_and_kill

sys.path.insert(0, str(REPO / "tests" / "checkpoint"))
from dcp_helpers import save_legacy  # noqa: E402

TRIALS = 12


def _state(folder) -> str:
    from upgd_migrate.checkpoint.inspect import inspect_file

    return inspect_file(folder)["states"][0]["generation"]


@pytest.mark.slow
def test_sigkill_during_in_place_dcp_migration(tmp_path):
    source = tmp_path / "source"
    save_legacy(source)
    originals = {p.name: p.read_bytes() for p in source.iterdir()}
    args = ["checkpoint", "ck", "--in-place"]
    start = time.monotonic()
    probe = tmp_path / "probe"
    shutil.copytree(source, probe / "ck")
    subprocess.run(cli(*args), cwd=probe, env=cli_env(), capture_output=True, timeout=120)
    lifetime = time.monotonic() - start
    rng = random.Random(5)
    delays = [rng.uniform(0.5 * lifetime, 1.2 * lifetime) for _ in range(TRIALS)]

    def trial(i: int) -> str:
        work = tmp_path / f"trial-{i:02d}"
        shutil.copytree(source, work / "ck")
        run_and_kill(args, work, delays[i], aimed=False)
        folder = work / "ck"
        kept = {n: (folder / n).read_bytes() for n in originals if n != ".metadata"}
        assert kept == {n: b for n, b in originals.items() if n != ".metadata"}
        return _state(folder)  # raises if the folder is not a readable checkpoint

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(trial, range(TRIALS)))
    print(f"\n{TRIALS} kills, lifetime {lifetime:.2f}s: "
          f"{outcomes.count('G1')} original, {outcomes.count('current')} migrated")
    assert set(outcomes) <= {"G1", "current"}
