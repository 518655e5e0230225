from __future__ import annotations

import textwrap

from conftest import CONFIGS
from upgd_migrate.config.locate import locate
from upgd_migrate.config.yaml_io import load_all


def blocks_of(text: str):
    return [b for doc in load_all(textwrap.dedent(text)) for b in locate(doc)]


def summary(block):
    return (block.name[1].text if block.name else None,
            block.kwargs[0].line if block.kwargs else None,
            (block.vgs.layout, sorted(block.vgs.entries), block.vgs.enabled) if block.vgs else None)


def test_layout_a_real_config():
    (block,) = blocks_of((CONFIGS / "real-legacy-layout-a.yaml").read_text())
    assert summary(block) == ("AdaptiveUPGD", 4, ("nested", [
        "accumulation_steps", "clip_threshold", "enabled", "eps", "min_scaling_factor",
        "variance_cap", "warmup_steps"], True))


def test_layout_b_seed():
    (block,) = blocks_of((CONFIGS / "seed-layout-b.yaml").read_text())
    assert summary(block) == ("AdaptiveUPGD", 3, ("nested", ["alpha", "beta", "enabled",
                                                            "warmup_steps"], True))


def test_layout_c_flat():
    (block,) = blocks_of((CONFIGS / "flat-trainer-kwargs-c.yaml").read_text())
    assert summary(block) == ("upgd", 5, ("flat", ["alpha", "beta", "warmup_steps"], True))
    assert block.vgs.anchor.text == "variance_gradient_scaling"


def test_anywhere_in_any_document_and_in_lists():
    text = """\
    name: sweep
    ---
    runs:
      - id: 1
        deep:
          optimizer_class: sgd
      - id: 2
        optimizer: adam
        vgs: {enabled: false}
    """
    assert [summary(b) for b in blocks_of(text)] == [
        ("sgd", None, None), ("adam", None, ("nested", ["enabled"], False))]


def test_bare_optimizer_key_is_not_claimed():
    # `optimizer: adam` alone is common in unrelated YAML (e.g. other frameworks' configs).
    assert blocks_of("optimizer: adam\nlr: 0.1\n") == []
    assert blocks_of("training:\n  optimizer: {name: adam}\n  optimizer_kwargs: {}\n") != []
