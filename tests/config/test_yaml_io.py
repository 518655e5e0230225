from __future__ import annotations

import math

import pytest

from upgd_migrate.config.yaml_io import (DuplicateKeyError, Mapping, Scalar, Sequence, YamlError,
                                  load_all, splice, walk)


def test_positions_are_one_based_and_offsets_index_the_text():
    text = "a:\n  b: 1.0e-6  # c\n"
    (doc,) = load_all(text)
    key, value = doc.get("a")[1].get("b")
    assert (key.line, key.col, value.line, value.col) == (2, 3, 2, 6)
    assert text[value.start:value.end] == "1.0e-6"
    assert value.value == 1e-6 and value.plain


@pytest.mark.parametrize("text,tag,value", [
    ("1e-6", "float", 1e-6), ("yes", "str", "yes"), ("true", "bool", True), ("~", "null", None),
    ("0x1f", "int", 31), ("0o17", "int", 15), ("'3'", "str", "3"), ("-.inf", "float", -math.inf),
])
def test_scalars_resolve_as_yaml_1_2(text, tag, value):
    (doc,) = load_all(f"k: {text}\n")
    node = doc.get("k")[1]
    assert (node.tag, node.value) == (tag, value)


def test_multi_document():
    docs = load_all("a: 1\n---\n- 2\n---\nx\n")
    assert [type(d) for d in docs] == [Mapping, Sequence, Scalar]
    assert docs[1].line == 3


def test_duplicate_key_reported_with_position():
    with pytest.raises(DuplicateKeyError) as e:
        load_all("a: 1\nb:\n  c: 1\n  c: 2\n")
    assert (e.value.message, e.value.line, e.value.col) == ("duplicate key 'c'", 4, 3)


def test_invalid_yaml_reported_with_position():
    with pytest.raises(YamlError) as e:
        load_all("a:\n\tb: 1\n")
    assert (e.value.line, e.value.col) == (2, 1)


def test_merge_keys_fill_in_without_counting_as_duplicates():
    (doc,) = load_all("base: &b {lr: 0.1, sigma: 0.001}\nk:\n  <<: *b\n  sigma: 0.05\n")
    items = [(k.text, v.text) for k, v in doc.get("k")[1].items]
    assert items == [("lr", "0.1"), ("sigma", "0.05")]


def test_recursive_alias_terminates():
    (doc,) = load_all("a: &x [1, *x]\n")
    assert sum(1 for _ in walk(doc)) == 4  # mapping, key, the sequence once, its scalar


def test_splice_leaves_untouched_bytes_alone():
    text = "lr: 1e-6   # keep 'quotes' and\n\tspacing\n"
    assert splice(text, [(4, 8, "1.0e-6")]) == "lr: 1.0e-6   # keep 'quotes' and\n\tspacing\n"
    assert splice(text, [(20, 21, "X"), (0, 2, "LR")]).startswith("LR: 1e-6   #")
    with pytest.raises(ValueError):
        splice(text, [(0, 5, "a"), (3, 6, "b")])
