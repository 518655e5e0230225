"""Sparse staging of a prefix in a bucket: a DCP folder's data objects are not downloaded.

It imports fsspec's file system handed in by :mod:`upgd_migrate.storage`, the restricted DCP
metadata reader and :mod:`upgd_migrate.fileio`; nothing of the commands.

Each DCP folder's ``.metadata`` is fetched whole; each data object it names becomes a sparse
local file of the same size, registered with :func:`upgd_migrate.sparsefile.register_range_fetcher`:
the bytes of an entry are fetched by range when the migration reads that entry
(:func:`upgd_migrate.checkpoint.io.load_slice` asks first), so the model weights, which it never
reads, never cross the network. A torch zip becomes a sparse stand-in too
(:mod:`upgd_migrate.storage.zipranges`); every other object is fetched whole. Only a run that
writes no copy of a stand-in (in place, or one that only reads; not ``-o``) may stage this way:
a copy of a stand-in would be a copy of holes (a ``--backup`` is made of a filled one).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from upgd_migrate.checkpoint.formats.dcp_meta import METADATA, unpickle_metadata
from upgd_migrate.errors import UpgdMigrateError
from upgd_migrate.sparsefile import register_range_fetcher

BATCH = 64 * 1024 * 1024  # bytes fetched per cat_ranges call (and held in memory at once)


def _data_names(metadata: Path) -> set[str]:
    """The data files a ``.metadata`` names; none when it does not read (the run reports it)."""
    try:
        md = unpickle_metadata(metadata.read_bytes(), str(metadata))
        return {info.relative_path for info in md.storage_data.values()
                if isinstance(getattr(info, "relative_path", None), str)}
    except Exception:
        return set()


class _Ranges:
    """Fetch byte ranges of one object into its sparse stand-in, each byte at most once.
    A forked worker (``--jobs``) opens its own file system: an async one is not fork-safe."""

    def __init__(self, fs: Any, reopen: Callable[[], Any], key: str, local: Path,
                 size: int) -> None:
        self.fs, self.reopen, self.pid = fs, reopen, os.getpid()
        self.key, self.local, self.got = key, local, []
        with open(local, "wb") as fh:
            fh.truncate(size)  # a hole: no bytes on disk, none fetched
        self.mtime = local.stat().st_mtime_ns

    def __call__(self, offset: int, length: int) -> None:
        self.fetch([(offset, offset + length)])

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of [start, end) not fetched yet."""
        gaps, pos = [], start
        for a, b in sorted(self.got):
            if b <= pos:
                continue
            if a >= end:
                break
            if a > pos:
                gaps.append((pos, a))
            pos = b
        return gaps + ([(pos, end)] if pos < end else [])

    def fetch(self, spans: list[tuple[int, int]]) -> None:
        """Fetch what is missing of ``spans`` (start, end): one ``cat_ranges`` call per
        ``BATCH`` bytes, so filling a big object never holds more than that in memory."""
        if self.pid != os.getpid():
            self.fs, self.pid, self.got = self.reopen(), os.getpid(), []
        batch: list[tuple[int, int]] = []
        for a, b in (g for a, b in spans for g in self.missing(a, b)):
            for start in range(a, b, BATCH):
                batch.append((start, min(b, start + BATCH)))
                if sum(e - s for s, e in batch) >= BATCH:
                    self._get(batch)
                    batch = []
        if batch:
            self._get(batch)

    def _get(self, gaps: list[tuple[int, int]]) -> None:
        try:
            datas = self.fs.cat_ranges([self.key] * len(gaps), [a for a, _ in gaps],
                                       [b for _, b in gaps])
            for data in datas:
                if isinstance(data, Exception):
                    raise data
        except Exception as e:  # one line naming the object, whatever the backend raised
            from upgd_migrate.storage import describe

            raise UpgdMigrateError(describe(self.key, e)) from None
        with open(self.local, "r+b") as fh:
            for (a, _), data in zip(gaps, datas):
                fh.seek(a)
                fh.write(data)
                self.got.append((a, a + len(data)))
        # the stand-in is unchanged as far as the upload is concerned: only bytes it already
        # "had" were filled in
        os.utime(self.local, ns=(self.mtime, self.mtime))


def stage(fs: Any, url: str, local: Path, reopen: Callable[[], Any]) -> int:
    """Mirror the prefix ``url`` into the folder ``local``; the number of sparse stand-ins."""
    base = fs._strip_protocol(url).rstrip("/")
    found = fs.find(base, detail=True)
    rel = {key: key[len(base) + 1:] for key in found if key.startswith(base + "/")}
    folders = {r.rpartition("/")[0] for r in rel.values() if r.rpartition("/")[2] == METADATA}
    from upgd_migrate.storage import zipranges  # it builds on _Ranges

    lazy: set[str] = set()
    for folder in folders:
        meta = local / folder / METADATA
        meta.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(f"{base}/{folder}/{METADATA}".replace("//", "/"), str(meta))
        lazy |= {f"{folder}/{name}".lstrip("/") for name in _data_names(meta)}
    sparse = 0
    for key, r in sorted(rel.items()):
        target = local / r
        if r.rpartition("/")[2] == METADATA and r.rpartition("/")[0] in folders:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        size = int(found[key]["size"])
        if r in lazy:
            register_range_fetcher(target, _Ranges(fs, reopen, key, target, size))
            sparse += 1
        elif zipranges.stage(fs, key, target, size, reopen):
            sparse += 1
        else:
            fs.get_file(key, str(target))
    return sparse
