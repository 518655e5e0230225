"""Plain Python values (a trainer's config dict) as the nodes the lint rules read.

The rules are written once, against :mod:`yaml_io`'s nodes. This module gives a dict the same
shape, so :mod:`upgd_migrate.schema` validates with the very checks ``lint`` runs and the two
cannot disagree. A node made here has no position (line and col 0) but a ``loc``: the keys and
indices that lead to it from the mapping given. No pydantic here: this is the lint side.
"""
from __future__ import annotations

from collections.abc import Mapping as AnyMapping
from collections.abc import Sequence as AnySequence
from typing import Any

from upgd_migrate.findings import Finding
from upgd_migrate.config.lint import check_block
from upgd_migrate.config.locate import ConfigBlock, locate, vgs_of
from upgd_migrate.config.rules import Context, LintOptions
from upgd_migrate.config.yaml_io import Mapping, Node, Scalar, Sequence

Loc = tuple[Any, ...]


class PlainScalar(Scalar):
    """A Python scalar: ``value`` is the object itself, ``text`` how a message shows it."""

    __slots__ = ("loc", "_value")

    @property
    def value(self) -> object:
        return self._value


class PlainMapping(Mapping):
    __slots__ = ("loc",)


class PlainSequence(Sequence):
    __slots__ = ("loc",)


def _scalar(value: object, loc: Loc) -> PlainScalar:
    node = PlainScalar()
    # bool before int: True is an int to Python and a boolean to YAML and to the rules.
    if value is None:
        node.tag, node.text = "null", "null"
    elif isinstance(value, bool):
        node.tag, node.text = "bool", "true" if value else "false"
    elif isinstance(value, int):
        node.tag, node.text = "int", str(value)
    elif isinstance(value, float):
        node.tag, node.text = "float", repr(float(value))
    elif isinstance(value, str):
        node.tag, node.text = "str", value
    else:  # Decimal, numpy integers, ...: the rules call it the wrong type, as pydantic does
        node.tag, node.text = type(value).__name__, repr(value)
    # A dict's string was never spelled in YAML: no YAML 1.1 reader retypes it (UPG305).
    node._value, node.plain = value, not isinstance(value, str)
    _place(node, loc)
    return node


def _place(node: Node, loc: Loc) -> None:
    node.line = node.col = 0
    node.start = node.end = -1
    node.loc = loc  # type: ignore[union-attr]


def to_node(value: Any, loc: Loc = ()) -> Node:
    """``value`` as a node tree; a container met twice (or inside itself) is converted once."""
    return _Converter().convert(value, loc)


class _Converter:
    def __init__(self) -> None:
        self.done: dict[int, Node] = {}

    def convert(self, value: Any, loc: Loc) -> Node:
        if id(value) in self.done:
            return self.done[id(value)]
        if isinstance(value, AnyMapping):
            node: Node = PlainMapping()
            _place(node, loc)
            self.done[id(value)] = node
            node.items = [(_scalar(k, loc + (k,)), self.convert(v, loc + (k,)))
                          for k, v in value.items()]
        elif isinstance(value, AnySequence) and not isinstance(value, (str, bytes)):
            node = PlainSequence()
            _place(node, loc)
            self.done[id(value)] = node
            node.items = [self.convert(item, loc + (i,)) for i, item in enumerate(value)]
        else:
            node = _scalar(value, loc)
        return node


def _checked(blocks: list[ConfigBlock], options: LintOptions | None) -> list[Finding]:
    ctx = Context("", options or LintOptions())
    for block in blocks:
        check_block(ctx, block)
    return ctx.findings


def validate(mapping: AnyMapping, options: LintOptions | None = None) -> list[Finding]:
    """Lint's findings for a whole config given as a mapping, in every layout lint knows.

    Codes about the file's text (UPG001-UPG004, UPG304, UPG305) cannot arise: a dict has no
    spelling.
    """
    return _checked(locate(to_node(mapping)), options)


def _holder(key: str, name: str | None, value: AnyMapping) -> PlainMapping:
    """``{optimizer_class: name, key: value}`` with ``value``'s nodes located from its own root."""
    holder = PlainMapping()
    _place(holder, ())
    holder.items = [(_scalar(key, ()), to_node(value))]
    if name is not None:
        holder.items.insert(0, (_scalar("optimizer_class", ()), _scalar(name, ())))
    return holder


def check_kwargs(optimizer: str, kwargs: AnyMapping,
                 options: LintOptions | None = None) -> list[Finding]:
    """Lint's findings for the keyword arguments of the canonical ``optimizer`` alone."""
    holder = _holder("optimizer_kwargs", optimizer, kwargs)
    block = ConfigBlock(holder, holder.items[0], holder.items[1])
    return _checked([block], options)


def check_vgs(settings: AnyMapping, options: LintOptions | None = None) -> list[Finding]:
    """Lint's findings for a ``vgs:`` mapping alone."""
    holder = _holder("vgs", None, settings)
    return _checked([ConfigBlock(holder, vgs=vgs_of(holder))], options)
