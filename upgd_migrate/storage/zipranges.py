"""Sparse staging of a torch zip in a bucket: its tensors are not downloaded up front.

It imports :mod:`upgd_migrate.storage.sparse` (the range fetcher) and
:mod:`upgd_migrate.fileio`; no torch, nothing of the commands.

A torch zip (``torch.save``'s format: a PBT member's ``checkpoint.pt``, a Trainer
``optimizer.pt``) is a zip whose members are ``<folder>/data.pkl`` (the pickle: every key,
option and tensor's shape), a few records of a few bytes (``.format_version``, ``byteorder``,
``version``, ...) and one member per tensor storage (``<folder>/data/<key>``). Its stand-in is a
sparse local file of the object's size with, fetched by range: the file's tail (end of central
directory, ZIP64 records, central directory), its head, and every member that is not a tensor
storage. Everything else is a hole that :func:`upgd_migrate.sparsefile.before_read` fills on demand.
Whether it is already current is decided from the pickle alone
(:mod:`upgd_migrate.checkpoint.zipslice`); a load that reads tensor data fills the holes first
(:func:`upgd_migrate.sparsefile.fill`), so a hole is never read as zeros.
"""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any, Callable

from upgd_migrate.checkpoint.formats import HEAD_BYTES
from upgd_migrate.sparsefile import register_range_fetcher
from upgd_migrate.storage.sparse import _Ranges

MIN_BYTES = 1 << 20  # a smaller object is fetched whole: a range saves less than a request
TAIL = 16 << 10  # the first read from the end: a torch zip's directory is ~100 B per member
_EOCD, _LOC64, _EOCD64 = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"


def _directory(tail: bytes, tail_at: int) -> tuple[int, int] | None:
    """(offset, size) of the central directory, from the end records in ``tail`` (the
    object's last bytes, starting at ``tail_at``); None when there is no end record."""
    at = tail.rfind(_EOCD, 0, len(tail) - 18)  # the record is 22 bytes and more
    if at < 0:
        return None
    size, offset = struct.unpack_from("<II", tail, at + 12)
    if 0xFFFFFFFF not in (size, offset):
        return offset, size
    loc = at - 20  # ZIP64: the locator sits just before the end record, pointing at its record
    if loc < 0 or tail[loc:loc + 4] != _LOC64:
        return None
    rec = struct.unpack_from("<Q", tail, loc + 8)[0] - tail_at
    if rec < 0 or tail[rec:rec + 4] != _EOCD64:
        return None
    size, offset = struct.unpack_from("<QQ", tail, rec + 40)
    return offset, size


def _torch_members(local: Path) -> list[zipfile.ZipInfo] | None:
    """The members of a torch zip whose directory is in the stand-in, or None if it is not
    one (another zip, a zip after other data, or no zip at all)."""
    try:
        with zipfile.ZipFile(local) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None
    pickles = [i.filename for i in infos if i.filename.endswith("/data.pkl")]
    if len(pickles) != 1 or not infos or min(i.header_offset for i in infos) != 0:
        return None
    return infos


def _small_members(infos: list[zipfile.ZipInfo], directory: int) -> list[tuple[int, int]]:
    """(start, end) of every member that is not a tensor storage: local header, data and
    descriptor, up to the next member (or the directory)."""
    folder = next(i.filename for i in infos if i.filename.endswith("/data.pkl"))[:-len("data.pkl")]
    starts = sorted(i.header_offset for i in infos) + [directory]
    after = dict(zip(starts, starts[1:]))
    return [(i.header_offset, after[i.header_offset]) for i in infos
            if not i.filename.startswith(folder + "data/")]


def stage(fs: Any, key: str, local: Path, size: int, reopen: Callable[[], Any]) -> bool:
    """Make ``local`` a sparse stand-in of the torch zip ``key``; False (and nothing
    registered: fetch it whole) when the object is small or not a torch zip."""
    if size < MIN_BYTES:
        return False
    local.parent.mkdir(parents=True, exist_ok=True)
    ranges = _Ranges(fs, reopen, key, local, size)
    tail_at = max(0, size - TAIL)
    ranges.fetch([(tail_at, size), (0, HEAD_BYTES)])  # what sniffing reads of its start
    with open(local, "rb") as fh:
        fh.seek(tail_at)
        found = _directory(fh.read(), tail_at)
    if found is None or not 0 <= found[0] <= found[0] + found[1] <= size:
        return False
    ranges.fetch([(found[0], size)])  # a directory bigger than the tail: the rest of it
    infos = _torch_members(local)
    if infos is None:
        return False
    ranges.fetch(_small_members(infos, found[0]))
    register_range_fetcher(local, ranges)
    return True
