"""The `upgd-migrate config` command: modes, messages, backups, bad files, exit codes, no torch."""
from __future__ import annotations

import codecs
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import CONFIGS, REPO
from upgd_migrate.cli import main
from upgd_migrate.commands.config import list_migrations
from upgd_migrate.legacy import MIGRATIONS
from upgd_migrate.config.lint import lint_text

GOLDEN = REPO / "tests" / "config" / "golden" / "config"
SOURCE = "sigma 0.001 (absolute) -> 0.05 (relative; the seed's default ratio)"
OLD_COMMENT = "; the line's own comment still describes the old absolute std"


@pytest.fixture
def legacy(tmp_path):
    path = tmp_path / "a.yaml"
    shutil.copy(CONFIGS / "real-legacy-layout-a.yaml", path)
    return path


def unread(path, line: int, key: str) -> str:
    return (f"{path}:{line}:5: [warning] UPG203 '{key}' is not a VGS parameter: no VGS version "
            "reads it, so VGS silently ignores it (your own trainer may read it: `config` "
            "comments it out only with --unsafe-fixes) (fix: upgd-migrate config --unsafe-fixes)\n")


def test_write_mode_rewrites_in_place_and_exits_1(legacy, capsys):
    assert main(["config", str(legacy)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"Rewriting {legacy}\n"
        f"{legacy}:7: adaptive-noise: {SOURCE}{OLD_COMMENT}\n"
        + unread(legacy, 14, "accumulation_steps") + unread(legacy, 17, "clip_threshold")
        + "1 file rewritten.\n")
    assert legacy.read_bytes() == (GOLDEN / "layout-a.out.yaml").read_bytes()


def test_unsafe_fixes_comment_out_unread_vgs_keys(legacy, capsys):
    assert main(["config", "--unsafe-fixes", str(legacy)]) == 1
    assert capsys.readouterr().err == (
        f"Rewriting {legacy}\n"
        f"{legacy}:7: adaptive-noise: {SOURCE}{OLD_COMMENT}\n"
        f"{legacy}:14: vgs-unread-keys: accumulation_steps commented out (no VGS version reads "
        "it)\n"
        f"{legacy}:17: vgs-unread-keys: clip_threshold commented out (no VGS version reads it)\n"
        "1 file rewritten.\n")
    assert legacy.read_bytes() == (GOLDEN / "layout-a-unsafe.out.yaml").read_bytes()


def test_second_run_says_already_migrated_and_writes_nothing(legacy, capsys):
    main(["config", "--unsafe-fixes", str(legacy)])
    before, stamp = legacy.read_bytes(), legacy.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["config", "--unsafe-fixes", str(legacy)]) == 0
    assert capsys.readouterr() == ("", "1 file already migrated.\n")
    assert legacy.read_bytes() == before and legacy.stat().st_mtime_ns == stamp
    assert lint_text(str(legacy), legacy.read_text()) == []


def test_second_safe_run_keeps_reporting_the_unread_keys(legacy, capsys):
    main(["config", str(legacy)])
    capsys.readouterr()
    assert main(["config", str(legacy)]) == 0
    assert capsys.readouterr().err == (unread(legacy, 14, "accumulation_steps")
                                       + unread(legacy, 17, "clip_threshold")
                                       + "1 file already migrated.\n")


def test_check_writes_nothing_and_exits_1(legacy, capsys):
    before = legacy.read_bytes()
    assert main(["config", "--check", str(legacy)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Would rewrite {legacy}\n{legacy}:7: adaptive-noise: {SOURCE}"
                          f"{OLD_COMMENT}\n")
    assert err.endswith("\n1 file would be rewritten.\n")
    assert legacy.read_bytes() == before
    assert main(["config", "--check", str(GOLDEN / "layout-a.out.yaml")]) == 0


def test_diff_prints_the_diff_and_what_it_cannot_fix(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("optimizer_class: UPGD\noptimizer_kwargs:\n  sigma: 0.001\n"
                    "  betas: [0.9, 0.999]\n")
    assert main(["config", "--diff", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == (
        f"--- {path}\t(original)\n+++ {path}\t(migrated)\n@@ -1,4 +1,5 @@\n"
        " optimizer_class: UPGD\n optimizer_kwargs:\n-  sigma: 0.001\n"
        "+  sigma: 0.05  # upgd-migrate: sigma was 0.001 (absolute), set 0.05\n"
        "+  adaptive_noise: true\n"
        "   betas: [0.9, 0.999]\n")
    assert err == (
        f"Would rewrite {path}\n"
        f"{path}:3: adaptive-noise: {SOURCE}\n"
        f"{path}:4: adaptive-noise: adaptive_noise: true added\n"
        f"{path}:5:3: [error] UPG201 'betas' is not a keyword argument of UPGD (TypeError at "
        "construction); UPGDW, adam, adamw take it\n"
        "1 file would be rewritten.\n")
    assert "adaptive_noise" not in path.read_text()


def test_what_needs_a_manual_fix_is_printed_and_left(tmp_path, capsys):
    path = tmp_path / "q.yaml"
    path.write_text("optimizer: UPGD\noptimizer_kwargs:\n  sigma: '0.001'\n")
    assert main(["config", str(path)]) == 0
    assert capsys.readouterr().err == (
        f"{path}:3: adaptive-noise: not migrated: sigma is the string '0.001', not a number; "
        "fix it by hand\n"
        f"{path}:3:10: [error] UPG301 sigma: expected a number, got the string '0.001'\n"
        "1 file needs a manual fix.\n")


def test_backup_keeps_the_original_and_is_never_overwritten(legacy, capsys):
    original = legacy.read_bytes()
    assert main(["config", "--backup", ".orig", str(legacy)]) == 1
    assert (legacy.parent / "a.yaml.orig").read_bytes() == original
    legacy.write_bytes(original)  # legacy again, while the backup exists
    capsys.readouterr()
    assert main(["config", "--backup", ".orig", str(legacy)]) == 2  # a file that cannot be migrated
    assert capsys.readouterr().err == (
        f"{legacy}: cannot migrate: backup {legacy}.orig already exists; not overwriting it, "
        "file left unchanged\n1 file cannot be migrated.\n")
    assert legacy.read_bytes() == original


def test_a_bad_file_is_reported_while_the_others_proceed(tmp_path, legacy, capsys):
    bad = tmp_path / "b.yaml"
    bad.write_text("model: [1,\n")
    assert main(["config", str(tmp_path)]) == 2  # unreadable input wins over "changed"
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"Rewriting {legacy}"
    assert err[-2:] == [
        f"{bad}:2:1: cannot migrate: not valid YAML: while parsing a flow node: expected the "
        "node content, but found '<stream end>'",
        "1 file rewritten, 1 cannot be migrated."]
    assert bad.read_text() == "model: [1,\n"


def test_unreadable_file_is_reported(tmp_path, capsys):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\0\1")
    assert main(["config", str(path)]) == 2
    assert capsys.readouterr().err == (f"{path}: cannot migrate: binary file (NUL bytes): not a "
                                       "YAML config\n1 file cannot be migrated.\n")


def test_bom_crlf_and_file_mode_survive(tmp_path):
    path = tmp_path / "crlf.yaml"
    source = (GOLDEN / "crlf.in.yaml").read_bytes()
    path.write_bytes(codecs.BOM_UTF8 + source)
    os.chmod(path, 0o640)
    assert main(["config", str(path)]) == 1
    assert path.read_bytes() == codecs.BOM_UTF8 + (GOLDEN / "crlf.out.yaml").read_bytes()
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["crlf.yaml"]  # no temp file left behind


def test_files_without_upgd_settings_are_counted_not_touched(tmp_path, capsys):
    (tmp_path / "other.yml").write_text("steps: 1e3\n")
    assert main(["config", str(tmp_path)]) == 0
    assert capsys.readouterr().err == "1 file without UPGD settings.\n"


def test_zero_paths_exit_0_silently(capsys):
    assert main(["config"]) == 0
    assert capsys.readouterr() == ("", "")


def test_sigma_ratio_is_written(legacy, capsys):
    assert main(["config", "--sigma-ratio", "5e-2", str(legacy)]) == 1
    assert "sigma: 0.05  " in legacy.read_text()
    assert "(relative; --sigma-ratio)" in capsys.readouterr().err


@pytest.mark.parametrize("ratio,warning", [
    ("0.7", "warning: --sigma-ratio 0.7 is above the plausible relative range "
            "0.01-0.5: noise 70% of the update\n"),
    ("0.005", "warning: --sigma-ratio 0.005 is below the plausible relative "
              "range 0.01-0.5: noise 0.5% of the update (written all the same; lint trusts the "
              "value config writes while it stays unedited)\n"),
])
def test_sigma_ratio_outside_the_plausible_range_is_written_with_a_warning(ratio, warning,
                                                                          legacy, capsys):
    assert main(["config", "--sigma-ratio", ratio, str(legacy)]) == 1
    assert capsys.readouterr().err.startswith(warning + f"Rewriting {legacy}\n")
    assert f"sigma: {ratio}  " in legacy.read_text()
    assert main(["lint", str(legacy)]) == 0  # the value config wrote lints clean


@pytest.mark.parametrize("args, message", [
    (["--sigma-ratio", "0"], "Invalid value for '--sigma-ratio': must be a positive number, got 0"),
    (["--sigma-ratio", "nan"], "must be a positive number, got nan"),
    (["--sigma-ratio", "5"], "Invalid value for '--sigma-ratio': 5 is a noise-to-update ratio of "
                             "500%: above 1 the noise outweighs the update (did you mean 0.05?)"),
    (["--backup", ""], "must be a non-empty file-name suffix like .bak, got ''"),
    (["--backup", ".b", "--check"], "--backup applies only when writing (not with --check or "
                                    "--diff)"),
    (["--sigma-ratio", "0.1", "--calibrate-from", str(GOLDEN / "flow.in.yaml")],
     "--sigma-ratio and --calibrate-from are alternatives; pass one"),
])
def test_usage_errors_exit_2(args, message, legacy, capsys):
    assert main(["config", *args, str(legacy)]) == 2
    assert message in capsys.readouterr().err


def test_list_migrations_is_the_registry_in_order(capsys):
    assert main(["config", "--list-migrations"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [m.id for m in MIGRATIONS]
    assert lines[0] == ("adaptive-noise        UPG101,UPG103  UPGD/AdaptiveUPGD: set "
                        "adaptive_noise: true and convert an absolute sigma to a relative ratio")


def test_docs_list_every_migration():
    section = (REPO / "docs" / "config-migration.md").read_text()
    for m in MIGRATIONS:
        assert f"| `{m.id}` | {', '.join(f'`{c}`' for c in m.fixes)} | {m.summary} |" in section
    assert list_migrations() in section


def test_config_path_never_imports_torch(legacy):
    code = ("import sys; from upgd_migrate.cli import main; rc = main(['config', '--check', "
            f"{str(legacy)!r}]); print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "False"]


def test_unchanged_lines_are_byte_identical(legacy):
    before = legacy.read_bytes().split(b"\n")
    main(["config", "--unsafe-fixes", str(legacy)])
    after = legacy.read_bytes().split(b"\n")
    changed = [i + 1 for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert len(before) == len(after) and changed == [7, 14, 17]
    assert re.search(rb"sigma: 0\.05 {18}# CRITICAL", after[6])  # comment column kept


def test_a_file_that_cannot_be_written_is_reported(legacy, capsys, monkeypatch):
    def refuse(path, data):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("upgd_migrate.config.migrate.atomic_write", refuse)
    before = legacy.read_bytes()
    assert main(["config", str(legacy)]) == 2
    assert capsys.readouterr().err == (f"{legacy}: cannot migrate: cannot write: Permission "
                                       "denied\n1 file cannot be migrated.\n")
    assert legacy.read_bytes() == before


def test_empty_yaml_is_not_commented_on(tmp_path, capsys):
    (tmp_path / "empty.yaml").write_text("")
    assert main(["config", str(tmp_path / "empty.yaml")]) == 0
    assert capsys.readouterr().err == "1 file without UPGD settings.\n"
