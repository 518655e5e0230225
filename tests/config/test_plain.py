"""config/plain: lint's rules over a plain mapping agree with lint over the file, finding for
finding, in every layout and over every config the project holds."""
from __future__ import annotations

import math
import pathlib
import textwrap

import pytest

from conftest import CONFIGS
from test_lint import NEGATIVE, POSITIVE
from upgd_migrate.config.lint import _lint_documents
from upgd_migrate.config.plain import check_kwargs, check_vgs, to_node, validate
from upgd_migrate.config.rules import Context
from upgd_migrate.config.yaml_io import Mapping, Node, Sequence, YamlError, load_all

GOLDEN = pathlib.Path(__file__).resolve().parent / "golden" / "config"
# about the file's spelling
TEXT_CODES = {"UPG001", "UPG002", "UPG003", "UPG004", "UPG304", "UPG305"}


def corpus() -> dict[str, str]:
    """Every config of fixtures/ and of the golden cases, and every golden lint rule case."""
    texts = {f"fixtures/{p.name}": p.read_text() for p in sorted(CONFIGS.glob("*.yaml"))}
    texts |= {f"golden/{p.name}": p.read_bytes().decode() for p in sorted(GOLDEN.glob("*.yaml"))}
    texts |= {f"positive/{code}": text for code, (text, _) in POSITIVE.items()}
    texts |= {f"negative/{code}": text for code, text in NEGATIVE.items()}
    return texts


def plain_documents(text: str) -> list:
    """The documents as a YAML 1.2 loader gives them to a trainer: dicts, lists, scalars."""
    from ruamel.yaml import YAML

    return list(YAML(typ="safe", pure=True).load_all(text))


def _paths(node: Node, loc: tuple, found: dict) -> None:
    found.setdefault((node.line, node.col), loc)
    if isinstance(node, Mapping):
        for key, value in node.items:
            # a block mapping starts where its first key does: the key is what rules point at
            found[(key.line, key.col)] = loc + (key.value,)
            _paths(value, loc + (key.value,), found)
    elif isinstance(node, Sequence):
        for index, item in enumerate(node.items):
            _paths(item, loc + (index,), found)


def lint_by_loc(text: str) -> list[tuple[str, tuple]]:
    """Lint's findings before suppression comments (a dict has no comments), each as (code,
    the keys leading to the node it points at)."""
    ctx = Context("x.yaml")
    _lint_documents(ctx, text)
    where: dict = {}
    for document in load_all(text):
        _paths(document, (), where)
    return sorted((f.code, where[(f.line, f.col)]) for f in ctx.findings
                  if f.code not in TEXT_CODES)


def validate_by_loc(text: str) -> list[tuple[str, tuple]]:
    return sorted((f.code, f.loc) for document in plain_documents(text)
                  if isinstance(document, dict) for f in validate(document))


CORPUS = corpus()


def test_the_corpus_covers_every_layout_and_rule():
    assert len([n for n in CORPUS if n.startswith(("fixtures/", "golden/"))]) >= 30
    assert {code for text in CORPUS.values() for code, _ in lint_by_loc(text)} >= \
        set(POSITIVE) - {"UPG304", "UPG305"}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_validate_agrees_with_lint_finding_for_finding(name):
    try:
        expected = lint_by_loc(CORPUS[name])
    except YamlError:
        pytest.skip("not YAML: nothing for a dict to agree on")
    assert validate_by_loc(CORPUS[name]) == expected


@pytest.mark.parametrize("text,expected", [
    (CONFIGS.joinpath("real-legacy-layout-a.yaml").read_text(), [
        ("UPG101", ("model", "optimizer_kwargs", "sigma")),
        ("UPG203", ("model", "vgs", "accumulation_steps")),
        ("UPG203", ("model", "vgs", "clip_threshold"))]),
    (CONFIGS.joinpath("seed-layout-b.yaml").read_text(), [
        ("UPG101", ("optimizer_kwargs", "sigma")),
        ("UPG105", ("optimizer_kwargs", "instant_noise_scale"))]),
    (CONFIGS.joinpath("flat-trainer-kwargs-c.yaml").read_text(), [
        ("UPG102", ("trainer", "optimizer_kwargs", "sigma")),
        ("UPG103", ("trainer", "optimizer_class")),
        ("UPG201", ("trainer", "optimizer_kwargs", "betas"))]),
    (textwrap.dedent("""\
        runs:
          - optimizer: UPGD
            optimizer_kwargs: {sigma: 5, adaptive_noise: true}
        """), [("UPG107", ("runs", 0, "optimizer_kwargs", "sigma"))]),
])
def test_validate_finds_the_blocks_of_every_layout(text, expected):
    assert validate_by_loc(text) == expected


def test_a_dict_finding_has_no_position_but_a_loc():
    [finding] = validate({"model": {"optimizer_class": "UPGD", "optimizer_kwargs": {
        "adaptive_noise": True, "sigma": 0.001}}})
    assert (finding.path, finding.line, finding.col, finding.loc) == \
        ("", 0, 0, ("model", "optimizer_kwargs", "sigma"))
    assert finding.message == ("sigma 0.001 with adaptive_noise: true is below the plausible "
                               "relative range 0.01-0.5: an absolute noise std left from before "
                               "adaptive noise (0.1% noise as a ratio)")


@pytest.mark.parametrize("value,message", [
    (True, "lr: expected a number, got true"),
    ("1e-4", "lr: expected a number, got the string '1e-4'"),
    (math.nan, "lr: nan is out of range (must be >= 0)"),
    (-1, "lr: -1 is out of range (must be >= 0)"),
    ([1], "lr: expected a number, got a list"),
    (type("Odd", (), {"__repr__": lambda self: "<odd>"})(), "lr: expected a number, got <odd>"),
])
def test_python_values_read_as_their_yaml_counterparts(value, message):
    assert [f.message for f in check_kwargs("adam", {"lr": value})] == [message]


def test_kwargs_and_vgs_alone():
    assert [(f.code, f.loc) for f in check_kwargs("UPGDW", {"adaptive_noise": True,
                                                            "betas": (0.9, 1.0)})] == [
        ("UPG201", ("adaptive_noise",)), ("UPG302", ("betas", 1))]
    assert [(f.code, f.loc) for f in check_vgs({"clip_threshold": 1.0, "alpah": 0.1})] == [
        ("UPG203", ("clip_threshold",)), ("UPG202", ("alpah",))]


def test_a_mapping_that_holds_itself_is_converted_once():
    cyclic: dict = {"optimizer_class": "UPGD", "optimizer_kwargs": {"sigma": 0.001}}
    cyclic["again"] = cyclic
    node = to_node(cyclic)
    assert node.items[2][1] is node
    assert validate(cyclic) == []
