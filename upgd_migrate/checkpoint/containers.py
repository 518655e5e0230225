"""Find the optimizer and VGS states inside a checkpoint, and put migrated ones back.

Torch files (raw states, training-loop dicts, Lightning ``.ckpt``, population-based-training
files) are searched by shape: any dict with ``state`` + ``param_groups`` is an optimizer state,
any dict with the VGS hyperparameters is a VGS state. The container's name comes from its marker
keys (DOMAIN.md section 7). stable-baselines3 zips live in :mod:`.sb3`, DCP folders in
:mod:`.dcp`.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from upgd_migrate.checkpoint import io
from upgd_migrate.checkpoint.detect import is_optimizer_state, is_vgs_state

TRAINING_LOOP_KEYS = ("optimizer", "optimizer_state_dict", "optimizer_state")
DCP_CONTAINER = "DCP checkpoint"
DCP_METADATA = ".metadata"
PBT_FORMATS = ("v2_full_parameters", "v1_policy_only")
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


def container_name(root: Any) -> str:
    if is_optimizer_state(root):
        return "optimizer state"
    if is_vgs_state(root):
        return "VGS state"
    if not isinstance(root, Mapping):
        return "torch file"
    if isinstance(root.get("optimizer_states"), list):
        return "Lightning checkpoint"
    if root.get("format_version") in PBT_FORMATS and isinstance(root.get("data"), Mapping):
        return "population-based-training file"
    if any(k in root for k in TRAINING_LOOP_KEYS):
        return "training-loop dict"
    return "torch file"


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


def _replace(obj: Any, path: tuple, value: Any) -> Any:
    """A copy of ``obj`` with the value at ``path`` replaced; only the spine is copied."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, Mapping):
        new = type(obj)(obj) if isinstance(obj, dict) else dict(obj)  # keeps OrderedDict
        new[head] = _replace(obj[head], rest, value)
        return new
    items = list(obj)
    items[head] = _replace(items[head], rest, value)
    return type(obj)(items) if isinstance(obj, tuple) else items


def open_checkpoint(path: Path, allow_globals=()) -> Checkpoint:
    from upgd_migrate.checkpoint import sb3, zipcheck

    path = Path(path)
    if is_dcp_folder(path):
        from upgd_migrate.checkpoint.dcp import open_dcp

        return open_dcp(path, allow_globals)
    if path.is_dir():
        raise io.CheckpointError(f"{path}: a folder without .metadata: not a DCP checkpoint")
    if path.is_file() and zipfile.is_zipfile(path):  # sb3 or torch zip: refuse bombs first
        zipcheck.check_zip(str(path), str(path))
    if sb3.is_sb3_zip(path):
        return sb3.open_zip(path, allow_globals)
    root = io.load(path, allow_globals)
    slots = [Slot(_label(p), kind, _get(root, p), p) for p, kind in find_states(root)]
    return Checkpoint(path, container_name(root), slots, root)


def write_checkpoint(ckpt: Checkpoint, states: list[dict], out: Path) -> None:
    """Write ``ckpt`` with its slots' states replaced by ``states`` (same order), atomically."""
    from upgd_migrate.checkpoint import sb3

    if ckpt.container == sb3.CONTAINER:
        sb3.write_zip(ckpt, states, out)
        return
    if ckpt.container == DCP_CONTAINER:
        from upgd_migrate.checkpoint.dcp_write import write_dcp

        write_dcp(ckpt, states, out)
        return
    root = ckpt.root
    for slot, state in zip(ckpt.slots, states):
        if state is not slot.state:
            root = _replace(root, slot.key, state)
    io.save(root, out)


def loaded(ckpt: Checkpoint, state: Any) -> Any:
    """``state`` with every tensor in memory (a DCP state holds its tensors lazily)."""
    if ckpt.container != DCP_CONTAINER:
        return state
    from upgd_migrate.checkpoint.dcp import materialize

    return materialize(state)
