"""YAML with positions: the only module that imports ruamel.yaml.

ruamel composes the text into nodes (YAML 1.2 resolution, as ruamel reads it) and this module
turns them into small plain objects carrying 1-based line/column and character offsets, so
checks can point at the exact key or value and the config migrator can splice edits into the
original text without disturbing a single untouched byte.
"""
from __future__ import annotations

import math
from typing import Iterable, Iterator, Union

_TAG_PREFIX = "tag:yaml.org,2002:"


class YamlError(Exception):
    """The text is not YAML we can lint. ``line``/``col`` are 1-based."""

    def __init__(self, message: str, line: int = 1, col: int = 1) -> None:
        super().__init__(message)
        self.message, self.line, self.col = message, line, col


class DuplicateKeyError(YamlError):
    """A mapping repeats a key: loaders disagree on which value wins, so we refuse to guess."""


class _Node:
    __slots__ = ("line", "col", "start", "end")

    def _place(self, raw) -> None:  # raw: a ruamel node
        self.line, self.col = raw.start_mark.line + 1, raw.start_mark.column + 1
        self.start, self.end = raw.start_mark.index, raw.end_mark.index


class Scalar(_Node):
    """A scalar: ``text`` as written, ``tag`` short (str, int, float, bool, null, ...)."""

    __slots__ = ("text", "tag", "plain")

    @property
    def value(self) -> object:
        """The Python value YAML 1.2 gives this scalar."""
        return _scalar_value(self.tag, self.text)


class Mapping(_Node):
    """A mapping as an ordered list of (key node, value node) pairs."""

    __slots__ = ("items",)

    def get(self, key: str) -> tuple[Scalar, Node] | None:
        for k, v in self.items:
            if isinstance(k, Scalar) and k.text == key:
                return k, v
        return None


class Sequence(_Node):
    __slots__ = ("items",)


Node = Union[Scalar, Mapping, Sequence]


def _scalar_value(tag: str, text: str) -> object:
    if tag == "null":
        return None
    if tag == "bool":
        return text.lower() in ("true", "yes", "on", "y")
    if tag == "int":
        digits = text.replace("_", "")
        try:
            return int(digits, 0)
        except ValueError:
            pass
        try:
            return int(digits, 10)
        except ValueError:  # past Python's 4300-digit limit: as large as a float gets
            return float(digits)
    if tag == "float":
        low = text.lower().replace("_", "")
        if low.endswith((".inf", ".nan")):
            return -math.inf if low.startswith("-") else (math.nan if "nan" in low else math.inf)
        return float(low)
    return text


def load_all(text: str) -> list[Node]:
    """Every document of ``text`` as positioned nodes; raise :class:`YamlError` if not YAML."""
    try:
        return _load_all(text)
    except RecursionError:  # ruamel composes recursively: hostile nesting must be a finding
        raise YamlError("nested too deeply to parse (Python's recursion limit): not a "
                        "config") from None


def _load_all(text: str) -> list[Node]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        raws = list(YAML(typ="safe", pure=True).compose_all(text))
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = ": ".join(p for p in (e.context, e.problem) if p)
        raise YamlError(what or "invalid YAML", mark.line + 1 if mark else 1,
                        mark.column + 1 if mark else 1) from e
    except YAMLError as e:
        raise YamlError(str(e).splitlines()[0] if str(e) else "invalid YAML") from e
    converter = _Converter()
    return [converter.convert(raw) for raw in raws]


class _Converter:
    """ruamel nodes -> our nodes; aliases stay shared objects and cycles stay finite."""

    def __init__(self) -> None:
        self.done: dict[int, Node] = {}

    def convert(self, raw) -> Node:
        seen = self.done.get(id(raw))
        if seen is not None:
            return seen
        kind = raw.id  # 'scalar', 'sequence' or 'mapping'
        node: Node = Scalar() if kind == "scalar" else Sequence() if kind == "sequence" else Mapping()
        node._place(raw)
        self.done[id(raw)] = node
        if isinstance(node, Scalar):
            node.text, node.plain = raw.value, raw.style is None
            node.tag = raw.tag[len(_TAG_PREFIX):] if raw.tag.startswith(_TAG_PREFIX) else raw.tag
            node.tag = _checked_tag(node.tag, node.text)
            return node
        # Empty until filled: a mapping that merges itself (`a: &a {<<: *a}`) sees no items.
        node.items = []
        if isinstance(node, Sequence):
            node.items = [self.convert(item) for item in raw.value]
        else:
            node.items = self._pairs(raw.value)
        return node

    def _pairs(self, raw_pairs) -> list[tuple[Node, Node]]:
        explicit: list[tuple[Node, Node]] = []
        merged: dict[tuple, tuple[Node, Node]] = {}
        seen: set[tuple[str, str]] = set()
        for raw_key, raw_value in raw_pairs:
            if raw_key.tag == _TAG_PREFIX + "merge":
                # The first source to give a key wins; keeping only that one also keeps a merge
                # bomb (`<<: [*a, *a, ...]` nested) linear instead of exponential.
                for pair in self._merge_source(raw_value):
                    merged.setdefault(_ident(pair[0]), pair)
                continue
            key = self.convert(raw_key)
            if isinstance(key, Scalar):
                ident = (key.tag, key.text)
                if ident in seen:
                    raise DuplicateKeyError(f"duplicate key {key.text!r}", key.line, key.col)
                seen.add(ident)
            explicit.append((key, self.convert(raw_value)))
        # "<<" merges fill in only the keys the mapping does not set itself.
        return [(k, v) for k, v in merged.values()
                if not isinstance(k, Scalar) or (k.tag, k.text) not in seen] + explicit

    def _merge_source(self, raw_value) -> list[tuple[Node, Node]]:
        sources = raw_value.value if raw_value.id == "sequence" else [raw_value]
        out: list[tuple[Node, Node]] = []
        for source in sources:
            node = self.convert(source)
            if isinstance(node, Mapping):
                out.extend(node.items)
        return out


def _ident(key: Node) -> tuple:
    return (key.tag, key.text) if isinstance(key, Scalar) else ("node", id(key))


def _checked_tag(tag: str, text: str) -> str:
    """``tag``, or ``str`` when the text is no such value (``!!int abc``): rules then say so."""
    if tag in ("int", "float"):
        try:
            _scalar_value(tag, text)
        except ValueError:
            return "str"
    return tag


def walk(node: Node) -> Iterator[Node]:
    """Every node under ``node`` (itself included) once, even through aliases."""
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, Mapping):
            for k, v in reversed(current.items):
                stack.extend((v, k))
        elif isinstance(current, Sequence):
            stack.extend(reversed(current.items))


def splice(text: str, edits: Iterable[tuple[int, int, str]]) -> str:
    """Replace ``text[start:end]`` for each (start, end, new) edit; edits must not overlap."""
    out, cursor = [], 0
    for start, end, new in sorted(edits):
        if start < cursor or end < start:
            raise ValueError(f"overlapping or inverted edit at offset {start}")
        out.extend((text[cursor:start], new))
        cursor = end
    out.append(text[cursor:])
    return "".join(out)
