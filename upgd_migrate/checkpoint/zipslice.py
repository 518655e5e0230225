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

import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, TypeVar

import torch

from upgd_migrate.checkpoint.detect import is_optimizer_state, is_vgs_state
from upgd_migrate.errors import UpgdMigrateError
from upgd_migrate.fileio import before_read

T = TypeVar("T")


class _Storages:
    """Real bytes of the stand-in's storages, each fetched once and checked against the CRC-32
    the zip directory records for the member that holds it."""

    def __init__(self, path: Path) -> None:
        self.path, self.cache = path, {}
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            order = next((zf.read(i) for i in infos if i.filename.endswith("/byteorder")),
                         b"little")
        if order != b"little":  # a big-endian file: not read by range (load() fetches it all)
            raise UpgdMigrateError(f"{path}: a {order.decode(errors='replace')}-endian torch "
                                   "file is not read by range")
        self.members = sorted((i.header_offset, i) for i in infos)

    def get(self, offset: int, nbytes: int) -> torch.UntypedStorage:
        if (offset, nbytes) not in self.cache:
            self.cache[offset, nbytes] = self._read(offset, nbytes)
        return self.cache[offset, nbytes]

    def _read(self, offset: int, nbytes: int) -> torch.UntypedStorage:
        owner = max((i for start, i in self.members if start < offset),
                    key=lambda i: i.header_offset, default=None)
        if owner is None or owner.file_size != nbytes or owner.compress_type:
            raise UpgdMigrateError(f"{self.path}: no stored zip member holds the {nbytes} "
                                   f"tensor bytes at offset {offset}")
        before_read(self.path, offset, nbytes)
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            data = bytearray(fh.read(nbytes))
        if len(data) != nbytes or zlib.crc32(data) != owner.CRC:
            raise UpgdMigrateError(f"{self.path}: member {owner.filename}: its bytes do not "
                                   "match the zip directory's CRC-32")
        return torch.frombuffer(data, dtype=torch.uint8).untyped_storage() if data \
            else torch.UntypedStorage(0)


def _real(t: torch.Tensor, storages: _Storages) -> torch.Tensor:
    st = t.untyped_storage()
    real = storages.get(st._checkpoint_offset, st.nbytes())
    return torch.empty(0, dtype=t.dtype).set_(real, t.storage_offset(), t.size(), t.stride())


def _walk(obj: Any, storages: _Storages, inside: bool) -> Any:
    inside = inside or is_optimizer_state(obj) or is_vgs_state(obj)
    if isinstance(obj, torch.Tensor):
        return _real(obj, storages) if inside and obj.device.type == "meta" else obj
    if isinstance(obj, Mapping):
        items = [(k, _walk(v, storages, inside)) for k, v in obj.items()]
        return type(obj)(items) if isinstance(obj, dict) else dict(items)
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(_walk(v, storages, inside) for v in obj)
    return obj


def real_states(root: Any, path: Path) -> Any:
    """``root`` (loaded on the meta device) with the tensors of every optimizer and VGS state
    read from the stand-in by range; every other tensor (the model weights) stays on meta."""
    return _walk(root, _Storages(Path(path)), False)


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
