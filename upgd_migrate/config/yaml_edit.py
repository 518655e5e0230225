"""Text edits at node positions: replace a value, note the old one, add or comment out entries.

Nothing here parses. Callers pass positioned nodes from :mod:`yaml_io`; :class:`Edits` turns
them into (start, end, new) splices, so every byte outside a changed value stays as it was:
comments, quotes, indentation, blank lines, document markers and CRLF line endings included.
"""
from __future__ import annotations

import re

from upgd_migrate.legacy import MARKER
from upgd_migrate.config.yaml_io import Mapping, Node, Scalar, splice

_GAP_BEFORE_COMMENT = re.compile(r" +(?=#)")


def line_end(text: str, offset: int) -> int:
    """Offset where the line holding ``offset`` ends, before its ``\\n`` or ``\\r\\n``."""
    end = text.find("\n", offset)
    end = len(text) if end < 0 else end
    return end - 1 if end > 0 and text[end - 1] == "\r" else end


def newline_at(text: str, offset: int) -> str:
    """The line ending of the line holding ``offset`` (the file's first one if it has none)."""
    end = line_end(text, offset)
    if text.startswith("\r\n", end):
        return "\r\n"
    if text.startswith("\n", end):
        return "\n"
    return "\r\n" if "\r\n" in text else "\n"


def is_flow(text: str, mapping: Mapping) -> bool:
    return text.startswith("{", mapping.start)


def own_items(mapping: Mapping) -> list[tuple[Scalar, Node]]:
    """Entries written inside ``mapping`` itself: not those merged in from an anchor by ``<<``."""
    return [(k, v) for k, v in mapping.items
            if isinstance(k, Scalar) and mapping.start <= k.start < mapping.end]


def one_line(text: str, key: Node, value: Node) -> bool:
    """True when ``key: value`` is a scalar entry on a single line (so lines can go after it)."""
    return isinstance(value, Scalar) and "\n" not in text[key.start:value.end]


def in_place(text: str, key: Node, value: Scalar) -> bool:
    """True when ``value`` is written right there as plain text: no alias to a scalar defined
    elsewhere, no ``&anchor`` or ``!!tag`` in front that a replacement would drop."""
    return value.plain and value.start > key.start and \
        text[value.start:value.end] == value.text


def first_on_line(text: str, node: Node) -> bool:
    start = text.rfind("\n", 0, node.start) + 1
    return text[start:node.start].strip(" ") == ""


class Edits:
    """The splices of one pass; markers landing on the same line share one trailing comment."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.splices: list[tuple[int, int, str]] = []
        self.markers: dict[int, list[tuple[int, str]]] = {}

    def __bool__(self) -> bool:
        return bool(self.splices or self.markers)

    def replace(self, node: Scalar, new: str, marker: str | None = None) -> None:
        """Write ``new`` over ``node``, keeping a trailing comment in its column when it can."""
        start, end = node.start, node.end
        gap = _GAP_BEFORE_COMMENT.match(self.text, end)
        if gap is not None:
            width = max(1, len(gap.group()) - (len(new) - (end - start)))
            end, new = gap.end(), new + " " * width
        self.splices.append((start, end, new))
        if marker:
            self.note(node.end, marker)

    def note(self, offset: int, marker: str) -> None:
        """Record ``marker`` in a comment at the end of the line holding ``offset``; markers
        of one line are listed in the order of the values they describe."""
        end = line_end(self.text, offset)
        self.markers.setdefault(end, []).append((offset, marker))

    def insert(self, offset: int, new: str) -> None:
        self.splices.append((offset, offset, new))

    def insert_lines_after(self, node: Node, lines: list[str]) -> int:
        """Add ``lines`` (without endings) after the line holding the end of ``node``; return
        the offset they go in at."""
        end, newline = line_end(self.text, node.end), newline_at(self.text, node.end)
        if self.text.startswith(newline, end):
            self.insert(end + len(newline), "".join(line + newline for line in lines))
            return end + len(newline)
        self.insert(end, "".join(newline + line for line in lines))  # no final newline
        return end

    def apply(self) -> tuple[str, list[tuple[int, int, str]]]:
        """The new text and the splices that made it (for callers that track offsets)."""
        inserts: dict[int, list[str]] = {}
        for end, markers in self.markers.items():
            at = len(self.text[:end].rstrip(" "))
            inserts.setdefault(at, []).append(comment("; ".join(m for _, m in sorted(markers))))
        edits = [edit for edit in self.splices if edit[0] != edit[1]]
        for start, _, new in self.splices:
            if start == _:  # a marker must end its line before lines inserted at the same spot
                inserts.setdefault(start, []).append(new)
        edits += [(at, at, "".join(parts)) for at, parts in inserts.items()]
        return splice(self.text, edits), sorted(edits)


def comment(marker: str) -> str:
    return f"  # {MARKER} {marker}"
