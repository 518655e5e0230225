from __future__ import annotations

import io
import json

import pytest

from upgd_migrate.findings import Finding, Severity
from upgd_migrate.report import REPORTERS, format_text, summary_line

F1 = Finding("cfg/a.yaml", 7, 12, "UPG101", Severity.ERROR, "sigma 0.001: 0.1% noise",
             "upgd-migrate config")
F2 = Finding("cfg/b,c.yaml", 3, 5, "UPG204", Severity.WARNING, "line\nbreak")
F3 = Finding("cfg/b,c.yaml", 4, 1, "UPG104", Severity.INFO, "transient")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def render(fmt: str, findings, files: int = 2, stream=None) -> str:
    stream = stream or io.StringIO()
    REPORTERS[fmt](findings, files, stream)
    return stream.getvalue()


def test_text_lines_and_summary():
    assert render("text", [F1, F2, F3]) == (
        "cfg/a.yaml:7:12: [error] UPG101 sigma 0.001: 0.1% noise (fix: upgd-migrate config)\n"
        "cfg/b,c.yaml:3:5: [warning] UPG204 line\nbreak\n"
        "cfg/b,c.yaml:4:1: [info] UPG104 transient\n"
        "3 findings (1 error, 1 warning, 1 info) in 2 of 2 files\n")


def test_text_is_silent_when_clean():
    assert render("text", []) == ""
    assert summary_line([F1], 1) == "1 finding (1 error, 0 warnings, 0 info) in 1 of 1 file"


def test_colour_only_on_a_tty_and_never_with_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert "\033[31merror\033[0m" in render("text", [F1], stream=Tty())
    assert "\033[" not in render("text", [F1])
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\033[" not in render("text", [F1], stream=Tty())
    assert format_text(F3, colour=True) == "cfg/b,c.yaml:4:1: [\033[36minfo\033[0m] UPG104 transient"


def test_json_is_the_documented_shape():
    assert json.loads(render("json", [F1, F3], files=5)) == {
        "version": 1,
        "command": "lint",
        "findings": [
            {"path": "cfg/a.yaml", "line": 7, "col": 12, "code": "UPG101",
             "name": "unmigrated-sigma", "severity": "error",
             "message": "sigma 0.001: 0.1% noise", "fix": "upgd-migrate config"},
            {"path": "cfg/b,c.yaml", "line": 4, "col": 1, "code": "UPG104",
             "name": "vgs-fixed-noise-adam", "severity": "info", "message": "transient",
             "fix": None}],
        "summary": {"files": 5, "files_with_findings": 2, "error": 1, "warning": 0, "info": 1},
        "exit_code": 1,
    }


def test_github_annotations_escape_data_and_properties():
    assert render("github", [F1, F2, F3]).splitlines() == [
        "::error file=cfg/a.yaml,line=7,col=12,title=UPG101 unmigrated-sigma::"
        "sigma 0.001: 0.1%25 noise (fix: upgd-migrate config)",
        "::warning file=cfg/b%2Cc.yaml,line=3,col=5,title=UPG204 vgs-version-key::line%0Abreak",
        "::notice file=cfg/b%2Cc.yaml,line=4,col=1,title=UPG104 vgs-fixed-noise-adam::transient",
    ]


def test_sarif_results_and_rules():
    log = json.loads(render("sarif", [F1, F3]))
    assert log["version"] == "2.1.0"
    run = log["runs"][0]
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} >= {"UPG101", "UPG304"}
    assert run["results"][0] == {
        "ruleId": "UPG101", "level": "error",
        "message": {"text": "sigma 0.001: 0.1% noise (fix: upgd-migrate config)"},
        "locations": [{"physicalLocation": {"artifactLocation": {"uri": "cfg/a.yaml"},
                                            "region": {"startLine": 7, "startColumn": 12}}}]}
    assert run["results"][1]["level"] == "note"


@pytest.mark.parametrize("fmt", sorted(REPORTERS))
def test_every_reporter_handles_no_findings(fmt):
    out = render(fmt, [])
    if fmt in ("text", "github"):
        assert out == ""
    else:
        assert json.loads(out)["version"] in (1, "2.1.0")
