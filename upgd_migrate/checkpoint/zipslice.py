"""Reading a torch zip in a bucket by range: the pickle first, then only the states' tensors.

Imported by :mod:`upgd_migrate.checkpoint.io` (for its sparse loads) and the pipeline; it
imports torch, the checkpoint core's ``detect``, ``fileio`` and ``errors``, not ``io``.

A sparse stand-in (:mod:`upgd_migrate.storage.zipranges`) holds the zip's directory and
``data.pkl``; its tensors are holes. Loaded with every tensor on the meta device, the object
has every key, option, shape and dtype, and no data: an operation that needs a tensor's values
raises instead of reading a hole. :func:`decide` runs the migration on that first, and falls
back to :func:`real_states` (the tensors of the optimizer and VGS states, fetched by range and
checked against the zip directory's CRC-32) only when a step reads tensor data.
"""
from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, TypeVar

import torch

from upgd_migrate.checkpoint.detect import is_optimizer_state, is_vgs_state
from upgd_migrate.errors import UpgdMigrateError
from upgd_migrate.sparsefile import before_reads

T = TypeVar("T")


class NotByRange(UpgdMigrateError):
    """A torch zip whose tensors cannot be read by range (big-endian, a compressed member):
    the caller fetches it whole."""


class _Storages:
    """Real bytes of the stand-in's storages, fetched by range in two batches (the members'
    local headers, then their data) and checked against the CRC-32 the zip directory records.

    A meta tensor's storage knows its offset only as torch computes it without reading (which
    misses the local header's padding for some member names): it names the member that holds
    the storage, whose own local header then gives the true offset."""

    def __init__(self, path: Path) -> None:
        self.path, self.cache = path, {}
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            order = next((zf.read(i) for i in infos if i.filename.endswith("/byteorder")),
                         b"little")
        if order != b"little":  # a big-endian file: not read by range (load() fetches it all)
            raise NotByRange(f"{path}: a {order.decode(errors='replace')}-endian torch file "
                             "is not read by range")
        self.members = sorted((i.header_offset, i) for i in infos)

    def owner(self, offset: int, nbytes: int) -> zipfile.ZipInfo:
        found = [i for start, i in self.members if start < offset]
        info = found[-1] if found else None
        if info is None or info.file_size != nbytes or info.compress_type:
            raise NotByRange(f"{self.path}: no stored zip member holds the {nbytes} tensor "
                             f"bytes near offset {offset}")
        return info

    def load(self, infos: list[zipfile.ZipInfo]) -> None:
        todo = [i for i in dict.fromkeys(infos) if i.filename not in self.cache]
        before_reads(self.path, [(i.header_offset, i.header_offset + 30) for i in todo])
        with open(self.path, "rb", buffering=0) as fh:  # a buffer would keep holes read ahead
            starts = []
            for i in todo:
                fh.seek(i.header_offset)
                head = fh.read(30)
                if head[:4] != b"PK\x03\x04":
                    raise UpgdMigrateError(f"{self.path}: member {i.filename}: no local header")
                name, extra = struct.unpack_from("<HH", head, 26)
                starts.append(i.header_offset + 30 + name + extra)
            before_reads(self.path, [(a, a + i.file_size) for a, i in zip(starts, todo)])
            for a, i in zip(starts, todo):
                fh.seek(a)
                data = bytearray(fh.read(i.file_size))
                if len(data) != i.file_size or zlib.crc32(data) != i.CRC:
                    raise UpgdMigrateError(f"{self.path}: member {i.filename}: its bytes do "
                                           "not match the zip directory's CRC-32")
                self.cache[i.filename] = (torch.frombuffer(data, dtype=torch.uint8)
                                          .untyped_storage() if data else torch.UntypedStorage(0))


def _storage_of(t: torch.Tensor) -> tuple[int, int]:
    st = t.untyped_storage()
    return st._checkpoint_offset, st.nbytes()


def _tensors(obj: Any, inside: bool, out: list) -> None:
    """The meta tensors inside optimizer and VGS states, depth first."""
    inside = inside or is_optimizer_state(obj) or is_vgs_state(obj)
    if isinstance(obj, torch.Tensor):
        if inside and obj.device.type == "meta" and obj.untyped_storage().nbytes():
            out.append(obj)
    elif isinstance(obj, Mapping):
        for v in obj.values():
            _tensors(v, inside, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _tensors(v, inside, out)


def _swap(obj: Any, real: dict[int, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        return real.get(id(obj), obj)
    if isinstance(obj, Mapping):
        items = [(k, _swap(v, real)) for k, v in obj.items()]
        return type(obj)(items) if isinstance(obj, dict) else dict(items)
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_swap(v, real) for v in obj)
    return obj


def real_states(root: Any, path: Path) -> Any:
    """``root`` (loaded on the meta device) with the tensors of every optimizer and VGS state
    read from the stand-in by range; every other tensor (the model weights) stays on meta."""
    storages, tensors = _Storages(Path(path)), []
    _tensors(root, False, tensors)
    owners = [storages.owner(*_storage_of(t)) for t in tensors]
    storages.load(owners)
    real = {id(t): torch.empty(0, dtype=t.dtype).set_(storages.cache[o.filename],
                                                      t.storage_offset(), t.size(), t.stride())
            for t, o in zip(tensors, owners)}
    return _swap(root, real)


def decide(attempt: Callable[[str], T], accept: Callable[[T], bool],
           refusals: tuple[type, ...], modes: tuple[str, ...] = ("meta", "states"),
           ) -> Optional[T]:
    """The first of ``attempt(mode)`` over ``modes`` that ``accept`` takes, or None (load it
    whole). ``attempt(mode)`` opens and migrates under
    :func:`upgd_migrate.checkpoint.io.sparse_reads` ``(mode)``.

    On "meta" an exception may be the meta device's (a step read tensor data): the next mode
    runs. On "states" the states are real: an exception is the file's own, except a failure to
    read by range (a big-endian file, a member that is not stored), which loads it whole.
    ``refusals`` (unsafe globals, no state) are decided by the pickle alone: they propagate.
    """
    for mode in modes:
        try:
            out = attempt(mode)
        except refusals:
            raise
        except (RuntimeError, NotImplementedError, TypeError, ValueError, KeyError,
                UpgdMigrateError):
            if mode == "meta":
                continue
            return None
        if accept(out):
            return out
    return None
