"""Read a DCP folder's ``.metadata`` safely and check it against the data files.

torch's own reader unpickles ``.metadata`` with ``pickle.load``, so a stranger's folder can run
code the moment it is loaded. Here an :class:`pickle.Unpickler` resolves only the classes DCP
writes into that file (the metadata dataclasses, the file-system storage record, ``torch.Size``,
dtypes and layouts); any other name is refused, by name, before it is imported or called. The
result is then checked against the folder: every entry's bytes must lie inside a data file that
exists, and the chunks of a tensor must tile it exactly (inside its bounds, no overlap, no gap).
"""
from __future__ import annotations

import io as _io
import math
import os
import pathlib
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import upgd_migrate.checkpoint.formats.dcp_classes as dcp_md
from upgd_migrate.checkpoint.formats.base import DCP_METADATA as METADATA
from upgd_migrate.checkpoint.formats.base import is_dcp_folder
from upgd_migrate.checkpoint.io import CheckpointError

__all__ = ["METADATA", "Entry", "Index", "Piece", "is_dcp_folder", "read_index"]
MAX_METADATA_BYTES = 1 << 30  # a million-tensor checkpoint writes well under this


def _allowed() -> dict[tuple[str, str], Any]:
    # torch's DCP classes resolve to the project's stand-ins (dcp_classes): the same fields and
    # state, without importing torch.distributed.checkpoint (most of a second).
    allowed: dict[tuple[str, str], Any] = {name: cls for cls, name in dcp_md.TORCH_NAMES.items()}
    allowed[("torch", "Size")] = torch.Size
    allowed[("torch.serialization", "_get_layout")] = torch.serialization._get_layout
    allowed[("collections", "OrderedDict")] = OrderedDict
    for name in ("PosixPath", "PurePosixPath"):  # storage_meta.checkpoint_id: never touched,
        allowed[("pathlib", name)] = pathlib.PurePosixPath  # so the pure class is enough
    for name in ("WindowsPath", "PureWindowsPath"):
        allowed[("pathlib", name)] = pathlib.PureWindowsPath
    for name, value in vars(torch).items():
        if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
            allowed[("torch", name)] = value
    return allowed


class RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _MetadataUnpickler(pickle.Unpickler):
    ALLOWED = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        found = self.ALLOWED.get((module, name))
        if found is None:
            raise RefusedGlobal(f"{module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not DCP metadata")


@dataclass(frozen=True)
class Piece:
    """Where one stored item's bytes are: a file of the folder, an offset, a length."""

    file: str
    offset: int
    length: int


@dataclass
class Entry:
    """One flattened key of the checkpoint: a tensor (in chunks) or a ``torch.save``d value."""

    key: str
    path: tuple
    kind: str  # "tensor" | "bytes"
    dtype: Any = None
    size: tuple = ()
    chunks: list[tuple[tuple, tuple, Piece]] = field(default_factory=list)
    piece: Piece | None = None

    @property
    def nbytes(self) -> int:
        return sum(c[2].length for c in self.chunks) if self.kind == "tensor" else self.piece.length


@dataclass
class Index:
    folder: Path
    metadata: Any  # the Metadata object, kept to write a new .metadata from
    entries: dict[str, Entry]

    @property
    def files(self) -> list[str]:
        return sorted({p.file for e in self.entries.values()
                       for p in ([c[2] for c in e.chunks] if e.kind == "tensor" else [e.piece])})


def unpickle_metadata(data: bytes, label: str) -> Any:
    try:
        return _MetadataUnpickler(_io.BytesIO(data)).load()
    except RefusedGlobal as e:
        raise CheckpointError(f"{label}: refused: it names {e.name}, which is not a DCP metadata "
                              "class (nothing was loaded or run)") from None
    except Exception as e:  # truncated, corrupt, or a class built from bad arguments
        raise CheckpointError(f"{label}: truncated or corrupt ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'no detail'})") from None


def read_index(folder: Path) -> Index:
    folder = Path(folder)
    label = f"{folder}/{METADATA}"
    try:
        size = (folder / METADATA).stat().st_size
        if size > MAX_METADATA_BYTES:
            raise CheckpointError(f"{label}: {size} bytes: too large for DCP metadata")
        md = unpickle_metadata((folder / METADATA).read_bytes(), label)
        return _index(folder, md, label)
    except OSError as e:
        raise CheckpointError(f"{label}: cannot read the folder ({e.strerror or e})") from None
    except (AttributeError, TypeError, ValueError) as e:  # allowed classes, odd contents
        raise CheckpointError(f"{label}: malformed DCP metadata ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'no detail'})") from None


def _index(folder: Path, md: Any, label: str) -> Index:
    if not isinstance(md, dcp_md.Metadata) or not isinstance(md.state_dict_metadata, dict):
        raise CheckpointError(f"{label}: not DCP metadata (a {type(md).__name__})")
    if not isinstance(md.storage_data, dict):
        raise CheckpointError(f"{label}: no file-system storage records (storage_data is "
                              f"{type(md.storage_data).__name__}): not a FileSystemWriter save")
    paths = md.planner_data if isinstance(md.planner_data, dict) else {}
    sizes: dict[str, int] = {}
    entries = {key: _entry(folder, md, key, value, paths.get(key), sizes)
               for key, value in md.state_dict_metadata.items()}
    return Index(folder, md, entries)


def _path(key: str, planned: Any) -> tuple:
    if isinstance(planned, tuple) and planned and all(isinstance(p, (str, int)) for p in planned):
        return planned
    # No planner data (a custom planner): split at dots, the way DCP joined the path.
    return tuple(int(p) if p.isdigit() else p for p in key.split("."))


def _entry(folder: Path, md: Any, key: Any, value: Any, planned: Any,
           sizes: dict[str, int]) -> Entry:
    label = f"{folder}/{METADATA}"
    if not isinstance(key, str):
        raise CheckpointError(f"{label}: key {key!r} is not a string")
    if isinstance(value, dcp_md.BytesStorageMetadata):
        piece = _piece(folder, md, key, None, sizes)
        return Entry(key, _path(key, planned), "bytes", piece=piece)
    if not isinstance(value, dcp_md.TensorStorageMetadata):
        raise CheckpointError(f"{label}: entry {key}: unknown kind {type(value).__name__}")
    shape = tuple(value.size)
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise CheckpointError(f"{label}: entry {key}: bad size {shape}")
    chunks = []
    for chunk in value.chunks:
        offsets, csizes = tuple(chunk.offsets), tuple(chunk.sizes)
        if (len(offsets) != len(shape) or len(csizes) != len(shape)
                or any(o < 0 or s < 0 or o + s > d for o, s, d in zip(offsets, csizes, shape))):
            raise CheckpointError(f"{label}: entry {key}: chunk at {list(offsets)} of size "
                                  f"{list(csizes)} lies outside the tensor's size {list(shape)}")
        chunks.append((offsets, csizes, _piece(folder, md, key, offsets, sizes)))
    _check_tiling(label, key, shape, chunks)
    return Entry(key, _path(key, planned), "tensor", value.properties.dtype, shape, chunks)


def _piece(folder: Path, md: Any, key: str, offsets: tuple | None,
           sizes: dict[str, int]) -> Piece:
    label = f"{folder}/{METADATA}"
    info = md.storage_data.get(dcp_md.MetadataIndex(key, offsets))
    if not isinstance(info, dcp_md.StorageInfo):
        raise CheckpointError(f"{label}: entry {key}: no storage record")
    name, offset, length = info.relative_path, info.offset, info.length
    if getattr(info, "transform_descriptors", None):
        raise CheckpointError(f"{label}: entry {key}: stored through stream transforms "
                              f"{list(info.transform_descriptors)} (not supported)")
    if (not isinstance(name, str) or not name or os.sep in name or "/" in name
            or name in (".", "..", METADATA)):
        raise CheckpointError(f"{label}: entry {key}: data file {name!r} is not a file name "
                              "inside the folder")
    if name not in sizes:
        try:
            sizes[name] = (folder / name).stat().st_size
        except FileNotFoundError:
            raise CheckpointError(f"{folder}: data file {name} named in {METADATA} is "
                                  "missing") from None
    if not (isinstance(offset, int) and isinstance(length, int)) or offset < 0 or length <= 0:
        raise CheckpointError(f"{label}: entry {key}: bad storage offset/length "
                              f"{offset!r}/{length!r}")
    if offset + length > sizes[name]:
        raise CheckpointError(f"{folder}/{name}: entry {key} is stored at bytes {offset}.."
                              f"{offset + length}, but the file has only {sizes[name]} bytes")
    return Piece(name, offset, length)


def _check_tiling(label: str, key: str, shape: tuple, chunks: list) -> None:
    """The chunks cover the tensor exactly once: volumes add up and no two overlap."""
    volume = sum(math.prod(c[1]) for c in chunks)
    boxes = sorted((c[0], c[1]) for c in chunks if math.prod(c[1]))
    for i, (o1, s1) in enumerate(boxes):
        for o2, s2 in boxes[i + 1:]:
            if shape and o2[0] >= o1[0] + s1[0]:
                break  # sorted on dim 0: no later box reaches back into this one
            if all(a < b + t and b < a + s for a, s, b, t in zip(o1, s1, o2, s2)):
                raise CheckpointError(f"{label}: entry {key}: chunks at {list(o1)} and "
                                      f"{list(o2)} overlap")
    if volume != math.prod(shape):
        raise CheckpointError(f"{label}: entry {key}: its chunks hold {volume} of "
                              f"{math.prod(shape)} elements (they do not cover the tensor)")
