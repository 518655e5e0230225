"""yaml_edit: splices at node positions that leave every other byte alone."""
from __future__ import annotations

import pytest

from upgd_migrate.config.yaml_edit import (Edits, first_on_line, is_flow, line_end, newline_at,
                                    one_line, own_items)
from upgd_migrate.config.yaml_io import load_all


def value(text: str, *path: str):
    node = load_all(text)[0]
    for key in path:
        node = node.get(key)[1]
    return node


@pytest.mark.parametrize("text, offset, end, newline", [
    ("a: 1\nb: 2\n", 0, 4, "\n"), ("a: 1\r\nb: 2\r\n", 2, 4, "\r\n"), ("a: 1", 1, 4, "\n"),
    ("x\r\na: 1", 4, 7, "\r\n"),  # a last line without ending takes the file's
])
def test_line_end_and_newline(text, offset, end, newline):
    assert line_end(text, offset) == end and newline_at(text, offset) == newline


def test_replace_keeps_the_comment_column_and_merges_markers_per_line():
    text = "k: {a: 0.001, b: false}   # c\nsigma: 0.001      # std\n"
    edits = Edits(text)
    edits.replace(value(text, "k", "a"), "0.05", "a was 0.001")
    edits.replace(value(text, "k", "b"), "true", "b was false")
    edits.replace(value(text, "sigma"), "0.05", "sigma was 0.001")
    assert edits.apply()[0] == ("k: {a: 0.05, b: true}   # c  # upgd-migrate: a was 0.001; b was "
                                "false\nsigma: 0.05       # std  # upgd-migrate: sigma was 0.001\n")


def test_a_longer_value_keeps_at_least_one_space_before_the_comment():
    text = "sigma: 1 # c\n"
    edits = Edits(text)
    edits.replace(value(text, "sigma"), "0.00123")
    assert edits.apply()[0] == "sigma: 0.00123 # c\n"


def test_lines_go_after_the_node_line_with_its_ending_and_the_marker_stays_above():
    text = "m:\r\n  sigma: 0.001\r\n"
    edits = Edits(text)
    node = value(text, "m", "sigma")
    edits.replace(node, "0.05", "sigma was 0.001")
    at = edits.insert_lines_after(node, ["  adaptive_noise: true"])
    assert at == len("m:\r\n  sigma: 0.001\r\n")
    assert edits.apply()[0] == ("m:\r\n  sigma: 0.05  # upgd-migrate: sigma was 0.001\r\n"
                                "  adaptive_noise: true\r\n")


def test_no_final_newline_the_new_line_follows_after_the_marker():
    text = "sigma: 0.001"
    edits = Edits(text)
    node = value(text, "sigma")
    edits.replace(node, "0.05", "sigma was 0.001")
    edits.insert_lines_after(node, ["adaptive_noise: true"])
    assert edits.apply()[0] == "sigma: 0.05  # upgd-migrate: sigma was 0.001\nadaptive_noise: true"


def test_an_empty_edit_set_is_false_and_changes_nothing():
    edits = Edits("a: 1\n")
    assert not edits and edits.apply() == ("a: 1\n", [])


def test_mapping_shape_helpers():
    text = "base: &b\n  lr: 1\nk:\n  <<: *b\n  sigma: 2\nf: {x: 1}\nv: |\n  text\n"
    root, k = load_all(text)[0], value(text, "k")
    assert [key.text for key, _ in own_items(k)] == ["sigma"]  # lr is merged in, not k's own
    assert [key.text for key, _ in k.items] == ["lr", "sigma"]
    assert is_flow(text, value(text, "f")) and not is_flow(text, k)
    assert one_line(text, *k.get("sigma"))
    assert not one_line(text, *root.get("f"))  # a mapping, not a scalar
    assert not one_line(text, *root.get("v"))  # a block scalar spans lines
    assert first_on_line(text, k.get("sigma")[0]) and not first_on_line(text, k.get("sigma")[1])
