"""Ctrl-C (SIGINT) and SIGTERM (timeout, Slurm, Kubernetes) at each phase of a real CLI run.

Every interrupt ends with one "interrupted" line on stderr and no traceback, exit 130 / 143,
no temp file, no backup made by the interrupted run, and the original file byte for byte.
The signals are real, sent to ``python -m upgd_migrate`` while it loads or writes a
checkpoint big enough (about 160 MB) that the write takes a noticeable time.
"""
from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliability_helpers import cli, cli_env, run_cli, temp_files

pytestmark = pytest.mark.slow
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """A legacy AdaptiveUPGD state (migrates) in a training-loop dict with a 160 MB model."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
    import generate
    import make_containers

    state = make_containers.build_training_loop(
        generate.optimizer_fixtures()["adaptive_upgd_g1.pt"],
        generate.vgs_fixtures()["vgs_v3_1.pt"])
    state["model"]["big"] = torch.zeros(40_000_000)
    path = tmp_path_factory.mktemp("big") / "big.pt"
    torch.save(state, path)
    return path


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cli(*args), cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 120) -> bool:
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        if ready():
            return True
        time.sleep(0.0005)
    return False


def _assert_interrupted(proc: subprocess.Popen, sig: signal.Signals) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT[sig], (proc.returncode, err)
    assert "Traceback" not in err and "inline_container" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("big.pt")]
    assert len(lines) == 1 and lines[0].startswith("interrupted ("), err
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_the_write_leaves_the_original_and_no_backup(big, tmp_path, sig):
    work = tmp_path / "work"
    work.mkdir()
    target = work / "big.pt"
    target.write_bytes(big.read_bytes())
    before = _digest(target)
    proc = _start(["checkpoint", "big.pt", "--in-place", "--backup", ".orig"], work)
    assert _wait_for(proc, lambda: temp_files(work)), "the run ended before its write began"
    proc.send_signal(sig)
    _assert_interrupted(proc, sig)
    assert temp_files(work) == []
    assert sorted(p.name for p in work.iterdir()) == ["big.pt"]  # no .orig left behind
    assert _digest(target) == before
    rerun = run_cli(["checkpoint", "big.pt", "--in-place", "--backup", ".orig"], work, 300)
    assert rerun.returncode == 1, rerun.stderr  # not "backup already exists"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_the_load_of_an_output_run(big, tmp_path, sig):
    """The progress label appears on stderr before the load; -o output never appears."""
    proc = subprocess.Popen(cli("checkpoint", str(big), "-o", "out.pt"), cwd=tmp_path,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stderr.readline()  # blocks until the progress label: torch is imported
    assert str(big).encode() in first, first
    proc.send_signal(sig)
    proc.wait(timeout=120)
    assert proc.returncode == EXIT[sig]
    rest = proc.stderr.read().decode()
    assert "Traceback" not in rest and "interrupted (" in rest, rest
    proc.stdout.close()
    proc.stderr.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_verify_and_config(tmp_path, sig):
    fixtures = Path(__file__).resolve().parents[2] / "fixtures"
    runs = tmp_path / "runs"
    runs.mkdir()
    for i in range(100):  # far more work than fits between the first line and the signal
        (runs / f"s{i:03}.pt").write_bytes((fixtures / "optim" / "upgd.pt").read_bytes())
    env = {**cli_env(), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cli("verify", "runs", "--steps", "200"), cwd=tmp_path, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith("runs/s000.pt")  # one file verified, 99 to go
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT[sig], err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted (")

    configs = tmp_path / "configs"
    configs.mkdir()
    legacy = (fixtures / "configs").glob("*.yaml")
    texts = [p.read_text() for p in legacy if "sigma" in p.read_text()]
    for i in range(300):
        (configs / f"c{i:03}.yaml").write_text(texts[i % len(texts)])
    originals = {p.name: p.read_text() for p in configs.iterdir()}
    proc = _start(["config", "--backup", ".orig", "configs"], tmp_path)
    assert _wait_for(proc, lambda: any(p.suffix == ".orig" for p in configs.iterdir()))
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    assert proc.returncode == EXIT[sig]
    assert temp_files(configs) == []
    for p in configs.glob("*.yaml"):  # each file: untouched, or migrated with its backup
        backup = p.with_name(p.name + ".orig")
        if p.read_text() == originals[p.name]:
            assert not backup.exists(), p  # the interrupted file's backup is removed
        else:
            assert backup.read_text() == originals[p.name]


# A real signal at an exact point: the CLI runs under a hook that sends it to its own process
# right after a given file is committed (os.replace onto it), or right after main() returned.
_HOOK = """
import os, signal, sys
from upgd_migrate.cli import main
when, target, sig = sys.argv.pop(1), sys.argv.pop(1), getattr(signal, sys.argv.pop(1))
real = os.replace
def replace(src, dst, *args, **kwargs):
    real(src, dst, *args, **kwargs)
    if when == "commit" and os.path.basename(dst) == target:
        os.kill(os.getpid(), sig)
os.replace = replace
code = main()
if when == "exit":
    os.kill(os.getpid(), sig)
sys.exit(code)
"""


def _hooked(when: str, target: str, sig: signal.Signals, args: list[str],
            cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _HOOK, when, target, sig.name, *args],
                          cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=120)


def _legacy_copies(folder: Path, *names: str) -> bytes:
    original = (Path(__file__).resolve().parents[2] / "fixtures" / "optim" /
                "adaptive_upgd_g1.pt").read_bytes()
    for name in names:
        (folder / name).write_bytes(original)
    return original


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("when", ["commit", "exit"])
def test_a_signal_after_the_last_commit_leaves_the_run_s_exit_code(tmp_path, sig, when):
    """Migrated, backed up and summarised: a signal after the write (or during the shutdown
    that follows the summary) must not make the exit status say "interrupted"."""
    original = _legacy_copies(tmp_path, "a.pt")
    run = _hooked(when, "a.pt", sig, ["checkpoint", "a.pt", "--in-place", "--backup", ".orig"],
                  tmp_path)
    assert run.returncode == 1, (run.returncode, run.stderr)
    lines = run.stderr.splitlines()
    late = [f"{sig.name} arrived after the results were written: not interrupted"]
    assert lines == ["1 file: 1 migrated"] + (late if when == "commit" else []), run.stderr
    assert run.stdout.startswith("a.pt: migrated (in place)")
    assert (tmp_path / "a.pt.orig").read_bytes() == original
    assert (tmp_path / "a.pt").read_bytes() != original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "a.pt.orig"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_after_one_commit_still_interrupts_the_next_file(tmp_path, sig):
    original = _legacy_copies(tmp_path, "a.pt", "b.pt")
    # --jobs 1: the hook signals the process that wrote a.pt, which only then is the one that
    # handles signals (a pool's parent does, and stops its workers: tests/api/test_pool.py)
    run = _hooked("commit", "a.pt", sig, ["checkpoint", ".", "--in-place", "--backup", ".orig",
                                          "--jobs", "1"], tmp_path)
    assert run.returncode == EXIT[sig], run.stderr
    assert run.stderr.splitlines()[-1].startswith(f"interrupted ({sig.name})")
    assert (tmp_path / "a.pt.orig").read_bytes() == original  # a: done, and kept
    assert (tmp_path / "b.pt").read_bytes() == original  # b: never begun
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "a.pt.orig", "b.pt"]
