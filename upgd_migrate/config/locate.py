"""Find optimizer and VGS blocks in the three legacy layouts, anywhere in a document.

(a) ``optimizer_class`` + ``optimizer_kwargs`` + a ``vgs`` mapping, nested under any key
    (real configs put them under ``model:``);
(b) ``optimizer: <name>`` + ``optimizer_kwargs`` + ``vgs`` (the seed's layout, top level);
(c) ``optimizer_class`` + flat ``variance_gradient_scaling`` / ``vgs_*`` trainer kwargs.
A block is the mapping that holds these keys; its VGS settings are those of the same mapping.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from upgd_migrate.legacy import FLAT_VGS_PREFIX, FLAT_VGS_SWITCH
from upgd_migrate.config.yaml_io import Mapping, Node, Scalar, walk


@dataclass
class VgsBlock:
    """VGS settings: ``entries`` maps each canonical key to its (key node, value node)."""

    layout: str  # "nested" (a vgs: mapping) or "flat" (vgs_* keys)
    anchor: Scalar  # the `vgs` key, or the flat switch / first vgs_* key
    entries: dict[str, tuple[Scalar, Node]] = field(default_factory=dict)
    switch: Node | None = None  # value node of `enabled` / `variance_gradient_scaling`

    @property
    def enabled(self) -> bool:
        """A VGS block counts as on unless it is switched off explicitly."""
        return not (isinstance(self.switch, Scalar) and self.switch.value is False)


@dataclass
class ConfigBlock:
    """One optimizer (and maybe VGS) configuration found in a document."""

    container: Mapping
    name: tuple[Scalar, Node] | None = None  # (key, value) of optimizer_class / optimizer
    kwargs: tuple[Scalar, Node] | None = None  # (key, value) of optimizer_kwargs
    vgs: VgsBlock | None = None


def locate(document: Node) -> list[ConfigBlock]:
    """All config blocks in ``document``, in document order."""
    blocks = []
    for node in walk(document):
        if isinstance(node, Mapping):
            block = _block_at(node)
            if block is not None:
                blocks.append(block)
    return blocks


def _block_at(mapping: Mapping) -> ConfigBlock | None:
    block = ConfigBlock(mapping, kwargs=mapping.get("optimizer_kwargs"), vgs=vgs_of(mapping))
    name = mapping.get("optimizer_class")
    seed_name = mapping.get("optimizer")
    if name is None and seed_name is not None and isinstance(seed_name[1], Scalar):
        # `optimizer: adam` alone is too common in unrelated YAML to claim it; layout (b)
        # always has optimizer_kwargs or vgs beside it.
        if block.kwargs is not None or block.vgs is not None:
            name = seed_name
    block.name = name
    if name is None and block.kwargs is None and block.vgs is None:
        return None
    return block


def vgs_of(mapping: Mapping) -> VgsBlock | None:
    """The VGS settings held by ``mapping``: a nested ``vgs:`` mapping or flat ``vgs_*`` keys."""
    nested = mapping.get("vgs")
    if nested is not None and isinstance(nested[1], Mapping):
        block = VgsBlock("nested", nested[0])
        for key, value in nested[1].items:
            if isinstance(key, Scalar):
                block.entries[key.text] = (key, value)
        switch = block.entries.get("enabled")
        block.switch = switch[1] if switch else None
        return block
    return _flat_vgs_of(mapping)


def _flat_vgs_of(mapping: Mapping) -> VgsBlock | None:
    block: VgsBlock | None = None
    for key, value in mapping.items:
        if not isinstance(key, Scalar):
            continue
        if key.text == FLAT_VGS_SWITCH:
            block = block or VgsBlock("flat", key)
            block.switch = value
        elif key.text.startswith(FLAT_VGS_PREFIX):
            block = block or VgsBlock("flat", key)
            block.entries[key.text[len(FLAT_VGS_PREFIX):]] = (key, value)
    return block
