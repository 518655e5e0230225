"""migrate_text: golden input/expected pairs, exact change logs, idempotence, the Report."""
from __future__ import annotations

import os
import pathlib

import pytest

from upgd_migrate.config.lint import lint_text
from upgd_migrate.config.migrate import MigrateError, Mode, Report, migrate_text, unified_diff
from upgd_migrate.config.migrations import SigmaPolicy

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden" / "config"
CASES = sorted(p.name[:-len(".in.yaml")] for p in GOLDEN.glob("*.in.yaml"))
# UPGD_UPDATE_GOLDEN=1 pytest tests/test_migrate_config.py rewrites the expected files; review
# the diff before committing them.
UPDATE = os.environ.get("UPGD_UPDATE_GOLDEN") == "1"


def read(path: pathlib.Path) -> str:
    return path.read_bytes().decode("utf-8")  # no newline translation: CRLF must survive


def log_of(migrated) -> str:
    return "".join([f"{line}: {c.migration}: {c.message}\n" for line, c in migrated.changes]
                   + [f"{line}: {s.migration}: not migrated: {s.reason}\n"
                      for line, s in migrated.skips])


def migrate_case(case: str, text: str):
    """Cases named ``*-unsafe`` run with --unsafe-fixes; the others as `config` runs by default."""
    return migrate_text(text, unsafe_fixes=case.endswith("-unsafe"))


@pytest.mark.parametrize("case", CASES)
def test_golden(case):
    source = read(GOLDEN / f"{case}.in.yaml")
    migrated = migrate_case(case, source)
    expected_text, expected_log = GOLDEN / f"{case}.out.yaml", GOLDEN / f"{case}.log"
    if UPDATE:
        expected_text.write_bytes(migrated.text.encode("utf-8"))
        expected_log.write_bytes(log_of(migrated).encode("utf-8"))
    assert migrated.text == read(expected_text)
    assert log_of(migrated) == read(expected_log)


@pytest.mark.parametrize("case", CASES)
def test_golden_output_is_already_migrated(case):
    migrated = migrate_case(case, read(GOLDEN / f"{case}.out.yaml"))
    assert migrated.text == read(GOLDEN / f"{case}.out.yaml")
    assert migrated.changes == []


def test_golden_covers_the_acceptance_list():
    assert {"layout-a", "layout-b", "layout-c", "multi-document", "indent-4", "flow", "quoted",
            "crlf"} <= set(CASES)
    assert b"\r\n" in (GOLDEN / "crlf.out.yaml").read_bytes()
    assert b"\n" not in (GOLDEN / "crlf.out.yaml").read_bytes().replace(b"\r\n", b"")


@pytest.mark.parametrize("case", CASES)
def test_golden_output_has_no_noise_finding_left(case):
    codes = {f.code for f in lint_text("x.yaml", read(GOLDEN / f"{case}.out.yaml"))}
    assert not codes & {"UPG101", "UPG102", "UPG103", "UPG105", "UPG304"}


def test_invalid_yaml_is_an_error_with_its_position():
    with pytest.raises(MigrateError) as e:
        migrate_text("a: [1,\n")
    assert (e.value.line, e.value.col, e.value.message) == (
        2, 1, "not valid YAML: while parsing a flow node: expected the node content, but found "
        "'<stream end>'")


def test_duplicate_key_is_refused():
    with pytest.raises(MigrateError, match="duplicate key 'sigma': loaders disagree"):
        migrate_text("optimizer_kwargs:\n  sigma: 0.001\n  sigma: 0.002\n")


def test_sigma_ratio_policy_and_its_source():
    migrated = migrate_text("optimizer: UPGD\noptimizer_kwargs:\n  sigma: 0.001\n",
                            SigmaPolicy(0.1, "--sigma-ratio"))
    assert migrated.text == ("optimizer: UPGD\noptimizer_kwargs:\n  sigma: 0.1  # upgd-migrate: "
                             "sigma was 0.001 (absolute), set 0.1\n  adaptive_noise: true\n")
    assert migrated.changes[0][1].message == \
        "sigma 0.001 (absolute) -> 0.1 (relative; --sigma-ratio)"


def test_a_marked_sigma_below_the_range_is_left_alone_and_lint_still_checks_it():
    text = "optimizer: UPGD\noptimizer_kwargs:\n  sigma: 0.005  # upgd-migrate: sigma was 0.001 " \
           "(absolute)\n  adaptive_noise: true\n"
    assert migrate_text(text).text == text  # never converted twice
    marked = lint_text("x.yaml", text)
    assert [(f.code, f.fix) for f in marked] == [("UPG101", None)]
    assert "(an older marker that does not record it), so it is checked like any other: set " \
        "a relative ratio by hand" in marked[0].message
    trusted = text.replace("(absolute)", "(absolute), set 0.005")  # the value config wrote
    assert migrate_text(trusted).text == trusted and lint_text("x.yaml", trusted) == []
    unmarked = text.replace("  # upgd-migrate: sigma was 0.001 (absolute)", "")
    assert [(f.code, f.fix) for f in lint_text("x.yaml", unmarked)] == [
        ("UPG101", "upgd-migrate config")]
    silenced = text.replace("(absolute)", "(absolute)  # upgd-migrate: disable=UPG101")
    assert migrate_text(silenced).text == silenced and lint_text("x.yaml", silenced) == []


def test_a_ratio_calibrated_from_adam_moments_is_not_written_into_upgd():
    policy = SigmaPolicy(0.02, "calibrated from c.pt", only_for=("AdaptiveUPGD",))
    migrated = migrate_text("optimizer: upgd\noptimizer_kwargs:\n  sigma: 0.001\n", policy)
    assert migrated.changes == []
    assert [(line, s.reason) for line, s in migrated.skips] == [
        (3, "UPGD adds noise to the raw gradient: a ratio calibrated from c.pt does not apply; "
            "pass --sigma-ratio")]


def test_small_ratios_are_written_as_floats_for_both_yaml_versions():
    migrated = migrate_text("optimizer: UPGD\noptimizer_kwargs: {sigma: 0.001}\n",
                            SigmaPolicy(2.5e-5, "--sigma-ratio"))
    assert "{sigma: 2.5e-05, adaptive_noise: true}" in migrated.text


def test_unified_diff_keeps_crlf_and_marks_a_missing_final_newline():
    assert unified_diff("c.yaml", "a: 1\r\nb: 2", "a: 1\r\nb: 3") == (
        "--- c.yaml\t(original)\n+++ c.yaml\t(migrated)\n@@ -1,2 +1,2 @@\n a: 1\r\n-b: 2\n"
        "\\ No newline at end of file\n+b: 3\n\\ No newline at end of file\n")


@pytest.mark.parametrize("counts, mode, expected", [
    ({}, Mode.WRITE, ""),
    ({"changed": 1}, Mode.WRITE, "1 file rewritten."),
    ({"changed": 2, "already": 1}, Mode.CHECK, "2 files would be rewritten, 1 already migrated."),
    ({"already": 1}, Mode.WRITE, "1 file already migrated."),
    ({"unrelated": 3, "manual": 1, "failed": 2}, Mode.DIFF,
     "3 files without UPGD settings, 1 needs a manual fix, 2 cannot be migrated."),
])
def test_report_summary(counts, mode, expected):
    report = Report(mode, **counts)
    assert report.summary() == expected
    assert report.exit_code == (2 if counts.get("failed") else 1 if counts.get("changed") else 0)


def test_a_sigma_whose_unmigrated_finding_is_disabled_is_kept_as_chosen():
    text = "optimizer: UPGD\noptimizer_kwargs:\n  sigma: 0.002  # upgd-migrate: disable=UPG101\n" \
           "  adaptive_noise: true\n"
    assert migrate_text(text).text == text
    off = text.replace("true", "false")  # then it was an absolute std after all: convert it
    assert "sigma: 0.05   # upgd-migrate: disable=UPG101  # upgd-migrate: sigma was 0.002" \
        in migrate_text(off).text


def test_a_block_without_room_for_adaptive_noise_is_left_whole():
    # sigma made relative while adaptive_noise stays off would be read as absolute
    text = "optimizer: UPGD\noptimizer_kwargs:\n  sigma:\n    0.001\n"
    migrated = migrate_text(text)
    assert migrated.text == text and migrated.changes == []
    assert [(line, s.reason) for line, s in migrated.skips] == [
        (3, "no single-line entry in optimizer_kwargs to add adaptive_noise after; add it by hand")]


def test_values_merged_from_an_anchor_are_migrated_where_the_anchor_is():
    text = ("base: &b\n  sigma: 0.001\nx:\n  optimizer_class: UPGD\n  optimizer_kwargs:\n"
            "    <<: *b\n    lr: 1.0e-4\n")
    migrated = migrate_text(text)
    assert migrated.text == text
    assert [s.reason for _, s in migrated.skips] == [
        "sigma comes from a merged anchor (<<); migrate it where the anchor is defined"]


@pytest.mark.parametrize("sigma, reason", [
    ("*s", "sigma is written with an anchor, alias or tag; fix it by hand"),
    ("!!float 0.001", "sigma is written with an anchor, alias or tag; fix it by hand"),
    ("&t 0.001", "sigma is written with an anchor, alias or tag; fix it by hand"),
    ("{x: 1}", "sigma is a mapping, not a number; fix it by hand"),
])
def test_values_that_cannot_be_replaced_in_place_are_left(sigma, reason):
    text = f"a: &s 0.001\noptimizer: UPGD\noptimizer_kwargs:\n  sigma: {sigma}\n"
    migrated = migrate_text(text)
    assert migrated.text == text and [s.reason for _, s in migrated.skips] == [reason]


def test_odd_instant_noise_scale_values_are_left():
    base = "optimizer: AdaptiveUPGD\noptimizer_kwargs:\n  sigma: 0.05\n  adaptive_noise: true\n" \
           "  instant_noise_scale: {}\nvgs:\n  enabled: true\n"
    for odd in ("{a: 1}", "'no'", "!!bool false"):
        text = base.format(odd)
        migrated = migrate_text(text)
        assert migrated.text == text
    assert [s.reason for _, s in migrate_text(base.format("!!bool false")).skips] == [
        "instant_noise_scale is written with an anchor, alias or tag; fix it by hand"]


def test_an_anchored_yaml11_number_keeps_its_anchor():
    text = "optimizer: UPGD\noptimizer_kwargs:\n  sigma: 0.05\n  adaptive_noise: true\n" \
           "  min_noise_std: &m 1e-6\n"
    migrated = migrate_text(text)
    assert migrated.text == text
    assert [s.reason for _, s in migrated.skips] == [
        "1e-6 carries an anchor or tag; write 1.0e-6 by hand"]


SETTLED = "optimizer: AdaptiveUPGD\noptimizer_kwargs:\n  sigma: {}  # upgd-migrate: sigma was " \
          "0.001 (absolute), set {}\n  adaptive_noise: true\n"


def test_calibrate_from_settles_a_value_config_wrote_and_leaves_an_edited_one():
    run = SigmaPolicy(0.00461, "calibrated from run.zip", settles=True)
    settled = migrate_text(SETTLED.format("0.05", "0.05"), run)
    # the comment keeps its column where it can (one space at least)
    assert settled.text == SETTLED.format("0.00461", "0.00461").replace("1  #", "1 #", 1)
    assert settled.changes[0][1].message == ("sigma 0.05 (relative, as config wrote it) -> "
                                             "0.00461 (relative; calibrated from run.zip)")
    assert migrate_text(settled.text, run).text == settled.text  # settled once
    edited = SETTLED.format("0.02", "0.05")
    kept = migrate_text(edited, run)
    assert kept.text == edited and "it was edited after config wrote 0.05" in kept.skips[0][1].reason
    older = "optimizer: AdaptiveUPGD\noptimizer_kwargs:\n  sigma: 0.05  # upgd-migrate: sigma " \
            "was 0.001 (absolute)\n  adaptive_noise: true\n"
    assert migrate_text(older, run).text == older
    # --sigma-ratio never settles: as a hook argument it would undo a calibration each commit
    ratio = SigmaPolicy(0.05, "--sigma-ratio")
    assert migrate_text(SETTLED.format("0.00461", "0.00461"), ratio).text == \
        SETTLED.format("0.00461", "0.00461")
