"""Write a migrated DCP checkpoint: only the entries that changed are new bytes.

The migrated states are flattened back the way DCP flattens a state dict (mapping keys joined by
dots, lists of plain values kept whole), and compared entry by entry with what was read: an
entry whose value is the very object read from it (or an equal plain value) keeps its stored
bytes; a tensor moved to a new key keeps its bytes under that key; everything else is
``torch.save``d into one new data file. Then:

- in place: the new data file is written and fsynced under a fresh name, then ``.metadata`` is
  replaced atomically. A crash before the replace leaves the old checkpoint as it was (plus an
  unreferenced file); no existing data file is opened for writing.
- ``-o OUT``: a complete new folder, built beside OUT and renamed into place; the unchanged data
  files are copied (a reflink where the file system has them), never hard-linked: a later
  ``dcp.save`` into OUT truncates its files in place and would reach the original through a link.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from upgd_migrate.checkpoint import io
import upgd_migrate.checkpoint.formats.dcp_classes as dcp_md
from upgd_migrate.checkpoint.copyahead import CopyAhead, data_files
from upgd_migrate.checkpoint.formats.dcp import (BytesRef, DcpRoot, TensorRef, flatten_optimizer,
                                                 materialize)
from upgd_migrate.checkpoint.formats.dcp_meta import METADATA, Entry
from upgd_migrate.fileio import TEMP_PREFIX, _fsync_dir, atomic_writer, clone_file, fsync

DATA_NAME = "__upgd_migrate_{}.distcp"


def _key(path: tuple) -> str:
    return ".".join(map(str, path))


def _is_tensor(v: Any) -> bool:
    return isinstance(v, (torch.Tensor, TensorRef))


def _terminal_list(value: list) -> bool:
    """DCP keeps a list whole unless it holds tensors or non-empty mappings (torch >= 2.4)."""
    return not any(_is_tensor(v) or isinstance(v, dict) or (isinstance(v, list)
                   and not _terminal_list(v)) for v in value)


def _emit(path: tuple, value: Any, old: dict, out: list) -> None:
    if _key(path) in old or _is_tensor(value) or isinstance(value, BytesRef):
        out.append((path, value))
    elif isinstance(value, dict):
        for k in value:
            _emit((*path, str(k)), dict.__getitem__(value, k), old, out)
    elif isinstance(value, list) and not _terminal_list(value):
        for i, v in enumerate(value):
            _emit((*path, i), v, old, out)
    else:
        out.append((path, value))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and bool(torch.equal(a, b)))
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def plan(ckpt: Any, states: list) -> tuple[list, list[str]]:
    """(changed or new (path, value, source entry or None), keys to drop) over every slot."""
    root: DcpRoot = ckpt.root
    read = root.values
    changes, dropped = [], []
    for slot, state in zip(ckpt.slots, states):
        if state is slot.state:
            continue
        stored = flatten_optimizer(state) if slot.key in root.flat_optimizers else state
        prefix = slot.key
        old = {e.key: e for e in root.index.entries.values() if e.path[:len(prefix)] == prefix}
        emitted: list = []
        _emit(prefix, stored, old, emitted)
        seen = set()
        for path, value in emitted:
            key = _key(path)
            seen.add(key)
            source = _source(value, root)
            if key in old and (source is old[key] or (
                    old[key].kind == "bytes" and not isinstance(value, BytesRef)
                    and _same(value, read[key]))):
                continue
            changes.append((path, value, source))
        dropped += [k for k in old if k not in seen]
    return changes, dropped


def _source(value: Any, root: DcpRoot) -> Entry | None:
    if isinstance(value, (TensorRef, BytesRef)):
        return value.entry
    found = root.tensors.get(id(value))
    return found[0] if found is not None and found[1] is value else None


def _payloads(changes: list) -> list[tuple[str, tuple, Any, bytes | None]]:
    out = []
    for path, value, source in changes:
        if source is not None:  # stored already: point the new key at the same bytes
            out.append((_key(path), path, source, None))
        elif isinstance(value, torch.Tensor):
            out.append((_key(path), path, value, io.save_bytes(value.detach().clone())))
        else:
            out.append((_key(path), path, value, io.save_bytes(materialize(value))))
    return out


def new_metadata(md: Any, payloads: list, dropped: list[str], data_name: str) -> tuple[Any, bytes]:
    """The new Metadata and the new data file's bytes."""
    sdm, storage = dict(md.state_dict_metadata), dict(md.storage_data)
    planner = dict(md.planner_data) if isinstance(md.planner_data, dict) else None
    gone = set(dropped) | {key for key, *_ in payloads}
    for idx in [i for i in storage if i.fqn in gone]:
        del storage[idx]
    for key in dropped:
        sdm.pop(key, None)
        if planner is not None:
            planner.pop(key, None)
    blob = bytearray()
    for key, path, value, data in payloads:
        if isinstance(value, Entry):
            sdm[key] = md.state_dict_metadata[value.key]
            for offsets, _, piece in value.chunks or [(None, None, value.piece)]:
                storage[dcp_md.MetadataIndex(key, offsets)] = dcp_md.StorageInfo(
                    piece.file, piece.offset, piece.length)
        else:
            offsets = [0] * value.dim() if isinstance(value, torch.Tensor) else None
            storage[dcp_md.MetadataIndex(key, offsets)] = dcp_md.StorageInfo(
                data_name, len(blob), len(data))
            blob += data
            sdm[key] = (dcp_md.TensorStorageMetadata(
                dcp_md.TensorProperties(dtype=value.dtype), torch.Size(value.shape),
                [dcp_md.ChunkStorageMetadata(torch.Size(offsets), torch.Size(value.shape))])
                if offsets is not None else dcp_md.BytesStorageMetadata())
        if planner is not None:
            planner[key] = path
    new = dcp_md.Metadata(sdm, planner if planner is not None else md.planner_data, storage,
                          md.storage_meta, md.version)
    return new, bytes(blob)


def _free_name(*folders: Path) -> str:
    n = 0
    while any((f / DATA_NAME.format(n)).exists() for f in folders):
        n += 1
    return DATA_NAME.format(n)


def _write_new(path: Path, data: bytes, mode_of: Path) -> None:
    """Create ``path`` whole (fsynced), never replacing an existing file."""
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            fsync(fh.fileno())
        os.chmod(tmp, mode_of.stat().st_mode & 0o7777)
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


def write_dcp(ckpt: Any, states: list, out: Path, ahead: CopyAhead | None = None) -> None:
    """``ahead``: the data files, being copied toward ``out`` already (``-o`` only)."""
    root: DcpRoot = ckpt.root
    src = root.index.folder
    changes, dropped = plan(ckpt, states)
    payloads = _payloads(changes)
    in_place = Path(out).resolve() == src.resolve()
    name = _free_name(src)  # not a name of the source folder, so not of a copied file either
    md, blob = new_metadata(root.index.metadata, payloads, dropped, name)
    if in_place:
        if blob:
            _write_new(src / name, blob, src / METADATA)
            _fsync_dir(src)  # the data file is durable before .metadata names it
        with atomic_writer(src / METADATA) as fh:
            fh.write(dcp_md.dumps(md))
        return
    _write_folder(src, Path(out), name if blob else None, blob, md, ahead)


def _write_folder(src: Path, out: Path, name: str | None, blob: bytes, md: Any,
                  ahead: CopyAhead | None) -> None:
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise io.CheckpointError(f"{out}: exists and is not an empty folder: not overwritten "
                                 "(-o needs a new folder for a DCP checkpoint)")
    out.parent.mkdir(parents=True, exist_ok=True)
    if ahead is not None:
        tmp = ahead.take()  # the data files are in it already
    else:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for f in data_files(src) if ahead is None else ():
            clone_file(f, tmp / f.name)
        if name is not None:
            _write_new(tmp / name, blob, src / METADATA)
        with atomic_writer(tmp / METADATA) as fh:
            fh.write(dcp_md.dumps(md))
        os.chmod(tmp, 0o777 & ~_umask())
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(out.parent)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
