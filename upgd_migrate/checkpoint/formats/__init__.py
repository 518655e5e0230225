"""Checkpoint formats, one module each behind one interface (:mod:`.base`): detect, open, write.

This package dispatches by content; the format modules import :mod:`.base`, never this
package. May import the checkpoint core (``io``, ``detect``), ``fileio`` and ``errors``; torch
required. The DCP modules are imported only for a DCP folder (the import costs seconds).
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from upgd_migrate.checkpoint import io
from upgd_migrate.checkpoint.formats import safetensors, sb3zip, torchfile, zipcheck
from upgd_migrate.checkpoint.formats.base import DCP_CONTAINER, Checkpoint, is_dcp_folder

HEAD_BYTES = 64
# Names a checkpoint is saved under: such a file of no known format is reported unreadable
# (a truncated checkpoint must not pass as "carried"); any other unknown file is carried.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
# What sniff() says a file is: the formats that can hold a state, then those that cannot.
STATE_FORMATS = ("dcp", "sb3", "torch")
CARRIED = {"safetensors": "safetensors weights", "pickle": "pickle, never unpickled",
           "zip": "zip archive", "file": "other file"}


def sniff(path: Path) -> str:
    """What ``path`` is, from its first bytes and a zip's central directory; nothing else is
    read. One of STATE_FORMATS, or a key of CARRIED."""
    path = Path(path)
    if is_dcp_folder(path):
        return "dcp"
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
        size = path.stat().st_size
    except OSError:
        return "torch" if path.suffix in CHECKPOINT_SUFFIXES else "file"
    if head.startswith(torchfile.ZIP_HEAD):
        return _sniff_zip(path, head)
    if torchfile.is_legacy_head(head):
        return "torch"
    if safetensors.detect_head(head, size):
        return "safetensors"
    if path.suffix in CHECKPOINT_SUFFIXES:
        return "torch"  # opening it says what is wrong with it
    return "pickle" if head[:1] == b"\x80" else "file"


def _sniff_zip(path: Path, head: bytes) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        first = torchfile.first_member(head)
        # a damaged torch zip (its first member is the pickle) is read to say what is wrong
        return "torch" if first.endswith("data.pkl") or path.suffix in CHECKPOINT_SUFFIXES \
            else "zip"
    if infos and min(i.header_offset for i in infos) > 0:
        return "zip"  # a zip at the end of other data (a DCP data file): not a torch file
    names = [i.filename for i in infos]
    if sb3zip.is_sb3_names(names):
        return "sb3"
    return "torch" if torchfile.is_zip_names(names) else "zip"


def open_checkpoint(path: Path, allow_globals=()) -> Checkpoint:
    path = Path(path)
    if is_dcp_folder(path):
        from upgd_migrate.checkpoint.formats import dcp

        return dcp.open_dcp(path, allow_globals)
    if path.is_dir():
        raise io.CheckpointError(f"{path}: a folder without .metadata: not a DCP checkpoint")
    names = None
    if path.is_file() and zipfile.is_zipfile(path):  # sb3 or torch zip: refuse bombs first
        names = zipcheck.check_zip(str(path), str(path))
    if names is not None and sb3zip.is_sb3_names(names):
        return sb3zip.open_zip(path, allow_globals)
    return torchfile.open(path, allow_globals, names)


def write_checkpoint(ckpt: Checkpoint, states: list[dict], out: Path, ahead: Any = None) -> None:
    """Write ``ckpt`` with its slots' states replaced by ``states`` (same order), atomically.
    ``ahead``: a DCP folder's data files, being copied toward ``out`` already (a
    :class:`~upgd_migrate.checkpoint.copyahead.CopyAhead`)."""
    if ckpt.container == sb3zip.CONTAINER:
        sb3zip.write_zip(ckpt, states, out)
    elif ckpt.container == DCP_CONTAINER:
        from upgd_migrate.checkpoint.formats.dcp_write import write_dcp

        write_dcp(ckpt, states, out, ahead)
    else:
        torchfile.write(ckpt, states, out)


def loaded(ckpt: Checkpoint, state: Any) -> Any:
    """``state`` with every tensor in memory (a DCP state holds its tensors lazily)."""
    if ckpt.container != DCP_CONTAINER:
        return state
    from upgd_migrate.checkpoint.formats.dcp import materialize

    return materialize(state)
