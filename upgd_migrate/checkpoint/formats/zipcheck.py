"""Refuse hostile zip structure before a single member is read.

A stable-baselines3 zip is read whole into memory and written back member by member, and torch
zips are memory-mapped; both trust the central directory. So before reading we refuse what no
honest saver writes: member names that climb out of the archive (``..``, absolute or drive
paths), repeated names (which copy wins depends on the reader), declared sizes no checkpoint
has, compression ratios only a zip bomb reaches, and members whose data overlap (the
"non-recursive" zip bomb that reuses one compressed kernel for every entry).
"""
from __future__ import annotations

import re
import zipfile
from typing import IO, Union

from upgd_migrate.checkpoint.io import CheckpointError

# torch stores members uncompressed (1:1); JSON and text deflate about 10:1. Deflate's own
# ceiling is near 1032:1, which only bombs (runs of one byte) approach.
MAX_RATIO = 100
RATIO_FLOOR = 1 << 20  # small members may compress better (a run of zeros); they cost nothing
MAX_MEMBER_BYTES = 1 << 40  # 1 TiB: no optimizer or policy state is declared larger
MAX_MEMBERS = 100_000
_DRIVE = re.compile(r"^[A-Za-z]:")

Source = Union[str, IO[bytes]]


def check_zip(source: Source, label: str) -> list[str]:
    """Raise :class:`CheckpointError` naming ``label`` if the zip's directory looks hostile;
    else its member names (so the caller need not read the directory again)."""
    try:
        with zipfile.ZipFile(source) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"{label}: refused: not a readable zip ({e})") from e
    if len(infos) > MAX_MEMBERS:
        raise CheckpointError(f"{label}: refused: {len(infos)} zip members (at most "
                              f"{MAX_MEMBERS})")
    seen: set[str] = set()
    for info in infos:
        _check_name(info.filename, seen, label)
        _check_size(info, label)
    _check_overlap(infos, label)
    return [i.filename for i in infos]


def _check_name(name: str, seen: set[str], label: str) -> None:
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or _DRIVE.match(name) or ".." in parts or "\0" in name:
        raise CheckpointError(f"{label}: refused: zip member {name!r} points outside the "
                              "archive (absolute path or '..')")
    if name in seen:
        raise CheckpointError(f"{label}: refused: zip member {name!r} appears twice (readers "
                              "disagree on which copy wins)")
    seen.add(name)


def _check_size(info: zipfile.ZipInfo, label: str) -> None:
    name, size, packed = info.filename, info.file_size, info.compress_size
    if size > MAX_MEMBER_BYTES:
        raise CheckpointError(f"{label}: refused: zip member {name!r} declares {size} bytes "
                              "(a zip bomb or a corrupt directory)")
    if size > RATIO_FLOOR and size > MAX_RATIO * max(packed, 1):
        raise CheckpointError(f"{label}: refused: zip member {name!r} expands {packed} bytes "
                              f"to {size} (over {MAX_RATIO}:1, a zip bomb)")


def _check_overlap(infos: list[zipfile.ZipInfo], label: str) -> None:
    """Members' local headers must start after the previous member's data ends."""
    spans = sorted((i.header_offset, i.header_offset + i.compress_size, i.filename)
                   for i in infos)
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise CheckpointError(f"{label}: refused: zip members {first!r} and {second!r} "
                                  "share data (a zip bomb)")
