"""A migrated torch zip written as ``torch.save`` writes it, its tensors copied in the kernel.

A migration changes an optimizer's group options and a few small values, never the bytes of a
tensor it loaded (the steps share every untouched tensor and never write into one). So the
migrated file is the original's tensor records, perhaps under other keys, a few new small ones
and a new ``data.pkl``. :func:`rewrite` writes exactly the bytes ``torch.save`` would write for
the migrated object, but copies each record the original already holds inside the kernel
(``copy_file_range``), with the CRC the original's directory gives, instead of reading every
tensor through user space and hashing it again.

"Exactly": the pickle and the records come from torch's own ``_save``
(:func:`~upgd_migrate.checkpoint.io.records`); the zip around them is laid out as torch's
writer lays it out (each record's data aligned by an ``FB`` padding field, data descriptors, a
ZIP64 end record, the closing ``version`` and ``.data/serialization_id`` records). Once per
process and storage count, that layout is checked against ``torch.save`` of a small object with
as many storages: a torch whose writer differs is never imitated.

Which storage is which record: ``torch.load(..., mmap=True)`` maps the file privately and
slices each storage out of that mapping at its record's data, so a storage whose memory lies in
the file's mapping (``/proc/self/maps``, by device and inode) at a member's data offset, with
the member's size, holds exactly that member's bytes. Any other storage (one a step made) is
written from memory. Everything unusual goes the slow way (``torch.save``): no mapping (not
Linux, not memory-mapped), another byte order (torch swaps those bytes in memory), a compressed
member, 4 GiB or more (ZIP64 fields in every header), more than 65535 records.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import io as _io
import os
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from upgd_migrate.checkpoint import io
from upgd_migrate.fileio import atomic_writer, before_read

ARCHIVE = "archive"  # the inner folder torch.save gives a file object (io.save writes one)
_LIMIT = 0xFFFFFFFF  # from here on torch's writer adds ZIP64 fields to the headers
_MAX_RECORDS = 0xFFFF
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_DESCRIPTOR = struct.Struct("<IIII")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR = struct.Struct("<IIQI")
_END = struct.Struct("<IHHHHIIH")
_UTF8 = 0x0800  # names are UTF-8
_FLAGS = _UTF8 | 0x0008  # and a data descriptor follows the data
_CHUNK = 16 << 20
Part = Union[bytes, tuple[int, int]]  # bytes to write, or (offset, size) to copy from the source


@dataclass(frozen=True)
class Record:
    name: str  # below the archive folder
    size: int
    crc: int
    data: Optional[bytes] = None  # in memory; None: ``size`` bytes at ``offset`` of the source
    offset: int = 0


def rewrite(src: Path, after: Any, out: Path) -> bool:
    """Write the bytes of ``torch.save(after)`` to ``out`` (atomically), copying from ``src``
    every record whose storage ``after`` holds memory-mapped from ``src`` (``torch.load(...,
    mmap=True)``). False, and nothing written, where this does not apply: the caller saves."""
    records = plan(src, after)
    try:
        parts, _ = layout(records, _alignment()) if records is not None else (None, 0)
    except ValueError:  # ZIP64 headers: torch writes those
        parts = None
    if parts is None:
        return False
    with atomic_writer(out) as fh:
        fh.flush()
        with open(src, "rb") as source:
            for part in parts:
                if isinstance(part, bytes):
                    _write_all(fh.fileno(), part)
                else:
                    _copy(src, source.fileno(), fh.fileno(), *part)
    return True


def plan(src: Path, after: Any) -> list[Record] | None:
    """The records of ``torch.save(after)``; those of its storages that are a record of
    ``src`` mapped into memory are taken from ``src``. None where none is, or out of reach."""
    try:
        members, mapped, new = _members(src), _mappings(src), io.records(after)
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        return None
    if not members or not mapped or new is None:
        return None
    records, copied = [], 0
    for name, data, size in new:
        offset = _file_offset(data, mapped)
        found = members.get(offset) if offset is not None else None
        if found is not None and found[0] == size and size:
            records.append(Record(name, size, found[1], None, offset))
            copied += 1
            continue
        payload = _payload(data, size)
        if payload is None:
            return None
        records.append(Record(name, size, zlib.crc32(payload), payload))
    return _closed(records) if copied else None


def _members(src: Path) -> dict[int, tuple[int, int]] | None:
    """A torch zip's stored members: data offset -> (size, CRC); None when it cannot be copied
    from (compressed, or another byte order: torch.load swaps such bytes in memory)."""
    with zipfile.ZipFile(src) as zf, open(src, "rb") as fh:
        infos = zf.infolist()
        order = [i for i in infos if i.filename.rpartition("/")[2] == "byteorder"]
        if (any(i.compress_type != zipfile.ZIP_STORED for i in infos) or len(order) != 1
                or zf.read(order[0]).decode("ascii", "replace") != sys.byteorder):
            return None
        return {_data_offset(fh.fileno(), i): (i.file_size, i.CRC) for i in infos}


def _data_offset(fd: int, info: zipfile.ZipInfo) -> int:
    head = os.pread(fd, _LOCAL.size, info.header_offset)
    if len(head) != _LOCAL.size or head[:4] != b"PK\x03\x04":
        raise ValueError(f"no local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    return info.header_offset + _LOCAL.size + name_len + extra_len


def _mappings(src: Path) -> list[tuple[int, int, int]]:
    """(start, end, file offset) of each mapping of ``src`` into this process (Linux): where
    ``torch.load(mmap=True)`` put its storages. Matched by device and inode, not by name."""
    st = os.stat(src)
    inode = f" {st.st_ino} ".encode()
    with open("/proc/self/maps", "rb") as fh:
        text = fh.read()
    out = []
    for line in (ln for ln in text.splitlines() if inode in ln):
        fields = line.split(maxsplit=5)
        if len(fields) < 5 or int(fields[4]) != st.st_ino:
            continue
        major, _, minor = fields[3].partition(b":")
        if (int(major, 16), int(minor, 16)) == (os.major(st.st_dev), os.minor(st.st_dev)):
            start, _, end = fields[0].partition(b"-")
            out.append((int(start, 16), int(end, 16), int(fields[2], 16)))
    return out


def _file_offset(data: Any, mapped: list[tuple[int, int, int]]) -> int | None:
    """Where in the file a storage mapped from it starts; None for any other storage."""
    if isinstance(data, (bytes, str)) or getattr(data, "device", None) is None:
        return None
    if data.device.type != "cpu":
        return None
    ptr, size = data.data_ptr(), data.nbytes()
    for start, end, offset in mapped:
        if start <= ptr and ptr + size <= end:
            return ptr - start + offset
    return None


def _payload(data: Any, size: int) -> bytes | None:
    """A record's bytes from memory: the pickle, a small text record, a new CPU storage."""
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, bytes):
        return data
    if getattr(getattr(data, "device", None), "type", None) != "cpu":
        return None
    return ctypes.string_at(data.data_ptr(), size) if size else b""


def _closed(records: list[Record]) -> list[Record] | None:
    """``records`` and the two torch's writer closes every archive with."""
    storages = sum(r.name.startswith("data/") for r in records)
    tail = _tail(storages)
    return None if tail is None else _closed_with(records, tail)


def _combined_crc(records: list[Record]) -> int:
    """The second half of torch's serialization id: c10::hash_combine over the records' CRCs."""
    seed = 0
    for r in (r for r in records if r.size):  # torch's writer skips empty records here
        seed = (seed ^ ((r.crc + 0x9E3779B9 + (seed << 6) + (seed >> 2)) & (2**64 - 1)))
    return seed & (2**64 - 1)


@functools.lru_cache(maxsize=None)
def _tail(storages: int) -> tuple[str, bytes, str, str] | None:
    """(version record's name, its bytes, the id record's name, the id's first half) for an
    archive of ``storages`` storages, read from ``torch.save`` of a small object with as many:
    the first half hashes the record names (in the order of a C++ hash set), which only torch
    knows. None when our layout of that object differs from torch's bytes in any way."""
    import torch

    obj = [torch.zeros(1, dtype=torch.uint8) for _ in range(storages)]
    saved = io.save_bytes(obj)
    made = io.records(obj)
    with zipfile.ZipFile(_io.BytesIO(saved)) as zf:
        names = zf.namelist()
        if made is None or len(names) != len(made) + 2:
            return None
        version_name, id_name = (n[len(ARCHIVE) + 1:] for n in names[-2:])
        version, serial = zf.read(names[-2]), zf.read(names[-1]).decode("ascii", "replace")
    tail = (version_name, version, id_name, serial[:20])
    records = [Record(name, size, zlib.crc32(p), p) for name, data, size in made
               if (p := _payload(data, size)) is not None]
    mine = _closed_with(records, tail)
    return tail if mine is not None and _render(mine) == saved else None


def _closed_with(records: list[Record], tail: tuple[str, bytes, str, str]) -> list[Record]:
    version_name, version, id_name, name_hash = tail
    records = [*records, Record(version_name, len(version), zlib.crc32(version), version)]
    serial = f"{name_hash}{_combined_crc(records):020d}".encode()
    return [*records, Record(id_name, len(serial), zlib.crc32(serial), serial)]


def _render(records: list[Record]) -> bytes:
    parts, _ = layout(records, _alignment())
    return b"".join(p for p in parts if isinstance(p, bytes))


def _alignment() -> int:
    from torch.utils.serialization import config

    return int(config.save.storage_alignment)


def layout(records: list[Record], alignment: int) -> tuple[list[Part], int]:
    """The archive as parts to write in order, and its size. Raises ValueError past what
    this layout covers (torch would write ZIP64 fields)."""
    parts: list[Part] = []
    central: list[bytes] = []
    pos = 0
    for r in records:
        if pos + r.size >= _LIMIT:
            raise ValueError("an archive this large has ZIP64 headers")
        name = f"{ARCHIVE}/{r.name}".encode()
        # torch pads the extra field so that the data starts on a multiple of the alignment
        pad = -(pos + _LOCAL.size + len(name) + 4) % alignment
        extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
        flags = _FLAGS if r.size else _UTF8  # an empty record has no data descriptor
        head = _LOCAL.pack(0x04034B50, 0, flags, 0, 0, 0, 0, 0, 0, len(name), len(extra))
        parts += [head + name + extra, r.data if r.data is not None else (r.offset, r.size)]
        if r.size:
            parts.append(_DESCRIPTOR.pack(0x08074B50, r.crc, r.size, r.size))
        central.append(_CENTRAL.pack(0x02014B50, 0, 0, flags, 0, 0, 0, r.crc, r.size, r.size,
                                     len(name), 0, 0, 0, 0, 0, pos) + name)
        pos += len(head) + len(name) + len(extra) + r.size + (_DESCRIPTOR.size if r.size else 0)
    directory = b"".join(central)
    n = len(records)
    end = (_END64.pack(0x06064B50, 44, 0x031E, 0x002D, 0, 0, n, n, len(directory), pos)
           + _LOCATOR.pack(0x07064B50, 0, pos + len(directory), 1)
           + _END.pack(0x06054B50, 0, 0, n, n, len(directory), pos, 0))
    total = pos + len(directory) + len(end)
    if total >= _LIMIT or n > _MAX_RECORDS:
        raise ValueError("an archive this large has ZIP64 headers")
    parts.append(directory + end)
    return _joined(parts), total


def _joined(parts: list[Part]) -> list[Part]:
    """Neighbouring byte parts as one (one write call)."""
    out: list[Part] = []
    for p in parts:
        if isinstance(p, bytes) and out and isinstance(out[-1], bytes):
            out[-1] += p
        else:
            out.append(p)
    return out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _copy(path: Path, src: int, dst: int, offset: int, size: int) -> None:
    """``size`` bytes at ``offset`` of ``src`` appended to ``dst``: in the kernel where it
    can (no page of it passes through this process), else through a buffer."""
    before_read(path, offset, size)  # a no-op unless the source is a sparse stand-in
    kernel = hasattr(os, "copy_file_range")
    while size:
        n = 0
        if kernel:
            try:
                n = os.copy_file_range(src, dst, min(size, 1 << 30), offset)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                kernel = False
        if not n:
            data = os.pread(src, min(size, _CHUNK), offset)
            if not data:
                raise OSError(errno.EIO, f"{path}: shorter than its zip directory says")
            _write_all(dst, data)
            n = len(data)
        offset, size = offset + n, size - n
