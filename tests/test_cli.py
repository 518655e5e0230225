from __future__ import annotations

import json
import subprocess
import sys

import pytest

from upgd_migrate import __version__
from upgd_migrate.cli import json_command, main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_unknown_command_is_usage_error(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_python_dash_m_and_no_torch_on_import():
    code = "import sys, upgd_migrate, upgd_migrate.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    rc = subprocess.run([sys.executable, "-m", "upgd_migrate", "--help"], capture_output=True, text=True)
    assert rc.returncode == 0 and "Exit codes" in rc.stdout


@pytest.mark.parametrize("args,command,error", [
    (["lint", "--format", "json", "{tmp}/nope.yaml"], "lint",
     "Invalid value for '[PATHS]...': Path '{tmp}/nope.yaml' does not exist."),
    (["config", "--format=json", "--sigma-ratio", "5"], "config",
     "Invalid value for '--sigma-ratio': 5 is a noise-to-update ratio of 500%: above 1 the "
     "noise outweighs the update (did you mean 0.05?)"),
    (["schema", "--format", "json", "--no-such-option"], "schema",
     "No such option '--no-such-option'."),
    (["checkpoint", "{tmp}/a.pt", "--format", "json"], "checkpoint",
     "say where to write: -o OUT or --in-place (or --check / --diff to only report)"),
    (["checkpoint", "inspect", "{tmp}", "--format", "json"], "checkpoint inspect",
     "{tmp}: no checkpoints found (no torch file, stable-baselines3 zip or DCP folder)"),
    (["verify", "--format", "json", "--steps", "0", "{tmp}/a.pt"], "verify",
     "Invalid value for '--steps': 0 is not in the range 1<=x<=10000."),
])
def test_a_json_caller_gets_the_envelope_for_a_usage_error(tmp_path, capsys, args, command,
                                                            error):
    args = [a.format(tmp=tmp_path) for a in args]
    assert main(args) == 2
    out = capsys.readouterr()
    assert json.loads(out.out) == {"version": 1, "command": command,
                                   "error": error.format(tmp=tmp_path),
                                   "summary": {"files": 0, "errors": 1}, "exit_code": 2}
    assert error.format(tmp=tmp_path) in out.err  # the plain line stays, on stderr


@pytest.mark.parametrize("args", [["lint", "--format", "text", "x.yaml"],
                                  ["nope", "--format", "json"], ["verify", "--plot", "json"],
                                  ["lint", "--format", "sarif"]])
def test_only_a_known_command_asked_for_json_gets_it(args):
    assert json_command(args) is None
