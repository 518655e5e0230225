"""The `upgd-migrate lint` command: exit codes, formats, options, rule list, no torch."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import CONFIGS, REPO
from upgd_migrate.cli import main
from upgd_migrate.commands.lint import list_rules
from upgd_migrate.config.rules import RULES

BAD = str(CONFIGS / "real-legacy-layout-a.yaml")
GOOD = str(CONFIGS / "migrated.yaml")


@pytest.fixture
def warn_only(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("optimizer_class: UPGD\noptimizer_kwargs:\n  sigma: 0.05\n")
    return str(path)


def test_clean_file_exits_0_silently(capsys):
    assert main(["lint", GOOD]) == 0
    assert capsys.readouterr().out == ""


def test_zero_paths_exit_0(capsys):
    assert main(["lint"]) == 0
    assert capsys.readouterr().out == ""


def test_errors_exit_1_with_exact_output(capsys):
    assert main(["lint", BAD]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"{BAD}:7:12: [error] UPG101 sigma 0.001 with adaptive_noise: true is below the "
        "plausible relative range 0.01-0.5: an absolute noise std left from before adaptive "
        "noise (0.1% noise as a ratio) (fix: upgd-migrate config)")
    assert out[-1] == "3 findings (1 error, 2 warnings, 0 info) in 1 of 1 file"


def test_warnings_fail_only_with_strict(warn_only):
    assert main(["lint", warn_only]) == 0
    assert main(["lint", "--strict", warn_only]) == 1
    assert main(["lint", "--strict", "--exit-zero", warn_only]) == 0
    assert main(["lint", "--exit-zero", BAD]) == 0


@pytest.mark.parametrize("args", [
    ["lint", "no/such/file.yaml"],
    ["lint", "--format", "xml", GOOD],
    ["lint", "--relative-sigma", "0.5", GOOD],
    ["lint", "--relative-sigma", "0.5:0.1", GOOD],
    ["lint", "--absolute-sigma-max", "adam=0.1", GOOD],
    ["lint", "--absolute-sigma-max", "UPGD=high", GOOD],
    ["lint", "--vgs-version", "4.0", GOOD],
])
def test_usage_errors_exit_2(args, capsys):
    assert main(args) == 2
    assert "Error" in capsys.readouterr().err


def test_sigma_options_change_the_verdict(warn_only, capsys):
    assert main(["lint", "--strict", "--absolute-sigma-max", "UPGD=0.1", warn_only]) == 0
    assert main(["lint", "--relative-sigma", "0.0001:0.5", BAD]) == 0  # warnings only left
    assert "UPG101" not in capsys.readouterr().out


def test_json_format_via_cli(capsys):
    assert main(["lint", "--format", "json", str(CONFIGS)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["summary"] == {"files": 4, "files_with_findings": 3, "error": 4,
                                 "warning": 5, "info": 0}


def test_list_rules_matches_registry_and_docs(capsys):
    assert main(["lint", "--list-rules"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(RULES)
    docs = (REPO / "docs" / "lint.md").read_text()
    rows = re.findall(r"^\| `(UPG\d{3})` \| (\w+) \| `([\w-]+)` \| (.+) \|$", docs, re.M)
    assert [(c, s, n, d) for c, s, n, d in rows] == [
        (r.code, r.severity.value, r.name, r.summary + (f" (fix: `{r.fix}`)" if r.fix else ""))
        for r in RULES.values()]
    assert list_rules().splitlines() == lines


def test_lint_never_imports_torch_or_pydantic():
    code = ("import sys; from upgd_migrate.cli import main; rc = main(['lint', sys.argv[1]]); "
            "print(rc, sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'pydantic'}))")
    out = subprocess.run([sys.executable, "-c", code, BAD], capture_output=True, text=True,
                         check=True)
    assert out.stdout.splitlines()[-1] == "1 []"


def test_console_script_runs(tmp_path):
    rc = subprocess.run([sys.executable, "-m", "upgd_migrate", "lint", GOOD],
                        capture_output=True, text=True)
    assert (rc.returncode, rc.stdout, rc.stderr) == (0, "", "")
