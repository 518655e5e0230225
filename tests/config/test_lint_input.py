"""Bad input: one clear finding for the file, the run goes on; and the value-rule details."""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_lint
from upgd_migrate import fileio
from upgd_migrate.config.lint import lint_paths
from upgd_migrate.config.yaml_io import load_all


def findings_of(tmp_path, name: str, data: bytes) -> list[str]:
    path = tmp_path / name
    path.write_bytes(data)
    return [f"{f.line}:{f.col} {f.code} {f.message}" for f in lint_paths([str(path)]).findings]


@pytest.mark.parametrize("data,expected", [
    (b"\x00\x01binary", "1:1 UPG001 binary file (NUL bytes): not a YAML config"),
    (b"lr: \xff\xfe\n", "1:1 UPG001 not UTF-8 text (byte 4)"),
    (b"a: [\n", "2:1 UPG002 not valid YAML: while parsing a flow node: expected the node "
                "content, but found '<stream end>'"),
    (b"a: b: c\n", "1:5 UPG002 not valid YAML: mapping values are not allowed here"),
    (b"vgs:\n  alpha: 0.1\n  alpha: 0.2\n", "3:3 UPG003 duplicate key 'alpha': loaders disagree "
                                             "on which value wins; keep one"),
    (b"", "1:1 UPG004 nothing to lint: it holds no document, not a mapping"),
    (b"# only a comment\n", "1:1 UPG004 nothing to lint: it holds no document, not a mapping"),
    (b"just text\n", "1:1 UPG004 nothing to lint: its document is the string 'just text', not a "
                     "mapping"),
])
def test_bad_input_is_one_finding(tmp_path, data, expected):
    assert findings_of(tmp_path, "c.yaml", data) == [expected]


def test_too_large_file(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "MAX_BYTES", 2**20)
    assert findings_of(tmp_path, "big.yaml", b"a: 1\n" * 2**18) == [
        "1:1 UPG001 larger than 1 MiB: not a config"]


def test_unreadable_files(tmp_path):
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "gone.yaml")
    (tmp_path / "dir.yaml").mkdir()  # a folder is walked, not read
    assert [f.message for f in lint_paths([str(tmp_path)]).findings] == [
        "cannot read: No such file or directory"]
    assert [f.message for f in lint_paths([str(tmp_path / "gone.yaml")]).findings] == [
        "cannot read: No such file or directory"]


def test_run_continues_after_a_bad_file(tmp_path):
    (tmp_path / "a.yaml").write_bytes(b"a: [\n")
    (tmp_path / "b.yml").write_text("optimizer_class: UPGD\noptimizer_kwargs: {sigma: 1}\n")
    (tmp_path / "notes.txt").write_text("optimizer_class: nope\n")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "c.yaml").write_text("optimizer_class: nope\n")
    result = lint_paths([str(tmp_path)])
    assert result.files == 2
    assert [(os.path.basename(f.path), f.code) for f in result.findings] == [
        ("a.yaml", "UPG002"), ("b.yml", "UPG102")]


def test_file_level_findings_can_be_suppressed_too():
    assert run_lint("a: 1\na: 2  # upgd-migrate: disable=duplicate-key\n") == []


def test_yaml_without_optimizer_is_silent():
    assert run_lint("repos:\n- repo: local\n  lr: 1e-3\n") == []


def test_values_and_shapes():
    text = """\
    optimizer: UPGDW
    optimizer_kwargs:
      betas: [0.9, 1.0]
      amsgrad: true
      lr: "1e-4"
    vgs:
      warmup_steps: 10.0
      warmup_step: 3
      variance_cap: null
    """
    assert run_lint(text) == [
        "1:12 UPG104 VGS with fixed noise on UPGDW: the Adam direction absorbs a steady VGS "
        "factor, but after a drop the noise runs up to 10x too large while the second moment "
        "catches up; AdaptiveUPGD with adaptive_noise: true avoids it",
        "3:16 UPG302 betas[1]: 1.0 is out of range (must be >= 0 and < 1)",
        "4:12 UPG302 amsgrad: UPGDW refuses true (must be false)",
        "5:7 UPG301 lr: expected a number, got the string '1e-4'",
        "7:17 UPG301 warmup_steps: expected an integer, got the number 10.0",
        "8:3 UPG202 unknown VGS key 'warmup_step' (did you mean 'warmup_steps'?)",
    ]


def test_shapes_of_blocks():
    text = """\
    optimizer_class: [adam]
    optimizer_kwargs: 0.1
    variance_gradient_scaling: "yes"
    vgs_alpha: 0.1
    vgs_clip_threshold: 1.0
    vgs_alpah: 0.2
    """
    assert run_lint(text) == [
        "1:18 UPG301 optimizer_class: expected an optimizer name, got a list",
        "2:19 UPG301 optimizer_kwargs: expected a mapping, got the number 0.1",
        "3:28 UPG301 variance_gradient_scaling: expected true or false, got the string 'yes'",
        "5:1 UPG203 'vgs_clip_threshold' is not a VGS parameter: no VGS version reads it, so VGS "
        "silently ignores it (your own trainer may read it: `config` comments it out only with "
        "--unsafe-fixes)",
        "6:1 UPG202 unknown VGS key 'vgs_alpah' (did you mean 'vgs_alpha'?)",
    ]


def test_vgs_that_is_not_a_mapping():
    assert run_lint("optimizer: adam\noptimizer_kwargs: {}\nvgs: true\n") == [
        "3:6 UPG301 vgs: expected a mapping of VGS settings, got true"]
    assert run_lint("optimizer: adam\noptimizer_kwargs: {}\nvgs:\n") == []


def test_unknown_optimizer_still_checks_keys_against_all():
    text = "optimizer_class: lion\noptimizer_kwargs:\n  sigma: 9\n  sgima: 1\n"
    assert run_lint(text) == [
        "1:18 UPG303 unknown optimizer 'lion'; known: UPGD, AdaptiveUPGD, UPGDW, adam, adamw, sgd",
        "4:3 UPG202 unknown optimizer_kwargs key 'sgima' (did you mean 'sigma'?)",
    ]


def test_yaml11_numbers_only_where_the_optimizer_or_vgs_reads_them():
    text = ("model:\n  learning_rate: 1e3\n  optimizer_class: adam\n  optimizer_kwargs:\n"
            "    betas: [9e-1, 0.999]\n  vgs:\n    eps: 1e-8\n    clip_threshold: 1e1\n"
            "other:\n  x: [1.5e6, '1e-6']\n")
    assert [f.split(" UPG304 ")[0] for f in run_lint(text) if " UPG304 " in f] == ["5:13", "7:10"]


def test_yaml11_numbers_of_flat_vgs_settings():
    text = "optimizer_class: adam\nvariance_gradient_scaling: true\nvgs_eps: 1e-8\nvgs_x: 1e3\n"
    assert [f.split()[:2] for f in run_lint(text)] == [["3:10", "UPG304"], ["4:1", "UPG202"]]


SGD = "optimizer_class: sgd\noptimizer_kwargs:\n  dampening: {}\n"


@pytest.mark.parametrize("text,advice", [
    ("-.5", "write -0.5"), ("+1E5", "write +1.0E+5"), ("5.e3", "write 5.0e+3"),
    ("0o17", "spell it so YAML 1.1 reads a number too"),
])
def test_yaml11_advice(text, advice):
    assert run_lint(SGD.format(text)) == [
        f"3:14 UPG304 {text} is read as the string {text!r} by PyYAML (YAML 1.1); {advice}"]


@pytest.mark.parametrize("text", ["0.5", "-0.5", ".5", ".5e-3", "1.0e-6", "1.0e+6", "10", "0x1f", "'1e-6'"])
def test_yaml11_numbers_pyyaml_reads_are_silent(text):
    assert [f for f in run_lint(SGD.format(text)) if " UPG304 " in f] == []


def test_parallel_run_matches_serial(tmp_path):
    for i in range(70):
        (tmp_path / f"c{i:02d}.yaml").write_text(
            f"optimizer_class: UPGD\noptimizer_kwargs:\n  sigma: {0.001 * (i % 30)}\n")
    (tmp_path / "c99.yaml").write_bytes(b"a: [\n")
    serial = lint_paths([str(tmp_path)], jobs=1)
    parallel = lint_paths([str(tmp_path)], jobs=2)
    assert parallel == serial and serial.files == 71
    assert len(serial.findings) == 2 * 19 + 1  # sigma 0.011-0.029 twice, and the broken file


NUMBERISH = st.from_regex(r"[-+]?[0-9]{0,3}(\.[0-9]{0,3})?([eE][-+]?[0-9]{1,2})?", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(NUMBERISH)
def test_yaml11_rule_agrees_with_pyyaml(text):
    # PyYAML comes with pre-commit (a dev dependency); this pins our copy of its resolver.
    yaml = pytest.importorskip("yaml")
    try:
        pyyaml_string = isinstance(yaml.safe_load(f"x: {text}\n")["x"], str)
        ours = load_all(f"x: {text}\n")[0].get("x")[1]
    except Exception:  # not a scalar at all (e.g. empty): nothing to compare
        return
    flagged = [f for f in run_lint(SGD.format(text)) if " UPG304 " in f]
    assert bool(flagged) == (pyyaml_string and ours.tag in ("int", "float"))
