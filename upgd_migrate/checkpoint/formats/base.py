"""The interface every format module implements, and the search they share; imports no format.

A format module offers ``detect(path) -> bool`` (cheap: magic bytes, a zip's central
directory, a folder's ``.metadata``; never a tensor), ``open(path, allow_globals) ->
Checkpoint`` and ``write(ckpt, states, out)``. A :class:`Checkpoint` holds its states as
:class:`Slot` s; any dict with ``state`` + ``param_groups`` is an optimizer state, any dict with
the VGS hyperparameters is a VGS state (:func:`find_states`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from upgd_migrate.checkpoint.detect import is_optimizer_state, is_vgs_state

DCP_CONTAINER = "DCP checkpoint"
DCP_METADATA = ".metadata"
_MAX_DEPTH = 4


@dataclass
class Slot:
    """One state inside a container: where it is (for messages), what it is, its content."""

    where: str
    kind: str  # "optimizer" | "vgs"
    state: dict
    key: Any = None  # a key path into a torch file's object, or a zip member name


@dataclass
class Checkpoint:
    path: Path
    container: str
    slots: list[Slot]
    root: Any  # the loaded object, or the zip's members
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        if self.path.is_dir():  # a DCP folder: its files together
            return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
        return self.path.stat().st_size


def is_dcp_folder(path: Path) -> bool:
    """A DCP checkpoint folder. Decided here, without importing torch.distributed.checkpoint
    (seconds): only a folder that is one pays for that import."""
    return Path(path).is_dir() and (Path(path) / DCP_METADATA).is_file()


def _label(path: tuple) -> str:
    out = ""
    for k in path:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out or "(whole file)"


def find_states(obj: Any, path: tuple = ()) -> list[tuple[tuple, str]]:
    """Key paths of every optimizer and VGS state, depth-first in saved order."""
    if is_optimizer_state(obj):
        return [(path, "optimizer")]
    if is_vgs_state(obj):
        return [(path, "vgs")]
    if len(path) >= _MAX_DEPTH:
        return []
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return []
    found = []
    for key, value in items:
        found.extend(find_states(value, (*path, key)))
    return found


def _get(obj: Any, path: tuple) -> Any:
    for k in path:
        obj = obj[k]
    return obj
