"""Sparse local stand-ins of objects in a bucket: which local files they are, and how their
missing bytes are fetched before they are read.

A stand-in is a local file of the object's size whose absent ranges are holes; the storage
package registers, per stand-in, a function that fetches a byte range into it. Readers call
:func:`before_read` (a no-op for a plain local file) and :func:`fill` before a load that reads
everything, so a hole is never read as zeros. Imports nothing of the project.
"""
from __future__ import annotations

import io
import os
from contextlib import contextmanager
from typing import IO, Any, Callable, Iterator

# Sparse stand-ins of remote objects (staged by upgd_migrate.storage): local path -> (a
# function that fetches bytes [offset, offset + length) into it before they are read, the
# stand-in's inode). A file written over the stand-in (os.replace: another inode, in this
# process or a forked worker) is a whole local file: never fetched into, never refused.
_RANGE_FETCHERS: dict[str, tuple[Callable[[int, int], None], int]] = {}


def register_range_fetcher(path: str | os.PathLike, fetch: Callable[[int, int], None]) -> None:
    _RANGE_FETCHERS[str(path)] = (fetch, os.stat(path).st_ino)


def forget_range_fetchers(prefix: str) -> None:
    for key in [k for k in _RANGE_FETCHERS if k.startswith(prefix)]:
        del _RANGE_FETCHERS[key]


def _fetcher(path: str | os.PathLike) -> Callable[[int, int], None] | None:
    entry = _RANGE_FETCHERS.get(str(path)) if _RANGE_FETCHERS else None
    if entry is None:
        return None
    try:
        same = os.stat(path).st_ino == entry[1]
    except OSError:
        same = False
    return entry[0] if same else None


def is_sparse(path: str | os.PathLike) -> bool:
    return _fetcher(path) is not None


def before_read(path: str | os.PathLike, offset: int, length: int) -> None:
    """Make sure ``length`` bytes at ``offset`` of ``path`` are present (a no-op for a local
    file; a ranged fetch for a sparse stand-in of an object in a bucket)."""
    fetch = _fetcher(path)
    if fetch is not None:
        fetch(offset, length)


def before_reads(path: str | os.PathLike, spans: list[tuple[int, int]]) -> None:
    """:func:`before_read` for many (start, end) spans: one batch where the fetcher takes
    one (a bucket's object: one ``cat_ranges`` call)."""
    fetch = _fetcher(path)
    if fetch is None or not spans:
        return
    if hasattr(fetch, "fetch"):
        fetch.fetch(spans)
    else:
        for a, b in spans:
            fetch(a, b - a)


def fill(path: str | os.PathLike) -> None:
    """Fetch every byte of a sparse stand-in not fetched yet (a no-op for a local file): a
    load that reads tensor data must never read a hole as zeros. Filled, it is a whole local
    file from then on (:func:`filled`)."""
    if is_sparse(path):
        before_read(path, 0, os.path.getsize(path))
        filled(path)


def filled(path: str | os.PathLike) -> None:
    """``path``'s stand-in holds every byte of its object now (filled here, or on disk by a
    forked worker, which cannot tell this process): a whole local file, fetched into and
    refused no more."""
    _RANGE_FETCHERS.pop(str(path), None)


class SliceReader(io.RawIOBase):
    """``length`` bytes at ``offset`` of ``path``, open as ``fd``, read as a file of their own;
    a range of a sparse stand-in is fetched before it is read, so a reader (torch's zip reader)
    never sees a hole. torch reads a record into its tensor with ``readinto``: one copy from
    the page cache, where reading the slice into ``bytes`` first made two."""

    def __init__(self, path: str | os.PathLike, fd: int, offset: int, length: int) -> None:
        super().__init__()
        self.path, self.fd, self.offset, self.length, self.pos = path, fd, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        self.pos = max(0, base + pos)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.length - self.pos)
        if n <= 0:
            return 0
        at = self.offset + self.pos
        before_reads(self.path, [(at, at + n)])
        view = memoryview(buffer).cast("B")[:n]
        if hasattr(os, "preadv"):
            got = os.preadv(self.fd, [view], at)
        else:  # no preadv (not Linux): one more copy
            data = os.pread(self.fd, n, at)
            got = len(data)
            view[:got] = data
        self.pos += got
        return got


_KEEP_HOLES = [False]


@contextmanager
def holes_kept(keep: bool = True) -> Iterator[None]:
    """While open (and ``keep``), :func:`upgd_migrate.fileio.clone_file` of a sparse stand-in
    copies its holes as holes instead of fetching them: only for a run whose copies the store
    itself publishes (``-o`` in the inputs' own store), where a copy identical to its stand-in
    is never read."""
    before = _KEEP_HOLES[0]
    _KEEP_HOLES[0] = keep or before
    try:
        yield
    finally:
        _KEEP_HOLES[0] = before


def copy_data_extents(s: IO[bytes], d: IO[bytes]) -> None:
    """Copy the data extents of ``s`` and leave its holes holes: a sparse stand-in of a 100 GB
    object copied whole would write 100 GB of zeros to the local disk."""
    size = os.fstat(s.fileno()).st_size
    d.truncate(size)
    pos = 0
    while pos < size:
        try:
            start = os.lseek(s.fileno(), pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            break
        end = os.lseek(s.fileno(), start, os.SEEK_HOLE)
        while start < end:
            chunk = os.pread(s.fileno(), min(end - start, 16 << 20), start)
            os.pwrite(d.fileno(), chunk, start)
            start += len(chunk)
        pos = end


def holes_are_kept() -> bool:
    return _KEEP_HOLES[0]
