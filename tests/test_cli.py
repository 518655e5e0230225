from __future__ import annotations

import subprocess
import sys

from upgd_migrate import __version__
from upgd_migrate.cli import main


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
