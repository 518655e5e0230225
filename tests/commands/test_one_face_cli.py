"""One face across commands: a JSON envelope, help with examples, no torch, no NumPy noise."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from upgd_migrate.cli import main

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "fixtures"
G1 = FIX / "optim" / "adaptive_upgd_g1.pt"
LEGACY_YAML = FIX / "configs" / "seed-layout-b.yaml"
TORCH_COMMANDS = [["checkpoint", str(G1), "-o", "out.pt"], ["checkpoint", "inspect", str(G1)],
                  ["verify", str(G1)]]


def _run_hiding(module: str, source: str, args: list[str], tmp_path: Path):
    """The real CLI in a subprocess where ``import MODULE`` fails as if not installed."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / f"{module}.py").write_text(source)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), str(ROOT)])}
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run([sys.executable, "-m", "upgd_migrate", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", TORCH_COMMANDS, ids=["checkpoint", "inspect", "verify"])
def test_without_torch_one_line_and_exit_2(args, tmp_path):
    done = _run_hiding("torch", "raise ModuleNotFoundError(\"No module named 'torch'\", "
                                "name='torch')\n", args, tmp_path)
    assert done.returncode == 2
    command = " ".join(a for a in args[:2] if not a.startswith("/"))
    assert done.stderr == (f"error: upgd-migrate {command} needs torch: "
                           "pip install 'upgd-migrate[torch]'\n")
    assert done.stdout == "" and not (tmp_path / "out.pt").exists()


def test_without_numpy_no_numpy_warning(tmp_path):
    done = _run_hiding("numpy", "raise ModuleNotFoundError(\"No module named 'numpy'\", "
                                "name='numpy')\n", ["checkpoint", "inspect", str(G1)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "NumPy" not in done.stderr and done.stderr == ""


def test_the_torch_extra_brings_numpy():
    text = (ROOT / "pyproject.toml").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("torch = ["))
    assert '"numpy>=' in line


def _json(args: list[str], capsys) -> tuple[int, dict]:
    code = main([*args, "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("args,command,key", [
    (["lint", str(LEGACY_YAML)], "lint", "findings"),
    (["config", "--check", str(LEGACY_YAML)], "config", "files"),
    (["checkpoint", str(G1), "--check"], "checkpoint", "files"),
    (["checkpoint", "inspect", str(G1)], "checkpoint inspect", "files"),
    (["verify", str(G1)], "verify", "files"),
    (["schema", "--check", "--output-dir", str(ROOT / "schemas")], "schema", "files"),
])
def test_one_json_envelope(args, command, key, capsys):
    code, doc = _json(args, capsys)
    assert list(doc)[:2] == ["version", "command"] and list(doc)[-1] == "exit_code"
    assert doc["version"] == 1 and doc["command"] == command
    assert key in doc and "summary" in doc and doc["exit_code"] == code


def test_config_json_says_what_each_file_would_get(capsys):
    code, doc = _json(["config", "--diff", str(LEGACY_YAML)], capsys)
    assert code == 1 and doc["mode"] == "diff"
    (entry,) = doc["files"]
    assert entry["path"] == str(LEGACY_YAML) and entry["status"] == "would be rewritten"
    assert entry["diff"].startswith("---") and entry["messages"]


@pytest.mark.parametrize("command", [["lint"], ["config"], ["schema"], ["checkpoint"],
                                     ["checkpoint", "migrate"], ["checkpoint", "inspect"],
                                     ["verify"]])
def test_every_help_has_examples(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    examples = out.split("Examples:")[1].split("\n\n")[0].splitlines()[1:]
    assert 2 <= len([ln for ln in examples if ln.strip().startswith("upgd-migrate ")]) <= 3


def test_checkpoint_help_shows_the_migrate_options(capsys):
    assert main(["checkpoint", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("-o, --output", "--in-place", "--backup", "--check", "--diff",
                   "--sigma-ratio", "--verify"):
        assert option in out


def test_check_and_diff_mean_the_same_on_config_and_checkpoint(capsys):
    helps = {}
    for command in (["config"], ["checkpoint", "migrate"]):
        main([*command, "--help"])
        helps[command[0]] = " ".join(capsys.readouterr().out.split())
    for text in helps.values():
        assert "--check Write nothing; exit 1 if a file needs changes." in text
        options = text.split("Options")[-1]
        assert "Write nothing; print" in options.split("--diff")[1][:40]


def test_config_help_exit_codes_match_the_readme_table(capsys):
    main(["config", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0 nothing to change, 1 files changed (or would, with --check/--diff)" in text
    assert "2 usage error or a file that could not be read, parsed, written or backed up" in text


def test_a_lone_v1_vgs_state_gets_one_verdict_from_every_command(tmp_path, capsys):
    """It needs migrating (its 3.2 layout has no statistics yet): check, diff and inspect say
    so, verify fails it until it is migrated, and after migration all of them pass."""
    v1, out = FIX / "vgs" / "vgs_v1.pt", tmp_path / "v.pt"
    assert main(["checkpoint", str(v1), "--check"]) == 1
    assert capsys.readouterr().out == f"{v1}: would migrate (VGS state)\n"
    assert main(["checkpoint", str(v1), "--diff"]) == 1
    assert "  (whole file): VarianceGradientScaler v1: vgs.upgrade-3.2\n" in capsys.readouterr().out
    assert main(["checkpoint", "inspect", str(v1)]) == 0
    assert "  (whole file): VarianceGradientScaler v1 -> vgs.upgrade-3.2\n" in \
        capsys.readouterr().out
    assert main(["verify", str(v1)]) == 1
    assert ("  (whole file): loads: a v1 state, without per-parameter statistics: migrate it "
            "first (upgd-migrate checkpoint)\n") in capsys.readouterr().out
    assert main(["checkpoint", str(v1), "-o", str(out)]) == 1
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    assert main(["checkpoint", str(out), "--check"]) == 0
