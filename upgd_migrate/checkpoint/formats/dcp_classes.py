"""The classes a DCP ``.metadata`` pickles, without importing ``torch.distributed.checkpoint``.

That package's ``__init__`` imports DTensor, sympy and torch.fx: most of a second before the
first byte is read. These stand-ins have torch's fields, defaults, equality, hashing and pickled
state (torch 2.13's ``torch/distributed/checkpoint/metadata.py`` and ``filesystem.py``, and the
``TensorProperties`` of torch <= 2.1); :data:`TORCH_NAMES` gives each its torch global name.
The restricted reader (:mod:`upgd_migrate.checkpoint.formats.dcp_meta`) maps those names to
these classes, and :func:`dumps` writes them back under those names, so whoever loads the file
with torch's own reader gets torch's own objects, the same bytes as if torch had pickled them.
"""
from __future__ import annotations

import io
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import torch

__all__ = ["BytesStorageMetadata", "ChunkStorageMetadata", "Metadata", "MetadataIndex",
           "StorageMeta", "TORCH_NAMES", "TensorProperties", "TensorStorageMetadata", "dumps"]
_MD = "torch.distributed.checkpoint.metadata"
_OLD_MD = "torch.distributed._shard.sharded_tensor.metadata"  # torch <= 2.1 wrote these


@dataclass
class ChunkStorageMetadata:
    offsets: torch.Size
    sizes: torch.Size


class _MEM_FORMAT_ENCODING(Enum):
    TORCH_CONTIGUOUS_FORMAT = 0
    TORCH_CHANNELS_LAST = 1
    TORCH_PRESERVE_FORMAT = 2


class MEM_FORMAT_ENCODING(Enum):  # the same, under torch <= 2.1's name
    TORCH_CONTIGUOUS_FORMAT = 0
    TORCH_CHANNELS_LAST = 1
    TORCH_PRESERVE_FORMAT = 2


_FORMATS = ("contiguous_format", "channels_last", "preserve_format")  # by encoding value


@dataclass
class TensorProperties:
    dtype: torch.dtype = field(default_factory=torch.get_default_dtype)
    layout: torch.layout = field(default=torch.strided)
    requires_grad: bool = False
    memory_format: torch.memory_format = field(default=torch.contiguous_format)
    pin_memory: bool = False
    ENCODING: ClassVar[type[Enum]] = _MEM_FORMAT_ENCODING

    # torch.memory_format does not pickle: torch stores an enum member in its place.
    def __getstate__(self) -> tuple:
        for value, name in enumerate(_FORMATS):
            if self.memory_format == getattr(torch, name):
                return (self.dtype, self.layout, self.requires_grad, self.ENCODING(value),
                        self.pin_memory)
        raise RuntimeError(f"Invalid torch.memory_format: {self.memory_format}")

    def __setstate__(self, state: tuple) -> None:
        self.dtype, self.layout, self.requires_grad, encoding, self.pin_memory = state
        if not isinstance(encoding, self.ENCODING):
            raise RuntimeError(f"Invalid torch.memory_format encoding: {encoding}")
        self.memory_format = getattr(torch, _FORMATS[encoding.value])


class OldTensorProperties(TensorProperties):
    """torch <= 2.1's class: kept apart so a rewritten file names what it named before."""

    ENCODING: ClassVar[type[Enum]] = MEM_FORMAT_ENCODING


@dataclass
class TensorStorageMetadata:
    properties: TensorProperties
    size: torch.Size
    chunks: list[ChunkStorageMetadata]


@dataclass
class BytesStorageMetadata:
    pass


@dataclass
class StorageMeta:
    checkpoint_id: str | os.PathLike | None = None
    save_id: str | None = None
    load_id: str | None = None
    modules: list[str] = field(default_factory=list)


@dataclass
class Metadata:
    state_dict_metadata: dict[str, Any]
    planner_data: Any = None
    storage_data: Any = None
    storage_meta: StorageMeta | None = None
    version: str | None = None


@dataclass(frozen=True)
class MetadataIndex:
    fqn: str
    offset: torch.Size | None = None
    index: int | None = field(hash=False, compare=False, default=None)

    # torch's own __init__: the attributes set in this order, offset only when given (the
    # pickled state is the instance __dict__, so the order is part of the bytes).
    def __init__(self, fqn: str, offset: Sequence[int] | None = None,
                 index: int | None = None) -> None:
        object.__setattr__(self, "fqn", fqn)
        object.__setattr__(self, "index", index)
        if offset is not None:
            object.__setattr__(self, "offset", torch.Size(offset))


@dataclass
class _StorageInfo:
    relative_path: str
    offset: int
    length: int
    transform_descriptors: Sequence[str] | None = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


StorageInfo = _StorageInfo
TORCH_NAMES: dict[type, tuple[str, str]] = {
    **{cls: (_MD, cls.__name__) for cls in (
        ChunkStorageMetadata, _MEM_FORMAT_ENCODING, TensorProperties, TensorStorageMetadata,
        BytesStorageMetadata, StorageMeta, Metadata, MetadataIndex)},
    _StorageInfo: ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    OldTensorProperties: (_OLD_MD, "TensorProperties"),
    MEM_FORMAT_ENCODING: (_OLD_MD, "MEM_FORMAT_ENCODING"),
}


class _Pickler(pickle._Pickler):  # the Python one: its save_global can be overridden
    def save_global(self, obj: Any, name: str | None = None) -> None:
        torch_name = TORCH_NAMES.get(obj) if isinstance(obj, type) else None
        if torch_name is None:
            return super().save_global(obj, name)
        self.save(torch_name[0])
        self.save(torch_name[1])
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)


def dumps(obj: Any) -> bytes:
    """``pickle.dumps(obj)`` with the stand-ins written under torch's names."""
    buf = io.BytesIO()
    _Pickler(buf, pickle.DEFAULT_PROTOCOL).dump(obj)
    return buf.getvalue()
