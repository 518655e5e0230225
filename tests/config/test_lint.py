"""Golden tests: every rule fires at the exact line and column, and stays silent when fixed."""
from __future__ import annotations

import pytest

from conftest import CONFIGS, run_lint
from upgd_migrate.config.lint import lint_file, lint_paths, lint_text
from upgd_migrate.config.rules import RULES, LintOptions

A_HEAD = "model:\n  optimizer_class: {cls}\n  optimizer_kwargs:\n"


def layout_a(cls: str, kwargs: str, vgs: str = "") -> str:
    """A layout (a) config; kwargs start on line 4, the vgs block (if any) right after."""
    body = A_HEAD.format(cls=cls) + "".join(f"    {line}\n" for line in kwargs.split(";"))
    if vgs:
        body += "  vgs:\n" + "".join(f"    {line}\n" for line in vgs.split(";"))
    return body


# code -> (positive config, expected findings). Messages are pinned exactly.
POSITIVE = {
    "UPG101": (layout_a("AdaptiveUPGD", "adaptive_noise: true;sigma: 0.001"), [
        "5:12 UPG101 sigma 0.001 with adaptive_noise: true is below the plausible relative range "
        "0.01-0.5: an absolute noise std left from before adaptive noise (0.1% noise as a ratio)"]),
    "UPG102": (layout_a("UPGDW", "sigma: 0.05"), [
        "4:12 UPG102 sigma 0.05 with adaptive_noise off is above the plausible absolute range for "
        "UPGDW (up to 0.01): a relative ratio read as an absolute noise std"]),
    "UPG103": (layout_a("UPGD", "sigma: 0.001", "enabled: true;min_scaling_factor: 0.2"), [
        "2:20 UPG103 VGS with fixed noise on UPGD: VGS scales gradients down to "
        "min_scaling_factor 0.2 while the noise std stays fixed, so noise grows up to 5x "
        "relative to the update; set adaptive_noise: true with a relative sigma"]),
    "UPG104": (layout_a("AdaptiveUPGD", "adaptive_noise: false", "alpha: 0.1"), [
        "4:21 UPG104 VGS with fixed noise on AdaptiveUPGD: the Adam direction absorbs a steady "
        "VGS factor, but after a drop the noise runs up to 10x too large while the second "
        "moment catches up; consider adaptive_noise: true"]),
    "UPG105": (layout_a("AdaptiveUPGD", "sigma: 0.05;adaptive_noise: true;"
                        "instant_noise_scale: false;noise_beta: 0.99", "enabled: true"), [
        "6:26 UPG105 VGS with adaptive_noise and instant_noise_scale: false: the noise scale is "
        "an EMA (noise_beta 0.99, about 100 steps) that lags VGS changes, so after a drop the "
        "noise runs up to 10x too large; set instant_noise_scale: true"]),
    "UPG106": (layout_a("UPGD", "adaptive_noise: true;sigma: 0.7"), [
        "5:12 UPG106 sigma 0.7 with adaptive_noise: true is above the plausible relative range "
        "0.01-0.5: noise 70% of the update"]),
    "UPG107": (layout_a("AdaptiveUPGD", "adaptive_noise: true;sigma: 5.0"), [
        "5:12 UPG107 sigma 5.0 with adaptive_noise: true is a noise-to-update ratio of 500%: "
        "above 1 the noise outweighs the update (did you mean 0.05?)"]),
    "UPG201": (layout_a("UPGDW", "adaptive_noise: true"), [
        "4:5 UPG201 'adaptive_noise' is not a keyword argument of UPGDW (TypeError at "
        "construction); UPGD, AdaptiveUPGD take it"]),
    "UPG202": (layout_a("AdaptiveUPGD", "sigmma: 0.05"), [
        "4:5 UPG202 unknown optimizer_kwargs key 'sigmma' for AdaptiveUPGD (did you mean "
        "'sigma'?)"]),
    "UPG203": (layout_a("adam", "lr: 0.001", "accumulation_steps: 4"), [
        "6:5 UPG203 'accumulation_steps' is not a VGS parameter: no VGS version reads it, so VGS "
        "silently ignores it (your own trainer may read it: `config` comments it out only with "
        "--unsafe-fixes)"]),
    "UPG301": (layout_a("AdaptiveUPGD", "adaptive_noise: yes"), [
        "4:21 UPG301 adaptive_noise: expected true or false, got the string 'yes'"]),
    "UPG302": (layout_a("AdaptiveUPGD", "beta2: 1.5"), [
        "4:12 UPG302 beta2: 1.5 is out of range (must be >= 0 and < 1)"]),
    "UPG303": (layout_a("AdaptivUPGD", "lr: 0.001"), [
        "2:20 UPG303 unknown optimizer 'AdaptivUPGD' (did you mean 'AdaptiveUPGD'?); known: "
        "UPGD, AdaptiveUPGD, UPGDW, adam, adamw, sgd"]),
    "UPG304": (layout_a("sgd", "lr: 3e-4"), [
        "4:9 UPG304 3e-4 is read as the string '3e-4' by PyYAML (YAML 1.1); write 3.0e-4"]),
    "UPG305": (layout_a("AdaptiveUPGD", "noise_sync: off"), [
        '4:17 UPG305 off is read as the boolean False by PyYAML (YAML 1.1); write "off"']),
}

# code -> the positive example corrected: no finding at all.
NEGATIVE = {
    "UPG101": layout_a("AdaptiveUPGD", "adaptive_noise: true;sigma: 0.05"),
    "UPG102": layout_a("UPGDW", "sigma: 0.005"),
    "UPG103": layout_a("UPGD", "sigma: 0.05;adaptive_noise: true", "min_scaling_factor: 0.2"),
    "UPG104": layout_a("AdaptiveUPGD", "adaptive_noise: true;sigma: 0.1", "alpha: 0.1"),
    "UPG105": layout_a("AdaptiveUPGD", "sigma: 0.05;adaptive_noise: true;"
                       "instant_noise_scale: true;noise_beta: 0.99", "enabled: true"),
    "UPG106": layout_a("UPGD", "adaptive_noise: true;sigma: 0.5"),
    "UPG107": layout_a("AdaptiveUPGD", "adaptive_noise: true;sigma: 0.05"),
    "UPG201": layout_a("AdaptiveUPGD", "adaptive_noise: false"),
    "UPG202": layout_a("AdaptiveUPGD", "sigma: 0.005"),
    "UPG203": layout_a("adam", "lr: 0.001", "warmup_steps: 4"),
    "UPG301": layout_a("AdaptiveUPGD", "adaptive_noise: false"),
    "UPG302": layout_a("AdaptiveUPGD", "beta2: 0.5"),
    "UPG303": layout_a("adaptive_upgd", "lr: 0.001"),
    "UPG304": layout_a("sgd", "lr: 3.0e-4"),
    "UPG305": layout_a("AdaptiveUPGD", "noise_sync: \"off\""),
}


@pytest.mark.parametrize("code", sorted(POSITIVE))
def test_rule_fires_at_exact_position(code):
    text, expected = POSITIVE[code]
    assert run_lint(text) == expected


@pytest.mark.parametrize("code", sorted(NEGATIVE))
def test_rule_silent_when_fixed(code):
    assert run_lint(NEGATIVE[code]) == []


def test_every_config_rule_has_a_golden_pair():
    file_level = {"UPG001", "UPG002", "UPG003", "UPG004", "UPG204"}  # tested below
    assert set(POSITIVE) == set(NEGATIVE) == set(RULES) - file_level


def test_real_config_4a_yields_unmigrated_sigma_and_two_ignored_vgs_keys():
    findings = lint_file(str(CONFIGS / "real-legacy-layout-a.yaml"))
    assert [(f.line, f.col, f.code) for f in findings] == [
        (7, 12, "UPG101"), (14, 5, "UPG203"), (17, 5, "UPG203")]
    assert [f.message for f in findings[1:]] == [
        f"'{key}' is not a VGS parameter: no VGS version reads it, so VGS silently ignores it "
        "(your own trainer may read it: `config` comments it out only with --unsafe-fixes)"
        for key in ("accumulation_steps", "clip_threshold")]
    assert [f.fix for f in findings] == ["upgd-migrate config"] + \
        ["upgd-migrate config --unsafe-fixes"] * 2


def test_vgs_version_key_fires_only_below_its_version():
    text = layout_a("adam", "lr: 0.001", "alpha: 0.1;variance_cap: null")
    assert run_lint(text) == []
    assert run_lint(text, LintOptions(vgs_version="3.1")) == [
        "7:5 UPG204 'variance_cap' is read only by VGS 3.2 and later; VGS 3.1 (--vgs-version) "
        "ignores it"]


def test_unmigrated_default_sigma_points_at_adaptive_noise():
    assert run_lint(layout_a("UPGD", "adaptive_noise: true")) == [
        "4:21 UPG101 adaptive_noise: true leaves sigma at its default 0.001, below the plausible "
        "relative range 0.01-0.5: the absolute default, 0.1% noise as a ratio"]


def test_sigma_ranges_are_configurable():
    text = layout_a("AdaptiveUPGD", "adaptive_noise: true;sigma: 0.005")
    assert [f.split()[1] for f in run_lint(text)] == ["UPG101"]
    assert run_lint(text, LintOptions(relative_sigma=(0.001, 0.5))) == []
    wide = layout_a("UPGD", "sigma: 0.05")
    assert [f.split()[1] for f in run_lint(wide)] == ["UPG102"]
    assert run_lint(wide, LintOptions(absolute_sigma_max={"UPGD": 0.1})) == []


def test_vgs_switched_off_silences_interaction_rules():
    assert run_lint(layout_a("UPGD", "sigma: 0.001", "enabled: false")) == []


@pytest.mark.parametrize("code,line", [("UPG101", "sigma: 0.001  # upgd-migrate: disable=UPG101"),
                                       ("UPG101", "sigma: 0.001  # upgd-migrate: disable=unmigrated-sigma"),
                                       ("UPG101", "sigma: 0.001  # upgd-migrate: disable=UPG999, all")])
def test_suppression_comment_on_the_offending_line(code, line):
    assert run_lint(layout_a("AdaptiveUPGD", f"adaptive_noise: true;{line}")) == []


def test_suppression_of_another_code_keeps_the_finding():
    text = layout_a("AdaptiveUPGD", "adaptive_noise: true;sigma: 0.001  # upgd-migrate: disable=UPG203")
    assert [f.split()[1] for f in run_lint(text)] == ["UPG101"]


def test_bundled_fixtures_findings():
    result = lint_paths([str(CONFIGS)])
    got = sorted((f.path.rsplit("/", 1)[1], f.line, f.col, f.code) for f in result.findings)
    assert result.files == 4
    assert got == [
        ("flat-trainer-kwargs-c.yaml", 4, 20, "UPG103"),
        ("flat-trainer-kwargs-c.yaml", 7, 12, "UPG102"),
        ("flat-trainer-kwargs-c.yaml", 8, 5, "UPG201"),
        ("real-legacy-layout-a.yaml", 7, 12, "UPG101"),
        ("real-legacy-layout-a.yaml", 14, 5, "UPG203"),
        ("real-legacy-layout-a.yaml", 17, 5, "UPG203"),
        ("seed-layout-b.yaml", 5, 10, "UPG101"),
        ("seed-layout-b.yaml", 8, 18, "UPG304"),
        ("seed-layout-b.yaml", 9, 24, "UPG105"),
    ]


def test_migrated_sigma_marker_silences_only_the_absolute_reading():
    marked = """\
        optimizer: UPGDW
        optimizer_kwargs:
          sigma: 0.05  # upgd-migrate: sigma was 0.001 (absolute)
          betas: 0.9  # upgd-migrate: sigma was 0.001 (absolute)
        """
    assert [f.split()[1] for f in run_lint(marked)] == ["UPG301"]
    assert [f.split()[1] for f in run_lint(marked.replace("upgd-migrate: sigma", "sigma"))] == \
        ["UPG102", "UPG301"]


MARKED = "sigma: {}  # CRITICAL: Gaussian noise std  # upgd-migrate: sigma was 0.001 (absolute)"


def test_a_marked_sigma_edited_back_to_an_absolute_value_is_flagged():
    findings = lint_text("x.yaml", layout_a("AdaptiveUPGD", "adaptive_noise: true;"
                                            + MARKED.format("0.001")))
    assert [(f.line, f.code, f.fix) for f in findings] == [(5, "UPG101", None)]
    assert findings[0].message.endswith(
        "(0.1% noise as a ratio); this line was migrated once (its `# upgd-migrate: sigma was` "
        "marker) and the value is not the one `config` wrote (an older marker that does not "
        "record it), so it is checked like any other: set a relative ratio by hand (a "
        "deliberately small one: add `disable=UPG101`)")


WROTE = "sigma: {}  # note  # upgd-migrate: sigma was 0.001 (absolute), set {}"


@pytest.mark.parametrize("value,written,codes", [
    ("0.00461", "0.00461", []),           # calibrated, untouched: trusted below the range
    ("4.61e-03", "0.00461", []),          # the same number respelled
    ("0.7", "0.7", []),                   # --sigma-ratio 0.7, as written (config warned)
    ("0.001", "0.00461", ["UPG101"]),     # edited back to the old absolute value
    ("0.004", "0.00461", ["UPG101"]),     # edited: checked like any value
    ("0.8", "0.05", ["UPG106"]),
    ("0.05", "0.00461", []),              # edited into the range
    ("0.00461", "junk", ["UPG101"]),      # a marker no config wrote vouches for nothing
])
def test_the_value_config_wrote_is_trusted_and_an_edit_is_checked(value, written, codes):
    findings = lint_text("x.yaml", layout_a("AdaptiveUPGD", "adaptive_noise: true;"
                                            + WROTE.format(value, written)))
    assert [f.code for f in findings] == codes
    if codes == ["UPG101"] and written != "junk":
        assert f"the value is not the one `config` wrote ({written})" in findings[0].message


def test_two_markers_on_one_line_keep_the_written_sigma_apart():
    text = ("optimizer: AdaptiveUPGD\noptimizer_kwargs: {sigma: 0.005, adaptive_noise: true}  "
            "# upgd-migrate: sigma was 0.001 (absolute), set 0.005; adaptive_noise was false\n")
    assert lint_text("x.yaml", text) == []
    assert [f.code for f in lint_text("x.yaml", text.replace("set 0.005", "set 0.05"))] == \
        ["UPG101"]


@pytest.mark.parametrize("value,codes", [("0.05", []), ("0.8", ["UPG106"]), ("5", ["UPG107"])])
def test_a_marked_sigma_is_checked_against_the_relative_range(value, codes):
    text = layout_a("UPGD", "adaptive_noise: true;" + MARKED.format(value))
    assert [f.split()[1] for f in run_lint(text)] == codes


def test_relative_range_option_moves_the_large_sigma_warning_not_the_error():
    options = LintOptions(relative_sigma=(0.01, 0.9))
    assert run_lint(layout_a("UPGD", "adaptive_noise: true;sigma: 0.7"), options) == []
    assert [f.split()[1] for f in run_lint(layout_a("UPGD", "adaptive_noise: true;sigma: 1.5"),
                                           options)] == ["UPG107"]


def test_the_update_option_is_linted_with_its_choices():
    assert run_lint(layout_a("AdaptiveUPGD", "adaptive_noise: true;sigma: 0.05;update: paper")) == []
    assert run_lint(layout_a("UPGD", "update: papr")) == [
        "4:13 UPG302 update: 'papr' is not 'reference' or 'paper'"]
    assert run_lint(layout_a("UPGDW", "update: paper")) == [
        "4:5 UPG201 'update' is not a keyword argument of UPGDW (TypeError at construction); "
        "UPGD, AdaptiveUPGD take it"]
