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
from upgd_migrate.checkpoint.formats import sb3zip, torchfile, zipcheck
from upgd_migrate.checkpoint.formats.base import DCP_CONTAINER, Checkpoint, is_dcp_folder


def open_checkpoint(path: Path, allow_globals=()) -> Checkpoint:
    path = Path(path)
    if is_dcp_folder(path):
        from upgd_migrate.checkpoint.formats import dcp

        return dcp.open_dcp(path, allow_globals)
    if path.is_dir():
        raise io.CheckpointError(f"{path}: a folder without .metadata: not a DCP checkpoint")
    if path.is_file() and zipfile.is_zipfile(path):  # sb3 or torch zip: refuse bombs first
        zipcheck.check_zip(str(path), str(path))
    if sb3zip.is_sb3_zip(path):
        return sb3zip.open_zip(path, allow_globals)
    return torchfile.open(path, allow_globals)


def write_checkpoint(ckpt: Checkpoint, states: list[dict], out: Path) -> None:
    """Write ``ckpt`` with its slots' states replaced by ``states`` (same order), atomically."""
    if ckpt.container == sb3zip.CONTAINER:
        sb3zip.write_zip(ckpt, states, out)
    elif ckpt.container == DCP_CONTAINER:
        from upgd_migrate.checkpoint.formats.dcp_write import write_dcp

        write_dcp(ckpt, states, out)
    else:
        torchfile.write(ckpt, states, out)


def loaded(ckpt: Checkpoint, state: Any) -> Any:
    """``state`` with every tensor in memory (a DCP state holds its tensors lazily)."""
    if ckpt.container != DCP_CONTAINER:
        return state
    from upgd_migrate.checkpoint.formats.dcp import materialize

    return materialize(state)
